"""Verdicts of the attribution tool (paper section 5) and the calibration of their thresholds.

A query's shortlist (the nearest originals by Hamming distance) is checked by geometric
verification (`oscar_jax.attribution.verification`); then:

* `unknown`: no candidate registers with at least `min_inliers` inliers;
* `match`: the registered candidate nearest in Hamming distance is within `match_distance`
  bits: a benign copy of that original;
* `manipulated`: the query registers onto an original (it is derived from it) but its code
  lies further than `match_distance` from it: the content was changed.

Both thresholds are calibrated on labelled pairs (`calibrate_thresholds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from oscar_jax.attribution import verification

VERDICTS = ("match", "manipulated", "unknown")
SHORTLIST = 10  # candidates that geometric verification looks at (the paper's top 10)
# Before calibration: a third of the code may flip for a benign copy (the demo model and the
# classical hashes all separate benign views from manipulations somewhere near there), and a
# fundamental matrix fits a few chance correspondences, so registration needs more.
DEFAULT_MATCH_FRACTION = 1 / 3
DEFAULT_MIN_INLIERS = 15
MESSAGES = {
    "match": "A benign copy of a trusted original: its provenance applies.",
    "manipulated": "Derived from a trusted original but changed: do not trust the original's "
                   "provenance for this image.",
    "unknown": "No trusted original found for this image.",
}


def default_thresholds(bits: int) -> dict[str, Any]:
    return {"match_distance": int(round(bits * DEFAULT_MATCH_FRACTION)),
            "min_inliers": DEFAULT_MIN_INLIERS, "calibrated_on": None}


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: int
    distance: int
    inliers: int


def decide(candidates: Sequence[Candidate], thresholds: Mapping[str, Any]
           ) -> tuple[str, Candidate | None]:
    """(verdict, the original it refers to): see the module docstring."""
    verified = [c for c in candidates if c.inliers >= thresholds["min_inliers"]]
    if not verified:
        return "unknown", None
    best = min(verified, key=lambda c: (c.distance, -c.inliers))
    return ("match" if best.distance <= thresholds["match_distance"] else "manipulated"), best


def verdict_with_early_exit(distances: np.ndarray, keys: Sequence[str], inliers_of,
                            thresholds: Mapping[str, Any]) -> tuple[str, int | None]:
    """`decide` over a shortlist sorted by distance, verifying only until the verdict is
    certain: once a candidate registers, no later candidate can be nearer. Returns (verdict,
    position in the shortlist of the original it refers to)."""
    candidates, found_at = [], None
    for position, (distance, key) in enumerate(zip(distances, keys, strict=True)):
        if found_at is not None and distance > found_at:
            break
        candidates.append(Candidate(position, int(distance), inliers_of(key)))
        if candidates[-1].inliers >= thresholds["min_inliers"]:
            found_at = int(distance)
    verdict, chosen = decide(candidates, thresholds)
    return verdict, (chosen.id if chosen else None)


def best_threshold(accept: np.ndarray, reject: np.ndarray, candidates: np.ndarray) -> int:
    """The threshold t (values <= t accepted) that minimises the false rejection rate of
    `accept` plus the false acceptance rate of `reject`; the middle of the best plateau, so
    the threshold sits as far as the data allow from both error sources."""
    accept, reject = np.asarray(accept, float), np.asarray(reject, float)
    errors = np.asarray([
        (np.mean(accept > t) if len(accept) else 0.0)
        + (np.mean(reject <= t) if len(reject) else 0.0) for t in candidates])
    best = np.flatnonzero(np.isclose(errors, errors.min()))
    # The longest run of consecutive optimal candidates, then its middle.
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    return int(candidates[run[len(run) // 2]])


def calibrate_thresholds(*, bits: int, benign: Sequence[Candidate],
                         manipulated: Sequence[Candidate], unrelated_inliers: Sequence[int],
                         source: str) -> dict[str, Any]:
    """Thresholds from labelled pairs.

    Args:
      bits: code length.
      benign: (query, its original) pairs of benign copies.
      manipulated: (query, its original) pairs of manipulated versions.
      unrelated_inliers: inliers of (query, a shortlisted original it does not derive from).
      source: what the pairs came from, stored with the thresholds.
    """
    related = np.asarray([c.inliers for c in (*benign, *manipulated)])
    unrelated = np.asarray(unrelated_inliers)
    top = int(max(related.max(initial=0), unrelated.max(initial=0))) + 1
    # Registration passes at inliers >= min_inliers, that is at -inliers <= -min_inliers.
    counts = np.arange(verification.MIN_MATCHES, top + 1)
    min_inliers = -best_threshold(-related, -unrelated, -counts)
    registered = [c for c in benign if c.inliers >= min_inliers]
    registered_bad = [c for c in manipulated if c.inliers >= min_inliers]
    match_distance = best_threshold([c.distance for c in registered],
                                    [c.distance for c in registered_bad], np.arange(bits + 1))
    return {"match_distance": match_distance, "min_inliers": int(min_inliers),
            "calibrated_on": source, "pairs": {"benign": len(benign),
                                               "manipulated": len(manipulated),
                                               "unrelated": len(unrelated)}}
