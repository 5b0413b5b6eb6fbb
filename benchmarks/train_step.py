r"""Step time, images/s, FLOPs, model FLOP utilisation and memory of one training step.

    python benchmarks/train_step.py --config configs/full.py --dtype bfloat16
    python benchmarks/train_step.py --config configs/full.py --dtype float32 --chunks 4
    python benchmarks/train_step.py --config configs/full.py --compile_only --json full.json
    python benchmarks/train_step.py --config configs/full.py --set synthetic.crop_size=112 \
        --set synthetic.global_size=112 --originals 8          # reduced resolution and batch
    python benchmarks/train_step.py --config configs/full.py:runlocal --steps 2 --warmup 1  # CPU

One process on every local device of the default JAX backend (the accelerator if there is
one: unlike the other benchmarks, this script leaves the platform and thread pools as JAX
finds them). Inputs are synthetic (`config.synthetic_data`): random images, crops and scene
graphs of the shapes in `config.synthetic` (configs/full.py: 17 nodes, 224 px crops and
global view), one batch on the devices that every step reuses, so the step time excludes
decoding and the host-to-device copy. The state and the step are those of
`oscar_jax.train.train_and_evaluate`: `create_model`, `initial_variables`,
`create_optimizer`, `TrainState`, and `train_step` under `jax.pmap` with the state donated.

Figures: compile time (lowering and XLA compilation of the pmapped step); the time of each of
`--steps` steps after `--warmup` untimed ones (median, min, max, standard deviation; each step
is waited for); images/s of the global batch at the median; FLOPs per device of the compiled
step from XLA's cost analysis; model FLOP utilisation = FLOPs per device / median step time /
the device's dense peak; and memory per device: XLA's buffer assignment of the compiled step
(arguments + outputs + temporaries, less the donated state that outputs reuse) and, where the
device reports it, the allocator's peak bytes in use after the run.

Peaks (dense, per device) are known for A100 (312 TFLOP/s bfloat16, 19.5 float32, 156 TF32)
and H100 / H200 SXM (989 bfloat16, 67 float32, 494 TF32); elsewhere give `--peak_tflops`.
For float32, JAX on these GPUs runs matmuls and convolutions in TF32 by default, so the
utilisation is given against the TF32 peak, and against the float32 peak beside it (against
the float32 peak alone with `JAX_DEFAULT_MATMUL_PRECISION=highest`).

XLA counts the body of a loop once, so with gradient caching (`--chunks C` > 1, a `lax.scan`
over C chunks) the compiled step's count is not the work done: the model FLOPs of the
unchunked step are then reported too (from the lowered step, before XLA's optimisations,
which can move the count by a few per cent), and the utilisation uses them, as is usual (the
second forward pass of gradient caching is recomputation, not model FLOPs).

The defaults (2 warm-up and 10 timed steps) keep configs/full.py within a few minutes on a
GPU, compilation included. A step that does not fit in device memory is reported with XLA's
memory estimate and exit status 1; `--chunks`, `--dtype bfloat16` or a larger
`XLA_PYTHON_CLIENT_MEM_FRACTION` (JAX takes 0.75 of a GPU's memory by default) are the
remedies, and `--compile_only` gives the estimate without running.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

import flax
import jax
import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax import train  # noqa: E402

# Dense peak TFLOP/s per device, by a substring of `device_kind`: (bfloat16, float32, TF32).
# A100 peaks are the same in every form; the PCIe and NVL forms of H100 and H200 have lower
# peaks and are left out (SXM only).
PEAK_TFLOPS = {
    "A100": (312.0, 19.5, 156.0),
    "H100": (989.0, 67.0, 494.0),
    "H200": (989.0, 67.0, 494.0),
}
SXM_ONLY = ("H100", "H200")
FULL_FLOAT32 = ("highest", "float32", "F32_F32_F32")  # jax_default_matmul_precision values
GiB = 2**30
OOM_HINT = ("if the device ran out of memory: --chunks N (gradient caching), --dtype bfloat16, "
            "or a larger XLA_PYTHON_CLIENT_MEM_FRACTION (JAX takes 0.75 of a GPU by default)")


# ---- configuration --------------------------------------------------------------------------


def load_config(spec: str) -> ml_collections.ConfigDict:
    """'configs/X.py[:arg]' -> the ConfigDict of that file's `get_config(arg)`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"no config file {path}; the configs are in configs/")
    module_spec = importlib.util.spec_from_file_location("benchmarked_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def parse_value(text: str, current):
    """A `--set` value, read as the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, (int, float, str)):
        return type(current)(text)
    value = ast.literal_eval(text)
    return tuple(value) if isinstance(current, tuple) else value


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> None:
    """'synthetic.crop_size=112' -> config.synthetic.crop_size = 112."""
    path, equals, text = assignment.partition("=")
    if not equals:
        raise ValueError(f"--set takes field=value, got {assignment!r}")
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
        if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
            raise ValueError(f"the config has no section {name!r} (in --set {assignment})")
        node = node[name]
    if leaf not in node:
        raise ValueError(f"the config has no field {path!r} (in --set {assignment})")
    try:
        node[leaf] = parse_value(text, node[leaf])
    except (ValueError, SyntaxError, TypeError) as e:
        raise ValueError(f"--set {assignment}: {e}") from e


def benchmark_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The config file, the `--set` overrides, synthetic inputs, then the explicit flags."""
    config = load_config(args.config)
    for assignment in args.set:
        apply_override(config, assignment)
    config.synthetic_data = True
    if args.dtype:
        config.compute_dtype = args.dtype
    if args.originals is not None:
        config.originals_per_batch = args.originals
    if args.chunks is not None:
        if "contrastive_chunks" not in config:
            raise ValueError("--chunks needs the trainer's contrastive_chunks config field, "
                             "which this version of the config does not have")
        config.contrastive_chunks = args.chunks
    return config


# ---- figures --------------------------------------------------------------------------------


def peak_tflops(device_kind: str, dtype: str, precision: str | None = None
                ) -> tuple[float | None, str, float | None]:
    """(the peak the utilisation is measured against, its kind, the float32 peak given beside
    it where that differs) for a device kind, compute dtype and default matmul precision."""
    lower = device_kind.lower()
    for name, (bf16, fp32, tf32) in PEAK_TFLOPS.items():
        if name.lower() not in lower:
            continue
        if name in SXM_ONLY and ("pcie" in lower or "nvl" in lower):
            break
        if dtype == "bfloat16":
            return bf16, "bfloat16", None
        if precision in FULL_FLOAT32:
            return fp32, "float32", None
        return tf32, "TF32", fp32
    return None, "", None


def flops_of(stage) -> float:
    """FLOPs of a Lowered or Compiled stage (per device) from XLA's cost analysis."""
    analysis = stage.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per module
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))


