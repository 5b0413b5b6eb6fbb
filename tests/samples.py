"""Inputs several test files share: demo photos at a chosen size, and padded model batches."""

from __future__ import annotations

import numpy as np

from preprocessing.datasets import oscar_demo
from preprocessing.images import decode_image, shrink_to_fit


def photo(name: str, side: int = 256) -> np.ndarray:
    """A scikit-image sample photo of the demo data, RGB uint8, longer side at most `side`."""
    return shrink_to_fit(decode_image(oscar_demo.photo_paths()[name]), side)


def make_batch(seed: int = 0, batch: int = 2, nodes: int = 4, real: tuple[int, ...] = (3, 1)
               ) -> dict[str, np.ndarray]:
    """Random OscarNet inputs (32-px global views, 16-px crops): `real[b]` real nodes in row
    b, padding zeroed as the records hold it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, nodes), bool)
    for b, count in enumerate(real):
        mask[b, :count] = True
    relations = rng.normal(size=(batch, nodes, nodes, 8)).astype(np.float32)
    relations[..., 2] = np.abs(relations[..., 2])
    relations *= mask[:, :, None, None] & mask[:, None, :, None]
    return {
        "image": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
        "crops": rng.integers(0, 256, (batch, nodes, 16, 16, 3), dtype=np.uint8)
        * mask[:, :, None, None, None].astype(np.uint8),
        "node_mask": mask,
        "geometry": rng.uniform(size=(batch, nodes, 5)).astype(np.float32) * mask[..., None],
        "shape": rng.normal(size=(batch, nodes, 7)).astype(np.float32) * mask[..., None],
        "relations": relations,
    }
