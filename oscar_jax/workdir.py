"""The run contract: what a training workdir holds and how everything else reads it.

A workdir is written by `oscar_jax.train` and read by hashing, evaluation, explanation and
attribution, which never import the trainer:

    config.json          the resolved config (`load_config`)
    versions.json        package versions, devices and command (`save_run_info`)
    records.json         how the training records were made (`record_settings`): the query
                         path repeats exactly that on new images
    checkpoints/<step>/  orbax: `state` (params, batch_stats, optimiser) and `data` (iterator)

This module imports only the model definition from the package.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from oscar_jax.models import oscar

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


def save_run_info(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config and the versions of everything that shapes the result."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
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
    with open(os.path.join(workdir, "versions.json"), "w") as f:
        json.dump(info, f, indent=2)


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


def write_record_settings(workdir: str, directory: str) -> None:
    """Saves how the records of `directory` were made into the workdir (`records.json`)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, RECORDS_JSON), "w") as f:
        json.dump(read_record_settings(directory), f, indent=2)


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


def restore_inference(workdir: str, step: int | None = None):
    """(config, model without pmap axis, {'params', 'batch_stats'}) of a trained workdir."""
    config = load_config(workdir)
    model = create_model(config)
    state = restore_state(workdir, step)
    return config, model, {"params": state["params"], "batch_stats": state["batch_stats"]}


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
