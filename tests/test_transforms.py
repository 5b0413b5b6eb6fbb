"""Tests for preprocessing/transforms.py: Table 1 of the supplement, composition, masks, CLI."""

import collections
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from preprocessing import transforms as T
from preprocessing.transforms import AppliedTransform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 64, 96

# Table 1 of the supplement, typed in again here so that a wrong range in the module fails.
# name -> (train (lo, hi, k) per parameter or None, test (lo, hi, k) per parameter)
TABLE = {
    "compress": ([(0.50, 0.90, 10)], [(0.52, 0.92, 10)]),
    "resize": ([(0.6, 1.2, 10)], [(0.65, 1.25, 10)]),
    "flip": ([(0, 1, 2)], [(0, 1, 2)]),
    "rotate": ([(-25, 25, 15)], [(-26, 26, 10)]),
    "padding": ([(0.01, 0.1, 10)], [(0.015, 0.105, 10)]),
    "sharpness": ([(0.25, 4.0, 15)], [(0.20, 4.2, 10)]),
    "gaussian_noise": ([(0.1, 1.1, 10)], [(0.15, 1.15, 10)]),
    "color": ([(0.5, 2.0, 10)], [(0.45, 2.05, 10)]),
    "shot_noise": (None, [(12, 80, 10)]),
    "impulse_noise": (None, [(0.01, 0.1, 10)]),
    "speckle_noise": (None, [(0.15, 0.35, 10)]),
    "gaussian_blur": (None, [(1.0, 3.0, 10)]),
    "defocus_blur": (None, [(2, 5, 10), (0.1, 0.5, 10)]),
    "pixelate": (None, [(0.25, 0.6, 10)]),
}
ALL = tuple(TABLE)
SPLIT_CASES = [(name, split) for name in ALL for split in ("train", "test")
               if split == "test" or TABLE[name][0] is not None]
GEOMETRIC = ("resize", "flip", "rotate", "padding")


def textured_image(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus fine texture: `uint8 [H, W, 3]`."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    base = np.stack([ys, xs, 0.5 + 0.5 * np.sin(6 * xs + 4 * ys)], axis=-1)
    image = 0.8 * base + 0.2 * rng.random((height, width, 3))
    return np.rint(image * 255).astype(np.uint8)


def square_scene(top=14, left=30, size=20) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on black, `uint8 [64, 96, 3]`, and its mask `bool [1, 64, 96]`."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[top : top + size, left : left + size] = 255
    return image, (image[..., 0] > 0)[None]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def one(name: str, **params: float) -> AppliedTransform:
    return AppliedTransform(name, params)


# ----------------------------------------------------------------------------- grids


def test_constants_name_the_paper_sets():
    assert set(T.TRANSFORMS) == set(ALL)
    assert T.PRIMARY == ("compress", "resize")
    assert set(T.SECONDARY) == {"flip", "rotate", "padding", "sharpness", "gaussian_noise",
                                "color"}
    assert set(T.SEEN_SINGLE) == set(T.SECONDARY) - {"flip"} | {"compress"}
    assert len(T.UNSEEN) == 6 and not set(T.UNSEEN) & set(T.SECONDARY + T.PRIMARY)
    for name, transform in T.TRANSFORMS.items():
        expected_kind = ("primary" if name in T.PRIMARY else
                         "secondary" if name in T.SECONDARY else "unseen")
        assert transform.kind == expected_kind, name
        assert transform.geometric == (name in GEOMETRIC), name
        assert (transform.train is None) == (name in T.UNSEEN), name


@pytest.mark.parametrize("name,split", SPLIT_CASES)
def test_parameters_come_from_the_table_grid_and_cover_it(name, split):
    table = TABLE[name][0 if split == "train" else 1]
    rng = np.random.default_rng(1)
    draws = [T.sample_params(name, rng, split) for _ in range(400)]
    assert all(d.name == name for d in draws)
    keys = T.TRANSFORMS[name].params
    for key, (lo, hi, k) in zip(keys, table, strict=True):
        grid = np.linspace(lo, hi, k)
        values = np.array([d.params[key] for d in draws])
        nearest = np.abs(values[:, None] - grid[None]).argmin(axis=1)
        np.testing.assert_allclose(values, grid[nearest], atol=1e-4)
        assert set(nearest) == set(range(k)), f"{name}.{key} never drew some grid values"
        # Roughly uniform: each of k values near 400 / k times.
        counts = np.bincount(nearest, minlength=k)
        assert counts.min() > 400 / k / 3, counts


@pytest.mark.parametrize("name", [n for n in ALL if TABLE[n][0] is not None and n != "flip"])
def test_test_grid_is_shifted_from_train_grid(name):
    transform = T.TRANSFORMS[name]
    train, test = transform.train_values, transform.test_values
    # Mostly new values: the paper shifts the range so test views are not training views.
    shared = np.isclose(test[:, None], train[None], atol=1e-6).any(axis=1)
    assert shared.mean() <= 0.5


def test_grid_values_properties_match_the_table():
    compress = T.TRANSFORMS["compress"]
    np.testing.assert_allclose(compress.train_values, np.linspace(0.5, 0.9, 10), atol=1e-4)
    np.testing.assert_allclose(compress.test_values, np.linspace(0.52, 0.92, 10), atol=1e-4)
    assert T.TRANSFORMS["pixelate"].train_values is None
    defocus = T.TRANSFORMS["defocus_blur"].test_values
    assert defocus.shape == (100, 2)  # radius and std drawn independently
    assert set(np.round(defocus[:, 0], 4)) == set(np.round(np.linspace(2, 5, 10), 4))


@pytest.mark.parametrize("name", T.UNSEEN)
def test_unseen_transforms_refuse_the_train_split(name):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="evaluation-only"):
        T.sample_params(name, rng, "train")
    with pytest.raises(ValueError, match="evaluation-only"):
        T.single_view(textured_image(), name, rng, "train")


