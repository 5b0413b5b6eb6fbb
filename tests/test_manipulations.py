"""Tests for the scripted local edits and the generated scenes."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest
import skimage.data

from preprocessing import manipulations as M

KINDS = sorted(M.MANIPULATIONS)
SEEDS = range(4)
# Mean absolute difference (per channel, 0-255) inside `changed` that an edit must reach. A
# warp moves pixels by sub-pixel amounts near its rim and inpainting continues the colours
# around it, so those get lower bars.
MIN_MEAN_DIFF = {"warp": 5.0, "remove": 10.0}
DEFAULT_MIN_MEAN_DIFF = 15.0


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(skimage.data.chelsea(), (180, 120), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def donor_photo() -> np.ndarray:
    return cv2.resize(skimage.data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


def scene(seed: int, size: int = 128, **kwargs) -> M.Scene:
    return M.generate_scene(np.random.default_rng(seed), size, size, **kwargs)


def mean_abs_diff(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[where].mean())


def check_contract(kind: str, image: np.ndarray, result: M.Manipulated) -> None:
    assert result.image.dtype == np.uint8 and result.image.shape == image.shape
    assert result.changed.dtype == bool and result.changed.shape == image.shape[:2]
    fraction = result.changed.mean()
    assert M.MIN_CHANGED_FRACTION <= fraction <= M.MAX_CHANGED_FRACTION, result.description
    np.testing.assert_array_equal(result.image[~result.changed], image[~result.changed])
    diff = mean_abs_diff(result.image, image, result.changed)
    assert diff > MIN_MEAN_DIFF.get(kind, DEFAULT_MIN_MEAN_DIFF), (diff, result.description)
    # `changed` is the edit's footprint, not a loose box around it.
    differs = (result.image != image).any(-1)[result.changed].mean()
    assert differs > 0.6, (differs, result.description)
    assert result.description.startswith(kind + "(")


@pytest.mark.parametrize("kind", KINDS)
def test_edit_contract_on_photo(kind, photo, donor_photo):
    for seed in SEEDS:
        for donor in (None, donor_photo):
            result = M.MANIPULATIONS[kind](photo, np.random.default_rng(seed), donor=donor)
            check_contract(kind, photo, result)
            assert result.masks is None


@pytest.mark.parametrize("kind", KINDS)
def test_edit_contract_on_scene(kind):
    for seed in SEEDS:
        target, donor = scene(seed), scene(seed + 100)
        result = M.MANIPULATIONS[kind](
            target.image,
            np.random.default_rng(seed),
            masks=target.masks,
            donor=donor.image,
            donor_masks=donor.masks,
        )
        check_contract(kind, target.image, result)
        assert result.masks.dtype == bool and result.masks.shape[1:] == target.masks.shape[1:]


def test_insert_appends_the_pasted_object_and_clips_the_others():
    for seed in SEEDS:
        target, donor = scene(seed), scene(seed + 100)
        result = M.insert(
            target.image,
            np.random.default_rng(seed),
            masks=target.masks,
            donor=donor.image,
            donor_masks=donor.masks,
        )
        assert "source=donor-object" in result.description
        assert len(result.masks) == len(target.masks) + 1
        np.testing.assert_array_equal(result.masks[-1], result.changed)
        np.testing.assert_array_equal(result.masks[:-1], target.masks & ~result.changed)
        # No existing object loses more than half of itself to the paste.
        kept = result.masks[:-1].sum((1, 2)) / target.masks.sum((1, 2))
        assert kept.min() >= 0.5


def test_insert_without_donor_splices_a_flipped_part_elsewhere(photo):
    for seed in SEEDS:
        target = scene(seed)
        result = M.insert(target.image, np.random.default_rng(seed), masks=target.masks)
        assert "source=self-flip-object" in result.description
        assert len(result.masks) == len(target.masks) + 1
        result = M.insert(photo, np.random.default_rng(seed))
        assert "source=self-flip-region" in result.description


def test_insert_of_a_donor_object_copies_its_pixels():
    # A donor with one flat-coloured object: whatever is pasted (away from the feathered
    # edge) must be that colour, and no background of the donor may come along.
    donor = np.zeros((96, 96, 3), np.uint8)
    donor_masks = np.zeros((1, 96, 96), bool)
    donor_masks[0, 20:60, 30:70] = True
    donor[donor_masks[0]] = (250, 20, 200)
    image = scene(7).image
    for seed in SEEDS:
        result = M.insert(image, np.random.default_rng(seed), donor=donor, donor_masks=donor_masks)
        inner = cv2.erode(result.changed.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert inner.any()
        np.testing.assert_array_equal(
            result.image[inner], np.broadcast_to([250, 20, 200], (inner.sum(), 3))
        )


def test_remove_drops_exactly_one_object_and_inpaints_it():
    removed_any = 0
    for seed in range(8):
        target = scene(seed)
        fractions = target.masks.mean((1, 2))
        result = M.remove(target.image, np.random.default_rng(seed), masks=target.masks)
        if not np.any((fractions >= 0.006) & (fractions <= 0.08)):
            assert "region=blob" in result.description
            continue
        removed_any += 1
        assert len(result.masks) == len(target.masks) - 1
        index = int(re.search(r"object=(\d+)", result.description).group(1))
        np.testing.assert_array_equal(result.masks, np.delete(target.masks, index, axis=0))
        gone = target.masks[index]
        assert np.all(result.changed[gone]), "every pixel of the removed object is repainted"
        assert not np.any(result.changed & np.delete(target.masks, index, axis=0).any(0))
        assert mean_abs_diff(result.image, target.image, gone) > 15
    assert removed_any >= 4


def test_edits_without_masks_go_for_textured_content():
    # Left half flat, right half busy: a salient edit should land on the right.
    rng = np.random.default_rng(0)
    image = np.full((128, 128, 3), 120, np.uint8)
    image[:, 64:] = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
    for kind in ("remove", "recolour", "warp"):
        for seed in SEEDS:
            changed = M.MANIPULATIONS[kind](image, np.random.default_rng(seed)).changed
            assert changed[:, 64:].sum() > 0.8 * changed.sum(), kind


def test_recolour_of_an_object_keeps_masks_and_stays_inside_it():
    for seed in SEEDS:
        target = scene(seed)
        result = M.recolour(target.image, np.random.default_rng(seed), masks=target.masks)
        np.testing.assert_array_equal(result.masks, target.masks)
        match = re.search(r"object=(\d+)", result.description)
        if match:
            np.testing.assert_array_equal(result.changed, target.masks[int(match.group(1))])


def test_copy_move_copies_an_object_to_a_new_place():
    copied = 0
    for seed in range(8):
        target = scene(seed)
        result = M.copy_move(target.image, np.random.default_rng(seed), masks=target.masks)
        match = re.search(r"object=(\d+)", result.description)
        fractions = target.masks.mean((1, 2))
        fits = (fractions >= M.MIN_CHANGED_FRACTION) & (fractions <= M.MAX_CHANGED_FRACTION)
        assert (match is not None) == fits.any(), result.description
        if match is None:
            continue
        copied += 1
        index = int(match.group(1))
        source = target.masks[index]
        assert not np.any(result.changed & source), "the copy does not overlap its source"
        np.testing.assert_array_equal(result.masks[-1], result.changed)
        (st, sl), (dt, dl) = np.argwhere(source).min(0), np.argwhere(result.changed).min(0)
        # Away from the 1 px feather, the copy is the source pixel for pixel.
        inner = cv2.erode(result.changed.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        rows, cols = np.nonzero(inner)
        np.testing.assert_array_equal(
            result.image[rows, cols], target.image[rows - dt + st, cols - dl + sl]
        )
    assert copied >= 4


def test_caption_clips_masks_it_covers():
    for seed in SEEDS:
        target = scene(seed)
        result = M.caption(target.image, np.random.default_rng(seed), masks=target.masks)
        clipped = target.masks & ~result.changed
        areas = clipped.sum((1, 2))
        touched = areas < target.masks.sum((1, 2))
        expected = clipped[~touched | (areas >= M.MIN_OBJECT_FRACTION * 128 * 128)]
        np.testing.assert_array_equal(result.masks, expected)
        assert re.search(r"text='[A-Z0-9 ]+'", result.description)


def test_warp_moves_masks_with_the_pixels():
    for seed in SEEDS:
        target = scene(seed)
        # Paint each object a flat colour of its own, so the warped image says where each
        # object went.
        palette = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40],
                            [220, 40, 220], [40, 220, 220]], np.uint8)  # fmt: skip
        labels = np.zeros_like(target.image)
        for colour, mask in zip(palette, target.masks, strict=False):
            labels[mask] = colour
        result = M.warp(labels, np.random.default_rng(seed), masks=target.masks)
        assert len(result.masks) == len(target.masks)
        outside = ~result.changed
        np.testing.assert_array_equal(result.masks[:, outside], target.masks[:, outside])
        # Interpolated edges match no colour; wherever the paint is clean, it and the masks
        # must agree.
        clean = result.changed & (
            (result.image[..., None, :] == np.vstack([palette, [0, 0, 0]])).all(-1).any(-1)
        )
        assert clean.sum() > 0.5 * result.changed.sum()
        disc = result.changed
        moved = 0
        for colour, old, new in zip(palette, target.masks, result.masks, strict=False):
            painted = (result.image == colour).all(-1)
            assert (new == painted)[clean].mean() > 0.99
            moved += int(np.any(new[disc] != old[disc]))
        assert moved >= 1, "the disc is placed on object edges, so some mask must move"


@pytest.mark.parametrize("kind", KINDS)
def test_same_generator_state_same_edit(kind, photo):
    target = scene(3)
    runs = [
        M.MANIPULATIONS[kind](
            image, np.random.default_rng(11), masks=masks, donor=photo if kind == "insert" else None
        )
        for image, masks in [(target.image, target.masks)] * 2
    ]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    np.testing.assert_array_equal(runs[0].changed, runs[1].changed)
    np.testing.assert_array_equal(runs[0].masks, runs[1].masks)
    assert runs[0].description == runs[1].description
    other = M.MANIPULATIONS[kind](target.image, np.random.default_rng(12), masks=target.masks)
    assert not np.array_equal(other.image, runs[0].image)


def test_random_manipulation_picks_kinds_uniformly_and_reproducibly(photo):
    picked = [
        M.random_manipulation(photo, np.random.default_rng(seed)).description.split("(")[0]
        for seed in range(36)
    ]
    assert set(picked) == set(KINDS)
    again = M.random_manipulation(photo, np.random.default_rng(5))
    first = M.random_manipulation(photo, np.random.default_rng(5))
    np.testing.assert_array_equal(again.image, first.image)
    only = M.random_manipulation(photo, np.random.default_rng(0), kinds=["caption"])
    assert only.description.startswith("caption(")
    with pytest.raises(ValueError, match="kinds"):
        M.random_manipulation(photo, np.random.default_rng(0), kinds=["blur"])


@pytest.mark.parametrize("kind", KINDS)
def test_an_image_without_objects_keeps_an_empty_mask_stack(kind, photo):
    none = np.zeros((0, *photo.shape[:2]), bool)
    result = M.MANIPULATIONS[kind](photo, np.random.default_rng(0), masks=none)
    expected = 1 if kind == "insert" else 0
    assert result.masks.shape == (expected, *photo.shape[:2])
    if expected:
        np.testing.assert_array_equal(result.masks[0], result.changed)


def test_bad_inputs_are_refused_with_a_reason(photo):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8"):
        M.insert(photo.astype(np.float32), rng)
    with pytest.raises(ValueError, match="sides"):
        M.warp(photo[:20], rng)
    with pytest.raises(ValueError, match="masks"):
        M.remove(photo, rng, masks=np.zeros((1, 10, 10), bool))
    with pytest.raises(ValueError, match="donor"):
        M.insert(photo, rng, donor_masks=np.zeros((1, 10, 10), bool))
    with pytest.raises(TypeError, match="Generator"):
        M.caption(photo, 0)


@pytest.mark.parametrize(("min_objects", "max_objects"), [(2, 6), (1, 1), (5, 6)])
def test_scene_masks_are_disjoint_visible_objects(min_objects, max_objects):
    for seed in range(6):
        result = scene(seed, min_objects=min_objects, max_objects=max_objects)
        k = len(result.masks)
        assert min_objects <= k <= max_objects
        assert result.image.dtype == np.uint8 and result.image.shape == (128, 128, 3)
        assert result.masks.dtype == bool and result.masks.shape == (k, 128, 128)
        assert result.classes.dtype == np.int32 and result.classes.shape == (k,)
        assert np.all((result.classes >= 0) & (result.classes < len(M.SCENE_CLASSES)))
        assert result.masks.sum(0).max() <= 1, "masks overlap"
        assert result.masks.mean((1, 2)).min() >= M.MIN_OBJECT_FRACTION
        assert result.masks.mean((1, 2)).max() <= 0.25
        # Generation starts with its background, so the same seed gives it back: objects are
        # exactly where the masks say, and each one stands out from what it covers.
        background = M.scene_background(np.random.default_rng(seed), 128, 128)
        outside = ~result.masks.any(0)
        np.testing.assert_array_equal(result.image[outside], background[outside])
        for mask in result.masks:
            assert mean_abs_diff(result.image, background, mask) > 20


def test_scenes_are_reproducible_varied_and_fast():
    a, b = scene(1, size=256), scene(1, size=256)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.description == b.description
    classes = np.concatenate([scene(seed).classes for seed in range(12)])
    assert set(classes.tolist()) == set(range(len(M.SCENE_CLASSES)))
    start = time.perf_counter()
    for seed in range(20):
        M.generate_scene(np.random.default_rng(seed))
    per_scene = (time.perf_counter() - start) / 20
    # The target is < 30 ms; the bound leaves room for a loaded test machine.
    assert per_scene < 0.1, per_scene
