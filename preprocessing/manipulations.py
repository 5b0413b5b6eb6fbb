"""Scripted local edits and procedurally generated scenes for the demo data set.

The PS-Battles data set pairs each photo with Photoshop edits made by people: an object
inserted, removed, recoloured, duplicated, a caption added, a face warped. The demo data set
stands in for it with scripted edits of the same kinds, each touching a few per cent of the
image so that the hash has to notice a small, salient change:

    insert      an object spliced from another image (or a flipped part of the same one)
    remove      an object or a salient region inpainted away (cv2 TELEA)
    recolour    hue rotation and/or saturation change inside an object or region
    copy_move   a region or object copied to another place in the same image
    caption     a short outlined caption
    warp        a local swirl, bulge or pinch in a disc

Every edit is a function `(image, rng, *, masks=None, donor=None, donor_masks=None)`
returning a `Manipulated`; `MANIPULATIONS` names them and `random_manipulation` picks one.
The contract every edit keeps:

* the changed area (`Manipulated.changed`) covers between 1 % and 10 % of the image (the
  edits aim at 2-6 %), and every pixel outside it is bit-for-bit the input pixel;
* the output is a pure function of the inputs and the Generator state;
* given object masks, the returned masks describe the objects after the edit: inserted or
  copied objects are appended (on top), a removed object is dropped, the others are clipped
  where the edit covers them (and dropped if that leaves less than `MIN_OBJECT_FRACTION`).

Without masks, edits go where the image is textured (high local variance), so that they hit
content that matters rather than flat sky.

`generate_scene` draws a textured background and a few shaded, textured shapes of known class
in depth order, with the exact visible mask of each: photos with ground-truth objects that
cost nothing to make.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import cv2
import numpy as np

# The changed area of every edit, as a fraction of the image area.
MIN_CHANGED_FRACTION = 0.01
MAX_CHANGED_FRACTION = 0.10
# What the edits aim at inside that band.
TARGET_FRACTION = (0.02, 0.06)
# Objects smaller than this (fraction of the image) are not kept in scenes or after edits.
MIN_OBJECT_FRACTION = 0.005
# Below this side a caption cannot be legible at 10 % of the image.
MIN_SIDE = 48
# Each edit draws again (from the same Generator) when a draw misses the area band.
_ATTEMPTS = 12
# Sub-pixel precision for cv2.fillPoly (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 4

SCENE_CLASSES = ("ellipse", "rectangle", "polygon", "star", "ring")

CAPTION_WORDS = (
    "FAKE", "NEWS", "SALE", "NEW", "HELLO", "WOW", "LOL", "BREAKING", "SUMMER", "2021",
    "TOP", "BEST", "LIVE", "FREE", "OMG", "HOME", "LOVE", "STOP", "SOLD", "HOT", "EPIC",
    "WIN", "OPEN", "NOPE", "YES", "CAT", "DOG", "PARTY",
)  # fmt: skip
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
)


@dataclasses.dataclass
class Manipulated:
    """One scripted edit of an image of size H x W.

    Attributes:
      image: uint8 [H, W, 3] the edited image.
      changed: bool [H, W] pixels the edit touched; every other pixel equals the input.
      masks: bool [K', H, W] object masks after the edit, or None when no masks were given.
      description: what was done, e.g. 'insert(area=0.043, at=(120,88), source=donor-object)';
        `at` is the (row, column) centre of the changed area.
    """

    image: np.ndarray
    changed: np.ndarray
    masks: np.ndarray | None
    description: str


@dataclasses.dataclass
class Scene:
    """A generated image with known objects.

    Attributes:
      image: uint8 [H, W, 3].
      masks: bool [K, H, W] visible pixels of each object (after occlusion), disjoint,
        back to front.
      classes: int32 [K] indices into `SCENE_CLASSES`.
      description: the objects drawn, back to front, e.g. 'scene(256x256, star(a=0.051,
        at=(120,88)), ...)'; `a` is the drawn area fraction before occlusion.
    """

    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    description: str


class Manipulation(Protocol):
    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        *,
        masks: np.ndarray | None = None,
        donor: np.ndarray | None = None,
        donor_masks: np.ndarray | None = None,
    ) -> Manipulated: ...


# ---------------------------------------------------------------------------------------------
# Validation and the shared contract.


def _check_image(image: np.ndarray, name: str, min_side: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < min_side:
        raise ValueError(f"{name} is {image.shape[0]}x{image.shape[1]}; need sides >= {min_side}")
    return image


def _check_masks(masks: np.ndarray | None, hw: tuple[int, int], name: str) -> np.ndarray | None:
    if masks is None:
        return None
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != hw:
        raise ValueError(f"{name} must be bool [K, {hw[0]}, {hw[1]}], got {masks.shape}")
    return masks.astype(bool, copy=False)


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {rng!r}")


def _finish(
    image: np.ndarray,
    out: np.ndarray,
    changed: np.ndarray,
    masks: np.ndarray | None,
    description: str,
) -> Manipulated:
    # Resampling and blending may round pixels just outside the footprint; the contract is
    # that only `changed` differs, so the footprint is the last word.
    out = np.where(changed[..., None], out, image).astype(np.uint8)
    return Manipulated(image=out, changed=changed, masks=masks, description=description)


def _fraction(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size


def _centre(mask: np.ndarray) -> str:
    """'(row,col)' of the centroid of a non-empty bool [H, W], for descriptions."""
    rows, cols = np.nonzero(mask)
    return f"({round(rows.mean())},{round(cols.mean())})"


def _full(local: np.ndarray, top: int, left: int, hw: tuple[int, int]) -> np.ndarray:
    """bool [h, w] placed at (top, left) -> bool [H, W]."""
    full = np.zeros(hw, bool)
    full[top : top + local.shape[0], left : left + local.shape[1]] = local
    return full


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive, of a non-empty bool [H, W]."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _occlude(masks: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Clips bool [K, H, W] masks by a covering bool [H, W] region -> bool [K', H, W].

    A mask the region reduces below `MIN_OBJECT_FRACTION` of the image is dropped; masks the
    region does not touch stay as they are, however small.
    """
    if len(masks) == 0:
        return masks.copy()
    clipped = masks & ~region
    before = masks.sum((1, 2))
    after = clipped.sum((1, 2))
    keep = (after == before) | (after >= MIN_OBJECT_FRACTION * region.size)
    return clipped[keep]


