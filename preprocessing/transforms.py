"""Benign image transforms of the OSCAR-Net supplement, Table 1, with train and test ranges.

A hash must stay put when an image is redistributed: re-compressed, resized, flipped, rotated,
padded, sharpened, made noisy or more colourful. The supplement lists the transforms it trains
and tests on, each with a parameter grid: `[x1 - x2]@k` is `np.linspace(x1, x2, k)` and a
parameter is drawn uniformly from its grid. The test grid is the train grid shifted a little so
that test views are never exactly the views seen in training.

    primary    compress, resize                        always both, in that order
    secondary  flip, rotate, padding, sharpness,       1 to 3 of them, distinct, random order
               gaussian_noise, color
    unseen     shot_noise, impulse_noise,              test only (PSBattles360K-S, unseen half)
               speckle_noise, gaussian_blur,
               defocus_blur, pixelate

Grid values are rounded to 4 decimals (at most 5e-5 from the exact linspace) so that a view's
`description`, stored in every record, names the exact parameters applied: e.g.
`compress(quality=0.7222); resize(scale=0.8667); rotate(angle=-12.1429)`, and
`parse_description` reads it back to the same `AppliedTransform`s.

Geometric transforms (resize, flip, rotate, padding) carry object masks `bool [K, H, W]` along
with nearest-neighbour sampling, so masks stay aligned with the image; photometric ones leave
masks as they are. All randomness comes from the `np.random.Generator` passed in: the same
Generator state gives byte-identical output.

Command line (draws a grid like the supplement's Fig. 3):

    python -m preprocessing.transforms --show IMAGE --out grid.png [--seed 0] [--split test]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import cv2
import numpy as np
import skimage.filters
import skimage.util
from PIL import Image, ImageEnhance

from preprocessing.images import ImageDecodeError, decode_image, decode_jpeg, encode_jpeg

Split = Literal["train", "test"]
SPLITS = ("train", "test")

PRIMARY = ("compress", "resize")
SECONDARY = ("flip", "rotate", "padding", "sharpness", "gaussian_noise", "color")
# The seen half of PSBattles360K-S: single transforms, resize and flip excluded.
SEEN_SINGLE = ("compress", "rotate", "padding", "sharpness", "gaussian_noise", "color")
UNSEEN = (
    "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur", "defocus_blur", "pixelate"
)

# Resize never makes a side shorter than this, so that later crops and filters have pixels.
MIN_SIDE = 8
# Decimals kept in grid values: enough to be the exact linspace for practical purposes, few
# enough that a description stays short and reads back to the very value applied.
GRID_DECIMALS = 4


# ----------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class AppliedTransform:
    """One transform with its parameters, e.g. `rotate(angle=-12.1429)`.

    `params` keeps its insertion order, which is the order `str` writes them in.
    """

    name: str
    params: dict[str, float]

    def __post_init__(self):
        # Floats everywhere, so that a parsed description compares equal to the original and
        # the caller's dict is not aliased by a frozen record.
        object.__setattr__(self, "params", {str(k): float(v) for k, v in self.params.items()})

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    def __str__(self) -> str:
        inner = ", ".join(f"{key}={_format_value(value)}" for key, value in self.params.items())
        return f"{self.name}({inner})"


def _format_value(value: float) -> str:
    # repr is the shortest text that reads back to the same float, so descriptions round-trip
    # exactly; grid values have 4 decimals, so it is short too. Whole numbers drop the ".0" and
    # -0.0 is written as 0.
    text = repr(float(value) + 0.0)
    return text[:-2] if text.endswith(".0") else text


_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)")
_PARAM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def parse_description(text: str) -> tuple[AppliedTransform, ...]:
    """Inverts `View.description`: `"flip(axis=1); rotate(angle=-3.5)"` -> two transforms.

    The empty string (an untransformed view) gives `()`.

    Raises:
      ValueError: the text is not `name(key=value, ...)` items joined by "; ".
    """
    text = text.strip()
    if not text:
        return ()
    applied = []
    for item in text.split(";"):
        call = _CALL.fullmatch(item.strip())
        if call is None:
            raise ValueError(
                f"cannot parse transform {item.strip()!r} in {text!r}: expected "
                "'name(key=value, ...)' items joined by '; ', as View.description writes them"
            )
        name, inner = call.groups()
        params = {}
        for part in (p.strip() for p in inner.split(",")) if inner.strip() else ():
            param = _PARAM.fullmatch(part)
            if param is None:
                raise ValueError(f"cannot parse parameter {part!r} of {name!r} in {text!r}")
            try:
                params[param.group(1)] = float(param.group(2))
            except ValueError as e:
                raise ValueError(
                    f"parameter {part!r} of {name!r} in {text!r} is not a number"
                ) from e
        applied.append(AppliedTransform(name, params))
    return tuple(applied)


@dataclasses.dataclass
class View:
    """A transformed image, its masks carried along, and what was applied.

    Attributes:
      image: `uint8 [H, W, 3]` RGB.
      masks: `bool [K, H, W]` aligned with `image`, or None when none were given.
      applied: the transforms in the order they were applied.
    """

    image: np.ndarray
    masks: np.ndarray | None
    applied: tuple[AppliedTransform, ...]

    @property
    def description(self) -> str:
        """`"; "`-joined transforms, "" for none; `parse_description` reads it back."""
        return "; ".join(str(t) for t in self.applied)


# ----------------------------------------------------------------------------- grids


@dataclasses.dataclass(frozen=True)
class Grid:
    """`[lo - hi]@k` of Table 1: `k` evenly spaced values, drawn uniformly."""

    lo: float
    hi: float
    k: int

    @property
    def values(self) -> np.ndarray:
        """`float64 [k]`, rounded to `GRID_DECIMALS` (adding 0.0 turns -0.0 into 0.0)."""
        return np.round(np.linspace(self.lo, self.hi, self.k), GRID_DECIMALS) + 0.0


ImageFn = Callable[[np.ndarray, Mapping[str, float], np.random.Generator], np.ndarray]
MaskFn = Callable[[np.ndarray, Mapping[str, float]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Transform:
    """One row of Table 1.

    Attributes:
      name: the key in `TRANSFORMS` and in descriptions.
      kind: 'primary', 'secondary' or 'unseen'.
      params: parameter names, in description order.
      train: one grid per parameter for training, None for the evaluation-only transforms.
      test: one grid per parameter for evaluation.
      fn: `(image uint8 [H, W, 3], params, rng) -> uint8 [H', W', 3]`.
      mask_fn: geometric transforms only: `(mask uint8 [H, W], params) -> uint8 [H', W']`
        with nearest-neighbour sampling, landing on the same pixels as `fn`.
    """

    name: str
    kind: str
    params: tuple[str, ...]
    train: tuple[Grid, ...] | None
    test: tuple[Grid, ...]
    fn: ImageFn
    mask_fn: MaskFn | None = None

    @property
    def geometric(self) -> bool:
        """Whether the transform moves pixels (and so must move masks too)."""
        return self.mask_fn is not None

    def grids(self, split: Split) -> tuple[Grid, ...]:
        """The grids for `split`, one per parameter.

        Raises:
          ValueError: `split` is not 'train'/'test', or 'train' for an unseen transform.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split == "train":
            if self.train is None:
                raise ValueError(
                    f"{self.name!r} is an unseen transform, evaluation-only: it has no train "
                    "range; use split='test' (or one of the seen transforms for training)"
                )
            return self.train
        return self.test

    @property
    def train_values(self) -> np.ndarray | None:
        """Train grid values: `[k]` for one parameter, `[k1 * k2, 2]` rows for two; None for
        an unseen transform."""
        return None if self.train is None else _grid_values(self.train)

    @property
    def test_values(self) -> np.ndarray:
        """Test grid values, shaped as `train_values`."""
        return _grid_values(self.test)


