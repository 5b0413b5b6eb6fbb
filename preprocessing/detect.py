"""Object detection for scene graphs: a `Detector` protocol and its backends.

Backends are chosen by name (`make_detector(name, **options)`):

* `classical`: the embedded default, an approximation of Mask R-CNN that needs no weights.
* `coco_json`: detections computed elsewhere, read from a COCO results JSON with RLE masks.
* `detectron2`: Mask R-CNN R50-FPN 3x through detectron2 (optional extra, local weights).
* `oracle`: the ground-truth masks that procedurally generated scenes carry.

Every backend returns `Detections` sorted by descending score, boxes xyxy in pixels and bool
masks of the image's own size. Backends are small picklable dataclasses: anything heavy
(cascades, JSON indexes, networks) is loaded on the first call and dropped when pickled, so
a detector can be sent to worker processes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Detections:
    """Instances found in one image of size H x W, sorted by descending score.

    Attributes:
      boxes: float32 [K, 4] xyxy in pixels, x in [0, W], y in [0, H].
      scores: float32 [K] in [0, 1].
      classes: int32 [K] class ids (backend-specific; COCO ids for Mask R-CNN backends).
      masks: bool [K, H, W] instance masks.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray

    def __post_init__(self):
        k = len(self.boxes)
        if self.boxes.shape != (k, 4) or self.scores.shape != (k,) or self.classes.shape != (k,):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"classes {self.classes.shape}"
            )
        if self.masks.ndim != 3 or self.masks.shape[0] != k:
            raise ValueError(f"masks must be [K={k}, H, W], got {self.masks.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image these detections belong to."""
        return self.masks.shape[1], self.masks.shape[2]

    @classmethod
    def empty(cls, height: int, width: int) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            classes=np.zeros((0,), np.int32),
            masks=np.zeros((0, height, width), bool),
        )

    def top(self, max_objects: int, min_score: float = 0.0) -> Detections:
        """The `max_objects` highest-scoring detections with score >= `min_score`."""
        order = np.argsort(-self.scores, kind="stable")
        order = order[self.scores[order] >= min_score][:max_objects]
        return Detections(
            boxes=self.boxes[order].astype(np.float32),
            scores=self.scores[order].astype(np.float32),
            classes=self.classes[order].astype(np.int32),
            masks=self.masks[order].astype(bool),
        )


class Detector(Protocol):
    """Finds object instances in an RGB image.

    `name` identifies the image for backends that look detections up (`coco_json`);
    `gt_masks` (bool [K, H, W]) carries ground truth for the `oracle` backend. Other backends
    ignore both.
    """

    def __call__(
        self, image: np.ndarray, *, name: str | None = None, gt_masks: np.ndarray | None = None
    ) -> Detections: ...


