"""preprocessing.layout: black frames cut, black-cornered rotations read and undone, one
orientation; the records' maker applies it alike to views and queries."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oscar_jax.inference.records import ImageRecordMaker
from preprocessing import layout, transforms
from tests.samples import photo


def _view(image: np.ndarray, description: str, masks: np.ndarray | None = None):
    return transforms.apply(image, transforms.parse_description(description),
                            np.random.default_rng(0), masks=masks)


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel correlation at 48 x 48, inside the inscribed ellipse (black outside it)."""
    inside = layout.inscribed_ellipse(48, 48)
    return float(np.corrcoef(_small(a)[inside].ravel(), _small(b)[inside].ravel())[0, 1])


def test_content_box_cuts_a_black_frame_exactly():
    image = np.full((40, 60, 3), 120, np.uint8)
    framed = np.pad(image, ((3, 5), (7, 2), (0, 0)))
    assert layout.content_box(framed) == (3, 43, 7, 67)
    assert layout.content_box(np.zeros((10, 10, 3), np.uint8)) == (0, 10, 0, 10)


def test_content_box_threshold_decides_whether_a_sparse_edge_row_is_frame():
    framed = np.pad(np.full((60, 80, 3), 120, np.uint8), ((3, 5), (7, 2), (0, 0)))
    framed[1, 30] = 200  # one stray pixel above the picture: noise to the layout, not to
    framed[20, 0] = 200  # a letterbox reading that needs every content pixel
    assert layout.content_box(framed) == (3, 63, 7, 87)
    assert layout.content_box(framed, min_content=0.0) == (1, 63, 0, 87)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "motorcycle_left"])
@pytest.mark.parametrize("angle", [-25.0, -7.0, 3.0, 12.0, 26.0])
def test_black_corner_angle_reads_a_rotation_within_a_degree(name, angle):
    image = photo(name, 320)
    rotated = _view(image, f"compress(quality=0.6); rotate(angle={angle})").image
    assert layout.black_corner_angle(rotated) == pytest.approx(angle, abs=1.0)


def test_no_angle_without_four_agreeing_black_corners():
    image = photo("chelsea", 320)
    assert layout.black_corner_angle(image) == 0.0
    one_corner = image.copy()
    one_corner[:30, :50] = 0
    assert layout.black_corner_angle(one_corner) == 0.0
    assert layout.black_corner_angle(np.zeros((50, 50, 3), np.uint8)) == 0.0


def test_padded_and_mirrored_copies_share_one_frame_exactly():
    image = photo("coffee", 200)
    canonical, _ = layout.canonical_layout(image)
    for description in ("flip(axis=1)", "flip(axis=0)", "padding(fraction=0.08)",
                        "flip(axis=1); flip(axis=0); padding(fraction=0.03)"):
        copy = _view(image, description).image
        np.testing.assert_array_equal(layout.canonical_layout(copy)[0], canonical)


def test_a_rotated_copy_comes_back_near_its_original_and_far_from_another_photo():
    image, other = photo("chelsea", 320), photo("coffee", 320)
    canonical = layout.canonical_layout(image)[0]
    rotated = _view(image, "compress(quality=0.7); rotate(angle=-18); flip(axis=1); "
                         "padding(fraction=0.05)").image
    back = layout.canonical_layout(rotated)[0]
    assert _correlation(back, canonical) > 0.9
    assert _correlation(back, canonical) > _correlation(rotated, canonical) + 0.2
    assert _correlation(back, layout.canonical_layout(other)[0]) < 0.5


def test_outside_the_inscribed_ellipse_is_black():
    canonical = layout.canonical_layout(photo("chelsea", 200))[0]
    inside = layout.inscribed_ellipse(*canonical.shape[:2])
    assert not canonical[~inside].any() and canonical[inside].mean() > 50


def test_masks_move_with_the_image():
    image = np.full((90, 120, 3), 90, np.uint8)
    image[50:70, 20:45] = (230, 20, 20)  # a red object in the lower left
    masks = np.zeros((1, 90, 120), bool)
    masks[0, 50:70, 20:45] = True
    description = "rotate(angle=14); padding(fraction=0.05)"
    view = _view(image, description, masks)
    canonical, moved = layout.canonical_layout(view.image, view.masks)
    assert moved.shape == (1, *canonical.shape[:2])
    red = (canonical[..., 0] > 150) & (canonical[..., 1] < 80)
    overlap = (red & moved[0]).sum() / max(1, (red | moved[0]).sum())
    assert overlap > 0.8


def test_the_record_maker_puts_views_and_queries_in_one_frame():
    image = photo("coffee", 256)
    copy = _view(image, "flip(axis=1); padding(fraction=0.06)").image
    settings = dict(detector="classical", max_objects=4, crop_size=32, global_size=64)
    plain = ImageRecordMaker(settings)
    canonical = ImageRecordMaker({**settings, "canonical_layout": True})
    assert not np.array_equal(plain.record(image)["image"], plain.record(copy)["image"])
    np.testing.assert_array_equal(canonical.record(image)["image"],
                                  canonical.record(copy)["image"])


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (8, 8), (64, 3)])
def test_tiny_and_black_images_keep_a_frame(shape):
    rng = np.random.default_rng(0)
    for image in (np.zeros((*shape, 3), np.uint8), rng.integers(0, 256, (*shape, 3), np.uint8)):
        out, masks = layout.canonical_layout(image, np.ones((2, *shape), bool))
        assert out.dtype == np.uint8 and out.ndim == 3 and min(out.shape[:2]) >= 1
        assert masks.shape == (2, *out.shape[:2])