def _target_px(rng: np.random.Generator, hw: tuple[int, int]) -> float:
    return float(rng.uniform(*TARGET_FRACTION)) * hw[0] * hw[1]


# ---------------------------------------------------------------------------------------------
# Shapes, salience and placement.


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _fill(canvas: np.ndarray, points: np.ndarray, value: int = 1) -> None:
    """Fills a float [n, 2] (x, y) polygon into a uint8 canvas in place, with sub-pixel corners."""
    pts = np.rint(points * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _unit_outline(rng: np.random.Generator, style: str) -> np.ndarray:
    """A closed outline of about unit radius around the origin -> float [n, 2] (x, y)."""
    if style == "polygon":
        n = int(rng.integers(5, 10))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.55, 1.0, n)
    else:
        theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        radius = np.ones_like(theta)
        if style == "blob":
            for k in (2, 3, 4):
                radius += rng.uniform(0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = math.exp(rng.uniform(-0.4, 0.4))
    points = np.stack([radius * np.cos(theta) * aspect, radius * np.sin(theta) / aspect], 1)
    angle = rng.uniform(0, np.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rot.T


def _region_shape(rng: np.random.Generator, area_px: float, style: str) -> np.ndarray:
    """A random 'blob', 'ellipse' or 'polygon' of about `area_px` pixels -> bool [h, w] (tight)."""
    points = _unit_outline(rng, style)
    points *= math.sqrt(area_px / _shoelace(points))
    points -= points.min(0) - 1
    h, w = (np.ceil(points.max(0)[::-1]) + 2).astype(int)
    canvas = np.zeros((h, w), np.uint8)
    _fill(canvas, points)
    mask = canvas.astype(bool)
    top, left, bottom, right = _bbox(mask)
    return mask[top:bottom, left:right]


def _feather(mask: np.ndarray, width: int) -> np.ndarray:
    """Alpha for pasting: bool [h, w] -> float32 [h, w], ramping to 1 over `width` px inside.

    The ramp lies inside the mask, so a feathered paste never touches pixels outside it.
    """
    padded = np.pad(mask, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    return np.clip(dist / (width + 1), 0.0, 1.0).astype(np.float32)


def _paste(out: np.ndarray, patch: np.ndarray, alpha: np.ndarray, top: int, left: int) -> None:
    """Blends uint8 [h, w, 3] `patch` with float32 [h, w] `alpha` into uint8 `out` in place."""
    h, w = alpha.shape
    under = out[top : top + h, left : left + w].astype(np.float32)
    a = alpha[..., None]
    out[top : top + h, left : left + w] = np.rint(a * patch + (1 - a) * under).astype(np.uint8)


def _salience(image: np.ndarray, size: tuple[int, int], colour: bool = False) -> np.ndarray:
    """How textured (and, with `colour`, how colourful) each window of `size` (h, w) is.

    uint8 [H, W, 3] -> float32 [H, W]: local standard deviation of the luminance in an h x w
    window centred on each pixel, plus half the local mean chroma when `colour` is set.
    """
    ksize = (max(3, int(size[1])), max(3, int(size[0])))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(grey, ksize, borderType=cv2.BORDER_REFLECT)
    square = cv2.blur(grey * grey, ksize, borderType=cv2.BORDER_REFLECT)
    score = np.sqrt(np.maximum(square - mean * mean, 0.0))
    if colour:
        chroma = (image.max(-1).astype(np.float32) - image.min(-1)).astype(np.float32)
        score += 0.5 * cv2.blur(chroma, ksize, borderType=cv2.BORDER_REFLECT)
    return score


def _pick_salient(
    rng: np.random.Generator, score: np.ndarray, h: int, w: int, quantile: float = 0.9
) -> tuple[int, int]:
    """Top-left (row, col) of an h x w box that fits, drawn among the most salient centres."""
    height, width = score.shape
    centres = score[h // 2 : h // 2 + height - h + 1, w // 2 : w // 2 + width - w + 1]
    best = np.flatnonzero(centres >= np.quantile(centres, quantile))
    row, col = np.unravel_index(int(rng.choice(best)), centres.shape)
    return int(row), int(col)


def _place(
    rng: np.random.Generator,
    shape: np.ndarray,
    hw: tuple[int, int],
    masks: np.ndarray | None,
    avoid: np.ndarray | None = None,
    tries: int = 40,
) -> tuple[int, int] | None:
    """Top-left for pasting bool [h, w] `shape` into an image of size `hw`, or None.

    Positions are uniform; a position is refused when the shape would overlap `avoid`
    (bool [H, W]), and, given masks, when it would hide more than half of an object or leave
    it below `MIN_OBJECT_FRACTION`, so that existing objects stay objects.
    """
    h, w = shape.shape
    if h > hw[0] or w > hw[1]:
        return None
    areas = None if masks is None or len(masks) == 0 else masks.sum((1, 2))
    min_px = MIN_OBJECT_FRACTION * hw[0] * hw[1]
    fallback = None
    for _ in range(tries):
        top = int(rng.integers(0, hw[0] - h + 1))
        left = int(rng.integers(0, hw[1] - w + 1))
        if avoid is not None and np.any(avoid[top : top + h, left : left + w] & shape):
            continue
        if areas is None:
            return top, left
        hidden = (masks[:, top : top + h, left : left + w] & shape).sum((1, 2))
        remain = areas - hidden
        if np.all((hidden == 0) | ((remain >= 0.5 * areas) & (remain >= min_px))):
            return top, left
        fallback = fallback or (top, left)
    return fallback


def _object_choice(
    rng: np.random.Generator, masks: np.ndarray | None, low: float, high: float
) -> int | None:
    """Index of a random object whose area fraction lies in [low, high], or None."""
    if masks is None or len(masks) == 0:
        return None
    fractions = masks.mean((1, 2))
    eligible = np.flatnonzero((fractions >= low) & (fractions <= high))
    return None if len(eligible) == 0 else int(rng.choice(eligible))


def _salient_region(
    rng: np.random.Generator, image: np.ndarray, style: str = "blob", colour: bool = False
) -> np.ndarray:
    """A random region shape of the target size at a textured place -> bool [H, W]."""
    hw = image.shape[:2]
    shape = _region_shape(rng, _target_px(rng, hw), style)
    if shape.shape[0] > hw[0] or shape.shape[1] > hw[1]:
        shape = shape[: hw[0], : hw[1]]
    score = _salience(image, shape.shape, colour=colour)
    top, left = _pick_salient(rng, score, *shape.shape)
    return _full(shape, top, left, hw)


# ---------------------------------------------------------------------------------------------
# The six edits. Each `_x_once` makes one draw and may return None; the public function retries.


def _cut_source(
    rng: np.random.Generator,
    donor: np.ndarray,
    donor_masks: np.ndarray | None,
    target_px: float,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], str]:
    """Cuts something from the donor -> (patch uint8 [h, w, 3], mask bool [h, w], box, kind).

    One donor object by its mask when there is one big enough, else an irregular region of the
    donor (a random polygon, ellipse or blob, at a textured place) of the same relative size.
    """
    if donor_masks is not None and len(donor_masks):
        areas = donor_masks.sum((1, 2))
        eligible = np.flatnonzero(areas >= max(64, 0.003 * donor[..., 0].size))
        if len(eligible):
            mask = donor_masks[int(rng.choice(eligible))]
            box = _bbox(mask)
            top, left, bottom, right = box
            return donor[top:bottom, left:right], mask[top:bottom, left:right], box, "object"
    # The region takes the same share of the donor as the paste will take of the image, so
    # scaling stays moderate and the cut keeps its texture.
    region = _salient_region(rng, donor, str(rng.choice(["polygon", "ellipse", "blob"])))
    box = _bbox(region)
    top, left, bottom, right = box
    return donor[top:bottom, left:right], region[top:bottom, left:right], box, "region"


def _resize_cut(patch: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scales a cut (uint8 [h, w, 3], bool [h, w]) by `scale` and trims it to its mask."""
    h, w = mask.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    patch = cv2.resize(patch, size, interpolation=interpolation)
    mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.5
    if not mask.any():
        return patch, mask
    top, left, bottom, right = _bbox(mask)
    return patch[top:bottom, left:right], mask[top:bottom, left:right]


def _insert_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    hw = image.shape[:2]
    target = _target_px(rng, hw)
    flip = None
    if donor is None:
        # A flipped cut of the image itself, pasted away from where it came from, is still a
        # foreign object at its new place.
        flip = int(rng.choice([0, 1, -1]))
        donor = cv2.flip(image, flip)
        if masks is not None and len(masks):
            donor_masks = np.stack([cv2.flip(m.astype(np.uint8), flip) for m in masks]) > 0
    patch, cut, box, kind = _cut_source(rng, donor, donor_masks, target)
    source = cut
    scale = math.sqrt(target / max(1, np.count_nonzero(cut)))
    # Keep very elongated cuts inside the frame; the area check catches what that costs.
    scale = min(scale, 0.8 * hw[0] / cut.shape[0], 0.8 * hw[1] / cut.shape[1])
    patch, cut = _resize_cut(patch, cut, scale)
    if not cut.any():
        return None
    if rng.random() < 0.5:
        patch, cut = patch[:, ::-1], cut[:, ::-1]
    avoid = None
    if flip is not None:
        # Where the cut came from, back in the unflipped image.
        avoid = cv2.flip(_full(source, box[0], box[1], hw).astype(np.uint8), flip) > 0
    position = _place(rng, cut, hw, masks, avoid=avoid)
    if position is None:
        return None
    top, left = position
    out = image.copy()
    _paste(out, patch, _feather(cut, int(rng.integers(1, 3))), top, left)
    changed = _full(cut, top, left, hw)
    new_masks = None
    if masks is not None:
        new_masks = np.concatenate([_occlude(masks, changed), changed[None]])
    origin = ("self-flip-" if flip is not None else "donor-") + kind
    description = (
        f"insert(area={_fraction(changed):.3f}, at={_centre(changed)}, source={origin}, "
        f"scale={scale:.2f})"
    )
    return _finish(image, out, changed, new_masks, description)


def _inpaint(image: np.ndarray, region: np.ndarray, radius: int) -> np.ndarray:
    """cv2 TELEA inpainting of bool [H, W] `region`, computed on a crop around it for speed."""
    top, left, bottom, right = _bbox(region)
    margin = 2 * radius + 2
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(image.shape[0], bottom + margin), min(image.shape[1], right + margin)
    out = image.copy()
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    hole = region[top:bottom, left:right].astype(np.uint8)
    out[top:bottom, left:right] = cv2.inpaint(crop, hole, radius, cv2.INPAINT_TELEA)
    return out


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _removal_region(masks: np.ndarray, index: int, radius: int) -> np.ndarray:
    """Object `index` of bool [K, H, W] with a rim of `radius` px that spares the others.

    The rim catches the object's anti-aliased or shaded edge; other objects are left intact
    so the edit removes exactly one object. A small object gets a wider rim, up to 12 px, so
    the edit reaches the minimum area. -> bool [H, W]
    """
    others = np.delete(masks, index, axis=0).any(0)
    while True:
        grown = cv2.dilate(masks[index].astype(np.uint8), _disc(radius)).astype(bool)
        region = grown & ~others
        if _fraction(region) >= 1.1 * MIN_CHANGED_FRACTION or radius >= 12:
            return region
        radius += 2


def _remove_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    radius = int(rng.integers(2, 4))
    candidates = {}
    if masks is not None:
        # Only objects whose region lands in the band qualify: hemmed in by other objects a
        # small one cannot grow, and a big one's rim pushes it over the top.
        for index in np.flatnonzero(masks.mean((1, 2)) >= 0.002):
            region = _removal_region(masks, int(index), radius)
            if MIN_CHANGED_FRACTION <= _fraction(region) <= MAX_CHANGED_FRACTION:
                candidates[int(index)] = region
    if candidates:
        index = int(rng.choice(sorted(candidates)))
        region = candidates[index]
        new_masks = np.delete(masks, index, axis=0)
        what = f"object={index}"
    else:
        region = _salient_region(rng, image, "blob")
        new_masks = None if masks is None else _occlude(masks, region)
        what = "region=blob"
    out = _inpaint(image, region, int(rng.integers(3, 6)))
    description = f"remove(area={_fraction(region):.3f}, at={_centre(region)}, {what})"
    return _finish(image, out, region, new_masks, description)


def _recolour_pixels(
    rgb: np.ndarray, inside: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Recolours uint8 [h, w, 3] pixels; `inside` (bool [h, w]) decides the mode from their colour.

    Saturated content gets a hue rotation of 60-180 degrees (sometimes with a saturation
    change) or is washed out; nearly grey content is tinted, since rotating the hue of grey
    changes nothing.
    """
    hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    if float(sat[inside].mean()) < 0.2:
        hsv[..., 0] = rng.uniform(0, 360)
        hsv[..., 1] = np.clip(sat + rng.uniform(0.35, 0.6), 0, 1)
        how = f"tint={hsv[0, 0, 0]:.0f}"
    else:
        mode = rng.choice(["hue", "hue+sat", "wash"], p=[0.5, 0.3, 0.2])
        shift = 0.0
        factor = 1.0
        if mode != "wash":
            shift = float(rng.uniform(60, 180) * rng.choice([-1, 1]))
            hsv[..., 0] = np.mod(hue + shift, 360)
        if mode == "hue+sat":
            factor = float(rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.4, 2.0)]))
        elif mode == "wash":
            factor = float(rng.uniform(0.0, 0.2))
        hsv[..., 1] = np.clip(sat * factor, 0, 1)
        how = f"hue={shift:+.0f}, sat=x{factor:.2f}"
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), how


