"""Local edits drawn afresh and painted into a stored record: the global view and every crop.

The demo records hold two scripted edits per training original (`manipulations`), so a model
can learn those 180 edits rather than what an edit is. An `Edit` here is drawn in the image's
own normalised frame (u, v in [0, 1], the unit square of the image before letterboxing) and
painted alike into the global view and into each real node crop, through the mapping that
`scene_graph` used to make them: the letterboxed global view, and each node's box (eq. 1
geometry) letterboxed into its crop. The record's scene graph (boxes, Hu moments, relations)
stays as stored: nothing here moves pixels or needs new detections.

Kinds, each covering about 2-6 % of the image as the scripted edits do:

    recolour    hue rotation and saturation change inside a region
    splice      a region filled from another image (the donor) at another place
    copy_move   a region filled from elsewhere in the same image
    fill        a region covered by the colour around it (a crude removal)
    caption     a short outlined word

The image's aspect ratio is read from the global view's letterbox (rows and columns darker
than `layout.DARK_LEVEL` at its borders); a photo whose own border is black reads as a
little narrower, which shifts the edit in the crops by at most that border.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from preprocessing import layout, manipulations

KINDS = ("recolour", "splice", "copy_move", "fill", "caption")
# Side of the square canvas the region and the caption are drawn on (normalised frame).
CANVAS = 256
# Region area as a fraction of the image, as the scripted edits aim.
AREA = manipulations.TARGET_FRACTION


@dataclasses.dataclass(frozen=True)
class Edit:
    """One edit in the normalised frame of an image.

    Attributes:
      kind: one of KINDS.
      alpha: float32 [CANVAS, CANVAS] in [0, 1], how much of the edit each point shows.
      colour: float32 [CANVAS, CANVAS, 3] painted colour times alpha (fill, caption), else
        None; premultiplied, so that sampling it coarsely blends as a resize would.
      shift: (du, dv) the region's source offset in the frame (splice, copy_move).
      hue, saturation: recolour's hue rotation (OpenCV degrees / 2) and saturation factor.
    """

    kind: str
    alpha: np.ndarray
    colour: np.ndarray | None = None
    shift: tuple[float, float] = (0.0, 0.0)
    hue: int = 0
    saturation: float = 1.0


def content_rect(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive, of the image inside a letterboxed view
    uint8 [G, G, 3]; the whole view when it is all dark. Every row with one content pixel
    counts: a canonical view's masked corners leave its outermost rows nearly dark."""
    return layout.content_box(image, min_content=0.0)


