"""`evaluate`: every benchmark of the paper for trained models and the classical baselines, as
one report (`report.json`, `report.md` and PNG plots).

For the records of a split (default `test`): Benchmark I and II, scalability with growing
distractors, per-transform robustness (the `test_seen` and `test_unseen` splits, when the
records have them), code length (when the compared models have several) and Table 6 of the
attribution tool (`oscar_jax.evaluation.table6`). Distractors are records with no original
among the queries: another built data set (`DIR[:SPLIT]`) or another split of the same
records (`train`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from oscar_jax.evaluation import metrics
from oscar_jax.evaluation.benchmarks import (
    benchmark_one,
    benchmark_two,
    distractor_counts,
    robustness,
)
from oscar_jax.evaluation.codesets import (
    CodeSet,
    Roles,
    check_records_fit_model,
    hash_split,
    method_hashers,
    resolve_distractors,
)
from oscar_jax.evaluation.plots import code_length_points, write_plots
from oscar_jax.evaluation.table6 import attribution_studies
from oscar_jax.inference.baselines import METHODS as BASELINES
from oscar_jax.inference.codes import hamming_distance
from oscar_jax.workdir import config_records_dir, load_config


def evaluate(*, workdir: str | None = None, compare: Sequence[str] = (),
             records: str | None = None, split: str | None = None,
             methods: Sequence[str] | None = None, distractors: str | None = None,
             distractor_steps: int = 4, out: str | None = None, plots: bool = True,
             attribution: bool = True) -> dict:
    """Runs every benchmark and writes report.json, report.md and the plots into `out`."""
    started = time.time()
    config = load_config(workdir) if workdir else None
    if records is None:
        if config is None:
            raise ValueError("give --workdir of a trained model or --records of a built data set")
        records = config_records_dir(config)
    split = split or (config.eval_split if config is not None else "test")
    out = out or workdir
    if not out:
        raise ValueError("give --out DIR for the report when there is no --workdir")
    methods = list(methods or (["oscar"] if workdir else []) + list(BASELINES))
    if "oscar" in methods and not workdir:
        raise ValueError("method 'oscar' needs --workdir")
    models = ([workdir] if workdir and "oscar" in methods else []) + list(compare)
    for model in models:
        check_records_fit_model(records, model)
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
                 "separation": separation_of(test, name),
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
        "| II: R@1 | II: R@1-bar | II: FR1 | separation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        one, two = m["benchmark_one"], m["benchmark_two"]
        lines.append(
            f"| {name} | {m['bits']} | {_f(one['mAP'])} | {_f(one['mmAP'])} | "
            f"{_f(one['mmAP@R'])} | {_f(two['mAP'])} | {_f(two['mAP_bar'])} | "
            f"{_f(two['FmAP'])} | {_f(two['R@1'])} | {_f(two['R@1_bar'])} | {_f(two['FR1'])} "
            f"| {_f(m['separation']['separation'])} |")
    return "\n".join(lines)


def separation_of(records: CodeSet, method: str) -> dict[str, float]:
    """`metrics.separation` of one method's codes on a benchmark split (only the rows of the
    originals are compared, so memory stays [originals, records])."""
    codes = records.codes[method]
    originals = np.flatnonzero((records.variant == 0) & (records.view == 0))
    distance = np.zeros((len(records), len(records)), np.int64)
    distance[originals] = hamming_distance(codes[originals], codes)
    return metrics.separation(distance, records.identity, records.variant, records.view)


# The figures of `headline`: (report path, label); lower is better only for Table 6 errors.
HEADLINE = (
    (("benchmark_one", "mAP"), "I: mAP"),
    (("benchmark_one", "mmAP"), "I: mmAP"),
    (("benchmark_one", "mmAP@R"), "I: mmAP@R"),
    (("benchmark_two", "mAP"), "II: mAP"),
    (("benchmark_two", "mAP_bar"), "II: mAP-bar"),
    (("benchmark_two", "FmAP"), "II: FmAP"),
    (("benchmark_two", "R@1"), "II: R@1"),
    (("benchmark_two", "R@1_bar"), "II: R@1-bar"),
    (("benchmark_two", "FR1"), "II: FR1"),
    (("separation", "separation"), "separation"),
    (("attribution", "FPR"), "Table 6 FPR"),
    (("attribution", "FNR"), "Table 6 FNR"),
)


def headline(report: dict) -> dict[str, dict[str, float]]:
    """method -> {label: value} of the figures the demo is judged on."""
    out = {}
    for name, m in report["methods"].items():
        values = {}
        for (section, key), label in HEADLINE:
            if section in m and key in m[section]:
                values[label] = float(m[section][key])
        if "Table 6 FPR" in values and "Table 6 FNR" in values:
            values["Table 6 FPR+FNR"] = values["Table 6 FPR"] + values["Table 6 FNR"]
        out[name] = values
    return out


def seed_spread(reports: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> label -> {mean, std, min, max, runs} over the reports of several seeds
    (std with ddof=1)."""
    figures = [headline(r) for r in reports]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in figures[0]:
        for label in figures[0][name]:
            values = np.asarray([f[name][label] for f in figures if label in f.get(name, {})])
            out.setdefault(name, {})[label] = {
                "mean": float(values.mean()), "std": float(values.std(ddof=1))
                if len(values) > 1 else 0.0, "min": float(values.min()),
                "max": float(values.max()), "runs": len(values)}
    return out