def _recolour_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    index = _object_choice(rng, masks, MIN_CHANGED_FRACTION, MAX_CHANGED_FRACTION)
    if index is not None:
        region = masks[index]
        what = f"object={index}"
    else:
        region = _salient_region(rng, image, "blob", colour=True)
        what = "region=blob"
    top, left, bottom, right = _bbox(region)
    local = region[top:bottom, left:right]
    crop = image[top:bottom, left:right]
    recoloured, how = _recolour_pixels(crop, local, rng)
    # An object's mask is its true edge; a made-up region gets a soft edge instead.
    alpha = local.astype(np.float32) if index is not None else _feather(local, 2)
    out = image.copy()
    _paste(out, recoloured, alpha, top, left)
    description = f"recolour(area={_fraction(region):.3f}, at={_centre(region)}, {how}, {what})"
    return _finish(image, out, region, None if masks is None else masks.copy(), description)


def _copy_move_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    hw = image.shape[:2]
    index = _object_choice(rng, masks, MIN_CHANGED_FRACTION, MAX_CHANGED_FRACTION)
    for _ in range(2):
        if index is not None:
            source = masks[index]
            what = f"object={index}"
        else:
            source = _salient_region(rng, image, str(rng.choice(["blob", "ellipse"])))
            what = "region"
        top, left, bottom, right = _bbox(source)
        cut = source[top:bottom, left:right]
        position = _place(rng, cut, hw, masks, avoid=source)
        if position is not None:
            break
        # A sprawling object may have no free place; a region copy still makes the edit.
        index = None
    if position is None:
        return None
    to_top, to_left = position
    out = image.copy()
    patch = image[top:bottom, left:right]
    _paste(out, patch, _feather(cut, 1), to_top, to_left)
    changed = _full(cut, to_top, to_left, hw)
    new_masks = None
    if masks is not None:
        new_masks = _occlude(masks, changed)
        if index is not None:
            new_masks = np.concatenate([new_masks, changed[None]])
    description = (
        f"copy_move(area={_fraction(changed):.3f}, at={_centre(changed)}, "
        f"from={_centre(source)}, {what})"
    )
    return _finish(image, out, changed, new_masks, description)


