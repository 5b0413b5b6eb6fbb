"""Layout normalisation: one frame for an image and its padded, mirrored or rotated copies.

Copies of an image are often letterboxed or padded with black, mirrored, or rotated on the
same canvas with black corners (the benign views of Table 1 do all three). A hash that must
learn each of these from examples spends its capacity on them; `canonical_layout` undoes
them before an image is detected and hashed, the same way for every image:

1. rows and columns at the borders that are (nearly) all black are cut away;
2. a rotation on the same canvas is read from the four black corner triangles it leaves
   (the hypotenuse of each meets the edge at the rotation angle; all four must agree), and
   undone on an enlarged canvas, whose black frame is cut again;
3. everything outside the inscribed ellipse is blacked out, so that an original and a copy
   whose corners a rotation cut away lose the same pixels;
4. the image is mirrored so that its brightness centroid lies in the top left quadrant.

Steps 2 and 4 read the image's own content, so an edit can change them: a manipulated
version that comes out rotated or mirrored differently moves further from its original,
which is what a hash for tamper detection wants. A photo with a truly black border or black
corners loses them, the same way in the records and for a query.
"""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing import transforms

# Largest channel value counted as fill: JPEG leaves black fill within a few levels of 0.
DARK_LEVEL = 12
# A border row or column is content once more than this share of its pixels is not fill.
MIN_CONTENT = 0.02
# Corner triangles with a leg shorter than this (pixels) are too small to read an angle from.
MIN_LEG = 3
# The four corners' angles must lie within this range (degrees) to count as a rotation.
ANGLE_SPREAD = 6.0


def content_box(image: np.ndarray, min_content: float = MIN_CONTENT
                ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) bounds of `image` [H, W, 3] without its black frame: the
    outermost rows and columns with more than `min_content` of their pixels above fill (0:
    any such pixel, the exact bounds of a letterbox); the whole image when nothing but fill
    is found."""
    content = image.max(axis=-1) > DARK_LEVEL
    rows = np.flatnonzero(content.mean(axis=1) > min_content)
    cols = np.flatnonzero(content.mean(axis=0) > min_content)
    if len(rows) == 0 or len(cols) == 0:
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _dark_run(line: np.ndarray) -> int:
    """Length of the leading run of True in a bool vector."""
    stops = np.flatnonzero(~line)
    return len(line) if len(stops) == 0 else int(stops[0])


def _corner_slope(dark: np.ndarray) -> float | None:
    """|d run / d row| of the black triangle in the top left corner of `dark` [H, W] (bool):
    the ratio of its legs, fitted over every row it spans; None without a triangle."""
    height = _dark_run(dark[:, 0])
    width = _dark_run(dark[0])
    if min(height, width) < MIN_LEG or height == dark.shape[0] or width == dark.shape[1]:
        return None
    rows = np.arange(height)
    runs = np.array([_dark_run(dark[r]) for r in rows], np.float64)
    slope = -np.polyfit(rows, runs, 1)[0]
    return float(slope) if slope > 0 else None


def black_corner_angle(image: np.ndarray) -> float:
    """The angle (degrees, counter-clockwise as in `cv2.getRotationMatrix2D`) by which
    `image` [H, W, 3], its black frame already cut, looks rotated on its own canvas: 0.0
    unless all four corners hold black triangles that agree on one angle below 45 degrees."""
    dark = image.max(axis=-1) <= DARK_LEVEL
    angles = []
    # Each corner turned to the top left; a shallow triangle (long along the row) there means
    # a counter-clockwise rotation for the top left and bottom right corners, clockwise for
    # the other two.
    for corner, sign in ((dark, 1.0), (dark[:, ::-1], -1.0), (dark[::-1], -1.0),
                         (dark[::-1, ::-1], 1.0)):
        slope = _corner_slope(corner)
        if slope is None:
            return 0.0
        angle = np.degrees(np.arctan(min(slope, 1.0 / slope)))
        angles.append(angle * (sign if slope > 1.0 else -sign))
    if np.ptp(angles) > ANGLE_SPREAD:
        return 0.0
    return float(np.median(angles))


def _rotate_enlarged(array: np.ndarray, angle: float, interpolation: int) -> np.ndarray:
    """`array` [H, W, ...] rotated by `angle` degrees about its centre on a canvas large
    enough to hold all of it, the new area black."""
    height, width = array.shape[:2]
    matrix = transforms.rotation_matrix(height, width, angle)  # the views' own convention
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width = int(np.ceil(height * sin + width * cos))
    new_height = int(np.ceil(height * cos + width * sin))
    matrix[0, 2] += (new_width - width) / 2.0
    matrix[1, 2] += (new_height - height) / 2.0
    return cv2.warpAffine(array, matrix, (new_width, new_height), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _crop(image: np.ndarray, masks: np.ndarray | None, box: tuple[int, int, int, int]):
    top, bottom, left, right = box
    return image[top:bottom, left:right], None if masks is None else masks[:, top:bottom,
                                                                           left:right]


def inscribed_ellipse(height: int, width: int) -> np.ndarray:
    """bool [H, W]: the pixels whose centres lie inside the ellipse inscribed in the frame."""
    rows, cols = np.mgrid[:height, :width]
    y = (rows - (height - 1) / 2.0) / (height / 2.0)
    x = (cols - (width - 1) / 2.0) / (width / 2.0)
    return x * x + y * y <= 1.0


def canonical_layout(image: np.ndarray, masks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """`image` uint8 [H, W, 3] (and object `masks` bool [K, H, W], moved alike) -> the
    image in its canonical frame (module docstring), uint8 [H', W', 3], and the masks
    [K, H', W'] (None when none were given)."""
    image, masks = _crop(image, masks, content_box(image))
    angle = black_corner_angle(image)
    if angle:
        image = _rotate_enlarged(image, -angle, cv2.INTER_LINEAR)
        if masks is not None:
            rotated = [_rotate_enlarged(m.astype(np.uint8), -angle, cv2.INTER_NEAREST)
                       for m in masks]
            masks = (np.stack(rotated).astype(bool) if rotated
                     else np.zeros((0, *image.shape[:2]), bool))
        image, masks = _crop(image, masks, content_box(image))
    inside = inscribed_ellipse(*image.shape[:2])
    image = image * inside[..., None].astype(np.uint8)
    if masks is not None:
        masks = masks & inside
    luminance = image.astype(np.float32).mean(axis=-1)
    total = float(luminance.sum()) or 1.0
    height, width = luminance.shape
    centre_x = float(luminance.sum(axis=0) @ (np.arange(width) - (width - 1) / 2.0)) / total
    centre_y = float(luminance.sum(axis=1) @ (np.arange(height) - (height - 1) / 2.0)) / total
    if centre_x > 0:
        image = image[:, ::-1]
        masks = None if masks is None else masks[:, :, ::-1]
    if centre_y > 0:
        image = image[::-1]
        masks = None if masks is None else masks[:, ::-1]
    image = np.ascontiguousarray(image)
    return image, None if masks is None else np.ascontiguousarray(masks)
