"""Retrieval metrics for Hamming-distance search (paper section 4.2, eqs. 12 and 13), in numpy.

Codes are packed bits, uint8 [N, B] in ``np.packbits`` order (``oscar_jax.inference.codes``),
compared by Hamming distance. A database is split into *labelled* columns, whose distances to
each query are given as an int matrix [Q, D] with boolean labels, and an optional unlabelled
*distractor* set. Distances are integers in ``0..bits``, so a distractor set enters a query's
ranking only through its histogram of distances: every function takes ``distractor_histogram``,
int [Q, bits + 1], the number of distractors at each distance from each query
(``distance_histogram`` computes it in bounded memory, so millions of distractors never need to
be sorted). Distractors are irrelevant, non-manipulated items.

Ties. Distances are small integers, so ties are common, and they are never broken in the
evaluated method's favour. Within a group of equal distance, items the method should rank low
are placed first and items it should rank high are placed last ("pessimistic" order):

* Benchmark I (``ranks``, ``average_precision``, ``benchmark_one_scores``): at equal distance the
  query's own manipulated versions come first, then every other irrelevant item (other
  identities and distractors; labelled irrelevant items are placed before the distractors,
  which cannot change any metric since both are irrelevant), then the relevant items last.
  Items of the same class at the same distance are ordered by column index.
* Benchmark II (``target_ranks``, ``benchmark_two_scores``): for a benign query the target original
  goes after every other item at its distance; for a manipulated query, where finding the
  original at rank 1 is a failure, the original goes before every other item at its distance.

Metrics, per query, from the 1-based ranks of the whole (labelled + distractor) ranking:

* AP: ``sum_k r(k) P(k) / sum_k r(k)``, the standard average precision.
* mmAP (eq. 12): ``sum_k r(k) m(k) P(k) / sum_k r(k)`` with ``m(k) = 1`` while no manipulated
  version of the query is ranked at or above ``k``: AP counting only the relevant items ranked
  before the first manipulated one, divided by the number of all relevant items.
* mmAP@R: eq. 12 over the top ``R`` results only, ``R`` = the query's number of relevant
  items, divided by ``R`` (as in the usual mAP@R, where the denominator is ``R`` and not the
  number of relevant items found in the top ``R``). AP@R is the same without the mask.
* Benchmark II: ``R@1`` (benign queries whose target is at rank 1), ``mAP`` (benign, mean of
  ``1 / rank`` of the target: AP with a single relevant item), ``R@1_bar = 1 - R@1`` and
  ``mAP_bar = 1 - mAP`` over manipulated queries, and the trade-offs ``FR1`` and ``FmAP``
  (eq. 13, ``f_score``: ``a * b / (a + b)``, half the harmonic mean, 0 when both are 0).

Means over queries are plain floats. Benchmark I averages over the queries with at least one
relevant item (``queries`` counts them); with none, the means are NaN. In Benchmark II an empty
benign (or manipulated) query set gives NaN for the metrics of its side and for ``FR1`` and
``FmAP``, and 0 for its query count. All per-query values are exposed (``average_precision``,
``target_ranks``), so large query sets can be evaluated in blocks and averaged by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oscar_jax.inference import codes

_WORDS = ((8, np.uint64), (4, np.uint32), (2, np.uint16), (1, np.uint8))

# Tie classes of ``ranks``: at equal distance, lower classes come first.
_MANIPULATED, _IRRELEVANT, _RELEVANT = 0, 1, 2


# ----------------------------------------------------------------------------------------
# Input checks.


def _distance(name: str, x: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a matrix [queries, items], got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative entries (min {arr.min()}); they must be >= 0.")
    return arr


def _mask(name: str, x: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    arr = np.asarray(x)
    if arr.dtype != bool:
        raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}.")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape} like the distances.")
    return arr


def _histogram(
    name: str, x: ArrayLike | None, distance: NDArray[np.int64]
) -> NDArray[np.int64] | None:
    """Checks a distractor histogram [Q, bits + 1] against the labelled distances [Q, D]."""
    if x is None:
        return None
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer counts, got dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[0] != distance.shape[0] or arr.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape [queries={distance.shape[0]}, bits + 1], got {arr.shape}."
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative counts (min {arr.min()}).")
    if distance.size and distance.max() >= arr.shape[1]:
        raise ValueError(
            f"Distance {distance.max()} does not fit {name} with {arr.shape[1]} bins "
            f"(distances 0..{arr.shape[1] - 1})."
        )
    return arr


def _labels(
    distance: ArrayLike,
    relevant: ArrayLike,
    manipulated: ArrayLike | None,
    distractor_histogram: ArrayLike | None,
) -> tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_], NDArray[np.int64] | None]:
    dist = _distance("distance", distance)
    rel = _mask("relevant", relevant, dist.shape)
    if manipulated is None:
        man = np.zeros(dist.shape, bool)
    else:
        man = _mask("manipulated", manipulated, dist.shape)
        both = rel & man
        if both.any():
            q, c = np.argwhere(both)[0]
            raise ValueError(
                f"An item cannot be both relevant and manipulated (query {q}, column {c})."
            )
    hist = _histogram("distractor_histogram", distractor_histogram, dist)
    return dist, rel, man, hist


def _exclusive_cumsum(hist: NDArray[np.int64]) -> NDArray[np.int64]:
    """[Q, K] -> [Q, K]: entry k is the sum of entries < k (items strictly nearer than k)."""
    return np.cumsum(hist, axis=1) - hist


def _mean(values: NDArray[np.float64], keep: NDArray[np.bool_] | None = None) -> float:
    """Mean of ``values[keep]``; NaN (without a warning) when nothing is kept."""
    if keep is not None:
        values = values[keep]
    return float(values.mean()) if values.size else float("nan")


# ----------------------------------------------------------------------------------------
# Distances.


def distance_histogram(
    queries: ArrayLike,
    database: ArrayLike,
    *,
    chunk: int = 16384,
    query_chunk: int = 64,
) -> NDArray[np.int64]:
    """Counts of database codes at each Hamming distance from each query: int64 [Q, 8 * B + 1].

    ``queries`` are uint8 [Q, B] and ``database`` uint8 [M, B] packed codes.

    Entry ``[q, k]`` is the number of rows of ``database`` at distance ``k`` from query ``q``;
    each row sums to M. The database is read ``chunk`` rows at a time (it may be a memory map)
    and compared with ``query_chunk`` queries at a time, so the intermediates hold at most
    ``query_chunk * chunk`` distances whatever M is. Codes are compared one 64-bit word at a time
    when B is a multiple of 8 (else the widest word dividing B; bytes on numpy < 2), bits are
    counted with ``codes.popcount``, and each block is binned with one
    ``np.bincount`` using per-query offsets.
    """
    q = codes.check_codes("queries", queries)
    db = codes.check_codes("database", database)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} bytes per code but database {db.shape[1]}.")
    if chunk < 1 or query_chunk < 1:
        raise ValueError(f"chunk and query_chunk must be positive, got {chunk}, {query_chunk}.")
    num_bytes = q.shape[1]
    bins = 8 * num_bytes + 1
    out = np.zeros((q.shape[0], bins), dtype=np.int64)
    if q.shape[0] == 0 or db.shape[0] == 0 or num_bytes == 0:
        out[:, 0] = db.shape[0]
        return out
    if not codes.counts_words():
        word = np.uint8
    else:
        word = next(w for size, w in _WORDS if num_bytes % size == 0)
    q_words = np.ascontiguousarray(q).view(word)  # [Q, W]
    acc = np.uint16 if bins <= np.iinfo(np.uint16).max else np.int64
    for start in range(0, db.shape[0], chunk):
        # Words of the block as rows [W, m], so that each XOR below is a contiguous [q, m].
        block = np.ascontiguousarray(np.ascontiguousarray(db[start : start + chunk]).view(word).T)
        for q_start in range(0, q_words.shape[0], query_chunk):
            qw = q_words[q_start : q_start + query_chunk]
            shape = (qw.shape[0], block.shape[1])
            dist = np.zeros(shape, dtype=acc)
            xor = np.empty(shape, dtype=word)
            for w in range(block.shape[0]):
                np.bitwise_xor(qw[:, w, None], block[w][None, :], out=xor)
                dist += codes.popcount(xor)
            offsets = np.arange(qw.shape[0], dtype=np.intp)[:, None] * bins
            counts = np.bincount((dist + offsets).ravel(), minlength=qw.shape[0] * bins)
            out[q_start : q_start + qw.shape[0]] += counts.reshape(qw.shape[0], bins)
    return out


# ----------------------------------------------------------------------------------------
# Ranks.


def ranks(
    distance: ArrayLike,
    relevant: ArrayLike,
    manipulated: ArrayLike | None = None,
    distractor_histogram: ArrayLike | None = None,
) -> NDArray[np.int64]:
    """1-based rank of every labelled item in the pessimistic order: int64 [Q, D].

    The rank counts every item in front: labelled items and distractors strictly nearer, and,
    at equal distance, the items of an earlier tie class (manipulated, then irrelevant, then
    relevant; distractors sit at the end of the irrelevant class) and the items of the same
    class with a lower column index. So a relevant item is behind every distractor at its
    distance, a manipulated one in front of all of them, and a labelled irrelevant one in front
    of them (the order among irrelevant items changes no metric).

    Args:
      distance: int [Q, D], Hamming distance from each query to each labelled item.
      relevant: bool [Q, D], items the query should retrieve.
      manipulated: optional bool [Q, D], items that should rank low (disjoint from relevant).
      distractor_histogram: optional int [Q, bits + 1], distractors at each distance.
    """
    dist, rel, man, hist = _labels(distance, relevant, manipulated, distractor_histogram)
    num_items = dist.shape[1]
    tie_class = np.full(dist.shape, _IRRELEVANT, dtype=np.int64)
    tie_class[man] = _MANIPULATED
    tie_class[rel] = _RELEVANT
    # A stable sort on (distance, tie class) keeps column order within a group.
    order = np.argsort(dist * 3 + tie_class, axis=1, kind="stable")
    rank = np.empty(dist.shape, dtype=np.int64)
    positions = np.broadcast_to(np.arange(1, num_items + 1, dtype=np.int64), dist.shape)
    np.put_along_axis(rank, order, positions, axis=1)
    if hist is not None and num_items:
        rank += np.take_along_axis(_exclusive_cumsum(hist), dist, axis=1)
        rank += np.where(rel, np.take_along_axis(hist, dist, axis=1), 0)
    return rank


def target_ranks(
    distance: ArrayLike,
    target: ArrayLike,
    distractor_histogram: ArrayLike | None = None,
    *,
    target_first: bool = False,
) -> NDArray[np.int64]:
    """1-based rank of one target column per query: int64 [Q].

    With ``target_first=False`` (benign queries, the target should rank high) the target goes
    after every other item at its distance; with ``target_first=True`` (manipulated queries,
    the target should rank low) it goes before all of them.

    Args:
      distance: int [Q, D], Hamming distance from each query to each labelled item.
      target: int [Q], the target column of each query, in ``0..D-1``.
      distractor_histogram: optional int [Q, bits + 1], distractors at each distance.
    """
    dist = _distance("distance", distance)
    tgt = np.asarray(target)
    if tgt.size and not np.issubdtype(tgt.dtype, np.integer):
        raise TypeError(f"target must hold integer column indices, got dtype {tgt.dtype}.")
    if tgt.shape != (dist.shape[0],):
        raise ValueError(
            f"target must have shape [{dist.shape[0]}] (one column per query), got {tgt.shape}."
        )
    tgt = tgt.astype(np.int64, copy=False)
    if tgt.size and (tgt.min() < 0 or tgt.max() >= dist.shape[1]):
        raise ValueError(
            f"target columns must lie in 0..{dist.shape[1] - 1}, got {tgt.min()}..{tgt.max()}."
        )
    hist = _histogram("distractor_histogram", distractor_histogram, dist)
    rows = np.arange(dist.shape[0])
    own = dist[rows, tgt]
    in_front = np.sum(dist < own[:, None], axis=1, dtype=np.int64)
    if not target_first:
        in_front += np.sum(dist == own[:, None], axis=1, dtype=np.int64) - 1
    if hist is not None:
        in_front += _exclusive_cumsum(hist)[rows, own]
        if not target_first:
            in_front += hist[rows, own]
    return in_front + 1


# ----------------------------------------------------------------------------------------
# Benchmark I.


def average_precision_from_ranks(
    rank: ArrayLike,
    relevant: ArrayLike,
    manipulated: ArrayLike | None = None,
    *,
    masked: bool = False,
    at_r: bool = False,
) -> NDArray[np.float64]:
    """Per-query AP, mmAP (``masked``) and their @R versions (``at_r``) from ranks: float [Q].

    Args:
      rank: int [Q, D], 1-based ranks as given by ``ranks`` (distinct within a row).
      relevant: bool [Q, D]; queries without a relevant item get NaN.
      manipulated: optional bool [Q, D]; with ``masked``, relevant items ranked after the
        first manipulated item do not count (eq. 12).
      masked: compute mmAP instead of AP.
      at_r: only the top R results count, R = number of relevant items, and the sum is
        divided by R.
    """
    rk = _distance("rank", rank)
    rel = _mask("relevant", relevant, rk.shape)
    num_relevant = rel.sum(axis=1)
    width = int(num_relevant.max()) if num_relevant.size else 0
    never = np.iinfo(np.int64).max
    # Ranks of the relevant items in increasing order: the i-th (1-based) one contributes
    # P(rank_i) = i / rank_i.
    rel_rank = np.sort(np.where(rel, rk, never), axis=1)[:, :width]
    index = np.arange(1, width + 1, dtype=np.int64)
    keep = index[None, :] <= num_relevant[:, None]
    if masked and manipulated is not None:
        man = _mask("manipulated", manipulated, rk.shape)
        first = np.where(man, rk, never).min(axis=1, initial=never)
        keep &= rel_rank < first[:, None]
    if at_r:
        keep &= rel_rank <= num_relevant[:, None]
    precision = np.where(keep, index[None, :] / np.where(keep, rel_rank, 1), 0.0)
    total = precision.sum(axis=1)
    out = np.full(rk.shape[0], np.nan)
    np.divide(total, num_relevant, out=out, where=num_relevant > 0)
    return out


def average_precision(
    distance: ArrayLike,
    relevant: ArrayLike,
    manipulated: ArrayLike | None = None,
    distractor_histogram: ArrayLike | None = None,
    *,
    masked: bool = False,
    at_r: bool = False,
) -> NDArray[np.float64]:
    """Per-query AP / mmAP / AP@R / mmAP@R under the pessimistic tie rule: float [Q].

    Shapes as in ``ranks``; ``masked`` and ``at_r`` as in ``average_precision_from_ranks``.
    Queries without a relevant item get NaN.
    """
    rank = ranks(distance, relevant, manipulated, distractor_histogram)
    return average_precision_from_ranks(rank, relevant, manipulated, masked=masked, at_r=at_r)


def benchmark_one_scores(
    distance: ArrayLike,
    relevant: ArrayLike,
    manipulated: ArrayLike | None,
    distractor_histogram: ArrayLike | None = None,
) -> dict[str, Any]:
    """Benchmark I: the query is an original, relevant = its benign views, manipulated = its
    own manipulated versions.

    Args:
      distance: int [Q, D]; relevant, manipulated: bool [Q, D] (disjoint);
      distractor_histogram: optional int [Q, bits + 1].

    Returns:
      ``{"mAP", "mAP@R", "mmAP", "mmAP@R"}``: float means over the queries with at least one
      relevant item (NaN if there are none), and ``"queries"``: their number.
    """
    rank = ranks(distance, relevant, manipulated, distractor_histogram)
    rel = np.asarray(relevant)
    has_relevant = rel.any(axis=1)
    out: dict[str, Any] = {}
    for name, masked, at_r in (
        ("mAP", False, False),
        ("mAP@R", False, True),
        ("mmAP", True, False),
        ("mmAP@R", True, True),
    ):
        ap = average_precision_from_ranks(rank, rel, manipulated, masked=masked, at_r=at_r)
        out[name] = _mean(ap, has_relevant)
    out["queries"] = int(has_relevant.sum())
    return out


# ----------------------------------------------------------------------------------------
# Benchmark II.


def f_score(a: ArrayLike, b: ArrayLike) -> Any:
    """Eq. 13: ``a * b / (a + b)`` (half the harmonic mean); 0 where ``a + b == 0``.

    NaN inputs give NaN. Returns a float for scalar inputs, else an array.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    total = x + y
    out = np.divide(x * y, total, out=np.zeros(np.broadcast(x, y).shape), where=total != 0)
    out = np.where(np.isnan(total), np.nan, out)
    return float(out) if out.ndim == 0 else out


