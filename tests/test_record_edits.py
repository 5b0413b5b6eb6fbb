"""Edits painted into a stored record land where the same edit on the photo would land."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocessing import record_edits, scene_graph


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A bright, smoothly varying RGB photo (no dark pixels that would read as letterbox)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [90 + 60 * np.sin(rng.uniform(2, 6) * x + rng.uniform(2, 6) * y + rng.uniform(0, 6))
                for _ in range(3)]
    return np.clip(np.stack(channels, -1) + 40, 0, 255).astype(np.uint8)


def record_of(photo: np.ndarray, boxes: np.ndarray, global_size: int = 96, crop_size: int = 48):
    """Global view, crops, geometry and node_mask of `photo` with object `boxes` (xyxy px),
    the way scene_graph makes them (the background node covers the whole photo here)."""
    h, w = photo.shape[:2]
    nodes = np.concatenate([boxes, [[0, 0, w, h]]]).astype(np.float32)
    crops = np.zeros((len(nodes) + 1, crop_size, crop_size, 3), np.uint8)  # one padding slot
    for i, box in enumerate(nodes):
        crops[i] = scene_graph.crop_box(photo, box, crop_size)
    geometry = np.zeros((len(nodes) + 1, 5), np.float32)
    geometry[: len(nodes)] = scene_graph.geometry_features(nodes, h, w)
    node_mask = np.arange(len(nodes) + 1) < len(nodes)
    return scene_graph.letterbox(photo, global_size), crops, geometry, node_mask


@pytest.mark.parametrize("shape", [(120, 180), (180, 120), (150, 150)])
@pytest.mark.parametrize("kind", ["recolour", "fill", "caption", "copy_move"])
def test_an_edit_painted_into_the_record_matches_the_record_of_the_edited_photo(shape, kind):
    h, w = shape
    photo = smooth_photo(h, w, seed=len(kind))
    boxes = np.array([[0.2 * w, 0.3 * h, 0.7 * w, 0.6 * h], [0.5 * w, 0.1 * h, 0.9 * w, 0.8 * h]])
    image, crops, geometry, node_mask = record_of(photo, boxes)
    rng = np.random.default_rng(1)
    edit = record_edits.draw_edit(rng, image, geometry, node_mask, kind)
    # The photo itself, edited as a square view (letterboxed at its own resolution).
    side = max(h, w)
    big, _ = record_edits.apply_edit(edit, scene_graph.letterbox(photo, side),
                                     np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 5)),
                                     np.zeros(1, bool))
    top, left = (side - h) // 2, (side - w) // 2
    edited_photo = big[top : top + h, left : left + w]
    assert (edited_photo != photo).any(axis=-1).mean() > 0.005  # the edit is there
    expected = record_of(edited_photo, boxes)
    painted_image, painted_crops = record_edits.apply_edit(edit, image, crops, geometry,
                                                           node_mask)
    for got, want, before in ((painted_image, expected[0], image),
                              *zip(painted_crops[:3], expected[1][:3], crops[:3], strict=True)):
        # Resampling in another order moves edges by a pixel: compare at a pixel's blur.
        got, want, before = (cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.0)
                             for x in (got, want, before))
        change = np.abs(want - before).sum()
        if change == 0:
            np.testing.assert_allclose(got, want, atol=1)  # the edit misses this crop
        else:
            assert np.abs(got - want).sum() < 0.35 * change, (kind, shape)
    np.testing.assert_array_equal(painted_crops[3], crops[3])  # the padding slot


def test_splice_paints_the_donor_and_leaves_everything_else_alone():
    photo = smooth_photo(128, 128)
    image, crops, geometry, node_mask = record_of(photo, np.array([[20, 30, 90, 100]]))
    donor = np.full_like(image, 200)
    donor[..., 1] = 10
    edit = record_edits.draw_edit(np.random.default_rng(0), image, geometry, node_mask, "splice")
    out, out_crops = record_edits.apply_edit(edit, image, crops, geometry, node_mask, donor)
    changed = (out != image).any(axis=-1)
    assert 0.01 < changed.mean() < 0.15
    # Fully inside the region, the pixels are the donor's.
    alpha = record_edits._sample(edit.alpha, *record_edits.global_frame(96, (0, 96, 0, 96)))
    np.testing.assert_allclose(out[alpha > 0.99], donor[alpha > 0.99], atol=2)
    np.testing.assert_array_equal(out[alpha == 0], image[alpha == 0])
    with pytest.raises(ValueError, match="donor"):
        record_edits.apply_edit(edit, image, crops, geometry, node_mask)


def test_the_background_crop_keeps_its_blacked_out_objects_and_letterbox_bars_stay_black():
    photo = smooth_photo(100, 160)
    image, crops, geometry, node_mask = record_of(photo, np.zeros((0, 4)))
    crops[0, :20] = 0  # as if an object were blacked out of the background node's crop
    bars = image.max(axis=-1) == 0
    assert bars.any()
    rng = np.random.default_rng(4)
    for _ in range(5):
        edit = record_edits.draw_edit(rng, image, geometry, node_mask)
        out, out_crops = record_edits.apply_edit(edit, image, crops, geometry, node_mask,
                                                 donor=image[::-1])
        assert (out[bars] == 0).all()
        assert (out_crops[0, :20] == 0).all()


def test_edits_cover_the_scripted_edits_share_of_the_image_and_unknown_kinds_fail():
    photo = smooth_photo(128, 128)
    image, crops, geometry, node_mask = record_of(photo, np.array([[10, 10, 60, 60]]))
    rng = np.random.default_rng(2)
    for kind in record_edits.KINDS:
        for _ in range(4):
            area = record_edits.draw_edit(rng, image, geometry, node_mask, kind).alpha.mean()
            assert 0.005 < area < 0.12, (kind, area)
    with pytest.raises(ValueError, match="unknown edit kind"):
        record_edits.draw_edit(rng, image, geometry, node_mask, "blur")
