r"""The paper's benchmarks (section 4.2 to 4.5) for trained models and the classical baselines.

    python -m oscar_jax.evaluate --workdir runs/demo --distractors train
    python -m oscar_jax.evaluate --workdir runs/full --compare runs/cnn,runs/gnn \
        --distractors data/distractors/default/1.0.0
    python -m oscar_jax.evaluate --records data/psbattles24k/default/1.0.0 --out reports/ps \
        --methods phash,chash,pdq

Every method (the models of `--workdir` and `--compare`, and each baseline of `--methods`) goes
through the same code path: the records of a split -> `oscar_jax.hash.Hasher.hash_records` ->
packed codes -> Hamming distances -> `oscar_jax.metrics`. Baselines hash the records' global
view. Ties in Hamming distance are broken against the method (see `oscar_jax.metrics`).

From the `--split` records (default `test`), per original (identity):

* **Benchmark I**: queries are the originals (variant 0, view 0); the database holds every
  benign view of the originals (variant 0, view >= 1, the relevant items of their original),
  every manipulated record (variant >= 1, any view: the query's own ones are the items mmAP
  masks on) and the distractors. mAP, mmAP (eq. 12) and mmAP@R.
* **Benchmark II**: the database holds the originals and the distractors; queries are the
  benign views (R@1, mAP) and the manipulated records (R@1-bar, mAP-bar). FR1 (eq. 13), FmAP.
* **Scalability** (Tables 4 and 5): mmAP@R and FR1 as the distractors grow, in
  `--distractor_steps` equal steps (the first k distractors, in stored order).
* **Robustness** (Fig. 3a-b): Benchmark II with the benign queries replaced by the single
  transform views of the `test_seen` and `test_unseen` splits, one FR1 per transform, and the
  mixed views of Benchmark II as reference ("mixed").
* **Code length** (Fig. 3c): Benchmark I and II of the models against their code length, when
  the models compared have more than one.

Distractors are records with no original among the queries: another built data set (for
example `preprocessing.build --dataset distractors`, `--distractors DIR[:SPLIT]`) or another
split of the same records (`--distractors train`). Writes `report.json`, `report.md` and PNG
plots into `--out` (default: the workdir).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging
from tqdm import tqdm

import oscar_jax.hash as image_hash
from oscar_jax import hashing, input_pipeline, metrics

if TYPE_CHECKING:
    from oscar_jax import attribute

BASELINES = ("ahash", "phash", "dhash", "whash", "chash", "iscc", "pdq")
READ_BATCH = 64


# ---- codes of record sets --------------------------------------------------------------------


@dataclasses.dataclass
class CodeSet:
    """Codes of every method for the records of one split, with their labels."""

    codes: dict[str, np.ndarray]  # method -> uint8 [R, bytes]
    identity: np.ndarray  # int64 [R]
    variant: np.ndarray  # int32 [R]
    view: np.ndarray  # int32 [R]
    transforms: np.ndarray  # str [R]
    keys: np.ndarray | None = None  # str [R]: the records' keys

    def __len__(self) -> int:
        return len(self.identity)


def hash_split(directory: str, split: str, hashers: dict[str, image_hash.Hasher]) -> CodeSet:
    """Reads a split once and hashes every batch with every method."""
    total = len(input_pipeline.open_source(directory, split))
    if total == 0:
        raise ValueError(f"{directory} split {split!r} has no records")
    codes: dict[str, list[np.ndarray]] = {name: [] for name in hashers}
    fields = ("identity", "variant", "view", "transforms", "key")
    labels: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    name = "/".join(os.path.normpath(directory).split(os.sep)[-3:-1])  # dataset/config
    with tqdm(total=total, desc=f"hashing {name}/{split}",
              unit="image", file=sys.stderr) as bar:
        for batch in input_pipeline.read_split(directory, split, batch_size=READ_BATCH):
            for name, hasher in hashers.items():
                codes[name].append(hasher.hash_records(batch))
            for k in labels:
                labels[k].append(batch[k])
            bar.update(len(batch["image"]))
    return CodeSet({k: np.concatenate(v) for k, v in codes.items()},
                   *(np.concatenate(labels[k]) for k in fields))


def transform_name(description: str) -> str:
    """'gaussian_blur(sigma=1.5)' -> 'gaussian_blur'; '' -> 'none'."""
    return description.split("(", 1)[0].strip() or "none"


# ---- benchmarks ------------------------------------------------------------------------------


@dataclasses.dataclass
class Roles:
    """Which records of a split play which part (indices into the CodeSet)."""

    originals: np.ndarray  # variant 0, view 0: one per identity
    benign: np.ndarray  # variant 0, view >= 1, whose original is present
    manipulated: np.ndarray  # variant >= 1, whose original is present

    @classmethod
    def of(cls, records: CodeSet) -> Roles:
        originals = np.flatnonzero((records.variant == 0) & (records.view == 0))
        identities = records.identity[originals]
        if len(np.unique(identities)) != len(identities):
            raise ValueError("several records claim to be the same original (variant 0, "
                             "view 0); the records are not a valid benchmark split")
        has_original = np.isin(records.identity, identities)
        benign = np.flatnonzero((records.variant == 0) & (records.view > 0) & has_original)
        manipulated = np.flatnonzero((records.variant > 0) & has_original)
        if len(originals) == 0 or len(benign) == 0 or len(manipulated) == 0:
            raise ValueError(
                f"a benchmark split needs originals, benign views and manipulated versions; "
                f"found {len(originals)}, {len(benign)} and {len(manipulated)}")
        return cls(originals, benign, manipulated)


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
        distance = hashing.paired_distance(queries[block][:, None, :], codes[database[columns]])
        relevant = records.variant[database[columns]] == 0
        others = everything[block] - row_histogram(distance, bins)
        for i, histogram in enumerate(distractor_histograms):
            per_count[i].append(metrics.benchmark_one(distance, relevant, ~relevant,
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
        distance = hashing.paired_distance(queries, database[target])[:, None]
        others = (metrics.distance_histogram(queries, database)
                  - row_histogram(distance, bins))
        sides.append((distance, [others + h for h in
                                 cumulative_histograms(queries, distractors, counts)]))
    (b_distance, b_hist), (m_distance, m_hist) = sides
    b_target = np.zeros(len(b_distance), np.int64)
    m_target = np.zeros(len(m_distance), np.int64)
    return [metrics.benchmark_two(b_distance, b_target, m_distance, m_target, bh, mh)
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


# ---- the report ------------------------------------------------------------------------------


def distractor_counts(total: int, steps: int) -> list[int]:
    """0 and `steps` equal steps up to `total` (just [0] without distractors)."""
    if total == 0 or steps <= 0:
        return [0]
    return sorted({0, *(round(total * k / steps) for k in range(1, steps + 1))})


def resolve_distractors(spec: str | None, directory: str) -> tuple[str, str] | None:
    """'train' (a split of the evaluated records) or 'DIR[:SPLIT]' -> (directory, split)."""
    if not spec:
        return None
    if os.path.isdir(spec.split(":", 1)[0]):
        path, _, split = spec.partition(":")
        if not split:
            splits = list(tfds.builder_from_directory(path).info.splits)
            if len(splits) != 1:
                raise ValueError(f"{path} has splits {splits}; pass --distractors {path}:SPLIT")
            split = splits[0]
        return path, split
    return directory, spec


def attribution_data(records: str, split: str, test: CodeSet, roles: Roles,
                     pool: CodeSet | None, source: tuple[str, str] | None
                     ) -> tuple[AttributionParts, attribute.AttributionSet]:
    """The trusted database (the split's originals and the distractors' originals) and the
    queries (benign views and manipulated versions) of Table 6, with full-size pixels."""
    from oscar_jax import attribute

    pool_rows = (np.flatnonzero((pool.variant == 0) & (pool.view == 0)) if pool is not None
                 else np.zeros(0, int))
    queries = np.concatenate([roles.benign, roles.manipulated])
    wanted = {split: list(test.keys[np.concatenate([roles.originals, queries])])}
    images = attribute.regenerate_views(records, wanted)
    pool_keys = []
    if pool is not None:
        remade = attribute.regenerate_views(source[0], {source[1]: list(pool.keys[pool_rows])})
        images.update({f"distractor:{k}": v for k, v in remade.items()})
        pool_keys = [f"distractor:{k}" for k in pool.keys[pool_rows]]
    data = attribute.AttributionSet(
        database_keys=list(test.keys[roles.originals]) + pool_keys,
        database_identity=np.concatenate([test.identity[roles.originals],
                                          -np.ones(len(pool_rows), np.int64)]),
        query_keys=list(test.keys[queries]), query_identity=test.identity[queries],
        query_manipulated=test.variant[queries] > 0,
        calibration=attribute.calibration_half(test.identity[queries]), images=images)
    missing = [k for k in (*data.database_keys, *data.query_keys) if k not in images]
    if missing:
        raise ValueError(f"{len(missing)} images (e.g. {missing[0]}) cannot be remade by the "
                         "data set's builder; attribution needs them at full size")
    return AttributionParts(roles.originals, pool_rows, queries), data


@dataclasses.dataclass
class AttributionParts:
    """Rows of the trusted database (split originals, distractors) and of the queries."""

    originals: np.ndarray
    distractors: np.ndarray
    queries: np.ndarray


def attribution_studies(records: str, split: str, test: CodeSet, roles: Roles,
                        pool: CodeSet | None, source: tuple[str, str] | None,
                        names: Sequence[str]) -> dict[str, dict]:
    """Table 6 of every method: thresholds calibrated on half of the queries' originals,
    FPR and FNR measured on the other half (`oscar_jax.attribute.attribution_study`)."""
    from oscar_jax import attribute

    parts, data = attribution_data(records, split, test, roles, pool, source)
    pairs = attribute.PairCache(data.images)
    studies = {}
    for name in tqdm(names, desc="attribution (Table 6)", unit="method", file=sys.stderr):
        codes = [test.codes[name][parts.originals]]
        if pool is not None:
            codes.append(pool.codes[name][parts.distractors])
        bits = int(np.asarray(test.codes[name]).shape[1] * 8)
        studies[name] = attribute.attribution_study(
            method=name, bits=bits, data=data, database_codes=np.concatenate(codes),
            query_codes=test.codes[name][parts.queries], pairs=pairs)
    return studies


def method_hashers(workdirs: Sequence[str], methods: Sequence[str]
                   ) -> tuple[dict[str, image_hash.Hasher], dict[str, str]]:
    """Hashers by display name, and the workdir of each model."""
    hashers, sources = {}, {}
    for position, workdir in enumerate(workdirs):
        name = "oscar" if position == 0 and "oscar" in methods else (
            os.path.basename(os.path.normpath(workdir)))
        if name in hashers:
            name = os.path.normpath(workdir)
        hashers[name] = image_hash.load_hasher(workdir)
        sources[name] = workdir
    for method in methods:
        if method != "oscar":
            hashers[method] = image_hash.load_hasher(None, method)
    return hashers, sources


def evaluate(*, workdir: str | None = None, compare: Sequence[str] = (),
             records: str | None = None, split: str | None = None,
             methods: Sequence[str] | None = None, distractors: str | None = None,
             distractor_steps: int = 4, out: str | None = None, plots: bool = True,
             attribution: bool = True) -> dict:
    """Runs every benchmark and writes report.json, report.md and the plots into `out`."""
    from oscar_jax import train

    started = time.time()
    config = train.load_config(workdir) if workdir else None
    if records is None:
        if config is None:
            raise ValueError("give --workdir of a trained model or --records of a built data set")
        records = input_pipeline.records_dir(config.dataset, config.dataset_config,
                                             config.data_dir)
    split = split or (config.eval_split if config is not None else "test")
    out = out or workdir
    if not out:
        raise ValueError("give --out DIR for the report when there is no --workdir")
    methods = list(methods or (["oscar"] if workdir else []) + list(BASELINES))
    if "oscar" in methods and not workdir:
        raise ValueError("method 'oscar' needs --workdir")
    models = ([workdir] if workdir and "oscar" in methods else []) + list(compare)
    hashers, model_dirs = method_hashers(models, methods)

    test = hash_split(records, split, hashers)
    roles = Roles.of(test)
    source = resolve_distractors(distractors, records)
    pool = hash_split(*source, hashers) if source else None
    if pool is not None:
        overlap = np.isin(pool.identity, test.identity[roles.originals])
        if overlap.any():
            raise ValueError(f"{overlap.sum()} distractor records belong to originals of the "
                             f"evaluated split; distractors must be unrelated images")
    counts = distractor_counts(len(pool) if pool else 0, distractor_steps)
    available = tfds.builder_from_directory(records).info.splits
    singles = {name: hash_split(records, f"{split}_{name}", hashers)
               for name in ("seen", "unseen") if f"{split}_{name}" in available}

    report = {
        "records": records, "split": split, "distractors": source and ":".join(source),
        "distractor_counts": counts, "queries": {
            "benchmark_one": len(roles.originals), "benign": len(roles.benign),
            "manipulated": len(roles.manipulated)},
        "database": {"benchmark_one": len(roles.benign) + len(roles.manipulated) + counts[-1],
                     "benchmark_two": len(roles.originals) + counts[-1]},
        "methods": {},
    }
    for name, hasher in hashers.items():
        d = pool.codes[name] if pool else None
        one = benchmark_one(test, roles, name, d, counts)
        two = benchmark_two(test, roles, name, d, counts)
        entry = {"bits": hasher.bits, "workdir": model_dirs.get(name),
                 "benchmark_one": one[-1], "benchmark_two": two[-1],
                 "scalability": {"mmAP@R": [s["mmAP@R"] for s in one],
                                 "FR1": [s["FR1"] for s in two]},
                 "robustness": {k: robustness(test, roles, name, d, v)
                                for k, v in singles.items()}}
        for v in entry["robustness"].values():
            v["mixed"] = two[-1]["FR1"]
        report["methods"][name] = entry
    if attribution:
        try:
            studies = attribution_studies(records, split, test, roles, pool, source,
                                          list(hashers))
        except ValueError as error:
            report["attribution_skipped"] = str(error)
        else:
            for name, study in studies.items():
                report["methods"][name]["attribution"] = study
    report["seconds"] = round(time.time() - started, 1)

    os.makedirs(out, exist_ok=True)
    report["plots"] = write_plots(report, out) if plots else []
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(format_report(report))
    return report


# ---- formatting and plots --------------------------------------------------------------------


def _f(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def format_table(report: dict) -> str:
    """Table 1 of the paper (with the supplement's Benchmark II columns) for the report."""
    lines = [
        f"Benchmark I: {report['queries']['benchmark_one']} original queries, database of "
        f"{report['database']['benchmark_one']}. Benchmark II: {report['queries']['benign']} "
        f"benign and {report['queries']['manipulated']} manipulated queries, database of "
        f"{report['database']['benchmark_two']} ({report['distractor_counts'][-1]} "
        "distractors in both).",
        "",
        "| method | bits | I: mAP | I: mmAP | I: mmAP@R | II: mAP | II: mAP-bar | II: FmAP "
        "| II: R@1 | II: R@1-bar | II: FR1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        one, two = m["benchmark_one"], m["benchmark_two"]
        lines.append(
            f"| {name} | {m['bits']} | {_f(one['mAP'])} | {_f(one['mmAP'])} | "
            f"{_f(one['mmAP@R'])} | {_f(two['mAP'])} | {_f(two['mAP_bar'])} | "
            f"{_f(two['FmAP'])} | {_f(two['R@1'])} | {_f(two['R@1_bar'])} | {_f(two['FR1'])} |")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    counts = report["distractor_counts"]
    parts = [
        "# Benchmarks", "",
        f"Records `{report['records']}`, split `{report['split']}`; distractors: "
        f"{report['distractors'] or 'none'}. Ties in Hamming distance are broken against the "
        "method. Evaluated in " f"{report['seconds']} s.", "",
        "## Benchmark I and II (Table 1)", "", format_table(report), "",
    ]
    if len(counts) > 1:
        for title, key in (("Benchmark I mmAP@R", "mmAP@R"), ("Benchmark II FR1", "FR1")):
            parts += [f"## Scalability: {title} with growing distractors (Tables 4 and 5)", "",
                      "| method | " + " | ".join(str(c) for c in counts) + " |",
                      "|---|" + "---|" * len(counts)]
            for name, m in report["methods"].items():
                parts.append(f"| {name} | " + " | ".join(_f(v) for v in m["scalability"][key])
                             + " |")
            parts.append("")
    for kind in ("seen", "unseen"):
        rows = {n: m["robustness"][kind] for n, m in report["methods"].items()
                if kind in m["robustness"]}
        if not rows:
            continue
        names = sorted({t for r in rows.values() for t in r} - {"mixed"}) + ["mixed"]
        parts += [f"## Robustness: FR1 per {kind} transform (Fig. 3)", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for method, r in rows.items():
            parts.append(f"| {method} | " + " | ".join(_f(r.get(t)) for t in names) + " |")
        parts.append("")
    studies = {n: m["attribution"] for n, m in report["methods"].items() if "attribution" in m}
    if studies:
        first = next(iter(studies.values()))
        parts += [
            "## Attribution (Table 6)", "",
            f"Trusted database: {first['database']} originals (with the distractors' "
            f"originals); {first['queries']['benign']} benign and "
            f"{first['queries']['manipulated']} manipulated queries, from the half of the "
            "originals not used to calibrate the thresholds. Top 10 by Hamming distance, then "
            "geometric verification. FPR: manipulated queries attributed as a match; FNR: "
            "benign queries not matched to their original; flagged: manipulated queries "
            "answered `manipulated` with the right original.", "",
            "| method | FPR | FNR | flagged | match distance | min inliers |",
            "|---|---|---|---|---|---|"]
        for name, study in studies.items():
            t = study["thresholds"]
            parts.append(f"| {name} | {_f(study['FPR'])} | {_f(study['FNR'])} | "
                         f"{_f(study['flagged'])} | {t['match_distance']} | "
                         f"{t['min_inliers']} |")
        parts.append("")
    elif report.get("attribution_skipped"):
        parts += ["## Attribution (Table 6)", "", f"Not measured: {report['attribution_skipped']}",
                  ""]
    lengths = code_length_points(report)
    if lengths:
        parts += ["## Code length (Fig. 3c)", "", "| model | bits | I: mmAP | II: FR1 |",
                  "|---|---|---|---|"]
        parts += [f"| {n} | {b} | {_f(i)} | {_f(ii)} |" for n, b, i, ii in lengths]
        parts.append("")
    if report.get("plots"):
        parts += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(parts)


def code_length_points(report: dict) -> list[tuple[str, int, float, float]]:
    """(model, bits, mmAP, FR1) of the trained models, when they have several code lengths."""
    points = sorted(((n, m["bits"], m["benchmark_one"]["mmAP"], m["benchmark_two"]["FR1"])
                     for n, m in report["methods"].items() if m.get("workdir")),
                    key=lambda p: p[1])
    return points if len({p[1] for p in points}) > 1 else []


def write_plots(report: dict, out: str) -> list[str]:
    """PNG plots of scalability, robustness and code length; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    counts = report["distractor_counts"]
    methods = report["methods"]
    if len(counts) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, title in zip(axes, ("mmAP@R", "FR1"),
                                  ("Benchmark I: mmAP@R", "Benchmark II: FR1"), strict=True):
            for name, m in methods.items():
                ax.plot(counts, m["scalability"][key], marker="o", label=name)
            ax.set(title=title, xlabel="distractors", ylabel=key)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scalability.png"), dpi=110)
        plt.close(fig)
        written.append("scalability.png")
    kinds = [k for k in ("seen", "unseen") if any(k in m["robustness"] for m in methods.values())]
    if kinds:
        fig, axes = plt.subplots(1, len(kinds), figsize=(7 * len(kinds), 4), squeeze=False)
        for ax, kind in zip(axes[0], kinds, strict=True):
            rows = {n: m["robustness"][kind] for n, m in methods.items() if kind in m["robustness"]}
            names = sorted({t for r in rows.values() for t in r} - {"mixed"}) + ["mixed"]
            width = 0.8 / len(rows)
            for i, (method, r) in enumerate(rows.items()):
                ax.bar(np.arange(len(names)) + i * width, [r.get(t, np.nan) for t in names],
                       width, label=method)
            ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30,
                          ha="right", fontsize=8)
            ax.set(title=f"FR1 per {kind} transform", ylabel="FR1")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "robustness.png"), dpi=110)
        plt.close(fig)
        written.append("robustness.png")
    points = code_length_points(report)
    if points:
        fig, ax = plt.subplots(figsize=(5, 4))
        bits = [p[1] for p in points]
        ax.plot(bits, [p[2] for p in points], marker="o", label="Benchmark I mmAP")
        ax.plot(bits, [p[3] for p in points], marker="s", label="Benchmark II FR1")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="code length (bits)", title="Code length")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "code_length.png"), dpi=110)
        plt.close(fig)
        written.append("code_length.png")
    return written


# ---- command line ----------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A trained workdir: the model 'oscar' (report goes here).")
    flags.DEFINE_list("compare", [], "More trained workdirs (ablations, code lengths).")
    flags.DEFINE_string("records", None, "A built records folder (default: the workdir's).")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the config's eval_split).")
    flags.DEFINE_list("methods", None, "oscar and baselines to evaluate (default: all).")
    flags.DEFINE_string("distractors", None, "A split of the records (e.g. train) or DIR[:SPLIT].")
    flags.DEFINE_integer("distractor_steps", 4, "Scalability points besides 0 distractors.")
    flags.DEFINE_string("out", None, "Folder for report.md/json and plots (default: workdir).")


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    report = evaluate(workdir=FLAGS.workdir, compare=FLAGS.compare, records=FLAGS.records,
                      split=FLAGS.split, methods=FLAGS.methods, distractors=FLAGS.distractors,
                      distractor_steps=FLAGS.distractor_steps, out=FLAGS.out)
    print(format_table(report))
    out = FLAGS.out or FLAGS.workdir
    print(f"\nfull report: {os.path.join(out, 'report.md')}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
