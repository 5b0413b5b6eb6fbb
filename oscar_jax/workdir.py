"""The run contract: what a training workdir holds and how everything else reads it.

A workdir is written by `oscar_jax.train` and read by hashing, evaluation, explanation and
attribution, which never import the trainer:

    config.json          the resolved config (`load_config`)
    versions.json        package versions, devices and command (`save_run_info`)
    records.json         how the training records were made (`record_settings`): the query
                         path repeats exactly that on new images
    checkpoints/<step>/  orbax: `state` (params, batch_stats, optimiser) and `data` (iterator)

A trained model is identified by `model_fingerprint`: codes, indexes and trusted databases
carry it, and refuse to mix with codes of another model.

This module imports only the model definition, the config defaults and the atomic file
writer from the project.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from configs.common import get_base_config
from oscar_jax.models import oscar, resnet
from preprocessing.files import atomic_write_bytes

CHECKPOINTS = "checkpoints"
# Written into a workdir by the trainer: the settings of the records it trained on.
RECORDS_JSON = "records.json"


# ---- the config ---------------------------------------------------------------------------


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir. Train one with "
            "`python -m oscar_jax.train --config configs/demo.py --workdir DIR`."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


# Fields that may change when a run resumes: they steer logging, length and where the
# processes and files are, never the shapes, the data or the arithmetic of a step.
RESUMABLE_FIELDS = frozenset({
    "total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "report_at_end",
    "data_workers", "data_dir", "eval_split", "coordinator_address", "num_processes",
    "process_id",
})
CONFIG_CHANGES = "config_changes.jsonl"  # one line per resume that changed a harmless field


class ConfigConflictError(ValueError):
    """The requested config differs from the one a workdir's checkpoints were trained with."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def config_differences(old: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (old, new) for every field that differs; a missing field is None.

    A field that `old` lacks because it was added to the configs later counts as its
    default (`configs.common.get_base_config`), which is what the old run trained with."""
    normalise = lambda c: _flatten(json.loads(  # noqa: E731 - tuples and lists compare equal
        ml_collections.ConfigDict(dict(c)).to_json_best_effort()))
    old_flat, new_flat = normalise(old), normalise(new)
    defaults = normalise(get_base_config())
    old_flat.update({key: defaults[key] for key in new_flat.keys() - old_flat.keys()
                     if key in defaults})
    return {key: (old_flat.get(key), new_flat.get(key))
            for key in sorted(old_flat.keys() | new_flat.keys())
            if old_flat.get(key) != new_flat.get(key)}


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of the checkpoints a workdir holds, ascending (none: empty)."""
    folder = os.path.join(workdir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> dict[str, tuple[Any, Any]]:
    """Compares a requested config with the one a workdir with checkpoints was trained with.

    Returns the harmless differences (`RESUMABLE_FIELDS`), which the caller records; raises
    `ConfigConflictError` naming every other differing field. Writes nothing.
    """
    if not checkpoint_steps(workdir) or not os.path.exists(os.path.join(workdir, "config.json")):
        return {}
    changes = config_differences(load_config(workdir), config)
    conflicts = {k: v for k, v in changes.items() if k not in RESUMABLE_FIELDS}
    if conflicts:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in conflicts.items())
        raise ConfigConflictError(
            f"{workdir} holds checkpoints trained with another config ({listed}); nothing "
            f"was written. Train into a new --workdir, or resume with the config in "
            f"{os.path.join(workdir, 'config.json')} (drop the differing overrides)."
        )
    return changes


