"""Where a query differs from its original: GradCAM of the paper's eq. 14 (section 4.6).

`oscar explain` is its command line. The objective is

    L(x | x+, x-) = d(f(x), f(x+)) - d(f(x), f(x-))                       (eq. 14)

with d the cosine similarity and f the model's continuous embedding z (OscarNet's output,
before the sign). Here x is the query (say a manipulated copy), x- the trusted original it
was matched to and x+ a benign version of the query; f(x+) and f(x-) are constants
(`jax.lax.stop_gradient`), so the gradient flows through f(x) alone (supplement 3.2).
Raising L pushes the query away from its original, so GradCAM of L highlights the regions of
the query that make it dissimilar from the original (paper Fig. 1, supplement Fig. 5).

GradCAM (Selvaraju et al. 2017) runs on the ResNet feature map A at the end of one stage
(`ResNet.expose`): channel weights are the spatial mean of dL/dA, the map is
relu(sum_c w_c A_c). It is computed for the global stream FG on the global view and for fv
on every real node crop; each map is mapped back into query pixels by undoing the letterbox
(global view) or the square padding of the crop and placing it in the node's box. The maps
are combined by an elementwise maximum on one shared scale, then divided by the peak (see
`combine`); when nothing in the query can move L (it is its own original) the map is all
zeros. The result is an explanation, not a detector: a weakly trained model's map can point
anywhere. The background node's crop (the image with the objects blacked out) spans the
whole image, so its map covers the objects' boxes too.

The output of the command is a panel like the paper's Fig. 1: the heat map over the query,
the original, the query.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from oscar_jax.inference.records import ImageRecordMaker, stack
from oscar_jax.models import resnet
from oscar_jax.workdir import record_settings, restore_inference
from preprocessing import scene_graph
from preprocessing.images import encode_png, shrink_to_fit

# Stage 3 (stride 16): 14 x 14 cells on the paper's 224-px ResNet50 views and 8 x 8 on the
# demo's 128-px global views, where stage 4 (the classic GradCAM layer) leaves 7 x 7 and
# 4 x 4, too coarse to point at an object in a small image.
DEFAULT_STAGE = 3
# The CNN streams GradCAM can look into: FG on the global view, fv on the node crops.
GLOBAL_STREAM, OBJECT_STREAM = "global_cnn", "object_cnn"
# |z| |dL/dz| is the part of f(x+)/|f(x+)| - f(x-)/|f(x-)| across z, in [0, 2]. Below this,
# x+ and x- embed alike (e.g. the query is its original), nothing in the image moves L and
# the map is flat. It is scale free (every map is linear in dL/dz); float32 noise of equal
# embeddings is ~1e-7.
FLAT_SENSITIVITY = 1e-4


# ---- the objective and GradCAM (pure) ---------------------------------------------------------


def cosine(a: Any, b: Any) -> Any:
    """Cosine similarity of two vectors [D]; a zero vector has similarity 0."""
    return jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-12)


def dissimilarity_objective(z: Any, z_positive: Any, z_negative: Any) -> Any:
    """Eq. 14: d(z, z+) - d(z, z-) with z+ and z- held constant; all [D]."""
    z_positive = jax.lax.stop_gradient(z_positive)
    z_negative = jax.lax.stop_gradient(z_negative)
    return cosine(z, z_positive) - cosine(z, z_negative)


def gradcam(activations: Any, gradients: Any) -> Any:
    """Feature maps A and dL/dA [..., h, w, c] -> GradCAM maps [..., h, w], >= 0.

    w_c = mean over (h, w) of dL/dA_c; map = relu(sum_c w_c A_c). Works on numpy and JAX.
    """
    a = jnp.asarray(activations, jnp.float32)
    g = jnp.asarray(gradients, jnp.float32)
    weights = jnp.mean(g, axis=(-3, -2), keepdims=True)
    return jnp.maximum(jnp.sum(weights * a, axis=-1), 0.0)


# ---- from feature-map cells to query pixels ---------------------------------------------------


def letterbox_region(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, new_h, new_w): where `scene_graph.letterbox` puts an [height, width] image
    inside its [size, size] square. Mirrors its rounding exactly (a test checks it)."""
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def _resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear float32 resize; pixel centres aligned, so a cell's value sits over its area."""
    values = np.ascontiguousarray(values, np.float32)
    if values.shape == (height, width):
        return values.copy()
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def unletterbox(cam: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """A map [h, w] over a letterboxed [size, size] square -> float32 [height, width] over
    the image that was letterboxed; what lay over the black padding is dropped."""
    square = _resize(cam, size, size)
    top, left, new_h, new_w = letterbox_region(height, width, size)
    return _resize(square[top : top + new_h, left : left + new_w], height, width)


def node_boxes(geometry: np.ndarray, node_mask: np.ndarray, height: int,
               width: int) -> np.ndarray:
    """Integer xyxy boxes [K, 4] of the real nodes, in the pixels of the [height, width]
    image the record was made from, exactly as `scene_graph.crop_box` cut them.

    Eq. 1 geometry is (cx/W, cy/H, bw/W, bh/H, area): boxes come back as float32 corners,
    snapped to whole pixels when within float error of one (the detectors' boxes usually
    are), then rounded outward like `scene_graph.pixel_box`.
    """
    geometry = np.asarray(geometry, np.float64)[np.asarray(node_mask, bool)]
    cx, cy = geometry[:, 0] * width, geometry[:, 1] * height
    bw, bh = geometry[:, 2] * width, geometry[:, 3] * height
    corners = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
    nearest = np.round(corners)
    corners = np.where(np.abs(corners - nearest) < 1e-3, nearest, corners)
    boxes = [scene_graph.pixel_box(box, height, width) for box in corners]
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def paste_crop_maps(crop_cams: np.ndarray, boxes: np.ndarray, crop_size: int, height: int,
                    width: int) -> np.ndarray:
    """Crop maps [K, h, w] over [crop_size]^2 letterboxed crops -> float32 [height, width]:
    each map placed in its node's box (padding removed), overlaps resolved by maximum."""
    out = np.zeros((height, width), np.float32)
    for cam, (x0, y0, x1, y1) in zip(crop_cams, boxes, strict=True):
        region = unletterbox(cam, crop_size, y1 - y0, x1 - x0)
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], region)
    return out


