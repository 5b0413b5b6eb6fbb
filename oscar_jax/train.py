r"""Train OSCAR-Net from a config file into a workdir (absl flags --config and --workdir).

    python -m oscar_jax.train --config configs/X.py[:arg] --workdir DIR
    python -m oscar_jax.train --config configs/pretrain.py --workdir runs/pretrain
    python -m oscar_jax.train --config configs/full.py --workdir runs/full \
        --config.init_from=runs/pretrain
    python -m oscar_jax.train --config configs/demo.py --workdir runs/demo --config.total_steps=50

Reads top to bottom: config and workdir, data, model and optimiser, restore or initialise,
the pure train step under `jax.pmap`, then the loop (metrics, checkpoints, SIGTERM). Running
the same command again resumes from the last checkpoint, data iterator included, and gives the
parameters an uninterrupted run would have.

Workdir layout:
    config.json          the resolved config;   versions.json   package versions and devices
    checkpoints/<step>/  orbax: `state` (params, batch_stats, optimiser) and `data` (iterator)
    metrics.jsonl        one JSON line per logged step;   tensorboard/   event files
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from flax.training import train_state
from ml_collections import config_flags

from oscar_jax import hashing, input_pipeline, losses
from oscar_jax.evaluation import benchmarks, report
from oscar_jax.models import oscar, resnet
from oscar_jax.workdir import (
    ConfigConflictError,
    RecordsNotFoundError,
    check_resume,
    checkpoints_dir,
    cnn_weights_from_run,
    config_records_dir,
    create_model,
    record_config_changes,
    save_run_info,
    warm_start_from_run,
    write_record_settings,
)
from preprocessing.files import atomic_write_bytes

AXIS = "batch"


class TrainState(train_state.TrainState):
    """Parameters, optimiser state and the BatchNorm statistics of both ResNets."""

    batch_stats: Any = None


# ---- configuration ------------------------------------------------------------------------


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Step decay (optionally after a linear warm-up): lr x factor at each `lr_decay_at`."""
    boundaries = {
        max(1, int(round(f * config.total_steps))): config.lr_decay_factor
        for f in config.lr_decay_at
    }
    schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    if config.warmup_steps:
        warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [config.warmup_steps])
    return schedule


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with L2 weight decay added to the gradients (PyTorch's Adam, as released). With
    `model.freeze_cnn`, the trunks of fv and FG are left exactly as initialised."""
    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts += [
        optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
        optax.scale_by_learning_rate(learning_rate_schedule(config)),
    ]
    optimizer = optax.chain(*parts)
    if not config.model.get("freeze_cnn", False):
        return optimizer

    def labels(params):
        def label(path, _):
            names = [getattr(key, "key", "") for key in path]
            frozen = names[0] in ("global_cnn", "object_cnn") and names[1] != "head"
            return "frozen" if frozen else "trained"
        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, labels)


# ---- data -----------------------------------------------------------------------------------


def batch_composition(config: ml_collections.ConfigDict) -> input_pipeline.Composition:
    """This host's share of the global batch; checks it splits evenly over devices and each
    device's share into `contrastive_chunks` chunks."""
    hosts, devices = jax.process_count(), jax.local_device_count()
    if config.originals_per_batch % hosts:
        raise ValueError(f"originals_per_batch={config.originals_per_batch} does not split "
                         f"over {hosts} hosts")
    composition = input_pipeline.Composition(
        config.originals_per_batch // hosts, config.variants_per_original,
        config.views_per_variant)
    if composition.batch_size % devices:
        raise ValueError(
            f"a host's batch of {composition.batch_size} images "
            f"({composition.originals} x {composition.variants} x {composition.views}) does "
            f"not split over its {devices} devices; change originals_per_batch or "
            "views_per_variant"
        )
    per_device, chunks = composition.batch_size // devices, config.contrastive_chunks
    if not isinstance(chunks, int) or chunks < 1 or per_device % chunks:
        divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
        raise ValueError(
            f"a device's batch of {per_device} images does not split into "
            f"contrastive_chunks={chunks!r} equal chunks; set contrastive_chunks to one of "
            f"{divisors}, or change originals_per_batch or views_per_variant"
        )
    return composition


def create_data(config: ml_collections.ConfigDict, workdir: str):
    """(iterator, example batch): grain batches from the records; with synthetic data, no
    iterator and the one batch every step reuses."""
    composition = batch_composition(config)
    if config.synthetic_data:
        batch = input_pipeline.synthetic_batch(composition, seed=config.seed,
                                               **config.synthetic.to_dict())
        return None, batch
    directory = config_records_dir(config)
    if jax.process_index() == 0:  # how the records were made, so hashing can do the same
        settings = write_record_settings(workdir, directory)
        if config.matched_views and not settings.get("matched_train_views"):
            print(f"warning: matched_views is on but the train views of {directory} were "
                  "drawn per variant, so a manipulated view differs from its original's by "
                  "its transforms as well as the edit; rebuild the records (the builder's "
                  "matched_train_views) or set --config.matched_views=False", file=sys.stderr,
                  flush=True)
        if config.online_edits and not settings.get("canonical_layout"):
            print(f"warning: online_edits paints each edit at one place of the image in every "
                  f"view, but the views of {directory} are not in their canonical layout "
                  "(flipped, rotated or padded views put that place elsewhere); build the "
                  "records with --config canonical (or --set canonical_layout=true) or set "
                  "--config.online_edits=0", file=sys.stderr, flush=True)
    dataset, example = input_pipeline.train_dataset(
        directory, config.train_split, composition, seed=config.seed,
        num_steps=config.total_steps, workers=config.data_workers,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        index_cache=os.path.join(workdir, "cache"), matched_views=config.matched_views,
        photometric_jitter=config.photometric_jitter, online_edits=config.online_edits)
    return iter(dataset), example


def shard(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[B, ...] -> [devices, B / devices, ...] for pmap. Copies: grain hands batches over in
    shared memory, which is released as soon as nothing refers to it."""
    n = jax.local_device_count()
    return {k: np.array(v).reshape(n, -1, *np.shape(v)[1:]) for k, v in batch.items()}


# ---- initialisation -------------------------------------------------------------------------


def init_variables(model: oscar.OscarNet, batch: dict[str, np.ndarray], seed: int) -> dict:
    """Parameters and BatchNorm statistics for the shapes of `batch` (one device's share)."""
    example = {k: v[:2] for k, v in batch.items() if k in input_pipeline.MODEL_FIELDS}
    init_model = model.clone(bn_axis_name=None)
    variables = jax.jit(functools.partial(init_model.init, train=False))(
        {"params": jax.random.PRNGKey(seed)}, example)
    return flax.core.unfreeze(variables)


def initial_variables(config: ml_collections.ConfigDict, model: oscar.OscarNet,
                      batch: dict[str, np.ndarray]) -> dict:
    """Fresh variables, with fv and FG taken from a pretraining run or an ImageNet file."""
    variables = init_variables(model, batch, config.seed)
    sources = []
    if config.init_from:
        sources.append((f"pretraining run {config.init_from}",
                        cnn_weights_from_run(config.init_from), ()))
    if config.pretrained_cnn:
        # 'imagenet': the weights a backbone's package ships (EfficientNet-Lite0).
        path = None if config.pretrained_cnn == "imagenet" else config.pretrained_cnn
        load = oscar.BACKBONES[config.model.cnn].load_pretrained
        sources.append((f"ImageNet weights {path or 'of the installed package'}", load(path),
                        ("head",)))
    for description, weights, allow_missing in sources:
        targets = [m for m in ("global_cnn", "object_cnn") if m in variables["params"]]
        for target in targets:
            try:
                variables = resnet.merge_pretrained(variables, weights, prefix=(target,),
                                                    allow_missing=allow_missing)
            except ValueError as e:
                raise ValueError(f"cannot initialise {target} from {description}: {e}") from e
        print(f"initialised {' and '.join(targets)} from {description}", flush=True)
    if config.warm_start:
        if not config.init_from:
            raise ValueError("warm_start needs init_from: the pretraining run to start from")
        variables = warm_start_from_run(variables, config.init_from)
        carried = [name for name, present in (("FF", config.model.use_frequency),
                                              ("FS", config.model.global_grid)) if present]
        print(f"warm start: {', '.join([*carried, 'Eb'])} and the fusion of {config.init_from}",
              flush=True)
    return variables


# ---- the step -------------------------------------------------------------------------------


def code_loss(params, z, batch, *, model, config):
    """Content loss of Eb(u) plus the weighted hashing terms, from the embeddings z [B_dev, D]
    of one device's share; per device, global batch. -> (total, metrics)."""
    valid = batch["valid"]
    codes, aux = hashing.hash_codes(z, config.hash_method, valid, axis_name=AXIS)
    embeddings = model.apply({"params": params}, codes, method=oscar.OscarNet.project)
    content = losses.LOSSES[config.loss](
        embeddings, batch["identity"], batch["variant"], valid, axis_name=AXIS,
        **config.loss_kwargs.to_dict())
    weights = {"quantization": config.quantization_weight,
               "bit_balance": config.bit_balance_weight}
    total = content + sum(weights[name] * value for name, value in aux.items())
    if config.code_space_weight:
        # The same loss on the codes u, whose cosine is 1 - 2 Hamming / bits: the search's
        # geometry, where Eb may weight some bits more than others.
        aux = {**aux, "code_space": losses.LOSSES[config.loss](
            codes, batch["identity"], batch["variant"], valid, axis_name=AXIS,
            **config.loss_kwargs.to_dict())}
        total = total + config.code_space_weight * aux["code_space"]
    if config.original_not_first_weight:
        # On the codes u: the search ranks by Hamming distance, cosine 1 - 2 Hamming / bits.
        aux = {**aux, "original_not_first": losses.original_not_first(
            codes, batch["identity"], batch["variant"], valid, axis_name=AXIS,
            temperature=(config.original_not_first_temperature
                         or config.loss_kwargs.get("temperature", 0.2)),
            others_weight=config.original_not_first_others_weight,
            anchors_only=config.original_not_first_anchors_only)}
        total = total + config.original_not_first_weight * aux["original_not_first"]
    # Fraction of +1 bits over the global batch: 0.5 means balanced bits.
    ones = losses.global_mean(jnp.mean(codes > 0, axis=-1), valid, AXIS)
    metrics = {"loss": total, "content_loss": content, "bits_one": ones, **aux}
    return total, metrics


def loss_fn(params, batch_stats, batch, rng, *, model, config):
    """Content loss of Eb(u) plus the weighted hashing terms; per device, global batch."""
    z, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch, train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    total, metrics = code_loss(params, z, batch, model=model, config=config)
    return total, (updates.get("batch_stats", batch_stats), metrics)


# Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
# Memory Limited Setup") when `contrastive_chunks` C > 1. The loss couples the whole global
# batch, but the model maps each image to its z alone, so dL/dparams is the sum over chunks
# of the vector-Jacobian product of dz_chunk/dparams with dL/dz_chunk, plus the direct
# gradient of Eb. Phase 1 embeds the chunks forward only; phase 2 differentiates the loss
# with respect to z and Eb; phase 3 embeds each chunk again and pulls dL/dz_chunk back
# through it. Peak memory is one chunk's activations, at the price of a second forward pass.
# The gradient equals the unchunked step's unless BatchNorm normalises by batch statistics
# (it then uses each chunk's) or dropout is on (its masks are drawn per chunk).


def split_chunks(batch, chunks: int):
    """Every field [B_dev, ...] -> [chunks, B_dev / chunks, ...]: contiguous chunks
    (`batch_composition` has checked that they are equal)."""
    size = batch["valid"].shape[0]
    return jax.tree.map(lambda x: x.reshape(chunks, size // chunks, *x.shape[1:]), batch)


def embed_chunk(params, batch_stats, chunk, rng, index, *, model):
    """One chunk (fields [B_dev / C, ...]) -> (z [B_dev / C, D], BatchNorm statistics after
    it), in training mode with the dropout key fold_in(rng, index)."""
    z, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, chunk, train=True,
        rngs={"dropout": jax.random.fold_in(rng, index)}, mutable=["batch_stats"])
    return z, updates.get("batch_stats", batch_stats)


def embed_chunks(params, batch_stats, chunks, rng, *, model):
    """Phase 1: chunks (fields [C, B_dev / C, ...]) -> (z [B_dev, D], batch_stats), forward
    only, no activations kept. The BatchNorm statistics pass through the chunks in order, so
    the running averages see every chunk."""

    def body(stats, inputs):
        index, chunk = inputs
        z, stats = embed_chunk(params, stats, chunk, rng, index, model=model)
        return stats, z

    indices = jnp.arange(chunks["valid"].shape[0])
    batch_stats, z = jax.lax.scan(body, batch_stats, (indices, chunks))
    return z.reshape(-1, z.shape[-1]), batch_stats


def code_gradients(params, z, batch, *, model, config):
    """Phase 2: the loss of the embeddings z [B_dev, D] over the global batch, differentiated
    -> (dL/dparams, nonzero for Eb only; dL/dz [B_dev, D]; metrics)."""
    grad_fn = jax.grad(code_loss, argnums=(0, 1), has_aux=True)
    (param_grads, z_grads), metrics = grad_fn(params, z, batch, model=model, config=config)
    return param_grads, z_grads, metrics


def embedding_gradients(params, batch_stats, chunks, z_grads, rng, *, model):
    """Phase 3: the sum over chunks of dL/dz_chunk [B_dev / C, D] (z_grads [C, B_dev / C, D])
    pulled back through z_chunk(params) -> dL/dparams. Each chunk is embedded again exactly
    as in phase 1 (same dropout key, same BatchNorm statistics before it); one chunk's
    activations are alive at a time."""

    def body(carry, inputs):
        stats, total = carry
        index, chunk, z_grad = inputs
        _, pull_back, stats = jax.vjp(
            lambda p: embed_chunk(p, stats, chunk, rng, index, model=model), params,
            has_aux=True)
        (grads,) = pull_back(z_grad)
        return (stats, jax.tree.map(jnp.add, total, grads)), None

    indices = jnp.arange(z_grads.shape[0])
    zeros = jax.tree.map(jnp.zeros_like, params)
    (_, grads), _ = jax.lax.scan(body, (batch_stats, zeros), (indices, chunks, z_grads))
    return grads


def chunked_gradients(params, batch_stats, batch, rng, *, model, config):
    """The gradient of `loss_fn` by gradient caching in `config.contrastive_chunks` chunks
    -> (grads, batch_stats, metrics)."""
    chunks = split_chunks(batch, config.contrastive_chunks)
    z, new_batch_stats = embed_chunks(params, batch_stats, chunks, rng, model=model)
    code_grads, z_grads, metrics = code_gradients(params, z, batch, model=model, config=config)
    z_grads = z_grads.reshape(config.contrastive_chunks, -1, z_grads.shape[-1])
    model_grads = embedding_gradients(params, batch_stats, chunks, z_grads, rng, model=model)
    grads = jax.tree.map(jnp.add, code_grads, model_grads)
    return grads, new_batch_stats, metrics


def gradients(params, batch_stats, batch, rng, *, model, config):
    """(grads, batch_stats, metrics) of `loss_fn` on one device's share: one value_and_grad,
    or gradient caching when `config.contrastive_chunks` > 1."""
    if config.contrastive_chunks > 1:
        return chunked_gradients(params, batch_stats, batch, rng, model=model, config=config)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (batch_stats, metrics)), grads = grad_fn(
        params, batch_stats, batch, rng, model=model, config=config)
    return grads, batch_stats, metrics


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model, config, schedule
               ) -> tuple[TrainState, dict]:
    """One optimisation step on one device's share of the batch (run under pmap)."""
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
    grads, batch_stats, metrics = gradients(
        state.params, state.batch_stats, batch, rng, model=model, config=config)
    # Every loss already averages over the global batch: a pmean of the per-device
    # gradients is the gradient of that global mean.
    grads = jax.lax.pmean(grads, AXIS)
    metrics = jax.lax.pmean(metrics, AXIS)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return state, metrics


# ---- checkpoints ------------------------------------------------------------------------------


def checkpoint_manager(config: ml_collections.ConfigDict, workdir: str) -> ocp.CheckpointManager:
    handlers = {"state": ocp.StandardCheckpointHandler()}
    if not config.synthetic_data:
        handlers["data"] = grain.checkpoint.CheckpointHandler()
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(checkpoints_dir(workdir),
                                 item_handlers=handlers, options=options)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: TrainState,
                    iterator) -> None:
    items = {"state": ocp.args.StandardSave(jax.device_get(flax.jax_utils.unreplicate(state)))}
    if iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(iterator)
    manager.save(step, args=ocp.args.Composite(**items), force=True)


def restore_checkpoint(manager: ocp.CheckpointManager, state: TrainState, iterator
                       ) -> TrainState:
    items = {"state": ocp.args.StandardRestore(state)}
    if iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(**items))
    return restored["state"]


