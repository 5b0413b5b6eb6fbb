"""Codes of every method for the records of a split, and the part each record plays.

Every method (trained models and classical baselines) goes through the same code path: the
records of a split -> `Hasher.hash_records` -> packed codes. Baselines hash the records'
stored global view.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from oscar_jax import input_pipeline
from oscar_jax.inference.hasher import Hasher, load_hasher
from oscar_jax.workdir import read_record_settings, record_settings
from preprocessing.datasets.base import SceneGraphConfig
from preprocessing.progress import progress

READ_BATCH = 64


@dataclasses.dataclass
class CodeSet:
    """Codes of every method for the records of one split, with their labels."""

    codes: dict[str, np.ndarray]  # method -> uint8 [R, bytes]
    identity: np.ndarray  # int64 [R]
    variant: np.ndarray  # int32 [R]
    view: np.ndarray  # int32 [R]
    transforms: np.ndarray  # str [R]
    keys: np.ndarray | None = None  # str [R]: the records' keys

    def __len__(self) -> int:
        return len(self.identity)


def hash_split(directory: str, split: str, hashers: dict[str, Hasher]) -> CodeSet:
    """Reads a split once and hashes every batch with every method."""
    total = len(input_pipeline.open_source(directory, split))
    if total == 0:
        raise ValueError(f"{directory} split {split!r} has no records")
    codes: dict[str, list[np.ndarray]] = {name: [] for name in hashers}
    fields = ("identity", "variant", "view", "transforms", "key")
    labels: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    name = "/".join(os.path.normpath(directory).split(os.sep)[-3:-1])  # dataset/config
    methods = "+".join(hashers)
    with progress(total=total, desc=f"hashing {name}/{split} with {methods}",
                  unit="image") as bar:
        for batch in input_pipeline.read_split(directory, split, batch_size=READ_BATCH):
            for name, hasher in hashers.items():
                codes[name].append(hasher.hash_records(batch))
            for k in labels:
                labels[k].append(batch[k])
            bar.update(len(batch["image"]))
    return CodeSet({k: np.concatenate(v) for k, v in codes.items()},
                   *(np.concatenate(labels[k]) for k in fields))


def transform_name(description: str) -> str:
    """'gaussian_blur(sigma=1.5)' -> 'gaussian_blur'; '' -> 'none'."""
    return description.split("(", 1)[0].strip() or "none"


@dataclasses.dataclass
class Roles:
    """Which records of a split play which part (indices into the CodeSet)."""

    originals: np.ndarray  # variant 0, view 0: one per identity
    benign: np.ndarray  # variant 0, view >= 1, whose original is present
    manipulated: np.ndarray  # variant >= 1, whose original is present

    @classmethod
    def of(cls, records: CodeSet) -> Roles:
        originals = np.flatnonzero((records.variant == 0) & (records.view == 0))
        identities = records.identity[originals]
        if len(np.unique(identities)) != len(identities):
            raise ValueError("several records claim to be the same original (variant 0, "
                             "view 0); the records are not a valid benchmark split")
        has_original = np.isin(records.identity, identities)
        benign = np.flatnonzero((records.variant == 0) & (records.view > 0) & has_original)
        manipulated = np.flatnonzero((records.variant > 0) & has_original)
        if len(originals) == 0 or len(benign) == 0 or len(manipulated) == 0:
            raise ValueError(
                f"a benchmark split needs originals, benign views and manipulated versions; "
                f"found {len(originals)}, {len(benign)} and {len(manipulated)}")
        return cls(originals, benign, manipulated)


# Builder settings that decide what a record of an image is: distractors made otherwise would
# be hashed from other inputs than the evaluated records, and the comparison would mean little.
RECORD_MAKING_FIELDS = ("global_size", "crop_size", "max_objects", "detector",
                        "detector_options", "min_score", "encoding", "jpeg_quality",
                        "canonical_layout")
# What records made before a field existed were made with: the builder's default.
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SceneGraphConfig)
                   if f.name in RECORD_MAKING_FIELDS}


def _flag_value(value: Any) -> str:
    """A setting as `preprocessing.build --set` takes it ('true', not 'True')."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _record_making_differences(theirs: dict, ours: dict, label: str) -> tuple[str, str]:
    """('' , '') when two records' settings make the same record of an image; otherwise the
    differing settings listed (ours labelled `label`) and the build flags that give ours."""
    theirs, ours = _FIELD_DEFAULTS | theirs, _FIELD_DEFAULTS | ours
    differing = [k for k in RECORD_MAKING_FIELDS if theirs.get(k) != ours.get(k)]
    listed = ", ".join(f"{k} {theirs.get(k)!r} ({label}: {ours.get(k)!r})" for k in differing)
    sets = " ".join(f"--set {k}={_flag_value(ours.get(k))}" for k in differing
                    if k not in ("detector", "detector_options"))
    return listed, sets


def check_same_record_making(distractors: str, records: str) -> None:
    """Refuses distractor records made with other settings than the evaluated records."""
    listed, sets = _record_making_differences(read_record_settings(distractors),
                                              read_record_settings(records), "evaluated records")
    if listed:
        raise ValueError(
            f"distractors {distractors} were made with other settings: {listed}. Rebuild "
            f"them with the evaluated records' settings (python -m preprocessing.build "
            f"--dataset distractors --input DIR --config_name NAME {sets})")


def check_records_fit_model(records: str, workdir: str) -> None:
    """Refuses records made with other settings than those the model of `workdir` was
    trained on: it would hash inputs of another shape or kind than it learned."""
    listed, sets = _record_making_differences(read_record_settings(records),
                                              record_settings(workdir), "trained on")
    if listed:
        raise ValueError(
            f"records {records} were made with other settings than the model of {workdir} "
            f"was trained on: {listed}. Rebuild them with those settings "
            f"(python -m preprocessing.build ... {sets})")


def resolve_distractors(spec: str | None, directory: str) -> tuple[str, str] | None:
    """'train' (a split of the evaluated records) or 'DIR[:SPLIT]' -> (directory, split).

    Records of another folder must have been made with the evaluated records' settings."""
    if not spec:
        return None
    if os.path.isdir(spec.split(":", 1)[0]):
        path, _, split = spec.partition(":")
        check_same_record_making(path, directory)
        if not split:
            splits = list(tfds.builder_from_directory(path).info.splits)
            if len(splits) != 1:
                raise ValueError(f"{path} has splits {splits}; pass --distractors {path}:SPLIT")
            split = splits[0]
        return path, split
    return directory, spec


def method_hashers(workdirs: Sequence[str], methods: Sequence[str]
                   ) -> tuple[dict[str, Hasher], dict[str, str]]:
    """Hashers by display name, and the workdir of each model."""
    hashers, sources = {}, {}
    for position, workdir in enumerate(workdirs):
        name = "oscar" if position == 0 and "oscar" in methods else (
            os.path.basename(os.path.normpath(workdir)))
        if name in hashers:
            name = os.path.normpath(workdir)
        hashers[name] = load_hasher(workdir)
        sources[name] = workdir
    for method in methods:
        if method != "oscar":
            hashers[method] = load_hasher(None, method)
    return hashers, sources
