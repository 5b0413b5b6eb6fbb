"""Child processes that cannot outlive the test that started them."""

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def dies_with_parent() -> None:
    """`preexec_fn` for subprocess: the kernel kills the child when its parent dies, so a test
    worker that is killed (a timeout, a crash) leaves no training or server process running
    and taking the CPU from the rest of the suite."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