def _caption_alpha(text: str, font: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Renders outlined text -> (text alpha, outline alpha), float32 [h, w] in [0, 1]."""
    thickness = max(1, round(2 * scale))
    outline = max(1, round(1.2 * scale))
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness + 2 * outline)
    pad = outline + 2
    canvas_hw = (th + baseline + 2 * pad, tw + 2 * pad)
    origin = (pad, th + pad)
    text_canvas = np.zeros(canvas_hw, np.uint8)
    outline_canvas = np.zeros(canvas_hw, np.uint8)
    wide = thickness + 2 * outline
    cv2.putText(outline_canvas, text, origin, font, scale, 255, wide, cv2.LINE_AA)
    cv2.putText(text_canvas, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
    ink = (text_canvas > 0) | (outline_canvas > 0)
    top, left, bottom, right = _bbox(ink)
    crop = np.s_[top:bottom, left:right]
    return text_canvas[crop] / np.float32(255), outline_canvas[crop] / np.float32(255)


def _fit_caption(
    text: str, font: int, target_px: float, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """The font scale whose ink covers about `target_px` and fits in 90 % of the frame."""
    low, high = 0.1, 20.0
    for _ in range(14):
        scale = math.sqrt(low * high)
        text_a, outline_a = _caption_alpha(text, font, scale)
        too_big = outline_a.shape[0] > 0.9 * hw[0] or outline_a.shape[1] > 0.9 * hw[1]
        if too_big or np.count_nonzero(outline_a) > target_px:
            high = scale
        else:
            low = scale
    text_a, outline_a = _caption_alpha(text, font, low)
    return text_a, outline_a, low


def _caption_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    hw = image.shape[:2]
    words = rng.choice(CAPTION_WORDS, size=int(rng.integers(1, 3)), replace=False)
    text = " ".join(str(word) for word in words)
    font = int(rng.choice(_FONTS))
    text_a, outline_a, scale = _fit_caption(text, font, _target_px(rng, hw), hw)
    h, w = outline_a.shape
    if h > hw[0] or w > hw[1]:
        return None
    top = int(rng.integers(0, hw[0] - h + 1))
    left = int(rng.integers(0, hw[1] - w + 1))
    # Bright text on a black outline or dark text on a white one reads on any background.
    if rng.random() < 0.6:
        fill = rng.choice([[255, 255, 255], [255, 230, 40], [255, 80, 60], [120, 255, 120]])
        edge = np.zeros(3)
    else:
        fill = rng.choice([[0, 0, 0], [200, 0, 0], [20, 30, 160]])
        edge = np.full(3, 255.0)
    under = image[top : top + h, left : left + w].astype(np.float32)
    blended = under * (1 - outline_a[..., None]) + edge * outline_a[..., None]
    blended = blended * (1 - text_a[..., None]) + np.asarray(fill) * text_a[..., None]
    out = image.copy()
    out[top : top + h, left : left + w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    changed = _full((outline_a > 0) | (text_a > 0), top, left, hw)
    new_masks = None if masks is None else _occlude(masks, changed)
    description = (
        f"caption(area={_fraction(changed):.3f}, at={_centre(changed)}, text={text!r}, "
        f"scale={scale:.2f})"
    )
    return _finish(image, out, changed, new_masks, description)


def _warp_maps(
    rng: np.random.Generator, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Source maps for a swirl, bulge or pinch in a disc of `radius` -> (map_x, map_y, disc, how).

    Maps are float32 [D, D] with D = 2 * radius + 1 in the crop around the disc; the
    displacement fades to zero at the rim so the warp has no seam.
    """
    size = 2 * radius + 1
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - radius
    r = np.hypot(xs, ys) / radius
    disc = r < 1
    kind = str(rng.choice(["swirl", "bulge", "pinch"]))
    if kind == "swirl":
        strength = float(rng.uniform(2.5, 4.5) * rng.choice([-1, 1]))
        angle = strength * np.clip(1 - r, 0, 1) ** 2
        cos, sin = np.cos(angle), np.sin(angle)
        src_x, src_y = cos * xs - sin * ys, sin * xs + cos * ys
        how = f"kind=swirl, strength={strength:+.2f}"
    else:
        gamma = float(rng.uniform(2.0, 2.8) if kind == "bulge" else rng.uniform(0.4, 0.55))
        factor = np.where(disc, np.maximum(r, 1e-6) ** (gamma - 1), 1.0)
        src_x, src_y = xs * factor, ys * factor
        how = f"kind={kind}, gamma={gamma:.2f}"
    src_x = np.where(disc, src_x, xs) + radius
    src_y = np.where(disc, src_y, ys) + radius
    return src_x.astype(np.float32), src_y.astype(np.float32), disc, how


def _warp_once(
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated | None:
    hw = image.shape[:2]
    radius = int(round(math.sqrt(_target_px(rng, hw) / math.pi)))
    size = 2 * radius + 1
    if radius < 4 or size > min(hw):
        return None
    map_x, map_y, disc, how = _warp_maps(rng, radius)
    top, left = _pick_salient(rng, _salience(image, (size, size)), size, size)
    crop = np.s_[top : top + size, left : left + size]
    out = image.copy()
    warped = cv2.remap(image[crop], map_x, map_y, cv2.INTER_LINEAR, None, cv2.BORDER_REFLECT_101)
    out[crop] = warped
    changed = _full(disc, top, left, hw)
    new_masks = None
    if masks is not None:
        new_masks = masks.copy()
        for k, mask in enumerate(masks):
            moved = cv2.remap(mask[crop].astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST)
            new_masks[k][crop] = np.where(disc, moved > 0, mask[crop])
        before = masks.sum((1, 2))
        after = new_masks.sum((1, 2))
        min_px = MIN_OBJECT_FRACTION * image[..., 0].size
        new_masks = new_masks[(after > 0) & ((after >= before) | (after >= min_px))]
    description = f"warp(area={_fraction(changed):.3f}, at={_centre(changed)}, {how})"
    return _finish(image, out, changed, new_masks, description)


_Once = Callable[
    [np.ndarray, np.random.Generator, np.ndarray | None, np.ndarray | None, np.ndarray | None],
    Manipulated | None,
]


def _run(
    kind: str,
    once: _Once,
    image: np.ndarray,
    rng: np.random.Generator,
    masks: np.ndarray | None,
    donor: np.ndarray | None,
    donor_masks: np.ndarray | None,
) -> Manipulated:
    """Validates the inputs and draws until an edit lands in the area band."""
    _check_rng(rng)
    image = _check_image(image, "image", MIN_SIDE)
    masks = _check_masks(masks, image.shape[:2], "masks")
    if donor is not None:
        donor = _check_image(donor, "donor", 8)
        donor_masks = _check_masks(donor_masks, donor.shape[:2], "donor_masks")
    elif donor_masks is not None:
        raise ValueError("donor_masks were given without a donor image")
    for _ in range(_ATTEMPTS):
        result = once(image, rng, masks, donor, donor_masks)
        if result is not None and (
            MIN_CHANGED_FRACTION <= _fraction(result.changed) <= MAX_CHANGED_FRACTION
        ):
            return result
    raise RuntimeError(
        f"{kind}: no draw changed between {MIN_CHANGED_FRACTION:.0%} and "
        f"{MAX_CHANGED_FRACTION:.0%} of a {image.shape[0]}x{image.shape[1]} image in "
        f"{_ATTEMPTS} attempts; the image or donor may be too small or too elongated"
    )


def insert(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Splices an object into uint8 [H, W, 3] `image`.

    With `donor_masks` (bool [k, h, w]) one object of `donor` (uint8 [h, w, 3]) is cut by its
    mask; with a donor alone, an irregular region (polygon, ellipse or blob) at a textured
    place of it; with no donor, the same from a flipped copy of the image (its own objects
    when masks are given), pasted away from where it came from. The cut is scaled to 2-6 % of
    the image and pasted with a 1-2 px feathered edge at a random place that hides at most
    half of any given object. Given masks (bool [K, H, W]), the pasted footprint is appended.
    """
    return _run("insert", _insert_once, image, rng, masks, donor, donor_masks)


def remove(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Inpaints away one object, or a blob at a textured place when no object fits the band.

    The object's mask (bool [K, H, W] `masks`), dilated by a few pixels but not into other
    objects, is filled by cv2 TELEA inpainting; its mask is dropped, the others are unchanged.
    The donor is ignored.
    """
    return _run("remove", _remove_once, image, rng, masks, donor, donor_masks)


def recolour(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Rotates the hue by 60-180 degrees and/or changes the saturation of an object or blob.

    Given masks, an object of fitting size is recoloured up to its exact edge (masks are
    returned unchanged); otherwise a blob at a textured, colourful place with a soft edge.
    The donor is ignored.
    """
    return _run("recolour", _recolour_once, image, rng, masks, donor, donor_masks)


def copy_move(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Copies an object (given masks) or a textured region to a place it does not overlap.

    A copied object is appended to the masks; the donor is ignored.
    """
    return _run("copy_move", _copy_move_once, image, rng, masks, donor, donor_masks)


def caption(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Writes one or two random words with a contrasting outline, sized to the target area.

    `changed` is the anti-aliased ink of text and outline; masks are clipped by it. The donor
    is ignored.
    """
    return _run("caption", _caption_once, image, rng, masks, donor, donor_masks)


def warp(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Swirls, bulges or pinches a disc at a textured place (cv2.remap).

    `changed` is the disc; masks are warped with it. The donor is ignored.
    """
    return _run("warp", _warp_once, image, rng, masks, donor, donor_masks)


MANIPULATIONS: dict[str, Manipulation] = {
    "insert": insert,
    "remove": remove,
    "recolour": recolour,
    "copy_move": copy_move,
    "caption": caption,
    "warp": warp,
}


def random_manipulation(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    kinds: Sequence[str] | None = None,
    masks: np.ndarray | None = None,
    donor: np.ndarray | None = None,
    donor_masks: np.ndarray | None = None,
) -> Manipulated:
    """Applies one edit, its kind drawn uniformly from `kinds` (default: all of them).

    Args:
      image: uint8 [H, W, 3], sides >= `MIN_SIDE`.
      rng: drives every choice; the same state gives the same output.
      kinds: names from `MANIPULATIONS`.
      masks: bool [K, H, W] objects of `image`, updated in the result.
      donor: uint8 [h, w, 3] an image to take inserted objects from.
      donor_masks: bool [k, h, w] objects of `donor`.
    """
    _check_rng(rng)
    kinds = list(MANIPULATIONS) if kinds is None else list(kinds)
    unknown = [kind for kind in kinds if kind not in MANIPULATIONS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {list(MANIPULATIONS)}, got {kinds}")
    kind = kinds[int(rng.integers(len(kinds)))]
    return MANIPULATIONS[kind](image, rng, masks=masks, donor=donor, donor_masks=donor_masks)


# ---------------------------------------------------------------------------------------------
# Generated scenes.


def _hsv_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    """A random colour -> float32 [3] RGB in [0, 255]."""
    hsv = np.array([[[rng.uniform(0, 360), rng.uniform(*sat), rng.uniform(*val)]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] * 255


def scene_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background -> uint8 [H, W, 3].

    A smooth two-colour gradient, low-frequency colour noise, a few lines or a stripe band,
    and fine grain. `generate_scene` draws its background with this function first, so the
    same Generator state gives the background of that scene.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    start = _hsv_colour(rng, (0.05, 0.5), (0.3, 0.9))
    end = _hsv_colour(rng, (0.05, 0.5), (0.3, 0.9))
    image = start + t[..., None] * (end - start)
    grid = rng.normal(0, 18, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3))
    image += cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        # A band of soft stripes, like a fence or a tiled floor.
        direction = rng.uniform(0, 2 * np.pi)
        period = rng.uniform(6, 24)
        phase = (xs * math.cos(direction) + ys * math.sin(direction)) * (2 * np.pi / period)
        band = np.abs(ys - rng.uniform(0, height)) < rng.uniform(0.1, 0.35) * height
        image += (band * np.sin(phase) * rng.uniform(8, 20))[..., None]
    for _ in range(int(rng.integers(2, 6))):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = image[p0[1], p0[0]] + rng.uniform(-50, 50, 3)
        cv2.line(image, p0, p1, colour.tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    image += rng.normal(0, rng.uniform(1.5, 4), (height, width, 1)).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shape_outlines(rng: np.random.Generator, cls: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit outline of a scene class -> (outer float [n, 2], hole float [m, 2] or None)."""
    aspect = math.exp(rng.uniform(-0.5, 0.5))
    hole = None
    if cls == "rectangle":
        outer = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif cls == "polygon":
        n = int(rng.integers(3, 7))
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.35, 0.35, n) / n * 3
        radius = rng.uniform(0.8, 1.0, n)
        outer = np.stack([radius * np.cos(theta), radius * np.sin(theta)], 1)
    elif cls == "star":
        points = int(rng.integers(5, 8))
        theta = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
        radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, rng.uniform(0.4, 0.6))
        outer = np.stack([radius * np.cos(theta), radius * np.sin(theta)], 1)
        aspect = math.exp(rng.uniform(-0.15, 0.15))
    else:  # ellipse, ring
        theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        outer = np.stack([np.cos(theta), np.sin(theta)], 1)
        if cls == "ring":
            hole = outer * rng.uniform(0.45, 0.65)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    stretch = np.array([aspect, 1 / aspect])
    outer = (outer * stretch) @ rot.T
    if hole is not None:
        hole = (hole * stretch) @ rot.T
    return outer, hole


def _shape_mask(
    rng: np.random.Generator, cls: str, area_px: float, hw: tuple[int, int]
) -> np.ndarray:
    """A shape of class `cls` of about `area_px` pixels, mostly in the frame -> bool [H, W]."""
    outer, hole = _shape_outlines(rng, cls)
    area = _shoelace(outer) - (0.0 if hole is None else _shoelace(hole))
    scale = math.sqrt(area_px / area)
    centre = np.array([rng.uniform(0.12, 0.88) * hw[1], rng.uniform(0.12, 0.88) * hw[0]])
    canvas = np.zeros(hw, np.uint8)
    _fill(canvas, outer * scale + centre)
    if hole is not None:
        _fill(canvas, hole * scale + centre, 0)
    return canvas.astype(bool)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """An object colour far from the mean background colour `under` -> float32 [3]."""
    best, best_distance = None, -1.0
    for _ in range(8):
        colour = _hsv_colour(rng, (0.45, 1.0), (0.35, 1.0))
        distance = float(np.linalg.norm(colour - under))
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= 110:
            break
    return best


def _object_pixels(rng: np.random.Generator, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Shaded, textured appearance for a bool [h, w] mask crop -> float32 [h, w, 3].

    Shading (a linear light or a round highlight), a surface pattern (plain, stripes, checks,
    spots, grain) and a darker rim make a flat shape read as a thing.
    """
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xs / max(w - 1, 1), ys / max(h - 1, 1)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle)
        shade = 1 + rng.uniform(0.3, 0.6) * ramp
    else:
        cy, cx = rng.uniform(0.25, 0.75, 2)
        shade = 1.25 - 0.6 * np.hypot(u - cx, v - cy)
    pattern = str(rng.choice(["plain", "stripes", "checks", "spots", "grain"]))
    texture = np.zeros((h, w), np.float32)
    if pattern == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 14)
        along = xs * math.cos(angle) + ys * math.sin(angle)
        texture = 0.12 * np.sign(np.sin(along * (2 * np.pi / period)))
    elif pattern == "checks":
        cell = int(rng.integers(4, 10))
        texture = 0.1 * (((xs // cell + ys // cell) % 2) * 2 - 1)
    elif pattern == "spots":
        for _ in range(int(rng.integers(3, 9))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            radius = int(rng.integers(2, max(3, min(h, w) // 6)))
            cv2.circle(texture, centre, radius, float(rng.choice([-0.25, 0.2])), -1, cv2.LINE_AA)
    elif pattern == "grain":
        texture = cv2.GaussianBlur(rng.normal(0, 0.15, (h, w)).astype(np.float32), (0, 0), 1.2)
    pixels = colour * (shade + texture)[..., None]
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels[rim] *= 0.65
    return pixels


def generate_scene(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    min_objects: int = 2,
    max_objects: int = 6,
) -> Scene:
    """Draws a textured background and 2-6 objects of `SCENE_CLASSES` in depth order.

    Each object covers about 2-20 % of the image. An object is redrawn (smaller) when it would
    hide more than 65 % of an earlier one or leave it under `MIN_OBJECT_FRACTION`, so every
    object stays recognisable and the count stays within bounds; `masks` are the visible
    pixels, disjoint, back to front.
    """
    _check_rng(rng)
    if min(height, width) < 32:
        raise ValueError(f"scenes need sides >= 32, got {height}x{width}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    hw = (height, width)
    min_px = MIN_OBJECT_FRACTION * height * width
    background = scene_background(rng, height, width)
    image = background.copy()
    count = int(rng.integers(min_objects, max_objects + 1))
    shapes: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(count):
        cls = int(rng.integers(len(SCENE_CLASSES)))
        area = math.exp(rng.uniform(math.log(0.02), math.log(0.2))) * height * width
        for _ in range(12):
            shape = _shape_mask(rng, SCENE_CLASSES[cls], area, hw)
            kept = [v & ~shape for v in visible]
            if np.count_nonzero(shape) >= max(min_px, 0.5 * area) and all(
                np.count_nonzero(k) >= max(min_px, 0.35 * np.count_nonzero(s))
                for k, s in zip(kept, shapes, strict=True)
            ):
                shapes.append(shape)
                visible = [*kept, shape]
                classes.append(cls)
                break
            area *= 0.8
    described = []
    for cls, shape in zip(classes, shapes, strict=True):
        top, left, bottom, right = _bbox(shape)
        local = shape[top:bottom, left:right]
        crop = image[top:bottom, left:right]
        colour = _contrasting_colour(rng, background[top:bottom, left:right][local].mean(0))
        pixels = _object_pixels(rng, local, colour)
        crop[local] = np.clip(np.rint(pixels[local]), 0, 255).astype(np.uint8)
        described.append(f"{SCENE_CLASSES[cls]}(a={_fraction(shape):.3f}, at={_centre(shape)})")
    masks = np.stack(visible) if visible else np.zeros((0, height, width), bool)
    description = f"scene({height}x{width}, {', '.join(described)})"
    classes_array = np.asarray(classes, np.int32)
    return Scene(image=image, masks=masks, classes=classes_array, description=description)