def record_config_changes(workdir: str, changes: Mapping[str, tuple[Any, Any]]) -> None:
    """Appends the harmless changes of a resume to the workdir's CONFIG_CHANGES log."""
    if not changes:
        return
    entry = {"resumed_after_step": checkpoint_steps(workdir)[-1], "command": sys.argv,
             "changes": {k: {"old": old, "new": new} for k, (old, new) in changes.items()}}
    with open(os.path.join(workdir, CONFIG_CHANGES), "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def save_run_info(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config and the versions of everything that shapes the result."""
    os.makedirs(workdir, exist_ok=True)
    atomic_write_bytes(os.path.join(workdir, "config.json"),
                       config.to_json_best_effort(indent=2, sort_keys=True).encode())
    packages = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
                "tensorflow-datasets", "numpy", "opencv-python-headless", "ml-collections"]
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info = {
        "python": platform.python_version(),
        "packages": versions,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        "command": sys.argv,
    }
    atomic_write_bytes(os.path.join(workdir, "versions.json"), json.dumps(info, indent=2).encode())


def create_model(config: ml_collections.ConfigDict, *, axis_name: str | None = None
                 ) -> oscar.OscarNet:
    """The OscarNet a config describes; `axis_name` averages BatchNorm statistics over pmap."""
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]
    return oscar.OscarNet(**config.model.to_dict(), dtype=dtype, bn_axis_name=axis_name)


# ---- the records ----------------------------------------------------------------------------


class RecordsNotFoundError(FileNotFoundError):
    """The records a config names are not built; the message holds the build command."""


def build_command(dataset: str, dataset_config: str, data_dir: str) -> str:
    """The command that builds the records a training config reads."""
    command = f"python -m preprocessing.build --dataset {dataset} --data_dir {data_dir}"
    if dataset_config and dataset_config != "default":
        command += f" --config {dataset_config}"
    if dataset == "psbattles24k":
        command += " --manual_dir PATH/TO/ps-battles  # see: --dataset psbattles24k --help"
    return command


def records_dir(dataset: str, dataset_config: str, data_dir: str) -> str:
    """The folder holding the newest built version of `dataset/dataset_config`.

    Raises:
      RecordsNotFoundError: nothing is built there; the message says how to build it.
    """
    config_dir = os.path.join(os.path.expanduser(data_dir), dataset, dataset_config or "default")
    versions = []
    if os.path.isdir(config_dir):
        for name in os.listdir(config_dir):
            if os.path.exists(os.path.join(config_dir, name, "dataset_info.json")):
                versions.append(name)
    if not versions:
        raise RecordsNotFoundError(
            f"no records of {dataset}/{dataset_config or 'default'} under {config_dir}.\n"
            f"Build them with:\n  {build_command(dataset, dataset_config, data_dir)}\n"
            "or point the config elsewhere with --config.data_dir=DIR."
        )
    versions.sort(key=lambda v: tuple(int(p) if p.isdigit() else 0 for p in v.split(".")))
    return os.path.join(config_dir, versions[-1])


def config_records_dir(config: ml_collections.ConfigDict) -> str:
    """The records folder a training config reads."""
    return records_dir(config.dataset, config.dataset_config, config.data_dir)


def read_record_settings(directory: str) -> dict[str, Any]:
    """The builder config a records folder was made with (its `metadata.json`)."""
    path = os.path.join(directory, "metadata.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {directory} is not a built records folder")
    with open(path) as f:
        return json.load(f)["config"]


def write_record_settings(workdir: str, directory: str) -> dict[str, Any]:
    """Saves how the records of `directory` were made into the workdir (`records.json`);
    returns those settings."""
    settings = read_record_settings(directory)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, RECORDS_JSON), "w") as f:
        json.dump(settings, f, indent=2)
    return settings


def record_settings(workdir: str) -> dict[str, Any]:
    """How the records a workdir was trained on were made: `records.json` in the workdir, or
    the metadata of the records its config names."""
    path = os.path.join(workdir, RECORDS_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return read_record_settings(config_records_dir(load_config(workdir)))


# ---- checkpoints ------------------------------------------------------------------------------


def checkpoints_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINTS))


def restore_state(workdir: str, step: int | None = None) -> dict:
    """The saved train state of a workdir (the latest step by default) as nested arrays."""
    manager = ocp.CheckpointManager(checkpoints_dir(workdir), item_names=("state", "data"))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet; train it first")
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
                            )["state"]
    manager.close()
    return state