def test_bad_names_splits_and_params_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown transform"):
        T.sample_params("jpeg", rng, "test")
    with pytest.raises(ValueError, match="split"):
        T.sample_params("rotate", rng, "validation")
    with pytest.raises(ValueError, match="parameters"):
        T.apply(textured_image(), one("rotate", degrees=3.0), rng)
    with pytest.raises(ValueError, match="uint8"):
        T.apply(textured_image().astype(np.float32), one("flip", axis=1), rng)
    with pytest.raises(ValueError, match="masks"):
        T.apply(textured_image(), one("flip", axis=1), rng, masks=np.zeros((1, 8, 8), bool))


# ----------------------------------------------------------------------------- outputs


def expected_shape(applied: AppliedTransform) -> tuple[int, int, int]:
    if applied.name == "resize":
        s = applied.params["scale"]
        return round(HEIGHT * s), round(WIDTH * s), 3
    if applied.name == "padding":
        f = applied.params["fraction"]
        return HEIGHT + 2 * round(HEIGHT * f), WIDTH + 2 * round(WIDTH * f), 3
    return HEIGHT, WIDTH, 3


@pytest.mark.parametrize("name,split", SPLIT_CASES)
def test_every_transform_returns_uint8_rgb_of_the_expected_size(name, split):
    image = textured_image()
    rng = np.random.default_rng(2)
    for _ in range(3):
        view = T.single_view(image, name, rng, split)
        assert view.image.dtype == np.uint8 and view.image.flags.c_contiguous
        assert view.image.shape == expected_shape(view.applied[0]), view.description
        assert view.masks is None and len(view.applied) == 1
    assert image.sum() == textured_image().sum()  # the input is not modified in place


@pytest.mark.parametrize("name", ALL)
def test_every_transform_changes_the_image_at_its_strongest_setting(name):
    image = textured_image()
    grids = T.TRANSFORMS[name].test
    params = {key: g.hi for key, g in zip(T.TRANSFORMS[name].params, grids, strict=True)}
    out = T.apply(image, AppliedTransform(name, params), np.random.default_rng(0)).image
    if out.shape == image.shape:
        assert np.abs(out.astype(int) - image).mean() > 1.0, name


def test_resize_keeps_each_side_at_least_8_pixels():
    tiny = textured_image(10, 40)
    out = T.apply(tiny, one("resize", scale=0.6), np.random.default_rng(0)).image
    assert out.shape == (8, 24, 3)


