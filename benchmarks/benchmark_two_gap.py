r"""Benchmark II's margin: how far each query is from its original and from the nearest other
image in the database.

    .venv/bin/python benchmarks/benchmark_two_gap.py --workdir runs/demo [--split test]
    .venv/bin/python benchmarks/benchmark_two_gap.py --workdir runs/demo --baselines pdq,chash
    .venv/bin/python benchmarks/benchmark_two_gap.py --workdir runs/demo --by_edit

Builds Benchmark II's database as `oscar evaluate` does (the split's originals, and the
distractors: by default the records' train split) and hashes it and the queries with the
trained model and the classical baselines. For the benign views and the manipulated
versions it prints the mean and median Hamming distance to their own original and to the
nearest other database entry (`metrics.target_gap`), and the share of queries whose original
is strictly nearer than every other entry. R@1 wants that share high for benign views;
R@1-bar wants it low for manipulated versions, which needs an edit to move a code further
than the distance between two different images. With `--by_edit` (demo records) the
manipulated versions are also split by the kind of their scripted edit
(`separation_by_edit.edit_kinds`): which edits move a code past the nearest other image.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax.evaluation import metrics  # noqa: E402
from oscar_jax.evaluation.codesets import Roles, hash_split  # noqa: E402
from oscar_jax.inference.baselines import METHODS, parse_names  # noqa: E402
from oscar_jax.inference.codes import hamming_distance  # noqa: E402
from oscar_jax.inference.hasher import load_hasher  # noqa: E402
from oscar_jax.workdir import config_records_dir, load_config  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from separation_by_edit import edit_kinds  # noqa: E402


def gap_rows(queries: np.ndarray, targets: np.ndarray, database: np.ndarray) -> dict[str, float]:
    """Mean and median distance of `queries` to their target rows of `database` and to the
    nearest other row, and the share strictly nearer their target."""
    own, other = metrics.target_gap(hamming_distance(queries, database), targets)
    return {"own": float(own.mean()), "own median": float(np.median(own)),
            "other": float(other.mean()), "other median": float(np.median(other)),
            "nearer": float(np.mean(own < other))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained model's workdir")
    parser.add_argument("--split", default="test", help="records split of the queries")
    parser.add_argument("--distractors", default="train",
                        help="split of the same records added to the database ('' for none)")
    parser.add_argument("--baselines", default="pdq,phash",
                        help=f"comma-separated classical hashes ({', '.join(METHODS)})")
    parser.add_argument("--by_edit", action="store_true",
                        help="also one manipulated row per kind of scripted edit (demo records)")
    args = parser.parse_args(argv)
    try:
        baselines = parse_names(args.baselines)
    except ValueError as e:
        parser.error(str(e))
    if args.distractors == args.split:
        parser.error("--distractors must be another split than the queries' "
                     f"({args.split!r}): its originals would be their own distractors")
    records_dir = config_records_dir(load_config(args.workdir))
    hashers = {"oscar": load_hasher(args.workdir)}
    hashers.update({name: load_hasher(None, name) for name in baselines})
    kinds = edit_kinds(records_dir, args.split) if args.by_edit else None
    records = hash_split(records_dir, args.split, hashers)
    distractors = hash_split(records_dir, args.distractors, hashers) if args.distractors \
        else None
    roles = Roles.of(records)
    column = {int(i): c for c, i in enumerate(records.identity[roles.originals])}
    count = 0 if distractors is None else len(distractors.identity)
    print(f"Benchmark II margin, {args.split} split: {len(roles.benign)} benign and "
          f"{len(roles.manipulated)} manipulated queries, database of "
          f"{len(roles.originals) + count} ({count} distractors)\n")
    print("| method | queries | to own original: mean (median) | to nearest other: mean "
          "(median) | own original strictly nearer |")
    print("|---|---|---|---|---|")
    if kinds is not None:
        kind = np.asarray([kinds[(int(records.identity[i]), int(records.variant[i]))]
                           for i in roles.manipulated])
    for method, codes in records.codes.items():
        database = codes[roles.originals]
        if distractors is not None:
            database = np.concatenate([database, distractors.codes[method]])
        for side, index in (("benign", roles.benign), ("manipulated", roles.manipulated)):
            targets = np.asarray([column[int(i)] for i in records.identity[index]])
            row = gap_rows(codes[index], targets, database)
            rows = [(side, row)]
            if kinds is not None and side == "manipulated":
                rows += [(f"manipulated: {k} ({int(np.sum(kind == k))})",
                          gap_rows(codes[index[kind == k]], targets[kind == k], database))
                         for k in sorted(set(kind.tolist()))]
            for label, r in rows:
                print(f"| {method} | {label} | {r['own']:.2f} ({r['own median']:g}) | "
                      f"{r['other']:.2f} ({r['other median']:g}) | {r['nearer']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
