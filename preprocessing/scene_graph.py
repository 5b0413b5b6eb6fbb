"""Image + detections -> the fixed-shape scene-graph record (paper section 3.2).

A scene graph has N = `max_objects` + 1 node slots: the kept detections by descending score,
then the background node (the image minus the union of the object masks) that the paper
treats as one more object, then padding. Padding slots have `node_mask` False and every
feature, crop and relation entry zero, so the record has the same shape for every image.

Per node:

* crop `[C, C, 3]`: the box region, aspect kept, letterboxed on a black square;
* geometry `[5]` (eq. 1): `[cx / W, cy / H, bw / W, bh / H, bw * bh / (W * H)]`;
* shape `[7]`: log-scaled Hu moments of the node's mask.

Per ordered pair of real nodes (i, j), including i == j, relations `[8]` (eq. 4 plus the
area ratio): `[dx / sqrt(Ai), dy / sqrt(Ai), dist / diag, wj / wi, hj / hi, theta, IoU,
sqrt(Aj / Ai)]`.

The record codec (`record_features`, `encode_record`, `decode_record`) stores a graph as a
TFDS example and turns what `tfds.data_source` hands back into numpy arrays; none of it
needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import cv2
import numpy as np
import tensorflow_datasets as tfds

from preprocessing.detect import Detections
from preprocessing.images import decode_jpeg, encode_jpeg

Encoding = Literal["jpeg", "raw"]
ENCODINGS: tuple[str, ...] = ("jpeg", "raw")
GEOMETRY_DIM = 5
SHAPE_DIM = 7
RELATION_DIM = 8
# Pixels per block in the mask-overlap product: float32 sums of 0/1 stay exact below 2**24,
# and a block of K masks stays a few tens of MB whatever the image size.
_IOU_BLOCK_PIXELS = 1 << 20


@dataclasses.dataclass
class SceneGraph:
    """One image as a padded scene graph with N = max_objects + 1 node slots.

    Attributes:
      image: uint8 [G, G, 3] global view (the whole image letterboxed to `global_size`).
      crops: uint8 [N, C, C, 3] node crops; zeros for padding.
      node_mask: bool [N], True for the K objects and the background node.
      geometry: float32 [N, 5] eq. 1 box geometry.
      shape: float32 [N, 7] log-scaled Hu moments of each node's mask.
      relations: float32 [N, N, 8] pairwise relations r_ij; zero where i or j is padding.
      boxes: float32 [N, 4] xyxy pixel boxes; zeros for padding.
      num_objects: K, the detected objects kept; the background node sits at index K.
    """

    image: np.ndarray
    crops: np.ndarray
    node_mask: np.ndarray
    geometry: np.ndarray
    shape: np.ndarray
    relations: np.ndarray
    boxes: np.ndarray
    num_objects: int

    @property
    def num_nodes(self) -> int:
        """Real nodes: the objects plus the background node."""
        return self.num_objects + 1


# ----------------------------------------------------------------------------- images


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resizes `[h, w, 3]` to `[height, width, 3]`; area averaging avoids aliasing when
    shrinking, bilinear keeps upsampled crops smooth."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    shrinking = width * height < w * h
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Scales `uint8 [h, w, 3]` so its longer side is `size` and centres it on black.

    Returns:
      uint8 [size, size, 3]; the shorter side is padded equally on both sides (the odd
      pixel, if any, goes to the bottom or right).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"letterbox expects a non-empty [h, w, 3] image, got {image.shape}")
    if size < 1:
        raise ValueError(f"letterbox size must be >= 1, got {size}")
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w = min(size, max(1, round(w * scale)))
    new_h = min(size, max(1, round(h * scale)))
    resized = _resize(np.ascontiguousarray(image, dtype=np.uint8), new_w, new_h)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Float xyxy -> integer (x0, y0, x1, y1) rounded outward, clipped, at least 1 px."""
    x0 = min(max(math.floor(float(box[0])), 0), width - 1)
    y0 = min(max(math.floor(float(box[1])), 0), height - 1)
    x1 = min(max(math.ceil(float(box[2])), x0 + 1), width)
    y1 = min(max(math.ceil(float(box[3])), y0 + 1), height)
    return x0, y0, x1, y1


