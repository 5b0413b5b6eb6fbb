"""benchmarks/train_step.py: every figure of one training step, on CPU with runlocal shapes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import ml_collections
import pytest

from tests import benchmark_scripts
from tests.processes import child_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = benchmark_scripts.path("train_step")


def test_peaks_overrides_and_flags():
    script = benchmark_scripts.load("train_step")
    peak = script.peak_tflops
    assert peak("NVIDIA H200", "bfloat16") == (989.0, "bfloat16", None)
    assert peak("NVIDIA H100 80GB HBM3", "float32") == (494.0, "TF32", 67.0)
    assert peak("NVIDIA H100 80GB HBM3", "float32", "highest") == (67.0, "float32", None)
    assert peak("NVIDIA A100-SXM4-80GB", "float32") == (156.0, "TF32", 19.5)
    assert peak("NVIDIA A100 80GB PCIe", "bfloat16") == (312.0, "bfloat16", None)
    assert peak("NVIDIA H100 PCIe", "bfloat16") == (None, "", None)
    assert peak("cpu", "float32") == (None, "", None)

    args = script.argparse.Namespace(
        config=os.path.join(ROOT, "configs", "full.py"), dtype="bfloat16", originals=8,
        chunks=None, set=["synthetic.crop_size=112", "model.use_edges=false",
                          "lr_decay_at=(0.5, 0.8)"])
    config = script.benchmark_config(args)
    assert config.synthetic_data and config.synthetic.crop_size == 112
    assert config.model.use_edges is False and config.lr_decay_at == (0.5, 0.8)
    assert config.compute_dtype == "bfloat16" and config.originals_per_batch == 8
    with pytest.raises(ValueError, match="no field 'synthetic.nope'"):
        script.apply_override(config, "synthetic.nope=1")
    with pytest.raises(ValueError, match="true or false"):
        script.apply_override(config, "model.use_edges=maybe")
    bare = ml_collections.ConfigDict({"synthetic_data": False})
    with pytest.raises(ValueError, match="contrastive_chunks"):
        script.load_config = lambda spec: bare
        script.benchmark_config(script.argparse.Namespace(
            config="x", set=[], dtype=None, originals=None, chunks=2))


def test_runlocal_step_prints_and_writes_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    # One CPU device: the 2 fake devices of conftest would cost a third more CPU time. The
    # tiny backbone and one layer keep the compile short; test_train compiles the full runlocal
    # model.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": child_xla_flags()}
    result = subprocess.run(
        [sys.executable, SCRIPT, "--config", "configs/full.py:runlocal",
         "--set", "model.cnn=tiny", "--set", "model.num_layers=1",
         "--steps", "2", "--warmup", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    for label in ("compile time", "step time", "images/s", "FLOPs", "MFU", "memory",
                  "device memory peak"):
        assert label in text, (label, text)
    assert "unknown peak" in text and "--peak_tflops" in text

    figures = json.loads(out.read_text())
    devices = figures["devices"]
    assert devices == 1 and figures["platform"] == "cpu"
    assert figures["images_per_step"] == 4 and figures["images_per_device"] == 4
    assert figures["nodes"] == 4 and figures["parameters"] > 1e6  # Transformers, Eb
    assert figures["compile_seconds"] > 0 and figures["xla_compile_seconds"] > 0
    assert len(figures["step_seconds"]) == 2 and all(t > 0 for t in figures["step_seconds"])
    assert (figures["step_seconds_min"] <= figures["step_seconds_median"]
            <= figures["step_seconds_max"])
    assert math.isclose(figures["images_per_second"],
                        4 / figures["step_seconds_median"], rel_tol=1e-9)
    assert figures["flops_per_device"] > 1e9
    assert figures["flops_per_step"] == devices * figures["flops_per_device"]
    assert figures["model_flops_per_device"] == figures["flops_per_device"]  # no chunks
    assert figures["achieved_tflops"] > 0
    assert figures["peak_tflops"] is None and figures["mfu"] is None
    memory = figures["memory"]
    assert memory["argument_bytes"] >= 3 * 4 * figures["parameters"]  # params, Adam mu and nu
    assert memory["temp_bytes"] > 0 and memory["total_bytes"] == (
        memory["argument_bytes"] + memory["output_bytes"] + memory["temp_bytes"]
        - memory["alias_bytes"])
    assert set(figures["device_memory"]) == {"peak_bytes_in_use", "bytes_limit"}  # None on CPU
    assert math.isfinite(figures["loss"])