def combine(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Raw GradCAM maps of the streams, on the same pixels -> float32 map in [0, 1].

    Both streams' values are gradient x activation of the same L, so they share one scale:
    the elementwise maximum keeps, at each pixel, the stream that moves L most, and a crop
    that barely matters stays dark instead of being stretched to full brightness (as a
    per-stream normalisation would). The result is divided by its peak; all zeros stay zero.
    """
    heat = np.maximum.reduce([np.asarray(m, np.float32) for m in maps])
    peak = float(heat.max(initial=0.0))
    if not peak > 0:
        return np.zeros_like(heat)
    return np.clip(heat / peak, 0.0, 1.0)


# ---- the model --------------------------------------------------------------------------------


@dataclasses.dataclass
class Explanation:
    """One query's dissimilarity map and what it is made of, in query pixels.

    Attributes:
      heat: float32 [H, W] in [0, 1], the combined map (`Explainer.dissimilarity`).
      global_map: float32 [H, W] raw GradCAM of FG, or None without a global stream.
      object_map: float32 [H, W] raw GradCAM of fv placed in the node boxes (maximum over
        nodes), or None without visual node features.
      boxes: float32 [K, 4] xyxy boxes of the query's real nodes (objects, then background).
      loss: L(x | x+, x-) of eq. 14.
      sensitivity: |z| |dL/dz| of the query, in [0, 2]: how much L can move at all; the
        heat is all zeros below FLAT_SENSITIVITY.
    """

    heat: np.ndarray
    global_map: np.ndarray | None
    object_map: np.ndarray | None
    boxes: np.ndarray
    loss: float
    sensitivity: float


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"{what} must be decoded RGB uint8 [H, W, 3] (preprocessing.images."
                         f"decode_image), got {image.dtype} {tuple(image.shape)}")
    return image


def exposed_stages(model: Any, variables: Any, batch: dict[str, Any]) -> dict[str, dict]:
    """Stream -> stage name -> jax.ShapeDtypeStruct of the feature maps `ResNet.expose` sows
    for `batch`, e.g. {'global_cnn': {'stage1': ..., ...}, 'object_cnn': {...}}. Shapes only:
    nothing is computed."""
    _, state = jax.eval_shape(
        functools.partial(model.apply, train=False, mutable=[resnet.STAGE_COLLECTION]),
        variables, batch)
    sown = state.get(resnet.STAGE_COLLECTION, {})
    return {stream: {name: maps[0] for name, maps in sown[stream].items()}
            for stream in (GLOBAL_STREAM, OBJECT_STREAM) if stream in sown}


def dissimilarity_objective_at(model: Any, variables: Any, batch: dict[str, Any],
                               perturbations: dict[str, dict[str, Any]]
                               ) -> tuple[Any, tuple[dict[str, Any], Any]]:
    """Eq. 14 with `perturbations` added to the stage outputs they name.

    Args:
      model, variables: an OscarNet and its {'params', 'batch_stats'}.
      batch: three records: [query x, original x-, positive x+].
      perturbations: stream -> {stage name: array shaped like that stage's output}.

    Returns:
      (L, (stream -> the perturbed feature maps, z [3, D])), so that `jax.grad` with respect
      to zero perturbations gives dL/dA at those maps.
    """
    z, state = model.apply({**variables, resnet.PERTURBATIONS: perturbations}, batch,
                           train=False, mutable=[resnet.STAGE_COLLECTION])
    loss = dissimilarity_objective(z[0], z[2], z[1])
    sown = state[resnet.STAGE_COLLECTION]
    maps = {s: sown[s][name][0] for s, stages in perturbations.items() for name in stages}
    return loss, (maps, z)


def query_gradcam(model: Any, variables: Any, batch: dict[str, Any],
                  zeros: dict[str, dict[str, Any]]) -> tuple[Any, Any, dict[str, Any]]:
    """(L, sensitivity, stream -> GradCAM maps of the query) at the stage of `zeros` (zero
    perturbations, one stage per stream): 'global_cnn' [1, h, w], 'object_cnn' [N, h, w]
    (every node slot). Sensitivity is |z| |dL/dz| of the query (see FLAT_SENSITIVITY).
    """
    (loss, (maps, z)), grads = jax.value_and_grad(
        functools.partial(dissimilarity_objective_at, model, variables, batch),
        has_aux=True)(zeros)
    nodes = batch["crops"].shape[1]
    # The query's rows: its global view, and its N crops (OscarNet flattens crops to [B*N]).
    rows = {GLOBAL_STREAM: slice(0, 1), OBJECT_STREAM: slice(0, nodes)}
    cams = {}
    for stream, stages in grads.items():
        (gradient,) = stages.values()
        cams[stream] = gradcam(maps[stream][rows[stream]], gradient[rows[stream]])
    dz = jax.grad(dissimilarity_objective)(z[0], z[2], z[1])
    return loss, jnp.linalg.norm(z[0]) * jnp.linalg.norm(dz), cams


class Explainer:
    """GradCAM maps of eq. 14 for the trained model of a workdir.

    Loads the latest checkpoint and the record settings once; every call has the same
    shapes (three records: query, original, positive), so it compiles once.

    Attributes:
      stage: ResNet stage whose output feature map GradCAM reads (1 = finest).
      streams: the CNN streams of this model that are explained ('global_cnn',
        'object_cnn'); ablations without one explain with the other.
      maker: turns pixels into the record the model sees (`oscar_jax.inference.records`).
      config, model, variables: the restored run (`oscar_jax.workdir.restore_inference`).
    """

    def __init__(self, workdir: str, *, stage: int = DEFAULT_STAGE):
        self.settings = record_settings(workdir)
        self.maker = ImageRecordMaker(self.settings)
        self.config, self.model, self.variables = restore_inference(workdir)
        model = self.model
        self.stage = int(stage)
        # Record shapes are fixed by the settings: a blank image's record stands for all.
        blank = self.maker.record(np.zeros((8, 8, 3), np.uint8))
        exposed = exposed_stages(model, self.variables, stack([blank] * 3))
        self.streams = tuple(exposed)
        if not self.streams:
            raise ValueError(f"the model of {workdir} has no CNN stream (use_global and "
                             "use_visual are both off): there is no feature map to explain")
        name = f"stage{self.stage}"
        available = sorted(exposed[self.streams[0]])
        if name not in available:
            raise ValueError(f"stage {stage} does not exist; the {self.config.model.cnn} "
                             f"ResNet has stages {', '.join(s[5:] for s in available)}")
        zeros = {s: {name: jnp.zeros(maps[name].shape, maps[name].dtype)}
                 for s, maps in exposed.items()}
        self._gradcam = jax.jit(
            lambda variables, batch: query_gradcam(model, variables, batch, zeros))

    def explain(self, query: np.ndarray, original: np.ndarray,
                positive: np.ndarray | None = None) -> Explanation:
        """The dissimilarity map of `query` against `original`, with its parts.

        Args:
          query: x, decoded RGB uint8 [H, W, 3], e.g. a manipulated copy.
          original: x-, the trusted original the query was matched to.
          positive: x+, a benign view of the query (e.g. re-compressed, resized). None uses
            the query itself; then d(f(x), f(x+)) sits at its maximum, so that term
            contributes (numerically) no gradient and only "away from the original" shapes
            the map. A real benign view adds the paper's "ignore benign change" term: the
            pull towards f(x+) offsets what a benign change alone would move.
        """
        query = _check_image(query, "query")
        query_record = self.maker.record(query)
        original_record = self.maker.record(_check_image(original, "original"))
        positive_record = (query_record if positive is None
                           else self.maker.record(_check_image(positive, "positive")))
        batch = stack([query_record, original_record, positive_record])
        loss, sensitivity, cams = self._gradcam(self.variables, batch)
        # The record was made from the query shrunk to the records' size: maps are built in
        # that frame (where boxes and letterboxes are defined), then stretched to the query.
        frame = shrink_to_fit(query, self.maker.max_side) if self.maker.max_side else query
        global_map, object_map, boxes = self._in_query_pixels(
            {s: np.asarray(c, np.float32) for s, c in cams.items()}, query_record,
            query.shape[:2], frame.shape[:2])
        heat = combine([m for m in (global_map, object_map) if m is not None])
        if float(sensitivity) < FLAT_SENSITIVITY:
            heat = np.zeros_like(heat)  # what is left is rounding noise, not a signal
        return Explanation(heat=heat, global_map=global_map, object_map=object_map,
                           boxes=boxes, loss=float(loss), sensitivity=float(sensitivity))

    def _in_query_pixels(self, cams: dict[str, np.ndarray], record: dict[str, np.ndarray],
                         query_shape: tuple[int, int], frame_shape: tuple[int, int]
                         ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        """GradCAM cells -> (global map, object map, node boxes) over the query's pixels;
        `frame_shape` is the size of the image the record was made from."""
        (height, width), (frame_h, frame_w) = query_shape, frame_shape
        boxes = node_boxes(record["geometry"], record["node_mask"], frame_h, frame_w)
        global_map = object_map = None
        if GLOBAL_STREAM in cams:
            global_map = _resize(unletterbox(cams[GLOBAL_STREAM][0],
                                             self.maker.config.global_size, frame_h, frame_w),
                                 height, width)
        if OBJECT_STREAM in cams:
            real = np.asarray(record["node_mask"], bool)
            object_map = _resize(paste_crop_maps(cams[OBJECT_STREAM][real], boxes,
                                                 self.maker.config.crop_size, frame_h,
                                                 frame_w), height, width)
        scale = np.array([width / frame_w, height / frame_h] * 2, np.float32)
        return global_map, object_map, boxes.astype(np.float32) * scale

    def dissimilarity(self, query: np.ndarray, original: np.ndarray,
                      positive: np.ndarray | None = None) -> np.ndarray:
        """float32 [H, W] in [0, 1] over the query's pixels: where it differs from the
        original (eq. 14 GradCAM; see `explain` for the arguments)."""
        return self.explain(query, original, positive).heat


# ---- pictures ---------------------------------------------------------------------------------


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The 'jet' colouring of `heat` (float [h, w] in [0, 1], resized to the image if needed)
    blended over `image` (uint8 [H, W, 3]) with weight `alpha` -> uint8 [H, W, 3]."""
    from matplotlib import colormaps

    image = _check_image(image, "overlay image")
    heat = np.clip(_resize(np.asarray(heat, np.float32), *image.shape[:2]), 0.0, 1.0)
    colour = colormaps["jet"](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


# Pixels of the white band that holds a panel's label, and between panels.
_LABEL_BAND, _GAP = 16, 4


def _labelled(panel: np.ndarray, label: str) -> np.ndarray:
    """`panel` under a white band with `label` in it."""
    band = Image.new("RGB", (panel.shape[1], _LABEL_BAND), (255, 255, 255))
    ImageDraw.Draw(band).text((3, 2), label, fill=(0, 0, 0))
    return np.concatenate([np.asarray(band), panel])


def _to_height(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h == height:
        return image
    width = max(1, round(w * height / h))
    interpolation = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


def explanation_figure(query: np.ndarray, original: np.ndarray, heat: np.ndarray
                       ) -> np.ndarray:
    """The paper's Fig. 1 panel, uint8 [H + band, W', 3]: [heat over the query | original
    (resized to the query's height, aspect kept) | query], each labelled above."""
    query = _check_image(query, "query")
    original = _to_height(_check_image(original, "original"), query.shape[0])
    panels = [_labelled(overlay(query, heat), "dissimilarity"),
              _labelled(original, "original"), _labelled(query, "query")]
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def write_explanation(path: str, query: np.ndarray, original: np.ndarray,
                      heat: np.ndarray) -> None:
    """Writes `explanation_figure(...)` to `path` as PNG."""
    data = encode_png(explanation_figure(query, original, heat))
    with open(path, "wb") as f:
        f.write(data)