def crop_box(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The region of `image` under `box` (xyxy pixels), letterboxed to `uint8 [size, size, 3]`."""
    x0, y0, x1, y1 = pixel_box(box, image.shape[0], image.shape[1])
    return letterbox(image[y0:y1, x0:x1], size)


# ----------------------------------------------------------------------------- features


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Bounding box of a bool `[H, W]` mask as float32 `[4]` xyxy, exclusive of the far edge
    (a full mask gives `[0, 0, W, H]`); the whole image when the mask is empty."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.array([0, 0, width, height], np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def geometry_features(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Eq. 1 for xyxy pixel boxes `[K, 4]` in an H x W image.

    The paper writes the box area as `A_i = x_i y_i` (its centre coordinates); that is a typo
    for `w_i h_i`, which is what is used here.

    Returns:
      float32 [K, 5]: `[cx / W, cy / H, bw / W, bh / H, bw * bh / (W * H)]`.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    features = [cx / width, cy / height, bw / width, bh / height, bw * bh / (width * height)]
    return np.stack(features, axis=-1).astype(np.float32)


def hu_features(mask: np.ndarray) -> np.ndarray:
    """Log-scaled Hu moments of a bool `[H, W]` mask.

    Hu moments span many orders of magnitude, so each `h` becomes `-sign(h) * log10(|h|)`
    (the usual scaling), with `h == 0` kept at 0. An empty mask gives zeros.

    Returns:
      float32 [7].
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"hu_features expects one [H, W] mask, got shape {mask.shape}")
    if not mask.any():
        return np.zeros(SHAPE_DIM, np.float32)
    moments = cv2.moments(np.ascontiguousarray(mask, dtype=np.uint8), binaryImage=True)
    hu = cv2.HuMoments(moments).ravel().astype(np.float64)
    nonzero = hu != 0
    scaled = np.zeros_like(hu)
    scaled[nonzero] = -np.sign(hu[nonzero]) * np.log10(np.abs(hu[nonzero]))
    return scaled.astype(np.float32)


