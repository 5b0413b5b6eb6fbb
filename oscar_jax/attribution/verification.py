"""Geometric verification (paper section 5): does a query register onto a candidate original?

SIFT keypoints of both images, Lowe's ratio test and a mutual nearest neighbour check, then a
fundamental matrix fitted to the matched points by OpenCV's USAC (MAGSAC++, in place of the
paper's MLESAC). The number of inliers says whether the two images show the same content.
SIFT is not mirror invariant and a horizontal flip is a benign transform, so the mirrored query
is tried as well: a query's features (`features`) include its mirror image's, an original's
(`original_features`) do not need to.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from preprocessing.images import shrink_to_fit

# Both images are brought to at most this side: SIFT on larger images costs more and adds
# little to a pass/fail decision.
MAX_SIDE = 512
# Below this many keypoints per image SIFT is unreliable, so small images are enlarged.
MIN_SIDE = 256
MAX_FEATURES = 2000
RATIO = 0.7  # Lowe's ratio test: strict, as unrelated photos share many textures
REPROJECTION_PX = 1.0  # epipolar distance (pixels) within which a match is an inlier
CONFIDENCE = 0.999
MAX_ITERATIONS = 5000
MIN_MATCHES = 8  # a fundamental matrix needs eight correspondences for a stable fit


@dataclasses.dataclass(frozen=True)
class Features:
    """SIFT keypoints (x, y) float32 [K, 2] and descriptors float32 [K, 128] of one image."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


@dataclasses.dataclass(frozen=True)
class ImageFeatures:
    """Features of a query image and of its mirror image."""

    direct: Features
    mirrored: Features


@dataclasses.dataclass(frozen=True)
class Verification:
    matches: int  # correspondences that pass the ratio test
    inliers: int  # of those, consistent with the fitted fundamental matrix
    mirrored: bool  # the query registered as a mirror image


def _gray(image: np.ndarray) -> np.ndarray:
    image = shrink_to_fit(image, MAX_SIDE)
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    short = min(gray.shape)
    if short < MIN_SIDE:
        scale = MIN_SIDE / short
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return gray


def _sift(gray: np.ndarray) -> Features:
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    points = np.asarray([k.pt for k in keypoints], np.float32)
    return Features(points, descriptors.astype(np.float32))


def features(image: np.ndarray) -> ImageFeatures:
    """A query, RGB uint8 [H, W, 3] -> SIFT features of it and of its mirror image."""
    gray = _gray(image)
    return ImageFeatures(_sift(gray), _sift(np.ascontiguousarray(gray[:, ::-1])))


def original_features(image: np.ndarray) -> Features:
    """An original, RGB uint8 [H, W, 3] -> its SIFT features (only queries are mirrored)."""
    return _sift(_gray(image))


def _register(query: Features, original: Features) -> tuple[int, int]:
    """(matches, inliers) of one pair of feature sets."""
    if len(query) < 2 or len(original) < 2:
        return 0, 0
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, original.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    # Mutual: the original's keypoint must also choose the query's as its nearest.
    back = {m.queryIdx: m.trainIdx for m in matcher.match(original.descriptors,
                                                          query.descriptors)}
    good = [m for m in good if back.get(m.trainIdx) == m.queryIdx]
    if len(good) < MIN_MATCHES:
        return len(good), 0
    source = query.points[[m.queryIdx for m in good]]
    target = original.points[[m.trainIdx for m in good]]
    try:
        matrix, mask = cv2.findFundamentalMat(source, target, cv2.USAC_MAGSAC, REPROJECTION_PX,
                                              CONFIDENCE, MAX_ITERATIONS)
    except cv2.error:  # degenerate correspondences (e.g. all on one line): no registration
        return len(good), 0
    if matrix is None or mask is None:
        return len(good), 0
    return len(good), int(mask.ravel().astype(bool).sum())


def verify(query: ImageFeatures, original: Features) -> Verification:
    """How well the query (or its mirror image) registers onto the original."""
    matches, inliers = _register(query.direct, original)
    flipped_matches, flipped_inliers = _register(query.mirrored, original)
    if flipped_inliers > inliers:
        return Verification(flipped_matches, flipped_inliers, True)
    return Verification(matches, inliers, False)