# --------------------------------------------------------------------------- shared helpers


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes of bool masks `[K, H, W]`.

    x2 and y2 are exclusive (last set column/row + 1), so a one-pixel mask at (y, x) has box
    `[x, y, x + 1, y + 1]`. An empty mask gives `[0, 0, 0, 0]`.

    Returns:
      float32 [K, 4].
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [K, H, W], got shape {masks.shape}")
    boxes = np.zeros((masks.shape[0], 4), np.float32)
    cols = masks.any(axis=1)  # [K, W]
    rows = masks.any(axis=2)  # [K, H]
    for k in np.flatnonzero(cols.any(axis=1)):
        xs = np.flatnonzero(cols[k])
        ys = np.flatnonzero(rows[k])
        boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Intersection over union of bool masks, broadcast over leading axes.

    `a` and `b` are `[..., H, W]`; the leading axes broadcast as in numpy, so two single masks
    give a float and `mask_iou(a[:, None], b[None])` gives the `[K, M]` pairwise matrix. Two
    empty masks have IoU 0.
    """
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    iou = np.divide(inter, union, out=np.zeros(np.shape(inter), np.float64), where=union > 0)
    return float(iou) if iou.ndim == 0 else iou


def _pairwise_iou(masks: np.ndarray) -> np.ndarray:
    """float64 [K, K] IoU of bool masks `[K, H, W]` via one matrix product (small H, W only:
    float32 counts are exact below 2**24 pixels)."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = (flat @ flat.T).astype(np.float64)
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _nms(scores: np.ndarray, masks: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression on mask IoU, best score first.

    `scores` float [K], `masks` bool [K, H, W]; ties are broken by index so the result does
    not depend on anything but the inputs.
    """
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    iou = _pairwise_iou(masks)
    kept: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in kept):
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f"detectors take uint8 RGB images, got dtype {image.dtype}; decode images with "
            "preprocessing.images.decode_image"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an image [H, W, 3], got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _check_options(min_score: float, max_objects: int) -> None:
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if max_objects < 0:
        raise ValueError(f"max_objects must be >= 0, got {max_objects}")


class _Lazy:
    """Mixin for dataclass backends: attributes named in `_LAZY` are caches that are rebuilt
    on the first call after unpickling instead of being sent to worker processes."""

    _LAZY: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._LAZY:
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _cache_field() -> Any:
    return dataclasses.field(default=None, init=False, repr=False, compare=False)


# --------------------------------------------------------------------------- classical

CLASSICAL_CLASSES: tuple[str, ...] = ("region", "face", "cat_face", "person", "upper_body")
"""Names of the `classical` backend's class ids: 0 is a salient region without a category
(graph-segmentation proposal); 1-4 come from the OpenCV Haar cascades."""

# (class id, cascade file shipped with opencv, smallest object side as a fraction of the
# longer image side). Faces below ~1/8 of the image side matter little to a scene graph and
# the smallest scales dominate the cost of a cascade, so they are not searched.
_CASCADES: tuple[tuple[int, str, float], ...] = (
    (1, "haarcascade_frontalface_default.xml", 0.12),
    (2, "haarcascade_frontalcatface.xml", 0.12),
    (3, "haarcascade_fullbody.xml", 0.25),
    (4, "haarcascade_upperbody.xml", 0.2),
)
# Level weight (sum of the last stage's weak classifiers) at which a cascade detection scores
# 0.5, and the logistic's slope. Weights above ~4 are clear detections; the weak survivors of
# all stages that cascades are known for sit near or below 1.
_HAAR_WEIGHT_AT_HALF = 2.0
_HAAR_SLOPE = 1.5
_HAAR_SCALE_FACTOR = 1.2
_HAAR_MIN_NEIGHBORS = 4
_GRABCUT_ITERATIONS = 2
_GRABCUT_SEED = 0

# Graph segmentation at the working size (256 px on the longer side): `scale` sets the
# preferred segment size; segments under `_MIN_AREA` of the image are noise.
_FELZENSZWALB_SCALE = 150.0
_FELZENSZWALB_SIGMA = 0.8
_FELZENSZWALB_MIN_SIZE = 0.002
_MIN_AREA = 0.005
_MAX_AREA = 0.5
# A segment that runs along a fifth of the image frame, or lies mostly in the outer band, is
# background (sky, floor, table, wall), which Mask R-CNN does not report either.
_MAX_FRAME_SHARE = 0.2
_BORDER_BAND = 0.04
_MAX_BAND_SHARE = 0.5
# Score x / (1 + x) with x = size * shape * (contrast / _CONTRAST_AT_HALF) ** 2: a compact,
# thick segment of >= _AREA_FULL of the image scores 0.5 when its mean saliency is
# _CONTRAST_AT_HALF times the image mean. Shape is low for segments that fill little of their
# box (_FILL_FULL) or have few pixels away from their boundary (_INTERIOR_FULL).
_AREA_FULL = 0.03
_FILL_FULL = 0.5
_INTERIOR_FULL = 0.5
_CONTRAST_AT_HALF = 1.25
_NMS_IOU = 0.5
# Proposals that reach mask-building; the rest cannot make the top `max_objects` anyway.
_MAX_PROPOSALS = 48
# MSER proposals: a region must stay the same for this many grey levels of the saliency map
# (OpenCV's default delta) to count as stable.
_MSER_DELTA = 5
PROPOSALS = ("segments", "mser")


def saliency_map(rgb: np.ndarray, side: int = 64) -> np.ndarray:
    """Bottom-up saliency of an RGB image: mean of two cheap maps, each scaled to [0, 1].

    * spectral residual (Hou and Zhang, CVPR 2007): the log-amplitude spectrum minus its local
      average keeps what is unexpected in the image; computed on a `side`-pixel thumbnail;
    * colour contrast (Achanta et al., CVPR 2009): Lab distance of each blurred pixel from
      the image's median colour, which fills the inside of large uniform objects that the
      spectral residual only outlines.

    Args:
      rgb: uint8 [H, W, 3].

    Returns:
      float32 [H, W] in [0, 1].
    """
    height, width = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    scale = side / max(height, width)
    thumb_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumb = cv2.resize(grey, thumb_size, interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(thumb)
    log_amplitude = np.log(np.abs(spectrum) + 1e-6)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_REPLICATE)
    spectral = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    spectral = cv2.GaussianBlur(spectral.astype(np.float32), (0, 0), side / 24)
    spectral = cv2.resize(spectral, (width, height), interpolation=cv2.INTER_LINEAR)

    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (0, 0), 2.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    contrast = np.linalg.norm(lab - np.median(lab.reshape(-1, 3), axis=0), axis=-1)

    def unit(x: np.ndarray) -> np.ndarray:
        top = float(x.max())
        return x / top if top > 0 else np.zeros_like(x)

    return (0.5 * unit(spectral) + 0.5 * unit(contrast)).astype(np.float32)


@dataclasses.dataclass
class _Candidates:
    """Instances at the working size before suppression: scores float [K], classes int [K],
    masks bool [K, h, w]."""

    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[_Candidates], height: int, width: int) -> _Candidates:
        parts = [p for p in parts if len(p.scores)]
        if not parts:
            return cls(np.zeros(0), np.zeros(0, np.int32), np.zeros((0, height, width), bool))
        return cls(
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.classes for p in parts]),
            np.concatenate([p.masks for p in parts]),
        )


def _grabcut_mask(bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Foreground of `box` (x, y, w, h) by GrabCut, as a bool mask of `bgr`'s size.

    GrabCut runs on a window around the box rather than the whole image: the pixels far
    outside a box say little about its background model and cost most of the time. Falls back
    to the ellipse inscribed in the box when GrabCut has no background to learn from or finds
    almost no foreground: a cascade hit is good evidence of an object there.
    """
    height, width = bgr.shape[:2]
    x, y, w, h = box
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(width, x + w + w // 2), min(height, y + h + h // 2)
    # Cascades box the inner face or torso; a little slack lets GrabCut take the whole object.
    rx0, ry0 = max(x0 + 1, x - w // 10), max(y0 + 1, y - h // 10)
    rx1, ry1 = min(x1 - 1, x + w + w // 10), min(y1 - 1, y + h + h // 10)
    full = np.zeros((height, width), bool)
    fallback = np.zeros((height, width), np.uint8)
    cv2.ellipse(fallback, ((x + w / 2, y + h / 2), (w, h), 0), 1, -1)
    if rx1 - rx0 < 4 or ry1 - ry0 < 4:
        return fallback.astype(bool)
    window = np.ascontiguousarray(bgr[y0:y1, x0:x1])
    labels = np.zeros(window.shape[:2], np.uint8)
    rect = (rx0 - x0, ry0 - y0, rx1 - rx0, ry1 - ry0)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means on OpenCV's global RNG.
    cv2.setRNGSeed(_GRABCUT_SEED)
    try:
        cv2.grabCut(window, labels, rect, background, foreground, _GRABCUT_ITERATIONS,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return fallback.astype(bool)
    found = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if found.sum() < 0.1 * w * h:
        return fallback.astype(bool)
    full[y0:y1, x0:x1] = found
    return full


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _segment_proposals(rgb: np.ndarray, saliency: np.ndarray) -> _Candidates:
    """Salient, compact, non-background segments of a Felzenszwalb graph segmentation."""
    from scipy import ndimage
    from skimage.segmentation import felzenszwalb

    height, width = rgb.shape[:2]
    area = height * width
    labels = felzenszwalb(rgb, scale=_FELZENSZWALB_SCALE, sigma=_FELZENSZWALB_SIGMA,
                          min_size=max(1, int(_FELZENSZWALB_MIN_SIZE * area)))
    n = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    mean_saliency = np.bincount(flat, weights=saliency.ravel(), minlength=n) / np.maximum(
        counts, 1
    )
    frame = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    frame_share = np.bincount(frame, minlength=n) / len(frame)
    band = max(1, round(_BORDER_BAND * min(height, width)))
    inner = np.zeros((height, width), bool)
    inner[band:-band, band:-band] = True
    band_share = 1.0 - np.bincount(flat, weights=inner.ravel(), minlength=n) / np.maximum(
        counts, 1
    )
    # Pixels whose 5x5 neighbourhood is all one segment: thin segments (the one-pixel rims
    # that smoothing leaves around sharp objects, wires, cracks) have almost none.
    interior = ndimage.maximum_filter(labels, size=5) == ndimage.minimum_filter(labels, size=5)
    interior_share = np.bincount(flat, weights=interior.ravel(), minlength=n) / np.maximum(
        counts, 1
    )
    slices = ndimage.find_objects(labels + 1)
    box_area = np.array([(s[0].stop - s[0].start) * (s[1].stop - s[1].start) for s in slices],
                        np.float64)

    fraction = counts / area
    size = np.minimum(1.0, np.sqrt(fraction / _AREA_FULL))
    shape = np.minimum(1.0, counts / box_area / _FILL_FULL) * np.minimum(
        1.0, interior_share / _INTERIOR_FULL
    )
    contrast = mean_saliency / max(float(saliency.mean()), 1e-6)
    strength = size * shape * (contrast / _CONTRAST_AT_HALF) ** 2
    scores = strength / (1.0 + strength)
    valid = (
        (fraction >= _MIN_AREA) & (fraction <= _MAX_AREA)
        & (frame_share <= _MAX_FRAME_SHARE) & (band_share <= _MAX_BAND_SHARE)
    )
    ids = np.flatnonzero(valid)
    ids = ids[np.argsort(-scores[ids], kind="stable")][:_MAX_PROPOSALS]
    return _Candidates(
        scores=scores[ids],
        classes=np.zeros(len(ids), np.int32),
        masks=labels[None] == ids[:, None, None],
    )


def _mser_proposals(saliency: np.ndarray) -> _Candidates:
    """Maximally stable extremal regions (Matas et al., BMVC 2002) of the saliency map.

    A region is a connected set of pixels brighter than a saliency level whose area barely
    changes over `_MSER_DELTA` neighbouring levels: an object that stands out keeps the same
    extent under the small shifts in saliency that noise, compression, resizing and colour
    changes cause, where graph segments split and merge. Scored like segments from their
    size and mean saliency relative to the image (regions are nested, not a partition, so
    overlapping ones are left to non-maximum suppression).
    """
    height, width = saliency.shape
    area = height * width
    mser = cv2.MSER_create(delta=_MSER_DELTA, min_area=max(1, int(_MIN_AREA * area)),
                           max_area=max(2, int(_MAX_AREA * area)))
    regions, _ = mser.detectRegions(np.round(saliency * 255).astype(np.uint8))
    if not len(regions):
        return _Candidates.concat([], height, width)
    masks = np.zeros((len(regions), height, width), bool)
    for i, points in enumerate(regions):
        masks[i, points[:, 1], points[:, 0]] = True
    fraction = masks.mean(axis=(1, 2))
    contrast = (masks * saliency).sum(axis=(1, 2)) / np.maximum(masks.sum(axis=(1, 2)), 1)
    contrast = contrast / max(float(saliency.mean()), 1e-6)
    strength = np.minimum(1.0, np.sqrt(fraction / _AREA_FULL)) * (contrast / _CONTRAST_AT_HALF) ** 2
    scores = strength / (1.0 + strength)
    order = np.argsort(-scores, kind="stable")[:_MAX_PROPOSALS]
    return _Candidates(scores=scores[order], classes=np.zeros(len(order), np.int32),
                       masks=masks[order])


@dataclasses.dataclass
class ClassicalDetector(_Lazy):
    """Embedded instance detector: an approximation of Mask R-CNN that needs no weights.

    It plays Mask R-CNN's role (scored instances with masks) with classical vision so that
    the pipeline runs anywhere, deterministically, in well under a second per image:

    1. The image is resized so that its longer side is `work_size`; masks come back at the
       image's own size (bilinear upsampling, threshold 0.5).
    2. OpenCV's Haar cascades (frontal face, frontal cat face, full body, upper body) give
       category-level instances; the score is a logistic of the cascade's final level weight
       and the mask is GrabCut initialised with the box (seeded, a few iterations).
    3. Class-agnostic region proposals (class 0, "region"), scored from their size and mean
       saliency relative to the image (see `saliency_map`): with `proposals='segments'`,
       Felzenszwalb graph segments, also scored on compactness, with tiny segments and those
       lying along the image frame dropped; with `proposals='mser'`, the maximally stable
       extremal regions of the saliency map (`_mser_proposals`), which keep their extent
       under benign transforms far better (README, Detector backends).
    4. Greedy non-maximum suppression on mask IoU, then `top(max_objects, min_score)`.

    How it differs from Mask R-CNN: only faces, cat faces and people have categories (see
    `CLASSICAL_CLASSES`); anything else is a salient "region" whose extent follows colour
    boundaries, so a multi-coloured object may come out as several parts and two touching
    objects of one colour as one; scores are heuristic, not calibrated probabilities;
    cascades only find upright frontal faces and people. What matters for the hash is that
    the same image gives the same nodes after benign transforms, which this provides for
    objects that stand out from their surroundings.

    Attributes:
      max_objects: most instances returned.
      min_score: instances scoring below this are dropped.
      work_size: longer side, in pixels, of the copy that detection runs on.
      proposals: where region proposals come from: 'segments' (graph segmentation) or
        'mser' (stable regions of the saliency map).
    """

    max_objects: int = 16
    min_score: float = 0.5
    work_size: int = 256
    proposals: str = "segments"
    _cascades: Any = _cache_field()

    _LAZY = ("_cascades",)

    def __post_init__(self) -> None:
        _check_options(self.min_score, self.max_objects)
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32 pixels, got {self.work_size}")
        if self.proposals not in PROPOSALS:
            raise ValueError(f"proposals must be one of {', '.join(PROPOSALS)}, got "
                             f"{self.proposals!r}")

    def _load_cascades(self) -> list[tuple[int, Any, float]]:
        if self._cascades is None:
            loaded = []
            for class_id, filename, min_side in _CASCADES:
                path = os.path.join(cv2.data.haarcascades, filename)
                cascade = cv2.CascadeClassifier(path)
                if cascade.empty():
                    raise RuntimeError(
                        f"cannot load the Haar cascade {path}; reinstall opencv-python-headless, "
                        "whose wheel ships the cascades under cv2.data.haarcascades"
                    )
                loaded.append((class_id, cascade, min_side))
            self._cascades = loaded
        return self._cascades

    def _cascade_candidates(self, rgb: np.ndarray) -> _Candidates:
        """Cascade hits scoring at least `min_score`, with GrabCut masks, at `rgb`'s size."""
        height, width = rgb.shape[:2]
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        boxes, classes, weights = [], [], []
        for class_id, cascade, min_side in self._load_cascades():
            base_w, base_h = cascade.getOriginalWindowSize()
            factor = max(1.0, min_side * max(height, width) / min(base_w, base_h))
            found, _, level_weights = cascade.detectMultiScale3(
                grey, scaleFactor=_HAAR_SCALE_FACTOR, minNeighbors=_HAAR_MIN_NEIGHBORS,
                minSize=(round(base_w * factor), round(base_h * factor)),
                outputRejectLevels=True,
            )
            for box, weight in zip(np.reshape(found, (-1, 4)), np.ravel(level_weights),
                                   strict=True):
                boxes.append(tuple(int(v) for v in box))
                classes.append(class_id)
                weights.append(float(weight))
        if not boxes:
            return _Candidates.concat([], height, width)
        scores = _logistic(_HAAR_SLOPE * (np.array(weights) - _HAAR_WEIGHT_AT_HALF))
        # Parallel cascade scans return hits in any order; fix one before anything uses it.
        # GrabCut is the expensive part, so weak hits never reach it.
        order = sorted((i for i in range(len(boxes)) if scores[i] >= self.min_score),
                       key=lambda i: (classes[i], boxes[i]))
        if not order:
            return _Candidates.concat([], height, width)
        masks = np.stack([_grabcut_mask(bgr, boxes[i]) for i in order])
        return _Candidates(scores[order], np.array(classes, np.int32)[order], masks)

    def __call__(
        self, image: np.ndarray, *, name: str | None = None, gt_masks: np.ndarray | None = None
    ) -> Detections:
        """Detects instances in uint8 RGB `image` [H, W, 3]; `name` and `gt_masks` unused."""
        del name, gt_masks
        rgb = _as_rgb(image)
        height, width = rgb.shape[:2]
        scale = self.work_size / max(height, width)
        work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        work = cv2.resize(rgb, (work_w, work_h), interpolation=interpolation)

        saliency = saliency_map(work)
        regions = (_mser_proposals(saliency) if self.proposals == "mser"
                   else _segment_proposals(work, saliency))
        candidates = _Candidates.concat([self._cascade_candidates(work), regions],
                                        work_h, work_w)
        keep = candidates.scores >= self.min_score
        scores, classes, masks = (
            candidates.scores[keep], candidates.classes[keep], candidates.masks[keep]
        )
        kept = _nms(scores, masks, _NMS_IOU)[: self.max_objects]
        full = np.zeros((len(kept), height, width), bool)
        for row, index in enumerate(kept):
            up = cv2.resize(masks[index].astype(np.float32), (width, height),
                            interpolation=cv2.INTER_LINEAR)
            full[row] = up >= 0.5
        nonempty = full.any(axis=(1, 2))
        full = full[nonempty]
        return Detections(
            boxes=boxes_from_masks(full),
            scores=scores[kept][nonempty].astype(np.float32),
            classes=classes[kept][nonempty].astype(np.int32),
            masks=full,
        ).top(self.max_objects, self.min_score)


# --------------------------------------------------------------------------- coco_json


class DetectionsNotFoundError(KeyError):
    """The detections file has no entry for an image."""

    def __str__(self) -> str:
        # KeyError quotes its argument; this message is a sentence.
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class _Entry:
    """Detections of one image as stored: results (dicts) and, when known, (height, width)."""

    results: tuple[Mapping[str, Any], ...]
    size: tuple[int, int] | None


def _index_coco(data: Any, path: str) -> dict[str, _Entry]:
    """file name -> entry, from a COCO object or a {file name: [result, ...]} mapping."""
    if isinstance(data, Mapping) and "images" in data and "annotations" in data:
        by_id: dict[Any, list[Mapping[str, Any]]] = {}
        for ann in data["annotations"]:
            by_id.setdefault(ann["image_id"], []).append(ann)
        return {
            str(img["file_name"]): _Entry(
                tuple(by_id.get(img["id"], ())),
                (int(img["height"]), int(img["width"])) if "height" in img else None,
            )
            for img in data["images"]
        }
    if isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()):
        return {str(k): _Entry(tuple(v), None) for k, v in data.items()}
    raise ValueError(
        f"{path} is neither a COCO object (with 'images' and 'annotations') nor a mapping of "
        "file name -> list of results; a bare COCO results list has no file names, so wrap "
        "it as {file_name: [results]} or add the 'images' list"
    )


def _rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """bool [H, W] from one compressed RLE."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools' own numpy 2 copy-keyword notice, once per mask: noise in build logs.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _decode_segmentation(
    result: Mapping[str, Any], height: int, width: int, where: str
) -> np.ndarray:
    """bool [H, W] mask of one result: RLE (compressed or uncompressed counts), polygons,
    or, when there is no segmentation, the filled bbox."""
    from pycocotools import mask as mask_utils

    segmentation = result.get("segmentation")
    if not segmentation:
        mask = np.zeros((height, width), bool)
        x, y, w, h = result["bbox"]
        mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
        return mask
    if isinstance(segmentation, Mapping):
        size = tuple(int(v) for v in segmentation["size"])
        if size != (height, width):
            raise ValueError(
                f"{where}: mask is {size[0]}x{size[1]} but the image is {height}x{width}; "
                "detections must be computed on this exact image (after its transforms)"
            )
        rle = dict(segmentation)
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        return _rle_decode(rle)
    if not isinstance(segmentation[0], list):  # one polygon given as a flat list
        segmentation = [segmentation]
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    return _rle_decode(mask_utils.merge(rles))


@dataclasses.dataclass
class CocoJsonDetector(_Lazy):
    """Detections computed elsewhere (e.g. Mask R-CNN on a GPU machine), read from JSON.

    Accepted layouts of the file at `path`:

    * a COCO object: `images` (id, file_name, height, width) and `annotations` (image_id,
      category_id, bbox [x, y, w, h], score, segmentation); an image without annotations has
      no detections;
    * a mapping `{file_name: [{bbox, score, category_id, segmentation}, ...]}`.

    Segmentations are RLE (`counts` a compressed string or an uncompressed list) or
    polygons; a result without one gets its filled box. A missing score counts as 1 (ground
    truth). The image is looked up by `name`: the exact file name first, then its basename.

    Attributes:
      path: the JSON file.
      min_score: results scoring below this are dropped.
      max_objects: most instances returned.
    """

    path: str = ""
    min_score: float = 0.5
    max_objects: int = 16
    _index: Any = _cache_field()
    _by_basename: Any = _cache_field()

    _LAZY = ("_index", "_by_basename")

    def __post_init__(self) -> None:
        _check_options(self.min_score, self.max_objects)
        self.path = os.fspath(self.path)
        if not self.path:
            raise ValueError("the coco_json backend needs path=<detections JSON file>")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"detections file {self.path} does not exist; pass path= the JSON written by "
                "the detector run (COCO object or {file_name: [results]})"
            )

    def _load(self) -> dict[str, _Entry]:
        if self._index is None:
            with open(self.path) as f:
                index = _index_coco(json.load(f), self.path)
            by_basename: dict[str, list[str]] = {}
            for key in index:
                by_basename.setdefault(os.path.basename(key), []).append(key)
            self._index, self._by_basename = index, by_basename
        return self._index

    def _entry(self, name: str) -> tuple[str, _Entry]:
        index = self._load()
        if name in index:
            return name, index[name]
        keys = self._by_basename.get(os.path.basename(name), [])
        if len(keys) == 1:
            return keys[0], index[keys[0]]
        if len(keys) > 1:
            raise DetectionsNotFoundError(
                f"{name!r} matches several entries of {self.path} by basename ({keys[:3]}); "
                "store the detections under the full names the builder uses"
            )
        raise DetectionsNotFoundError(
            f"no detections for image {name!r} in {self.path}; run the detector on this image "
            "and add it to the JSON (an image with no objects needs an entry too)"
        )

    def __call__(
        self, image: np.ndarray, *, name: str | None = None, gt_masks: np.ndarray | None = None
    ) -> Detections:
        """Detections stored for the image called `name`; `image` only gives the size."""
        del gt_masks
        if name is None:
            raise ValueError("the coco_json backend looks detections up by name; pass name=")
        height, width = np.shape(image)[:2]
        key, entry = self._entry(name)
        where = f"{self.path} [{key}]"
        if entry.size is not None and entry.size != (height, width):
            raise ValueError(
                f"{where}: detections were computed on a {entry.size[0]}x{entry.size[1]} image "
                f"but this one is {height}x{width}; run the detector on this exact image"
            )
        results = [r for r in entry.results if float(r.get("score", 1.0)) >= self.min_score]
        if not results:
            return Detections.empty(height, width)
        masks = np.stack([_decode_segmentation(r, height, width, where) for r in results])
        boxes = np.array([r["bbox"] if "bbox" in r else [0.0, 0.0, 0.0, 0.0] for r in results],
                         np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        from_masks = boxes_from_masks(masks)
        no_box = np.array(["bbox" not in r for r in results])
        boxes[no_box] = from_masks[no_box]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return Detections(
            boxes=boxes,
            scores=np.array([float(r.get("score", 1.0)) for r in results], np.float32),
            classes=np.array([int(r.get("category_id", 0)) for r in results], np.int32),
            masks=masks,
        ).top(self.max_objects, self.min_score)


# --------------------------------------------------------------------------- detectron2


class DetectorUnavailableError(RuntimeError):
    """A backend cannot run here: its package or its weights are missing."""


# Contiguous class index (0..79) of COCO-trained detectron2 models -> COCO category id.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)

_DETECTRON2_MISSING = (
    "the detectron2 backend needs the detectron2 package, an optional backend without a PyPI "
    "wheel: build it from its source repository (github.com/facebookresearch/detectron2) "
    "following its install guide, matching your torch version. Meanwhile use the `classical` "
    "backend, or run Mask R-CNN elsewhere and read its output with `coco_json`."
)


def _to_numpy(value: Any) -> np.ndarray:
    """numpy array from a torch tensor (any device) or a detectron2 `Boxes`."""
    value = getattr(value, "tensor", value)
    for method in ("detach", "cpu", "numpy"):
        if hasattr(value, method):
            value = getattr(value, method)()
    return np.asarray(value)


@dataclasses.dataclass
class Detectron2Detector(_Lazy):
    """Mask R-CNN through detectron2 (optional; not installable from PyPI).

    Class ids are COCO category ids when `config` is a COCO model zoo config (the model's
    contiguous indices mapped through `COCO_CATEGORY_IDS`), the model's own indices otherwise.

    Attributes:
      weights: local path of the model weights, e.g. model_final_f10217.pkl for R50-FPN 3x.
      config: model zoo config name.
      min_score: ROI heads score threshold.
      max_objects: detections per image.
      device: torch device, e.g. 'cpu' or 'cuda'.
    """

    weights: str | None = None
    config: str = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    min_score: float = 0.5
    max_objects: int = 16
    device: str = "cpu"
    _predictor: Any = _cache_field()

    _LAZY = ("_predictor",)

    def __post_init__(self) -> None:
        _check_options(self.min_score, self.max_objects)

    def _load(self) -> Callable[[np.ndarray], Any]:
        if self._predictor is not None:
            return self._predictor
        try:
            from detectron2 import model_zoo
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
        except ImportError as e:
            raise DetectorUnavailableError(_DETECTRON2_MISSING) from e
        if not self.weights or not os.path.isfile(self.weights):
            problem = f"weights file {self.weights} does not exist" if self.weights else (
                "no weights given")
            raise DetectorUnavailableError(
                f"detectron2 backend: {problem}. Download the R50-FPN 3x Mask R-CNN weights "
                "(model_final_f10217.pkl) from the detectron2 model zoo (MODEL_ZOO.md in its "
                "repository) and pass weights=PATH"
            )
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(self.config))
        cfg.MODEL.WEIGHTS = os.fspath(self.weights)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.min_score
        cfg.TEST.DETECTIONS_PER_IMAGE = self.max_objects
        cfg.MODEL.DEVICE = self.device
        self._predictor = DefaultPredictor(cfg)
        return self._predictor

    def __call__(
        self, image: np.ndarray, *, name: str | None = None, gt_masks: np.ndarray | None = None
    ) -> Detections:
        """Runs the predictor on uint8 RGB `image` [H, W, 3]; `name` and `gt_masks` unused."""
        del name, gt_masks
        rgb = _as_rgb(image)
        height, width = rgb.shape[:2]
        predictor = self._load()
        # DefaultPredictor expects OpenCV's BGR order (cfg.INPUT.FORMAT).
        instances = predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["instances"]
        if not hasattr(instances, "pred_masks"):
            raise ValueError(
                f"{self.config} predicts no masks; use an InstanceSegmentation config"
            )
        masks = _to_numpy(instances.pred_masks).astype(bool).reshape(-1, height, width)
        classes = _to_numpy(instances.pred_classes).astype(np.int64).reshape(-1)
        if self.config.startswith("COCO"):
            classes = np.asarray(COCO_CATEGORY_IDS)[classes]
        boxes = _to_numpy(instances.pred_boxes).astype(np.float32).reshape(-1, 4)
        return Detections(
            boxes=boxes,
            scores=_to_numpy(instances.scores).astype(np.float32).reshape(-1),
            classes=classes.astype(np.int32),
            masks=masks,
        ).top(self.max_objects, self.min_score)


# --------------------------------------------------------------------------- oracle


@dataclasses.dataclass
class OracleDetector:
    """The ground truth of generated scenes: each non-empty mask of `gt_masks` becomes an
    instance with its tight box, score 1 and class 0, in the given order."""

    def __call__(
        self, image: np.ndarray, *, name: str | None = None, gt_masks: np.ndarray | None = None
    ) -> Detections:
        del name
        if gt_masks is None:
            raise ValueError(
                "the oracle backend only works for generated scenes that carry ground truth "
                "(gt_masks); use `classical`, `coco_json` or `detectron2` for other images"
            )
        height, width = np.shape(image)[:2]
        masks = np.asarray(gt_masks, bool)
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise ValueError(
                f"gt_masks must be [K, {height}, {width}] for this image, got {masks.shape}"
            )
        masks = masks[masks.any(axis=(1, 2))]
        k = len(masks)
        return Detections(
            boxes=boxes_from_masks(masks),
            scores=np.ones(k, np.float32),
            classes=np.zeros(k, np.int32),
            masks=masks,
        )


# --------------------------------------------------------------------------- registry

DETECTORS: dict[str, Callable[..., Detector]] = {
    "classical": ClassicalDetector,
    "coco_json": CocoJsonDetector,
    "detectron2": Detectron2Detector,
    "oracle": OracleDetector,
}


def make_detector(name: str, **options: Any) -> Detector:
    """The backend called `name` (a key of `DETECTORS`) built with `options`."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid detectors: {', '.join(DETECTORS)}")
    factory = DETECTORS[name]
    accepted = [p for p in inspect.signature(factory).parameters if not p.startswith("_")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"detector {name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(accepted) or 'none'}"
        )
    return factory(**options)