def _grid_values(grids: tuple[Grid, ...]) -> np.ndarray:
    if len(grids) == 1:
        return grids[0].values
    # Parameters are drawn independently, so the joint grid is every combination.
    mesh = np.meshgrid(*(g.values for g in grids), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)


# ----------------------------------------------------------------------------- helpers


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float64 on [0, 1]."""
    return image.astype(np.float64) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float on [0, 1] (values outside are clipped) -> uint8, rounded to nearest."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) after scaling both sides, each side at least `MIN_SIDE`."""
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def _pad_widths(height: int, width: int, fraction: float) -> tuple[int, int]:
    """Rows and columns added on each side: that fraction of height and of width."""
    return round(height * fraction), round(width * fraction)


def rotation_matrix(height: int, width: int, angle: float) -> np.ndarray:
    # About the exact centre of the pixel grid ((w - 1) / 2), so that a symmetric image stays
    # symmetric and a mask lands on the same pixels as the image.
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return cv2.getRotationMatrix2D(centre, float(angle), 1.0)


# ----------------------------------------------------------------------------- primary


def _compress(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    # JPEG quality on OpenCV's 0-100 scale; the same codec as the records.
    return decode_jpeg(encode_jpeg(image, quality=round(100 * p["quality"])))


def _resize(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    height, width = _resized_size(*image.shape[:2], p["scale"])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _resize_mask(mask: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    height, width = _resized_size(*mask.shape, p["scale"])
    # INTER_NEAREST_EXACT samples at pixel centres like INTER_LINEAR does; plain INTER_NEAREST
    # floors and drifts by up to a pixel towards the top left.
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


# ----------------------------------------------------------------------------- secondary


def _flip_array(array: np.ndarray, axis: float) -> np.ndarray:
    """axis 1 mirrors left-right (horizontal flip), axis 0 upside down; `array` is [H, W, ...]."""
    if axis not in (0.0, 1.0):
        raise ValueError(f"flip axis must be 0 (vertical) or 1 (horizontal), got {axis}")
    return np.ascontiguousarray(np.flip(array, axis=int(axis)))


def _flip(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    return _flip_array(image, p["axis"])


def _flip_mask(mask: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return _flip_array(mask, p["axis"])


def _rotate(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.warpAffine(
        image, rotation_matrix(height, width, p["angle"]), (width, height),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def _rotate_mask(mask: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    height, width = mask.shape
    return cv2.warpAffine(
        mask, rotation_matrix(height, width, p["angle"]), (width, height),
        flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def _padding(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    rows, cols = _pad_widths(*image.shape[:2], p["fraction"])
    return np.pad(image, ((rows, rows), (cols, cols), (0, 0)))


def _padding_mask(mask: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    rows, cols = _pad_widths(*mask.shape, p["fraction"])
    return np.pad(mask, ((rows, rows), (cols, cols)))


def _sharpness(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    return np.asarray(ImageEnhance.Sharpness(Image.fromarray(image)).enhance(p["factor"]))


def _gaussian_noise(
    image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Adds zero-mean Gaussian noise of standard deviation `level / 10` on [0, 1] intensities.

    Table 1 gives the level without a unit; this reads it as ten times the standard deviation
    on a [0, 1] scale: train levels 0.1-1.1 are 2.6 to 28 grey levels, test 0.15-1.15 are 3.8
    to 29. Noise is independent per pixel and channel.
    """
    noise = rng.normal(0.0, p["level"] / 10.0, size=image.shape)
    return _to_uint8(_to_float(image) + noise)


def _color(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    return np.asarray(ImageEnhance.Color(Image.fromarray(image)).enhance(p["factor"]))


# ----------------------------------------------------------------------------- unseen


def _shot_noise(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    # Poisson photon counts at `rate` photons per unit intensity: fewer photons, more noise.
    rate = p["rate"]
    return _to_uint8(rng.poisson(_to_float(image) * rate) / rate)


def _impulse_noise(
    image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    noisy = skimage.util.random_noise(_to_float(image), mode="s&p", amount=p["amount"], rng=rng)
    return _to_uint8(noisy)


def _speckle_noise(
    image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    x = _to_float(image)
    return _to_uint8(x + x * rng.normal(0.0, p["std"], size=x.shape))


def _gaussian_blur(
    image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    blurred = skimage.filters.gaussian(_to_float(image), sigma=p["sigma"], channel_axis=-1)
    return _to_uint8(blurred)


def defocus_kernel(radius: float, std: float) -> np.ndarray:
    """Normalised disk of `radius`, softened by a Gaussian of `std`: `float32 [S, S]`, sum 1.

    The support leaves a margin of three pixels around the disk so the Gaussian does not spill
    off the kernel's edge.
    """
    half = math.ceil(radius) + 3
    grid = np.arange(-half, half + 1, dtype=np.float32)
    xs, ys = np.meshgrid(grid, grid)
    disk = (xs**2 + ys**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, (0, 0), sigmaX=std)
    return kernel / kernel.sum()


def _defocus_blur(
    image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    kernel = defocus_kernel(p["radius"], p["std"])
    blurred = cv2.filter2D(image.astype(np.float32) / 255.0, -1, kernel)
    return _to_uint8(blurred)


def _pixelate(image: np.ndarray, p: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    small = (max(1, round(width * p["factor"])), max(1, round(height * p["factor"])))
    pil = Image.fromarray(image)
    return np.asarray(pil.resize(small, Image.BOX).resize((width, height), Image.BOX))


# ----------------------------------------------------------------------------- registry


def _one(lo: float, hi: float, k: int) -> tuple[Grid, ...]:
    return (Grid(lo, hi, k),)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("compress", "primary", ("quality",),
                  _one(0.50, 0.90, 10), _one(0.52, 0.92, 10), _compress),
        Transform("resize", "primary", ("scale",),
                  _one(0.6, 1.2, 10), _one(0.65, 1.25, 10), _resize, _resize_mask),
        Transform("flip", "secondary", ("axis",),
                  _one(0, 1, 2), _one(0, 1, 2), _flip, _flip_mask),
        Transform("rotate", "secondary", ("angle",),
                  _one(-25, 25, 15), _one(-26, 26, 10), _rotate, _rotate_mask),
        Transform("padding", "secondary", ("fraction",),
                  _one(0.01, 0.1, 10), _one(0.015, 0.105, 10), _padding, _padding_mask),
        Transform("sharpness", "secondary", ("factor",),
                  _one(0.25, 4.0, 15), _one(0.20, 4.2, 10), _sharpness),
        Transform("gaussian_noise", "secondary", ("level",),
                  _one(0.1, 1.1, 10), _one(0.15, 1.15, 10), _gaussian_noise),
        Transform("color", "secondary", ("factor",),
                  _one(0.5, 2.0, 10), _one(0.45, 2.05, 10), _color),
        Transform("shot_noise", "unseen", ("rate",), None, _one(12, 80, 10), _shot_noise),
        Transform("impulse_noise", "unseen", ("amount",),
                  None, _one(0.01, 0.1, 10), _impulse_noise),
        Transform("speckle_noise", "unseen", ("std",),
                  None, _one(0.15, 0.35, 10), _speckle_noise),
        Transform("gaussian_blur", "unseen", ("sigma",),
                  None, _one(1.0, 3.0, 10), _gaussian_blur),
        Transform("defocus_blur", "unseen", ("radius", "std"),
                  None, (Grid(2, 5, 10), Grid(0.1, 0.5, 10)), _defocus_blur),
        Transform("pixelate", "unseen", ("factor",), None, _one(0.25, 0.6, 10), _pixelate),
    )
}


def _lookup(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name]


# ----------------------------------------------------------------------------- public API


def sample_params(name: str, rng: np.random.Generator, split: Split) -> AppliedTransform:
    """Draws each parameter of transform `name` uniformly from its `split` grid.

    Raises:
      ValueError: unknown name or split, or split='train' for an unseen transform.
    """
    transform = _lookup(name)
    grids = transform.grids(split)
    params = {
        key: float(grid.values[rng.integers(grid.k)])
        for key, grid in zip(transform.params, grids, strict=True)
    }
    return AppliedTransform(name, params)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"transforms expect uint8 [H, W, 3] RGB, got {image.dtype} {tuple(image.shape)}; "
            "decode files with preprocessing.images.decode_image"
        )
    return image


def _check_masks(masks: np.ndarray | None, image: np.ndarray) -> np.ndarray | None:
    if masks is None:
        return None
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"masks must be bool [K, H, W] with (H, W) = {image.shape[:2]} of the image, got "
            f"{masks.dtype} {tuple(masks.shape)}"
        )
    return masks


def _check_params(transform: Transform, applied: AppliedTransform) -> None:
    if set(applied.params) != set(transform.params):
        raise ValueError(
            f"{applied} needs exactly the parameters {transform.params} of {transform.name!r}; "
            "draw them with sample_params"
        )


def _apply_one(
    image: np.ndarray, masks: np.ndarray | None, applied: AppliedTransform,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    transform = _lookup(applied.name)
    _check_params(transform, applied)
    out = np.ascontiguousarray(transform.fn(image, applied.params, rng), dtype=np.uint8)
    if masks is None or transform.mask_fn is None:
        return out, masks
    # One mask at a time: OpenCV's warps handle at most four channels.
    warped = [transform.mask_fn(m.astype(np.uint8), applied.params) > 0 for m in masks]
    new_masks = np.stack(warped) if warped else np.zeros((0, *out.shape[:2]), dtype=bool)
    return out, new_masks


def apply(
    image: np.ndarray,
    applied: AppliedTransform | Sequence[AppliedTransform],
    rng: np.random.Generator,
    masks: np.ndarray | None = None,
) -> View:
    """Applies one transform, or several in order, to `image` (and `masks` where geometric).

    Args:
      image: `uint8 [H, W, 3]` RGB.
      applied: what to apply, from `sample_params` or `parse_description`.
      rng: the noise transforms draw their noise from it.
      masks: optional `bool [K, H, W]` object masks to keep aligned with the image.

    Returns:
      A `View` with `image` `uint8 [H', W', 3]` and masks `bool [K, H', W']` (or None).
    """
    image = _check_image(image)
    masks = _check_masks(masks, image)
    steps = (applied,) if isinstance(applied, AppliedTransform) else tuple(applied)
    for step in steps:
        image, masks = _apply_one(image, masks, step, rng)
    return View(image=image, masks=masks, applied=steps)


def random_view(
    image: np.ndarray, rng: np.random.Generator, split: Split, masks: np.ndarray | None = None
) -> View:
    """The paper's benign view: compress, resize, then 1-3 distinct secondary transforms.

    The secondary transforms come in random order. Parameters are drawn from the `split`
    grids; the output is a pure function of `image`, `masks` and the Generator state.
    """
    count = int(rng.integers(1, 4))
    order = rng.permutation(len(SECONDARY))[:count]
    names = PRIMARY + tuple(SECONDARY[i] for i in order)
    steps = tuple(sample_params(name, rng, split) for name in names)
    return apply(image, steps, rng, masks=masks)


def single_view(
    image: np.ndarray,
    name: str,
    rng: np.random.Generator,
    split: Split = "test",
    masks: np.ndarray | None = None,
) -> View:
    """One transform with parameters drawn from its `split` grid (PSBattles360K-S style)."""
    return apply(image, sample_params(name, rng, split), rng, masks=masks)


# ----------------------------------------------------------------------------- figure

GRID_ORDER = PRIMARY + SECONDARY + UNSEEN


def draw_grid(image: np.ndarray, out_path: str, seed: int = 0, split: Split = "test") -> None:
    """Saves a PNG like the supplement's Fig. 3: the original, each of the 14 transforms with
    its parameters in the title, and one mixed `random_view`.

    Unseen transforms have no train range, so they are drawn from their test grid whatever
    `split` says (their titles are marked "unseen").
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    image = _check_image(image)
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    panels = [("original", image)]
    for name in GRID_ORDER:
        kind = TRANSFORMS[name].kind
        view = single_view(image, name, rng, "test" if kind == "unseen" else split)
        label = f"{view.description} [unseen]" if kind == "unseen" else view.description
        panels.append((label, view.image))
    mixed = random_view(image, rng, split)
    panels.append((f"mixed: {mixed.description}", mixed.image))

    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, panel) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(panel)
        # Panels are drawn at one size, so the pixel size is the only sign of resize/padding.
        size = f"{panel.shape[0]}x{panel.shape[1]} px"
        ax.set_title("\n".join([*textwrap.wrap(title, 40), size]), fontsize=8)
    fig.suptitle(f"benign transforms, {split} ranges, seed {seed}", fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(out_path, format="png", dpi=80)
    finally:
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preprocessing.transforms",
        description="Draw every benign transform of Table 1 on one image (supplement Fig. 3).",
    )
    parser.add_argument("--show", required=True, metavar="IMAGE", help="image file to show")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parameter draws")
    parser.add_argument("--split", choices=SPLITS, default="test", help="parameter ranges")
    args = parser.parse_args(argv)
    try:
        image = decode_image(args.show)
    except ImageDecodeError as e:
        print(f"error: {e}; pass a readable image file to --show", file=sys.stderr)
        return 2
    try:
        draw_grid(image, args.out, seed=args.seed, split=args.split)
    except OSError as e:
        print(f"error: cannot write {args.out!r}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
