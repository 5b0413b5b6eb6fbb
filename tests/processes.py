"""Child processes of the tests: they die with their test and take the suite's XLA flags."""

import os
import sys

# Asks the kernel to kill this process when its parent dies (PR_SET_PDEATHSIG = 1), then
# becomes the command itself (same process id, so signals and exit status are the command's).
# Done in the child after exec, not in a `preexec_fn`: running Python between fork and exec
# in a multi-threaded JAX process can deadlock.
_LAUNCHER = ("import ctypes, os, signal, sys; "
             "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
             "os.execv(sys.argv[1], sys.argv[1:])")


def dies_with_parent(command: list[str]) -> list[str]:
    """`command` (program first) run so that it dies with the test worker that starts it:
    a worker killed by a timeout or a crash leaves no training process running and taking
    the CPU from the rest of the suite."""
    return [sys.executable, "-c", _LAUNCHER, *command]


def child_xla_flags(*flags: str) -> str:
    """The suite's XLA_FLAGS (tests/conftest.py) without its fake device count, then `flags`:
    for a child process that chooses its own number of devices."""
    inherited = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if "xla_force_host_platform_device_count" not in f]
    return " ".join([*inherited, *flags])
