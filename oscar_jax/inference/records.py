"""The query-time record maker: a new image becomes exactly the record its training data
would hold.

The same steps as the records' builder, from the settings saved in a workdir
(`oscar_jax.workdir.record_settings`): the project's one decode path, the same shrinking,
the detector backend and options, the scene graph and the records' JPEG round trip.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from oscar_jax.input_pipeline import MODEL_FIELDS
from preprocessing import scene_graph
from preprocessing.datasets import base
from preprocessing.images import ImageDecodeError, decode_image, shrink_to_fit

# Detectors that need something only a data set build has.
_NEEDS_BUILD = {"oracle": "ground-truth masks of generated scenes"}


def new_images_problem(settings: dict[str, Any]) -> str | None:
    """Why records of these settings cannot be made for new images (their detector needs
    something only a data set build has), or None."""
    if settings["detector"] not in _NEEDS_BUILD:
        return None
    return (f"the records were made with the {settings['detector']!r} detector, which uses "
            f"{_NEEDS_BUILD[settings['detector']]} and cannot run on new images; train on "
            "records of a detector that can (e.g. oscar_demo `default`, `classical`)")


class ImageRecordMaker(base.SceneGraphMaker):
    """A query image -> the record its training data would hold (view 0, no labels).

    The spec of a `WorkItem` holds either `path` or `pixels` (uint8 [H, W, 3]).
    """

    def __init__(self, settings: dict[str, Any]):
        if problem := new_images_problem(settings):
            raise ValueError(problem)
        fields = {f.name for f in dataclasses.fields(base.SceneGraphConfig)}
        kwargs = {k: v for k, v in settings.items() if k in fields and k not in (
            "name", "version", "release_notes", "supported_versions", "description", "tags")}
        kwargs["detector_options"] = tuple(tuple(kv) for kv in kwargs.get("detector_options", ()))
        super().__init__(base.SceneGraphConfig(name="query", **kwargs))
        # Originals are shrunk before anything else: `image_size` (oscar_demo) or `max_side`.
        self.max_side = int(settings.get("max_side") or settings.get("image_size") or 0)

    def __getstate__(self):
        return {**super().__getstate__(), "max_side": self.max_side}

    def view_of(self, item: base.WorkItem):
        spec = item.spec
        image = spec["pixels"] if "pixels" in spec else decode_image(spec["path"])
        if self.max_side:
            image = shrink_to_fit(image, self.max_side)
        return image, None, "", os.path.basename(item.key)

    def record(self, source: str | np.ndarray, name: str = "image") -> dict[str, np.ndarray]:
        """A path or decoded RGB pixels -> the decoded model fields of its record."""
        if isinstance(source, np.ndarray):
            spec, name = dict(identity=-1, variant=0, view=0, pixels=source), name
        else:
            spec, name = dict(identity=-1, variant=0, view=0, path=source), source
        example = self(base.WorkItem(name, "query", name, spec))
        decoded = scene_graph.decode_record(example)  # the records' JPEG round trip
        return {field: decoded[field] for field in MODEL_FIELDS}


def stack(records: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Records of `ImageRecordMaker.record` -> one model batch [B, ...]."""
    return {field: np.stack([r[field] for r in records]) for field in MODEL_FIELDS}


def prepare(job: tuple[ImageRecordMaker | None, str]) -> tuple[str, Any, str | None]:
    """Path -> (path, its record, or its pixels without a maker; error or None). Runs in the
    hashers' worker processes, and never raises on a bad image."""
    maker, path = job
    try:
        if maker is None:
            return path, decode_image(path), None
        return path, maker.record(path), None
    except ImageDecodeError as error:
        return path, None, error.reason
    except Exception as error:  # noqa: BLE001 - one bad input must not stop the others
        return path, None, f"{type(error).__name__}: {error}"
