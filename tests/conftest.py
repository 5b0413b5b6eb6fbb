"""Shared test set-up: tests run on CPU with 2 fake devices, from the repository root."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Must happen before JAX initialises its backend: pmap tests need more than one device.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
# XLA:CPU's multi-threaded Eigen pool can wedge at random on a busy 2-core machine (a step
# that never returns from block_until_ready, seen as a suite that stops at 96 %); single-
# threaded Eigen costs little with two devices on two cores. Subprocesses inherit it.
if "xla_cpu_multi_thread_eigen" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_multi_thread_eigen=false"
# The suite's programs are small and run a few steps each, so XLA's time goes into compiling
# them: LLVM's optimisation passes take half of it (a tiny model's init 9 s -> 2.8 s without
# them). The values agree to rounding either way; only the machine code is slower.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
# Most of the suite's time is XLA compiling the same few small programs again: every
# train_and_evaluate builds its own pmapped step, and many tests train the same tiny config.
# One compilation cache per test run, made here by the first process (the xdist controller)
# and inherited by its workers and every subprocess they start, compiles each program once.
# It starts empty each run and is removed at the end; a cache the caller set is left alone.
_OWN_COMPILATION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_COMPILATION_CACHE = tempfile.mkdtemp(prefix="oscar-jax-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_COMPILATION_CACHE
    # Every program, however quick to compile: the same initialisers and evaluation steps
    # recur across tests (JAX's default caches only compilations of a second or more).
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import contextlib  # noqa: E402
import fcntl  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # Workers take tests in this order (`make test` shares them out with `--dist worksteal`):
    # a test of several minutes started last would hold the run while the other worker idles.
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


def pytest_unconfigure(config):
    if _OWN_COMPILATION_CACHE is not None:
        shutil.rmtree(_OWN_COMPILATION_CACHE, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """(workdir, records folder, data_dir): the tiny demo records and a tiny model trained
    two steps. Made once per test run; pytest-xdist workers share it (made under a lock)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    data_dir, workdir = shared / "tiny_records", shared / "tiny_run"
    with _exclusive(shared / "tiny_trained.lock"):
        if not (workdir / "trained").exists():
            from configs import demo as demo_config
            from oscar_jax import train
            from preprocessing import build

            build.build("oscar_demo", data_dir=str(data_dir), config="tiny", verbose=False)
            config = demo_config.get_config("tiny")
            config.data_dir, config.total_steps, config.log_every = str(data_dir), 2, 1
            config.report_at_end = False
            train.train_and_evaluate(config, str(workdir))
            (workdir / "trained").write_text("ok")
    from oscar_jax.workdir import records_dir

    records = records_dir("oscar_demo", "tiny", str(data_dir))
    return str(workdir), records, str(data_dir)