def memory_of(compiled) -> dict[str, int | None]:
    """XLA's buffer assignment of the compiled step, per device, in bytes."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    figures = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "generated_code_bytes": int(stats.generated_code_size_in_bytes),
    }
    figures["total_bytes"] = (figures["argument_bytes"] + figures["output_bytes"]
                              + figures["temp_bytes"] - figures["alias_bytes"])
    figures["xla_peak_bytes"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0) or None
    return figures


def device_memory() -> dict[str, int | None]:
    """The first device's allocator figures, where the backend has them (GPU, TPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "bytes_limit": stats.get("bytes_limit")}


def gib(value) -> str:
    return "n/a" if value is None else f"{value / GiB:.3f} GiB"


def report(result: dict) -> str:
    """The figures as lines of text."""
    lines = [
        f"config        {result['config']}"
        + (f"  --set {' --set '.join(result['overrides'])}" if result["overrides"] else ""),
        f"devices       {result['devices']} x {result['device_kind']} ({result['platform']}), "
        f"jax {result['jax_version']}",
        f"batch         {result['images_per_step']} images per step "
        f"({result['composition']}), {result['images_per_device']} per device; "
        f"{result['nodes']} nodes, {result['crop_size']} px crops, "
        f"{result['global_size']} px global view",
        f"model         {result['parameters'] / 1e6:.2f}M parameters, compute "
        f"{result['dtype']}, contrastive chunks {result['chunks']}",
    ]
    if "compile_seconds" in result:
        lines += [
            f"compile time  {result['compile_seconds']:.2f} s (lowering "
            f"{result['lower_seconds']:.2f} s, XLA {result['xla_compile_seconds']:.2f} s)",
            f"FLOPs         {result['flops_per_device']:.4g} per device per step, "
            f"{result['flops_per_step']:.4g} over {result['devices']} devices "
            "(XLA cost analysis of the compiled step)",
        ]
        if result["model_flops_per_device"] != result["flops_per_device"]:
            lines.append(f"model FLOPs   {result['model_flops_per_device']:.4g} per device per "
                         "step (the unchunked step, lowered; XLA counts a loop body once)")
        memory = result["memory"]
        if memory:
            lines.append(
                f"memory        {gib(memory['total_bytes'])} per device (XLA: arguments "
                f"{gib(memory['argument_bytes'])} + outputs {gib(memory['output_bytes'])} + "
                f"temporaries {gib(memory['temp_bytes'])} - donated "
                f"{gib(memory['alias_bytes'])})")
        else:
            lines.append("memory        XLA gives no memory analysis on this backend")
    device = result["device_memory"]
    lines.append(f"device memory peak in use {gib(device['peak_bytes_in_use'])} of "
                 f"{gib(device['bytes_limit'])} (allocator, after the run)")
    if result.get("step_seconds"):
        lines += [
            f"step time     median {result['step_seconds_median']:.4f} s over "
            f"{len(result['step_seconds'])} steps after {result['warmup']} warm-up "
            f"(min {result['step_seconds_min']:.4f}, max {result['step_seconds_max']:.4f}, "
            f"std {result['step_seconds_std']:.4f})",
            f"images/s      {result['images_per_second']:.2f}",
            f"loss          {result['loss']:.4f} (last step)",
        ]
        if result["peak_tflops"] is None:
            lines.append(f"MFU           unknown peak for device kind "
                         f"'{result['device_kind']}'; give --peak_tflops "
                         f"(achieved {result['achieved_tflops']:.4g} TFLOP/s per device)")
        else:
            line = (f"MFU           {100 * result['mfu']:.2f} % of {result['peak_tflops']:g} "
                    f"TFLOP/s ({result['peak_source']}; achieved "
                    f"{result['achieved_tflops']:.4g} TFLOP/s per device)")
            if result.get("mfu_float32") is not None:
                line += (f"; {100 * result['mfu_float32']:.2f} % of the float32 peak "
                         f"{result['peak_tflops_float32']:g}")
            lines.append(line)
    if result.get("error"):
        lines.append(f"error         {result['error']}")
    return "\n".join(lines)


