"""Multi-host training: two processes (one CPU device each, jax.distributed on a loopback
coordinator, gloo collectives) train like one process with two devices on the same batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from oscar_jax.workdir import restore_inference
from preprocessing import build
from tests.processes import child_xla_flags, dies_with_parent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4

# Runs `oscar_jax.train` with its flags, first wrapping `train.shard` so that every local batch
# the process feeds its devices is logged (labels and a checksum of the pixels of each
# image).
DRIVER = r"""
import json, os, sys, zlib
import numpy as np
from oscar_jax import train

log, unshared = os.environ["BATCH_LOG"], train.shard

def logged_shard(batch):
    rows = [[int(batch["identity"][i]), int(batch["variant"][i]), int(batch["view"][i]),
             bool(batch["valid"][i]),
             zlib.crc32(np.ascontiguousarray(batch["crops"][i]).tobytes(),
                        zlib.crc32(np.ascontiguousarray(batch["image"][i]).tobytes()))]
            for i in range(len(batch["valid"]))]
    with open(log, "a") as f:
        f.write(json.dumps(rows) + "\n")
    return unshared(batch)

train.shard = logged_shard
sys.exit(train.run_command_line(["oscar_jax.train", *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("records"))
    build.build("oscar_demo", data_dir=path, config="tiny", verbose=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir, data_dir, log, output, *, devices: int, extra=()):
    command = [sys.executable, "-u", "-c", DRIVER, "--config", "configs/demo.py:tiny",
               "--workdir", str(workdir), f"--config.data_dir={data_dir}",
               f"--config.total_steps={STEPS}", "--config.log_every=1",
               "--config.data_workers=0", *extra]
    environment = {
        **os.environ, "BATCH_LOG": str(log), "JAX_PLATFORMS": "cpu",
        # Gloo carries the collectives between CPU processes (recent jax's default).
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        # Compiling, not running, is the cost here: LLVM's cheapest level halves it.
        "XLA_FLAGS": child_xla_flags(f"--xla_force_host_platform_device_count={devices}",
                                     "--xla_backend_optimization_level=0"),
    }
    # Output goes to a file, not a pipe: a full pipe would stall a process and, through the
    # collectives, the other one.
    with open(output, "w") as f:
        process = subprocess.Popen(dies_with_parent(command), cwd=ROOT, env=environment,
                                   stdout=f, stderr=subprocess.STDOUT)
    return process, output


def finish(processes: dict[str, tuple[subprocess.Popen, str]], timeout: float = 900) -> None:
    """Waits for every process; if one fails or time runs out, ends the others and fails
    with the tail of each one's output."""
    deadline = time.monotonic() + timeout

    def state():
        codes = [process.poll() for process, _ in processes.values()]
        # A process that raised waits for the others at jax.distributed's shutdown barrier.
        raised = any("Traceback (most recent call last)" in read_text(output)
                     for _, output in processes.values())
        return codes, raised

    codes, raised = state()
    while None in codes and not any(codes) and not raised and time.monotonic() < deadline:
        time.sleep(2)
        codes, raised = state()
    if codes == [0] * len(codes) and not raised:
        return
    report = []
    for name, (process, output) in processes.items():
        if process.poll() is None:
            process.kill()
            process.wait()
        report.append(f"--- {name}: exit {process.returncode}\n{read_text(output)[-4000:]}")
    pytest.fail("a training process failed or timed out:\n" + "\n".join(report))


def read_text(path) -> str:
    with open(path) as f:
        return f.read()


def read_log(path) -> list[list]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_losses(workdir) -> list[tuple[int, float]]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(m["step"], m["loss"]) for m in map(json.loads, f)]


@pytest.mark.heavy
def test_two_processes_train_like_one_process_with_two_devices(data_dir, tmp_path):
    shared, single = tmp_path / "two_processes", tmp_path / "one_process"
    coordinator = f"127.0.0.1:{free_port()}"
    processes = {
        # Both processes get the same workdir, as on shared storage: orbax writes one
        # checkpoint from the two.
        f"process {i}": start(
            shared, data_dir, tmp_path / f"batches_{i}.jsonl", tmp_path / f"output_{i}.txt",
            devices=1, extra=[f"--config.coordinator_address={coordinator}",
                              "--config.num_processes=2", f"--config.process_id={i}"])
        for i in range(2)
    }
    processes["one process"] = start(single, data_dir, tmp_path / "batches.jsonl",
                                     tmp_path / "output.txt", devices=2)
    finish(processes)
    assert len(os.listdir(shared / "cache")) == 1  # the record index, written by both

    # The data: each process loads its own half (one original of the two), and the two
    # halves side by side are the one process's batch, pixel for pixel, at every step: the
    # global batch does not depend on the number of processes (the first line is the
    # example batch the model is initialised with).
    halves = [read_log(tmp_path / f"batches_{i}.jsonl") for i in range(2)]
    whole = read_log(tmp_path / "batches.jsonl")
    assert len(whole) == len(halves[0]) == len(halves[1]) == STEPS + 1
    for step, (first, second, both) in enumerate(zip(*halves, whole, strict=True)):
        assert len(first) == len(second) == len(both) // 2, step
        assert first + second == both, f"step {step}: the global batches differ"
        assert {row[0] for row in first}.isdisjoint(row[0] for row in second), step

    # Only process 0 logs metrics; orbax wrote one checkpoint, with each process's iterator.
    steps, losses = zip(*read_losses(shared), strict=True)
    assert steps == tuple(range(1, STEPS + 1))
    np.testing.assert_allclose(losses, [loss for _, loss in read_losses(single)], rtol=1e-5)
    checkpoint = shared / "checkpoints" / str(STEPS)
    assert sorted(os.listdir(checkpoint / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

    _, _, two = restore_inference(str(shared))
    _, _, one = restore_inference(str(single))
    paths_two = jax.tree_util.tree_flatten_with_path(two)[0]
    paths_one = jax.tree_util.tree_flatten_with_path(one)[0]
    assert [p for p, _ in paths_two] == [p for p, _ in paths_one]
    for (path, a), (_, b) in zip(paths_two, paths_one, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