# ---- logging --------------------------------------------------------------------------------


class MetricWriter:
    """metrics.jsonl and TensorBoard event files (process 0 only).

    A resumed run first drops the lines of steps after `start_step` (logged after the last
    checkpoint by the interrupted run), so that every step appears once."""

    def __init__(self, workdir: str, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            path = os.path.join(workdir, "metrics.jsonl")
            if os.path.exists(path):
                with open(path) as f:
                    kept = [line for line in f
                            if line.strip() and json.loads(line)["step"] <= start_step]
                atomic_write_bytes(path, "".join(kept).encode())
            self.jsonl = open(path, "a")  # noqa: SIM115
            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def first_non_finite(history: list[tuple[int, dict]]) -> tuple[int, float] | None:
    """(step, loss) of the first step in `history` whose loss is NaN or infinite."""
    for step, metrics in history:
        if not math.isfinite(float(metrics["loss"])):
            return step, float(metrics["loss"])
    return None


class StopRequested:
    """Turns SIGTERM (preemption, `kill`) into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._previous: Callable | int | None = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)


# ---- the loop -------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains until `config.total_steps` (resuming from the workdir's last checkpoint) and
    returns the final replicated state."""
    if config.coordinator_address:
        jax.distributed.initialize(config.coordinator_address, config.num_processes,
                                   config.process_id)
    changes = check_resume(config, workdir)  # before anything is written
    if jax.process_index() == 0:  # one writer for the files every process would write alike
        save_run_info(config, workdir)
        record_config_changes(workdir, changes)
    iterator, batch = create_data(config, workdir)
    model = create_model(config, axis_name=AXIS)
    schedule = learning_rate_schedule(config)
    variables = initial_variables(config, model, batch)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              batch_stats=variables.get("batch_stats", {}),
                              tx=create_optimizer(config))
    manager = checkpoint_manager(config, workdir)
    if manager.latest_step() is not None:
        state = restore_checkpoint(manager, state, iterator)
        print(f"resumed from step {int(state.step)} in {workdir}", flush=True)
    start_step = int(state.step)
    # On a mesh axis named like pmap's own outputs: the step's first call, fed this state,
    # then compiles the same program as its later calls, fed the step's outputs.
    state = flax.jax_utils.replicate(state, axis_name=AXIS)

    p_train_step = jax.pmap(
        functools.partial(train_step, model=model, config=config, schedule=schedule),
        axis_name=AXIS, donate_argnums=(0,))
    rng = flax.jax_utils.replicate(jax.random.PRNGKey(config.seed + 1), axis_name=AXIS)
    sharded_batch = shard(batch)
    del batch
    images_per_step = batch_composition(config).batch_size * jax.process_count()
    writer = MetricWriter(workdir, start_step)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(f"training {n_params / 1e6:.2f}M parameters on {jax.device_count()} "
          f"{jax.default_backend()} devices, {images_per_step} images per step, "
          f"steps {start_step} -> {config.total_steps}", flush=True)

    history: list[tuple[int, dict]] = []
    timer_step, timer_start, run_start = start_step, time.perf_counter(), time.perf_counter()
    step = start_step
    try:
        with StopRequested() as stop:
            while step < config.total_steps:
                inputs = sharded_batch if iterator is None else shard(next(iterator))
                state, metrics = p_train_step(state, inputs, rng)
                step += 1
                history.append((step, metrics))
                if step % config.log_every == 0 or step == config.total_steps or stop.requested:
                    fetched = [(s, jax.tree.map(lambda x: float(x[0]), m))
                               for s, m in jax.device_get(history)]
                    history = []
                    bad = first_non_finite(fetched)
                    if bad is not None:
                        raise FloatingPointError(
                            f"loss became {bad[1]} at step {bad[0]}; no checkpoint was written "
                            f"after it. The last good checkpoint is step "
                            f"{manager.latest_step()} in {workdir}. Lower "
                            "--config.learning_rate or set --config.grad_clip_norm, then "
                            "run the same command again to resume."
                        )
                    now = time.perf_counter()
                    steps_per_s = (step - timer_step) / max(now - timer_start, 1e-9)
                    timer_step, timer_start = step, now
                    last = dict(fetched[-1][1])
                    last.update(steps_per_second=steps_per_s,
                                images_per_second=steps_per_s * images_per_step)
                    writer.write(step, last)
                    eta = (config.total_steps - step) / max(steps_per_s, 1e-9)
                    print(f"step {step}/{config.total_steps} | loss {last['loss']:.4f} | "
                          f"{steps_per_s:.2f} steps/s | {last['images_per_second']:.1f} "
                          f"images/s | ETA {format_duration(eta)}", flush=True)
                if step % config.checkpoint_every == 0 or step == config.total_steps:
                    save_checkpoint(manager, step, state, iterator)
                if stop.requested:
                    if manager.latest_step() != step:
                        save_checkpoint(manager, step, state, iterator)
                    print(f"SIGTERM: saved step {step} to {workdir}; run the same command "
                          "to resume", flush=True)
                    break
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        if iterator is not None:
            iterator.close()
            del iterator
            gc.collect()  # release the shared memory of batches still in flight
    print(f"done: step {step} in {format_duration(time.perf_counter() - run_start)}",
          flush=True)
    finished = step >= config.total_steps
    if finished and config.report_at_end and jax.process_index() == 0:
        result = benchmarks.separation_study(workdir)
        print(report.format_separation(result), flush=True)
    return state


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when run as a program so that importing this module
    never claims flag names."""
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the config go.")


def fail(message: str) -> None:
    """Ends the program with one line on stderr and exit status 2."""
    print(f"train: error: {message}", file=sys.stderr)
    sys.exit(2)


def one_line(error: BaseException) -> str:
    """The message of a config or flag error on one line: without an inner traceback, the
    quotes of a repr, escapes or line breaks."""
    text = str(error.args[0]) if error.args else str(error)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].replace("\\'", "'").replace("\\n", "\n")
    before, traceback, after = text.partition("Traceback (most recent call last):")
    if traceback:
        lines = [line.strip() for line in after.splitlines() if line.strip()]
        text = before + (lines[-1] if lines else "")
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def parse_flags(argv: list[str]) -> None:
    """Parses and loads the flags, ending with one line for a wrong file or field."""
    for arg, following in zip(argv, [*argv[1:], ""], strict=True):
        path = arg.partition("=")[2] if arg.startswith("--config=") else (
            following if arg == "--config" else "")
        path = path.partition(":")[0]
        if path and not os.path.isfile(path):
            fail(f"no config file {path}; the configs are in configs/ "
                 "(demo.py, pretrain.py, full.py, ...)")
    try:
        FLAGS(argv)
        FLAGS.config  # noqa: B018 - loading the file applies the --config.X overrides
    except Exception as error:  # noqa: BLE001 - absl and ml_collections raise many kinds
        fail(f"{one_line(error)} (see `oscar train -h`)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax reports every file it writes at INFO
    if FLAGS.config is None or FLAGS.workdir is None:
        fail("give --config configs/X.py and --workdir DIR (see `oscar train -h`)")
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (RecordsNotFoundError, ConfigConflictError) as e:
        fail(str(e))
    except ValueError as e:  # a config that cannot train (batch splits, initialisation)
        if os.environ.get("OSCAR_DEBUG"):
            raise
        fail(f"{e} (OSCAR_DEBUG=1 shows the traceback)")


def run_command_line(argv: list[str]) -> int:
    """`oscar train ...` and `python -m oscar_jax.train ...`: `argv[0]` is the program name,
    then the flags. `-h` and `--help` print the short help (absl's own `--help` lists every
    library's flags) and exit 0; a wrong flag, config file or field is one line and exit 2."""
    define_flags()
    wants_help = any(arg in ("-h", "--help", "--helpshort") for arg in argv[1:])
    argv = [("--helpshort" if arg in ("-h", "--help") else arg) for arg in argv]
    try:
        if wants_help:
            app.run(main, argv=argv)
        parse_flags(argv)
        app.run(main, argv=argv, flags_parser=lambda parsed: parsed)
    except SystemExit as exit_:
        if wants_help:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(run_command_line(sys.argv))