# ---- the measurement ------------------------------------------------------------------------


def measure(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
            compile_only: bool, peak: float | None) -> dict:
    """Builds the trainer's state and pmapped step for `config` and measures them."""
    composition = train.batch_composition(config)
    _, batch = train.create_data(config, workdir="")  # synthetic: no workdir is touched
    model = train.create_model(config, axis_name=train.AXIS)
    schedule = train.learning_rate_schedule(config)
    variables = train.initial_variables(config, model, batch)
    state = train.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                    batch_stats=variables.get("batch_stats", {}),
                                    tx=train.create_optimizer(config))
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    del variables
    state = flax.jax_utils.replicate(state)
    p_train_step = jax.pmap(
        functools.partial(train.train_step, model=model, config=config, schedule=schedule),
        axis_name=train.AXIS, donate_argnums=(0,))
    rng = flax.jax_utils.replicate(jax.random.PRNGKey(config.seed + 1))
    inputs = jax.pmap(lambda x: x)(train.shard(batch))  # on the devices once

    device = jax.local_devices()[0]
    chunks = config.get("contrastive_chunks", 1)
    result = {
        "devices": jax.local_device_count(), "device_kind": device.device_kind,
        "platform": device.platform, "jax_version": jax.__version__,
        "python": platform.python_version(), "dtype": config.compute_dtype, "chunks": chunks,
        "originals_per_batch": config.originals_per_batch,
        "images_per_step": composition.batch_size * jax.process_count(),
        "images_per_device": composition.batch_size // jax.local_device_count(),
        "composition": (f"{composition.originals} originals x {composition.variants} "
                        f"variants x {composition.views} views"),
        "nodes": config.synthetic.max_objects + 1, "crop_size": config.synthetic.crop_size,
        "global_size": config.synthetic.global_size, "parameters": int(n_params),
        "warmup": warmup,
    }

    start = time.perf_counter()
    try:
        lowered = p_train_step.lower(state, inputs, rng)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()
    except jax.errors.JaxRuntimeError as e:
        result.update(error=f"compiling the step: {str(e).splitlines()[0][:300]}; {OOM_HINT}",
                      device_memory=device_memory())
        return result
    result.update(lower_seconds=lowered_at - start, xla_compile_seconds=compiled_at - lowered_at,
                  compile_seconds=compiled_at - start)
    result["flops_per_device"] = flops_of(compiled)
    result["model_flops_per_device"] = result["flops_per_device"]
    if chunks > 1:  # the work of the unchunked step; lowering is enough
        whole = config.copy_and_resolve_references()
        whole.contrastive_chunks = 1
        unchunked = jax.pmap(
            functools.partial(train.train_step, model=model, config=whole, schedule=schedule),
            axis_name=train.AXIS, donate_argnums=(0,))
        result["model_flops_per_device"] = flops_of(unchunked.lower(state, inputs, rng))
    result["flops_per_step"] = result["flops_per_device"] * jax.device_count()
    result["memory"] = memory_of(compiled)
    result["device_memory"] = device_memory()
    if compile_only:
        return result

    try:
        times, metrics = [], None
        for i in range(warmup + steps):
            tic = time.perf_counter()
            state, metrics = compiled(state, inputs, rng)
            jax.block_until_ready((state, metrics))
            if i >= warmup:
                times.append(time.perf_counter() - tic)
    except jax.errors.JaxRuntimeError as e:
        result.update(error=f"running the step: {str(e).splitlines()[0][:300]}; {OOM_HINT}",
                      device_memory=device_memory())
        return result
    median = statistics.median(times)
    result.update(
        step_seconds=times, step_seconds_median=median, step_seconds_min=min(times),
        step_seconds_max=max(times),
        step_seconds_std=statistics.stdev(times) if len(times) > 1 else 0.0,
        images_per_second=result["images_per_step"] / median,
        loss=float(jax.device_get(metrics["loss"])[0]),
        achieved_tflops=result["model_flops_per_device"] / median / 1e12,
        device_memory=device_memory(),
    )
    table_peak, kind, float32_peak = peak_tflops(
        device.device_kind, config.compute_dtype, jax.config.jax_default_matmul_precision)
    result["peak_tflops"] = peak or table_peak
    result["peak_source"] = ("--peak_tflops" if peak else
                             f"dense {kind} peak of {device.device_kind}" if table_peak else None)
    result["peak_tflops_float32"] = None if peak else float32_peak
    result["mfu"] = (None if result["peak_tflops"] is None
                     else result["achieved_tflops"] / result["peak_tflops"])
    result["mfu_float32"] = (None if result["peak_tflops_float32"] is None
                             else result["achieved_tflops"] / result["peak_tflops_float32"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/full.py",
                        help="training config, configs/X.py[:arg] (default configs/full.py)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. synthetic.crop_size=112 or "
                             "model.num_layers=2 (repeatable)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="config.compute_dtype (default: the config's)")
    parser.add_argument("--originals", type=int, metavar="N",
                        help="config.originals_per_batch (default: the config's)")
    parser.add_argument("--chunks", type=int, metavar="N",
                        help="gradient caching over N chunks per device: sets "
                             "config.contrastive_chunks = N where the config has that field, "
                             "and is refused where it does not")
    parser.add_argument("--steps", type=int, default=10, metavar="N",
                        help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed steps before them (default 2)")
    parser.add_argument("--peak_tflops", type=float, metavar="TFLOPS",
                        help="the device's dense peak TFLOP/s, for devices not in the table")
    parser.add_argument("--compile_only", action="store_true",
                        help="compile and report FLOPs and memory without running a step")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")

    try:
        config = benchmark_config(args)
        result = measure(config, steps=args.steps, warmup=args.warmup,
                         compile_only=args.compile_only, peak=args.peak_tflops)
    except ValueError as e:
        print(f"train_step: error: {e}", file=sys.stderr)
        return 2
    result.update(config=args.config, overrides=args.set, compile_only=args.compile_only)
    print(report(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