def mask_iou(masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU `|mi & mj| / |mi | mj|` of bool masks `[K, H, W]`; 0 where both are empty.

    Intersections come from a `[K, P] x [P, K]` product over blocks of pixels, exact at any
    image size (each block's float32 counts are exact integers; blocks add in float64).

    Returns:
      float32 [K, K].
    """
    k = masks.shape[0]
    flat = masks.reshape(k, -1)
    inter = np.zeros((k, k), np.float64)
    for start in range(0, flat.shape[1], _IOU_BLOCK_PIXELS):
        block = flat[:, start : start + _IOU_BLOCK_PIXELS].astype(np.float32)
        inter += block @ block.T
    area = np.diag(inter).copy()
    union = area[:, None] + area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou.astype(np.float32)


def relation_features(
    boxes: np.ndarray, masks: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Eq. 4 plus the area ratio for every ordered pair of nodes, i == j included.

    With centres (cx, cy), widths and heights clipped to >= 1 px (so nothing divides by
    zero), areas A = w * h, dx = cx_j - cx_i and dy = cy_j - cy_i in pixels:

      r_ij = [dx / sqrt(A_i), dy / sqrt(A_i), sqrt(dx^2 + dy^2) / sqrt(W^2 + H^2),
              w_j / w_i, h_j / h_i, theta_ij, IoU(m_i, m_j), sqrt(A_j / A_i)]

    The paper's angle `arctan(dy / dx)` is undefined where dx = 0 (always so on the diagonal)
    and cannot tell opposite directions apart; `theta_ij = arctan2(dy, dx)` in (-pi, pi] is
    used instead. The paper prints the IoU as union over intersection; standard IoU
    (intersection over union) is what it names and what is used here.

    Args:
      boxes: xyxy pixel boxes [K, 4].
      masks: bool [K, H, W] node masks.
      height, width: the image size H, W.

    Returns:
      float32 [K, K, 8]; entry [i, j] describes node j as seen from node i.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {masks.shape[0]} masks; pass one of each")
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    area = w * h
    dx = cx[None, :] - cx[:, None]
    dy = cy[None, :] - cy[:, None]
    root_area_i = np.sqrt(area)[:, None]
    features = [
        dx / root_area_i,
        dy / root_area_i,
        np.hypot(dx, dy) / math.hypot(width, height),
        w[None, :] / w[:, None],
        h[None, :] / h[:, None],
        np.arctan2(dy, dx),
        mask_iou(masks).astype(np.float64),
        np.sqrt(area[None, :] / area[:, None]),
    ]
    return np.stack(features, axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- graph


def build_scene_graph(
    image: np.ndarray,
    detections: Detections,
    *,
    max_objects: int,
    crop_size: int,
    global_size: int,
    min_score: float = 0.0,
) -> SceneGraph:
    """Builds the padded scene graph of one image.

    Args:
      image: uint8 [H, W, 3] RGB, the image the detections were computed on.
      detections: instances with masks of size H x W, in any order.
      max_objects: object slots; N = max_objects + 1 node slots in all.
      crop_size: C, the side of each node crop.
      global_size: G, the side of the global view.
      min_score: detections scoring below this are dropped.

    Returns:
      A `SceneGraph` whose nodes are the (at most `max_objects`) best-scoring detections in
      descending score, the background node at index K, then padding.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}; "
            "decode it with preprocessing.images.decode_image"
        )
    height, width = image.shape[:2]
    if detections.image_size != (height, width):
        raise ValueError(
            f"detection masks are {detections.image_size} but the image is {(height, width)}; "
            "run the detector on this exact image (after its transforms)"
        )
    if max_objects < 0:
        raise ValueError(f"max_objects must be >= 0, got {max_objects}")

    kept = detections.top(max_objects, min_score)
    k = len(kept)
    background = ~kept.masks.any(axis=0) if k else np.ones((height, width), bool)
    masks = np.concatenate([kept.masks, background[None]], axis=0)
    node_boxes = np.concatenate([kept.boxes.reshape(k, 4), mask_box(background)[None]], axis=0)
    node_boxes = node_boxes.astype(np.float32)

    # The background crop shows only what no object covers, so the objects are not seen twice.
    background_image = image * background[..., None].astype(np.uint8)
    sources = [image] * k + [background_image]

    n = max_objects + 1
    crops = np.zeros((n, crop_size, crop_size, 3), np.uint8)
    shape = np.zeros((n, SHAPE_DIM), np.float32)
    for i, (source, box, mask) in enumerate(zip(sources, node_boxes, masks, strict=True)):
        crops[i] = crop_box(source, box, crop_size)
        shape[i] = hu_features(mask)

    geometry = np.zeros((n, GEOMETRY_DIM), np.float32)
    geometry[: k + 1] = geometry_features(node_boxes, height, width)
    relations = np.zeros((n, n, RELATION_DIM), np.float32)
    relations[: k + 1, : k + 1] = relation_features(node_boxes, masks, height, width)
    boxes = np.zeros((n, 4), np.float32)
    boxes[: k + 1] = node_boxes
    node_mask = np.zeros(n, bool)
    node_mask[: k + 1] = True
    return SceneGraph(
        image=letterbox(image, global_size),
        crops=crops,
        node_mask=node_mask,
        geometry=geometry,
        shape=shape,
        relations=relations,
        boxes=boxes,
        num_objects=k,
    )


# ----------------------------------------------------------------------------- records


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown record encoding {encoding!r}; use one of {ENCODINGS}")


def record_features(
    *, max_objects: int, crop_size: int, global_size: int, encoding: Encoding
) -> tfds.features.FeaturesDict:
    """The TFDS features of one record (README, "Record format").

    With `encoding='jpeg'` the global view is one JPEG byte string and the crops are N byte
    strings (b'' for padding); with `encoding='raw'` both are uint8 arrays.
    """
    _check_encoding(encoding)
    n = max_objects + 1
    if encoding == "jpeg":
        image = tfds.features.Tensor(shape=(), dtype=np.object_)
        crops = tfds.features.Tensor(shape=(n,), dtype=np.object_)
    else:
        image = tfds.features.Tensor(shape=(global_size, global_size, 3), dtype=np.uint8)
        crops = tfds.features.Tensor(shape=(n, crop_size, crop_size, 3), dtype=np.uint8)
    return tfds.features.FeaturesDict(
        {
            "key": tfds.features.Text(),
            "identity": tfds.features.Scalar(dtype=np.int64),
            "variant": tfds.features.Scalar(dtype=np.int32),
            "view": tfds.features.Scalar(dtype=np.int32),
            "transforms": tfds.features.Text(),
            "image": image,
            "crops": crops,
            "node_mask": tfds.features.Tensor(shape=(n,), dtype=np.bool_),
            "geometry": tfds.features.Tensor(shape=(n, GEOMETRY_DIM), dtype=np.float32),
            "shape": tfds.features.Tensor(shape=(n, SHAPE_DIM), dtype=np.float32),
            "relations": tfds.features.Tensor(shape=(n, n, RELATION_DIM), dtype=np.float32),
        }
    )