def test_flip_axis_1_mirrors_left_right_and_axis_0_upside_down():
    image = textured_image()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(T.apply(image, one("flip", axis=1), rng).image, image[:, ::-1])
    np.testing.assert_array_equal(T.apply(image, one("flip", axis=0), rng).image, image[::-1])


def test_padding_adds_a_black_border_around_the_unchanged_image():
    image = textured_image()
    out = T.apply(image, one("padding", fraction=0.05), np.random.default_rng(0)).image
    rows, cols = round(HEIGHT * 0.05), round(WIDTH * 0.05)
    np.testing.assert_array_equal(out[rows:-rows, cols:-cols], image)
    border = np.ones(out.shape[:2], bool)
    border[rows:-rows, cols:-cols] = False
    assert (out[border] == 0).all()


def test_rotate_keeps_the_canvas_and_blackens_the_corners():
    image = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
    out = T.apply(image, one("rotate", angle=20.0), np.random.default_rng(0)).image
    assert out.shape == image.shape
    assert (out[0, 0] == 0).all() and (out[-1, -1] == 0).all()
    assert (out[HEIGHT // 2, WIDTH // 2] == 200).all()
    same = T.apply(image, one("rotate", angle=0.0), np.random.default_rng(0)).image
    np.testing.assert_array_equal(same, image)
    # About the exact centre of the pixel grid: a half turn is a point reflection.
    textured = textured_image()
    half_turn = T.apply(textured, one("rotate", angle=180.0), np.random.default_rng(0)).image
    np.testing.assert_array_equal(half_turn, textured[::-1, ::-1])


def test_compress_loses_less_at_higher_quality():
    image = textured_image()
    rng = np.random.default_rng(0)
    errors = [np.abs(T.apply(image, one("compress", quality=q), rng).image.astype(int) - image)
              .mean() for q in (0.5, 0.92)]
    assert errors[0] > errors[1] > 0


def test_gaussian_noise_level_is_ten_times_the_std_on_a_unit_scale():
    grey = np.full((128, 128, 3), 128, np.uint8)
    out = T.apply(grey, one("gaussian_noise", level=0.5), np.random.default_rng(0)).image
    std = (out.astype(float) - 128).std()
    assert abs(std - 0.05 * 255) < 0.05 * 0.05 * 255  # within 5 % of 12.75 grey levels


def test_noise_models_match_their_definitions():
    grey = np.full((128, 128, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    shot = T.apply(grey, one("shot_noise", rate=20.0), rng).image.astype(float) / 255
    assert abs(shot.mean() - 128 / 255) < 0.01  # Poisson keeps the mean
    assert abs(shot.var() - (128 / 255) / 20) < 0.003  # variance x / c, before rounding
    impulse = T.apply(grey, one("impulse_noise", amount=0.05), rng).image
    changed = impulse != 128
    assert abs(changed.mean() - 0.05) < 0.01
    assert set(np.unique(impulse[changed])) == {0, 255}
    speckle = T.apply(grey, one("speckle_noise", std=0.2), rng).image.astype(float) / 255
    assert abs(speckle.std() - 0.2 * 128 / 255) < 0.005  # x * normal(0, c)


def test_blurs_and_pixelate_remove_detail():
    image = textured_image()
    rng = np.random.default_rng(0)
    detail = np.abs(np.diff(image.astype(int), axis=1)).mean()
    for applied in (one("gaussian_blur", sigma=2.0), one("defocus_blur", radius=3.0, std=0.3),
                    one("pixelate", factor=0.25)):
        out = T.apply(image, applied, rng).image
        assert np.abs(np.diff(out.astype(int), axis=1)).mean() < 0.6 * detail, applied
    pixelated = T.apply(image, one("pixelate", factor=0.25), rng).image
    # 96 columns become 24 blocks of 4 identical columns.
    columns = pixelated.swapaxes(0, 1)
    distinct = sum(not np.array_equal(a, b) for a, b in itertools.pairwise(columns))
    assert distinct == 23


def test_defocus_kernel_is_a_normalised_symmetric_disk():
    kernel = T.defocus_kernel(3.0, 0.3)
    assert kernel.dtype == np.float32 and abs(kernel.sum() - 1) < 1e-5
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)
    centre = kernel.shape[0] // 2
    assert kernel[centre, centre + 2] > 0.5 * kernel[centre, centre]  # inside the disk
    assert kernel[centre, centre + 5] < 1e-3 * kernel[centre, centre]  # outside it


def test_color_and_sharpness_factors_work_as_in_pil():
    image = textured_image()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(T.apply(image, one("color", factor=1.0), rng).image, image)
    spread = np.ptp(image.astype(int), axis=-1).mean()
    muted = T.apply(image, one("color", factor=0.45), rng).image
    vivid = T.apply(image, one("color", factor=2.0), rng).image
    assert np.ptp(muted.astype(int), axis=-1).mean() < spread < np.ptp(vivid.astype(int), -1).mean()
    soft = T.apply(image, one("sharpness", factor=0.2), rng).image
    sharp = T.apply(image, one("sharpness", factor=4.0), rng).image
    detail = [np.abs(np.diff(x.astype(int), axis=1)).mean() for x in (soft, image, sharp)]
    assert detail[0] < detail[1] < detail[2]


# ----------------------------------------------------------------------------- randomness


def test_same_generator_state_gives_byte_identical_views():
    image = textured_image()
    for seed in range(5):
        a = T.random_view(image, np.random.default_rng(seed), "test")
        b = T.random_view(image, np.random.default_rng(seed), "test")
        assert a.description == b.description
        assert a.image.tobytes() == b.image.tobytes()
    for name in T.UNSEEN + ("gaussian_noise",):
        a = T.single_view(image, name, np.random.default_rng(7))
        b = T.single_view(image, name, np.random.default_rng(7))
        assert a.image.tobytes() == b.image.tobytes(), name


def test_different_seeds_give_different_views():
    image = textured_image()
    views = [T.random_view(image, np.random.default_rng(seed), "train") for seed in range(8)]
    assert len({v.description for v in views}) == 8
    # Same parameters, different noise: the image depends on the Generator, not only params.
    for applied in (one("gaussian_noise", level=0.5), one("shot_noise", rate=30.0),
                    one("impulse_noise", amount=0.05), one("speckle_noise", std=0.2)):
        a = T.apply(image, applied, np.random.default_rng(0)).image
        b = T.apply(image, applied, np.random.default_rng(1)).image
        assert not np.array_equal(a, b), applied


@pytest.mark.parametrize("split", ["train", "test"])
def test_random_view_is_both_primaries_then_one_to_three_distinct_secondaries(split):
    image = textured_image(24, 32)
    rng = np.random.default_rng(3)
    counts = collections.Counter()
    orders = set()
    for _ in range(300):
        view = T.random_view(image, rng, split)
        names = [t.name for t in view.applied]
        assert names[:2] == ["compress", "resize"]
        secondary = names[2:]
        assert 1 <= len(secondary) <= 3 and len(set(secondary)) == len(secondary)
        assert set(secondary) <= set(T.SECONDARY)
        counts[len(secondary)] += 1
        orders.update(itertools.combinations(secondary, 2))
        quality = view.applied[0].params["quality"]
        grid = T.TRANSFORMS["compress"].train_values if split == "train" else (
            T.TRANSFORMS["compress"].test_values)
        assert np.isclose(grid, quality).any()
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 50, counts
    # Random order: some pair of secondaries appears both ways round.
    assert any((b, a) in orders for a, b in orders)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("applied", [
    one("flip", axis=1), one("flip", axis=0), one("rotate", angle=-25.0),
    one("rotate", angle=17.8571), one("padding", fraction=0.105), one("resize", scale=0.65),
    one("resize", scale=1.25),
], ids=str)
def test_masks_follow_the_square_under_geometric_transforms(applied):
    image, masks = square_scene()
    view = T.apply(image, applied, np.random.default_rng(0), masks=masks)
    assert view.masks.dtype == bool and view.masks.shape == (1, *view.image.shape[:2])
    square = view.image[..., 0] >= 128
    assert iou(view.masks[0], square) > 0.9, iou(view.masks[0], square)
    # And it moved: except for the identity, the mask is not where it was.
    if view.image.shape[:2] == image.shape[:2]:
        assert iou(view.masks[0], masks[0]) < 0.9


def test_masks_stay_aligned_through_random_views():
    image, masks = square_scene()
    other = np.zeros_like(masks)
    other[0, 50:60, 5:15] = True  # an object with no pixels of its own in the image
    both = np.concatenate([masks, other])
    for seed in range(20):
        view = T.random_view(image, np.random.default_rng(seed), "test", masks=both)
        assert view.masks.shape == (2, *view.image.shape[:2])
        square = view.image[..., 0] >= 128
        assert iou(view.masks[0], square) > 0.8, view.description
        assert not (view.masks[0] & view.masks[1]).any()


def test_photometric_transforms_leave_masks_and_none_stays_none():
    image, masks = square_scene()
    rng = np.random.default_rng(0)
    for name in ALL:
        if name in GEOMETRIC:
            continue
        view = T.single_view(image, name, rng, "test", masks=masks)
        np.testing.assert_array_equal(view.masks, masks)
        assert T.single_view(image, name, rng, "test").masks is None
    assert T.single_view(image, "rotate", rng).masks is None


def test_zero_masks_keep_their_shape():
    image, _ = square_scene()
    view = T.apply(image, [one("padding", fraction=0.1), one("resize", scale=0.5)],
                   np.random.default_rng(0), masks=np.zeros((0, HEIGHT, WIDTH), bool))
    assert view.masks.shape == (0, *view.image.shape[:2])


# ----------------------------------------------------------------------------- descriptions


def test_descriptions_are_compact_and_round_trip():
    assert str(one("rotate", angle=-12.14)) == "rotate(angle=-12.14)"
    assert str(one("flip", axis=1)) == "flip(axis=1)"
    assert str(one("defocus_blur", radius=2.3333, std=0.1)) == (
        "defocus_blur(radius=2.3333, std=0.1)")
    assert T.View(textured_image(), None, ()).description == ""
    assert T.parse_description("") == ()
    image = textured_image(24, 32)
    rng = np.random.default_rng(5)
    for _ in range(50):
        view = T.random_view(image, rng, "test")
        parsed = T.parse_description(view.description)
        assert parsed == view.applied
        assert ";" not in view.description.split("; ")[0]
    for name in ALL:
        view = T.single_view(image, name, rng)
        assert T.parse_description(view.description) == view.applied


def test_a_parsed_description_reproduces_the_view():
    image = textured_image()
    rng = np.random.default_rng(11)
    replayed = 0
    while replayed < 5:
        view = T.random_view(image, rng, "train")
        if "gaussian_noise" in view.description:
            continue  # its noise depends on the Generator, not only on the description
        again = T.apply(image, T.parse_description(view.description), np.random.default_rng(99))
        assert again.image.tobytes() == view.image.tobytes(), view.description
        replayed += 1


@pytest.mark.parametrize("text", ["rotate", "rotate(angle=)", "rotate(angle=abc)",
                                  "rotate(angle=1); ", "rotate(angle 1)"])
def test_malformed_descriptions_are_refused(text):
    with pytest.raises(ValueError):
        T.parse_description(text)


def test_applied_transforms_are_hashable_and_compare_by_value():
    a = one("rotate", angle=3)
    b = AppliedTransform("rotate", {"angle": 3.0})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert isinstance(a.params["angle"], float)


# ----------------------------------------------------------------------------- CLI


def test_draw_grid_cli_writes_a_png(tmp_path):
    source = tmp_path / "photo.png"
    Image.fromarray(textured_image()).save(source)
    out = tmp_path / "grid.png"
    assert T.main(["--show", str(source), "--out", str(out), "--seed", "3"]) == 0
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        width, height = grid.size
    assert 800 <= width <= 2000 and 800 <= height <= 2000, grid.size


def test_cli_fails_cleanly_on_a_non_image(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image")
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-m", "preprocessing.transforms", "--show", str(bad), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "notes.txt" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