# Figures where lower is better: Table 6's error rates. For the others higher is better,
# the "-bar" ones included (1 - R@1 and 1 - mAP over manipulated queries, eq. 13).
LOWER_IS_BETTER = frozenset({"Table 6 FPR", "Table 6 FNR", "Table 6 FPR+FNR"})


def best_baseline(values: dict[str, dict[str, float]], label: str, baselines: Sequence[str]
                  ) -> tuple[str, float] | None:
    """(name, value) of the best of `baselines` on one headline figure."""
    others = [(name, values[name][label]) for name in baselines if label in values[name]]
    if not others:
        return None
    pick = min if label in LOWER_IS_BETTER else max
    return pick(others, key=lambda item: item[1])


def format_comparison(report: dict, spread: dict, model: str = "oscar") -> str:
    """The model's headline figures in this run beside the mean +- std of a reference set of
    seeds, and the best baseline of this run on each figure (the baselines are
    deterministic, so their figures repeat on every machine)."""
    values = headline(report)
    if model not in values:
        raise ValueError(f"the report has no method {model!r}; it has {sorted(values)}")
    baselines = [name for name, m in report["methods"].items() if m.get("workdir") is None]
    lines = ["| figure | this run | seeds: mean +- std (min-max, runs) | best baseline |",
             "|---|---|---|---|"]
    for label, value in values[model].items():
        ref = spread.get(model, {}).get(label)
        cell = "n/a" if ref is None else (
            f"{ref['mean']:.4f} +- {ref['std']:.4f} ({ref['min']:.4f}-{ref['max']:.4f}, "
            f"{ref['runs']})")
        best = best_baseline(values, label, baselines)
        best_cell = "n/a" if best is None else f"{best[0]} {best[1]:.4f}"
        lines.append(f"| {label} | {value:.4f} | {cell} | {best_cell} |")
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




def format_separation(result: dict) -> str:
    """The separation study (`benchmarks.separation_study`) as a Markdown table."""
    lines = [
        f"Benign views vs manipulated versions, {result['split']} split "
        f"({result['records']} records, "
        f"{next(iter(result['methods'].values()))['identities']} originals)",
        "",
        "| method | bits | P(benign view nearer than manipulated) | mean distance: benign "
        "| manipulated | the edit alone | edits that move no bit |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in result["methods"].items():
        edit, unseen = s["edit_distance"], s["edits_unseen"]
        lines.append(f"| {method} | {s['bits']} | {s['separation']:.3f} | "
                     f"{s['benign_distance']:.2f} | {s['manipulated_distance']:.2f} | "
                     + ("n/a | n/a |" if np.isnan(edit) else f"{edit:.2f} | {unseen:.0%} |"))
    lines += ["", "(the edit alone: a manipulated version untransformed, view 0)"]
    return "\n".join(lines)