def global_frame(size: int, rect: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float32 (u, v) [size, size]: the normalised image point under each view pixel
    (outside [0, 1] on the letterbox bars)."""
    top, bottom, left, right = rect
    centres = np.arange(size, dtype=np.float32) + 0.5
    u = (centres - left) / max(right - left, 1)
    v = (centres - top) / max(bottom - top, 1)
    return np.broadcast_to(u[None, :], (size, size)), np.broadcast_to(v[:, None], (size, size))


def crop_frame(size: int, geometry: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 (u, v) [size, size] under each pixel of a node crop letterboxed from the box of
    eq. 1 `geometry` [5] (cx, cy, w, h normalised) in an image of width / height `aspect`;
    -1 on the crop's letterbox bars."""
    cx, cy, bw, bh = (float(x) for x in geometry[:4])
    width, height = bw * aspect, bh  # the box's sides in units of the image height
    scale = size / max(width, height, 1e-6)
    # Whole pixels, as scene_graph.letterbox places the resized box.
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    centres = np.arange(size, dtype=np.float32) + 0.5
    u = cx - bw / 2 + (centres - left) / new_w * bw
    v = cy - bh / 2 + (centres - top) / new_h * bh
    # The crop's letterbox bars show nothing of the image: no point of the frame there.
    u[(centres < left) | (centres > left + new_w)] = -1.0
    v[(centres < top) | (centres > top + new_h)] = -1.0
    return np.broadcast_to(u[None, :], (size, size)), np.broadcast_to(v[:, None], (size, size))


def _sample(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of a canvas over the unit square at (u, v); 0 outside it. A target
    coarser than the canvas samples it blurred to its own pixel size, so thin strokes (the
    caption) average out as a resize would rather than alias."""
    h, w = canvas.shape[:2]
    du, dv = np.abs(np.diff(u[0])), np.abs(np.diff(v[:, 0]))  # -1 on bars: not steps
    du, dv = du[(u[0, 1:] >= 0) & (u[0, :-1] >= 0)], dv[(v[1:, 0] >= 0) & (v[:-1, 0] >= 0)]
    step = max(float(du.max(initial=0)) * w, float(dv.max(initial=0)) * h)
    if step > 1.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), 0.5 * step)
    return cv2.remap(canvas, np.ascontiguousarray(u * w - 0.5, np.float32),
                     np.ascontiguousarray(v * h - 0.5, np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _region(rng: np.random.Generator, centre: tuple[float, float]) -> np.ndarray:
    """A feathered random ellipse or polygon of AREA of the canvas near `centre`."""
    area = rng.uniform(*AREA) * CANVAS * CANVAS
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    ratio = rng.uniform(0.5, 2.0)
    a = np.sqrt(area / np.pi * ratio)
    b = area / (np.pi * a)
    cx, cy = (np.clip(c, 0.15, 0.85) * CANVAS for c in centre)
    if rng.random() < 0.5:
        cv2.ellipse(canvas, (round(cx), round(cy)), (max(1, round(a)), max(1, round(b))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
        radii = rng.uniform(0.7, 1.3, angles.size)
        points = np.stack([cx + a * radii * np.cos(angles), cy + b * radii * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), 1.5)


def _caption(rng: np.random.Generator, centre: tuple[float, float]) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """Alpha and colour canvases of an outlined word at about AREA of the canvas."""
    word = str(rng.choice(manipulations.CAPTION_WORDS))
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX]))
    target = rng.uniform(*AREA) * CANVAS * CANVAS
    (w, h), _ = cv2.getTextSize(word, font, 1.0, 2)
    scale = float(np.sqrt(target / max(w * h, 1)))
    (w, h), _ = cv2.getTextSize(word, font, scale, max(1, round(2 * scale)))
    x = int(np.clip(centre[0] * CANVAS - w / 2, 0, max(CANVAS - w, 0)))
    y = int(np.clip(centre[1] * CANVAS + h / 2, h, CANVAS - 1))
    thick = max(1, round(2 * scale))
    outline, fill = np.zeros((CANVAS, CANVAS), np.uint8), np.zeros((CANVAS, CANVAS), np.uint8)
    cv2.putText(outline, word, (x, y), font, scale, 1, thick + 2 * max(1, thick // 2),
                cv2.LINE_AA)
    cv2.putText(fill, word, (x, y), font, scale, 1, thick, cv2.LINE_AA)
    ink = rng.choice([[255, 255, 255], [255, 230, 0], [230, 30, 30]]).astype(np.float32)
    # Premultiplied by alpha: ink on the letters, black (0) on their outline.
    colour = np.where(fill[..., None] > 0, ink, np.float32(0)).astype(np.float32)
    return np.maximum(outline, fill).astype(np.float32), colour


def draw_edit(rng: np.random.Generator, image: np.ndarray, geometry: np.ndarray,
              node_mask: np.ndarray, kind: str | None = None) -> Edit:
    """A random edit for the record with global view `image` uint8 [G, G, 3] and nodes
    `geometry` float32 [N, 5], `node_mask` bool [N]; near an object when it has one."""
    kind = kind or str(rng.choice(KINDS))
    if kind not in KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; choose one of {KINDS}")
    objects = np.flatnonzero(node_mask)[:-1]  # the last real node is the background
    if objects.size and rng.random() < 0.7:
        cx, cy, bw, bh = geometry[rng.choice(objects), :4]
        centre = (float(cx + rng.uniform(-0.3, 0.3) * bw), float(cy + rng.uniform(-0.3, 0.3) * bh))
    else:
        centre = (float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75)))
    if kind == "caption":
        alpha, colour = _caption(rng, centre)
        return Edit(kind, alpha, colour)
    alpha = _region(rng, centre)
    if kind == "recolour":
        return Edit(kind, alpha, hue=int(rng.integers(30, 150)),
                    saturation=float(rng.uniform(0.6, 1.6)))
    if kind == "fill":
        u, v = global_frame(image.shape[0], content_rect(image))
        inside = _sample(alpha, u, v)
        ring = (_sample(cv2.dilate(alpha, np.ones((25, 25), np.uint8)), u, v) > 0.5) & (
            inside < 0.05)
        mean = image[ring].mean(axis=0) if ring.any() else image.reshape(-1, 3).mean(axis=0)
        return Edit(kind, alpha, alpha[..., None] * mean.astype(np.float32))
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(0.15, 0.35)
    return Edit(kind, alpha, shift=(float(distance * np.cos(angle)),
                                    float(distance * np.sin(angle))))


def apply_edit(edit: Edit, image: np.ndarray, crops: np.ndarray, geometry: np.ndarray,
               node_mask: np.ndarray, donor: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The record's global view uint8 [G, G, 3] and crops uint8 [N, C, C, 3] with `edit`
    painted into both. `donor` is the splice's source global view (the image itself for
    copy_move). Letterbox bars and padding crops stay as they are; in the background node's
    crop (the last real node) only its non-black pixels change, since the objects are blacked
    out there."""
    rect = content_rect(image)
    aspect = (rect[3] - rect[2]) / max(rect[1] - rect[0], 1)
    source = donor if edit.kind == "splice" else image
    if edit.kind == "splice" and donor is None:
        raise ValueError("a splice needs the donor's global view")
    source_rect = content_rect(source)

    def paint(target: np.ndarray, u: np.ndarray, v: np.ndarray, keep_black: bool) -> np.ndarray:
        inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        if keep_black:
            inside &= target.max(axis=-1) > 0
        alpha = _sample(edit.alpha, u, v) * inside
        if not alpha.any():
            return target
        x = target.astype(np.float32)
        if edit.kind == "recolour":
            hsv = cv2.cvtColor(target, cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + edit.hue) % 180
            hsv[..., 1] = np.clip(hsv[..., 1] * edit.saturation, 0, 255)
            new = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        elif edit.kind in ("fill", "caption"):
            out = x * (1 - alpha[..., None]) + _sample(edit.colour, u, v) * inside[..., None]
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        else:  # splice, copy_move: the source's pixels at the shifted point
            su = np.clip((u + edit.shift[0]) % 1.0, 0, 1)
            sv = np.clip((v + edit.shift[1]) % 1.0, 0, 1)
            top, bottom, left, right = source_rect
            px = left + su * (right - left) - 0.5
            py = top + sv * (bottom - top) - 0.5
            new = cv2.remap(source.astype(np.float32), px.astype(np.float32),
                            py.astype(np.float32), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
        out = x + alpha[..., None] * (new - x)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    new_image = paint(image, *global_frame(image.shape[0], rect), keep_black=False)
    new_crops = crops.copy()
    real = np.flatnonzero(node_mask)
    for i in real:
        u, v = crop_frame(crops.shape[1], geometry[i], aspect)
        new_crops[i] = paint(crops[i], u, v, keep_black=i == real[-1])
    return new_image, new_crops