def benchmark_two_scores(
    benign_distance: ArrayLike,
    benign_target: ArrayLike,
    manipulated_distance: ArrayLike,
    manipulated_target: ArrayLike,
    benign_histogram: ArrayLike | None = None,
    manipulated_histogram: ArrayLike | None = None,
) -> dict[str, Any]:
    """Benchmark II: database = originals (+ distractors); each query has one target original.

    Benign queries (views of the target) should find it: the target is ranked last in its tie
    group. Manipulated queries should not: the target is ranked first in its tie group, so a
    tie with the original counts as the original found.

    Args:
      benign_distance: int [Qb, D]; benign_target: int [Qb], target column per query.
      manipulated_distance: int [Qm, D']; manipulated_target: int [Qm].
      benign_histogram, manipulated_histogram: optional int [Qb or Qm, bits + 1] of distractors.

    Returns:
      ``R@1``, ``mAP`` (benign), ``R@1_bar``, ``mAP_bar`` (manipulated), ``FR1``, ``FmAP``
      (``f_score`` of the pairs) as floats, and ``benign_queries``, ``manipulated_queries``.
      A side with no queries gives NaN for its metrics and for both F scores.
    """
    benign_rank = target_ranks(benign_distance, benign_target, benign_histogram)
    manipulated_rank = target_ranks(
        manipulated_distance, manipulated_target, manipulated_histogram, target_first=True
    )
    recall = _mean((benign_rank == 1).astype(np.float64))
    mean_ap = _mean(1.0 / benign_rank)
    recall_bar = 1.0 - _mean((manipulated_rank == 1).astype(np.float64))
    mean_ap_bar = 1.0 - _mean(1.0 / manipulated_rank)
    return {
        "R@1": recall,
        "R@1_bar": recall_bar,
        "FR1": f_score(recall, recall_bar),
        "mAP": mean_ap,
        "mAP_bar": mean_ap_bar,
        "FmAP": f_score(mean_ap, mean_ap_bar),
        "benign_queries": int(benign_rank.size),
        "manipulated_queries": int(manipulated_rank.size),
    }