def encode_record(
    graph: SceneGraph,
    *,
    key: str,
    identity: int,
    variant: int,
    view: int,
    transforms: str,
    encoding: Encoding,
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """A `SceneGraph` plus its labels -> one example for `record_features(...)`, ready for a
    TFDS builder to yield."""
    _check_encoding(encoding)
    if encoding == "jpeg":
        image: Any = encode_jpeg(graph.image, jpeg_quality)
        crops: Any = np.empty(len(graph.node_mask), dtype=object)
        for i, (crop, real) in enumerate(zip(graph.crops, graph.node_mask, strict=True)):
            crops[i] = encode_jpeg(crop, jpeg_quality) if real else b""
    else:
        image, crops = graph.image, graph.crops
    return {
        "key": key,
        "identity": int(identity),
        "variant": int(variant),
        "view": int(view),
        "transforms": transforms,
        "image": image,
        "crops": crops,
        "node_mask": graph.node_mask,
        "geometry": graph.geometry,
        "shape": graph.shape,
        "relations": graph.relations,
    }


def _text(value: Any) -> np.str_:
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    return np.str_(value)


def _image_bytes(value: Any) -> bytes | None:
    """The JPEG bytes held by `value`, or None when `value` is already pixels."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.item() if value.ndim == 0 else value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _decode_image(value: Any) -> np.ndarray:
    data = _image_bytes(value)
    return decode_jpeg(data) if data is not None else np.asarray(value, np.uint8)


def _decode_crops(value: Any) -> np.ndarray:
    """`[N]` JPEG byte strings (b'' = padding) or `uint8 [N, C, C, 3]` -> `uint8 [N, C, C, 3]`."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return np.asarray(value, np.uint8)
    items = [_image_bytes(v) for v in value]
    decoded = [decode_jpeg(data) if data else None for data in items]
    real = [crop for crop in decoded if crop is not None]
    if not real:
        raise ValueError(
            "record has no non-empty crop, but the background node always has one; "
            "rebuild the record with scene_graph.encode_record"
        )
    crops = np.zeros((len(decoded),) + real[0].shape, np.uint8)
    for i, crop in enumerate(decoded):
        if crop is not None:
            crops[i] = crop
    return crops


def decode_record(example: Mapping[str, Any]) -> dict[str, np.ndarray | np.generic]:
    """What `tfds.data_source` (or `encode_record`) gives -> numpy arrays, images decoded.

    Text fields become `np.str_` whether they arrive as bytes or str; JPEG images and crops
    are decoded, padding crops (b'') becoming zeros; integer labels become numpy scalars.

    Returns:
      key, transforms: np.str_; identity: np.int64; variant, view: np.int32;
      image: uint8 [G, G, 3]; crops: uint8 [N, C, C, 3]; node_mask: bool [N];
      geometry: float32 [N, 5]; shape: float32 [N, 7]; relations: float32 [N, N, 8].
    """
    missing = {"key", "image", "crops", "node_mask", "relations"} - set(example)
    if missing:
        raise KeyError(
            f"record lacks {sorted(missing)}; was it written with scene_graph.record_features?"
        )
    return {
        "key": _text(example["key"]),
        "identity": np.int64(example["identity"]),
        "variant": np.int32(example["variant"]),
        "view": np.int32(example["view"]),
        "transforms": _text(example["transforms"]),
        "image": _decode_image(example["image"]),
        "crops": _decode_crops(example["crops"]),
        "node_mask": np.asarray(example["node_mask"], bool),
        "geometry": np.asarray(example["geometry"], np.float32),
        "shape": np.asarray(example["shape"], np.float32),
        "relations": np.asarray(example["relations"], np.float32),
    }