def model_fingerprint(variables: Mapping[str, Any], config: ml_collections.ConfigDict,
                      settings: Mapping[str, Any]) -> str:
    """A stable id of a trained model: 16 hex digits of SHA-256 over every parameter and
    BatchNorm statistic (name, dtype, shape, bytes), the model config and the settings of
    the records it hashes like. Equal ids mean equal codes for every image; retraining or
    resuming changes the id."""
    digest = hashlib.sha256()
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    for path in sorted(flat):
        array = np.ascontiguousarray(np.asarray(flat[path]))
        digest.update(f"{'/'.join(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({"model": config.model.to_dict(),
                              "compute_dtype": config.get("compute_dtype"),
                              "records": dict(settings)}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def restore_inference(workdir: str, step: int | None = None):
    """(config, model without pmap axis, {'params', 'batch_stats'}) of a trained workdir."""
    config = load_config(workdir)
    model = create_model(config)
    state = restore_state(workdir, step)
    return config, model, {"params": state["params"], "batch_stats": state["batch_stats"]}


def warm_start_from_run(variables: dict, workdir: str) -> dict:
    """`variables` of a model whose streams begin with those of the pretraining run in
    `workdir` (FG, then FF and FS where both have them), with that run's FF, FS, Eb and fusion:
    the fusion rows of the streams the run did not have are zero, so the model's codes start
    as the run's. Raises ValueError when the run's streams are not a prefix of the model's."""
    run_config = load_config(workdir).model
    state = restore_state(workdir)
    params = flax.core.unfreeze(variables["params"])
    if run_config.use_objects or "global_cnn" not in params or (
            "frequency" in params) != bool(run_config.get("use_frequency", False)) or (
            "grid_embed" in params) != bool(run_config.get("global_grid", 0)):
        raise ValueError(f"warm_start needs a pretraining run with the model's global streams "
                         f"only (FG, and FF and FS when the model has them); {workdir} has "
                         "others")
    # FF, FS and Eb through the ResNet loader's merge, which refuses other names or shapes.
    for module in ("frequency", "grid_embed", "code_projection"):
        if module in params:
            weights = {("params", *path): np.asarray(value) for path, value in
                       flax.traverse_util.flatten_dict(state["params"][module]).items()}
            try:
                params = resnet.merge_pretrained({"params": params}, weights, prefix=(module,),
                                                 allow_missing=())["params"]
            except ValueError as e:
                raise ValueError(f"warm_start: {module} of {workdir} does not fit: {e}") from e
    kernel = np.asarray(state["params"]["fusion"]["kernel"])
    fresh = np.zeros_like(np.asarray(params["fusion"]["kernel"]))
    if fresh.shape[1] != kernel.shape[1] or fresh.shape[0] < kernel.shape[0]:
        raise ValueError(f"fusion of {workdir} ({kernel.shape}) does not fit the model's "
                         f"({fresh.shape}): different code_bits or visual_dim")
    fresh[: kernel.shape[0]] = kernel
    params["fusion"] = {"kernel": fresh, "bias": np.asarray(state["params"]["fusion"]["bias"])}
    return {**variables, "params": params}


def cnn_weights_from_run(workdir: str) -> dict[tuple[str, ...], np.ndarray]:
    """The trained CNN of a pretraining run (its `global_cnn`), as flat paths
    (collection, module, ..., leaf) that `resnet.merge_pretrained` takes."""
    config = load_config(workdir)
    try:
        state = restore_state(workdir)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"init_from={workdir} has no checkpoint; run the pretraining first: "
            f"python -m oscar_jax.train --config configs/pretrain.py --workdir {workdir}"
        ) from e
    weights = {}
    for collection in ("params", "batch_stats"):
        flat = flax.traverse_util.flatten_dict(state[collection])
        for path, value in flat.items():
            if path[0] == "global_cnn":
                weights[(collection, *path[1:])] = np.asarray(value)
    if not weights:
        raise ValueError(f"{workdir} (cnn={config.model.cnn}) has no global CNN to copy")
    return weights
