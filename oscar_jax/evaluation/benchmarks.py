"""The paper's benchmarks (section 4.2 to 4.5) on code sets, and the separation score.

From the records of a split (`codesets.Roles`), per original (identity):

* **Benchmark I** (`benchmark_one`): queries are the originals (variant 0, view 0); the
  database holds every benign view of the originals (variant 0, view >= 1, the relevant items
  of their original), every manipulated record (variant >= 1, any view: the query's own ones
  are the items mmAP masks on) and the distractors. mAP, mmAP (eq. 12) and mmAP@R.
* **Benchmark II** (`benchmark_two`): the database holds the originals and the distractors;
  queries are the benign views (R@1, mAP) and the manipulated records (R@1-bar, mAP-bar).
  FR1 (eq. 13), FmAP.
* **Scalability** (Tables 4 and 5): both with the first k distractors, for growing k.
* **Robustness** (Fig. 3a-b, `robustness`): Benchmark II with the benign queries replaced by
  the single-transform views of the `test_seen` and `test_unseen` splits, one FR1 per
  transform.
* **Separation** (`separation_study`): the probability that a benign view is nearer its
  original than a manipulated version is (`metrics.separation`).

Ties in Hamming distance are broken against the method (`oscar_jax.evaluation.metrics`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from oscar_jax.evaluation import metrics
from oscar_jax.evaluation.codesets import (
    CodeSet,
    Roles,
    check_records_fit_model,
    hash_split,
    transform_name,
)
from oscar_jax.inference.codes import hamming_distance, paired_distance
from oscar_jax.inference.hasher import load_hasher
from oscar_jax.workdir import config_records_dir, load_config


def cumulative_histograms(queries: np.ndarray, distractors: np.ndarray | None,
                          counts: Sequence[int]) -> list[np.ndarray]:
    """Distractor histograms [Q, bits + 1] of `queries` over the first `c` distractors, for
    each c in `counts`."""
    bins = 8 * queries.shape[1] + 1
    out, total, done = [], np.zeros((len(queries), bins), np.int64), 0
    for count in counts:
        if count > done:
            total = total + metrics.distance_histogram(queries, distractors[done:count])
            done = count
        out.append(total)
    return out


def row_histogram(distance: np.ndarray, bins: int) -> np.ndarray:
    """int [Q, n] distances -> int64 [Q, bins] counts of each distance per row."""
    q = distance.shape[0]
    offsets = (np.arange(q)[:, None] * bins + distance).ravel()
    return np.bincount(offsets, minlength=q * bins).reshape(q, bins)


def _weighted(results: list[dict[str, float]], weight: str) -> dict[str, float]:
    """Means of per-group results, weighted by their query counts."""
    total = sum(r[weight] for r in results)
    merged = {k: float(sum(r[k] * r[weight] for r in results if r[weight]) / total)
              if total else float("nan") for k in results[0] if k != weight}
    return {**merged, weight: total}


def benchmark_one(records: CodeSet, roles: Roles, method: str, distractors: np.ndarray | None,
                  counts: Sequence[int]) -> list[dict[str, float]]:
    """Benchmark I with the first `c` distractors, for each c in `counts`.

    Only a query's own records (its benign views and manipulated versions) are labelled
    columns; every other database item enters through its distance histogram, so memory stays
    [queries, bits] however large the database (3K queries x 250K items in the paper)."""
    codes = records.codes[method]
    bins = 8 * codes.shape[1] + 1
    queries = codes[roles.originals]
    database = np.concatenate([roles.benign, roles.manipulated])
    everything = metrics.distance_histogram(queries, codes[database])
    distractor_histograms = cumulative_histograms(queries, distractors, counts)
    own = {}
    for position, record in enumerate(database):
        own.setdefault(int(records.identity[record]), []).append(position)
    signature = {}  # queries with as many benign and manipulated records go in one block
    for q, record in enumerate(roles.originals):
        mine = database[own.get(int(records.identity[record]), [])]
        key = (int((records.variant[mine] == 0).sum()), int((records.variant[mine] > 0).sum()))
        signature.setdefault(key, []).append(q)
    per_count = [[] for _ in counts]
    for block in signature.values():
        block = np.asarray(block)
        columns = np.asarray([sorted(own.get(int(records.identity[roles.originals[q]]), []))
                              for q in block], np.int64).reshape(len(block), -1)
        distance = paired_distance(queries[block][:, None, :], codes[database[columns]])
        relevant = records.variant[database[columns]] == 0
        others = everything[block] - row_histogram(distance, bins)
        for i, histogram in enumerate(distractor_histograms):
            per_count[i].append(metrics.benchmark_one_scores(distance, relevant, ~relevant,
                                                      others + histogram[block]))
    return [_weighted(results, "queries") for results in per_count]


def benchmark_two(records: CodeSet, roles: Roles, method: str, distractors: np.ndarray | None,
                  counts: Sequence[int], benign: np.ndarray | None = None,
                  benign_records: CodeSet | None = None) -> list[dict[str, float]]:
    """Benchmark II with the first `c` distractors, for each c in `counts`. `benign` (indices
    into `benign_records`) replaces the benign queries, for the robustness sets.

    The target original is the one labelled column; the other originals and the distractors
    enter through their distance histograms."""
    codes = records.codes[method]
    bins = 8 * codes.shape[1] + 1
    database = codes[roles.originals]
    column = {int(i): c for c, i in enumerate(records.identity[roles.originals])}
    benign_records = benign_records or records
    benign = roles.benign if benign is None else benign
    benign = benign[np.isin(benign_records.identity[benign], list(column))]
    sides = []
    for source, index in ((benign_records, benign), (records, roles.manipulated)):
        queries = source.codes[method][index]
        target = np.asarray([column[int(i)] for i in source.identity[index]], np.int64)
        distance = paired_distance(queries, database[target])[:, None]
        others = (metrics.distance_histogram(queries, database)
                  - row_histogram(distance, bins))
        sides.append((distance, [others + h for h in
                                 cumulative_histograms(queries, distractors, counts)]))
    (b_distance, b_hist), (m_distance, m_hist) = sides
    b_target = np.zeros(len(b_distance), np.int64)
    m_target = np.zeros(len(m_distance), np.int64)
    return [metrics.benchmark_two_scores(b_distance, b_target, m_distance, m_target, bh, mh)
            for bh, mh in zip(b_hist, m_hist, strict=True)]


def robustness(records: CodeSet, roles: Roles, method: str, distractors: np.ndarray | None,
               single: CodeSet) -> dict[str, float]:
    """FR1 for each single transform of a test_seen / test_unseen split (all distractors)."""
    names = np.asarray([transform_name(t) for t in single.transforms])
    count = [0 if distractors is None else len(distractors)]
    scores = {}
    for name in sorted(set(names)):
        index = np.flatnonzero((names == name) & (single.variant == 0) & (single.view > 0))
        if len(index):
            scores[name] = benchmark_two(records, roles, method, distractors, count, index,
                                         single)[0]["FR1"]
    return scores


def distractor_counts(total: int, steps: int) -> list[int]:
    """0 and `steps` equal steps up to `total` (just [0] without distractors)."""
    if total == 0 or steps <= 0:
        return [0]
    return sorted({0, *(round(total * k / steps) for k in range(1, steps + 1))})


def separation_study(workdir: str, split: str | None = None, records: str | None = None
                     ) -> dict:
    """The separation of the model of `workdir` and of pHash on the records of a split (the
    config's `eval_split` by default) of its records or of the `records` folder given (made
    with the same settings); also written to `<workdir>/separation.json`."""
    config = load_config(workdir)
    split = split or config.eval_split
    directory = records or config_records_dir(config)
    check_records_fit_model(directory, workdir)
    hashers = {"oscar": load_hasher(workdir), "phash": load_hasher(None, "phash")}
    records_of_split = hash_split(directory, split, hashers)
    result = {"workdir": workdir, "records_dir": directory, "split": split,
              "records": len(records_of_split), "methods": {}}
    for method, codes in records_of_split.codes.items():
        scores = metrics.separation(hamming_distance(codes, codes), records_of_split.identity,
                                    records_of_split.variant, records_of_split.view)
        scores["bits"] = int(codes.shape[1] * 8)
        result["methods"][method] = scores
    with open(os.path.join(workdir, "separation.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