def target_gap(distance: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark II's margin: each query's distance to its target and to the nearest other
    database entry. A benign query wants the first below the second; a manipulated one,
    above it (or level: a tie returns the original, `benchmark_two_scores`).

    Args:
      distance: [Q, D] query-to-database distances; target: int [Q], target column per query.

    Returns:
      float [Q] distances to the target, float [Q] to the nearest non-target (inf with a
      database of the target alone).
    """
    d = np.asarray(distance, dtype=np.float64)
    rows, target = np.arange(d.shape[0]), np.asarray(target)
    own = d[rows, target]
    others = d.copy()
    others[rows, target] = np.inf
    return own, others.min(axis=1, initial=np.inf)


# ----------------------------------------------------------------------------------------
# Separation.


def separation(distance: np.ndarray, identity: np.ndarray, variant: np.ndarray,
               view: np.ndarray, keep: np.ndarray | None = None) -> dict[str, float]:
    """P(a benign view is nearer its original than a manipulated version is): 0.5 is chance.

    For each original (identity), the reference is its untransformed original (variant 0,
    view 0). Every benign view (variant 0, view >= 1) is paired with every record of its
    manipulated versions (variant >= 1, any view); a pair scores 1 when the benign view is
    nearer the reference than the manipulated record, 1/2 on a tie (ties are never counted
    in a method's favour) and 0 otherwise. The separation is the mean score per identity,
    averaged over identities.

    Args:
      distance: [R, R] distances between all records (only the references' rows are read).
      identity, variant, view: int [R] labels of the records.
      keep: optional bool [R]: only these records count (a subset of views or edits).

    Returns:
      {'separation', 'benign_distance', 'manipulated_distance', 'identities', 'edit_distance',
      'edits_unseen'}: the score, the mean distances of benign views and of manipulated
      records to their reference, the number of identities that had a reference, a benign
      view and a manipulated record; and over the manipulated versions' untransformed views
      (view 0: the edit alone), their mean distance to the reference and the share at
      distance 0, which the code does not see at all (both NaN without such views).
    """
    if keep is not None:
        rows = np.flatnonzero(keep)
        distance = distance[np.ix_(rows, rows)]
        identity, variant, view = identity[rows], variant[rows], view[rows]
    scores, benign_mean, manipulated_mean, edit_distances = [], [], [], []
    for ident in np.unique(identity):
        mine = identity == ident
        reference = np.flatnonzero(mine & (variant == 0) & (view == 0))
        benign = np.flatnonzero(mine & (variant == 0) & (view != 0))
        manipulated = np.flatnonzero(mine & (variant != 0))
        if len(reference) == 0 or len(benign) == 0 or len(manipulated) == 0:
            continue
        d_benign = distance[reference[0], benign].astype(np.float64)
        d_manipulated = distance[reference[0], manipulated].astype(np.float64)
        nearer = d_benign[:, None] < d_manipulated[None, :]
        tied = d_benign[:, None] == d_manipulated[None, :]
        scores.append(np.mean(nearer + 0.5 * tied))
        benign_mean.append(d_benign.mean())
        manipulated_mean.append(d_manipulated.mean())
        edit_distances.extend(distance[reference[0], manipulated[view[manipulated] == 0]])
    if not scores:
        raise ValueError("no identity has an original, a benign view and a manipulated version")
    edits = np.asarray(edit_distances, np.float64)
    return {
        "separation": float(np.mean(scores)),
        "benign_distance": float(np.mean(benign_mean)),
        "manipulated_distance": float(np.mean(manipulated_mean)),
        "identities": len(scores),
        "edit_distance": float(edits.mean()) if edits.size else float("nan"),
        "edits_unseen": float(np.mean(edits == 0)) if edits.size else float("nan"),
    }
