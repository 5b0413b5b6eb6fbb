r"""Run the paper's benchmarks for trained models and the classical baselines.

    oscar evaluate --workdir runs/demo --distractors train
    oscar evaluate --workdir runs/full --compare runs/cnn,runs/gnn \
        --distractors data/distractors/default/1.0.0
    oscar evaluate --records data/psbattles24k/default/1.0.0 --out reports/ps \
        --methods phash,chash,pdq

Benchmark I and II (Table 1), scalability (Tables 4 and 5), robustness (Fig. 3), code length
(Fig. 3c) and attribution (Table 6) on the records of a split, for the models of --workdir
and --compare and each baseline of --methods, through the same code path. Writes
`report.json`, `report.md` and PNG plots into --out (default: the workdir) and prints the
Table 1 part (`oscar_jax.evaluation.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from oscar_jax import cli
from oscar_jax.evaluation.report import evaluate, format_comparison, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="a trained workdir: the model 'oscar' (the report "
                                          "goes here)")
    parser.add_argument("--compare", type=cli.comma_list, default=[],
                        help="more trained workdirs, comma-separated (ablations, code lengths)")
    parser.add_argument("--records", help="a built records folder (default: the workdir's)")
    parser.add_argument("--split", help="split to evaluate (default: the config's eval_split)")
    parser.add_argument("--methods", type=cli.comma_list,
                        help="oscar and baselines to evaluate, comma-separated (default: all)")
    parser.add_argument("--distractors", help="a split of the records (e.g. train) or "
                                              "DIR[:SPLIT] of another data set")
    parser.add_argument("--distractor_steps", type=int, default=4,
                        help="scalability points besides 0 distractors")
    parser.add_argument("--out", help="folder for report.md/json and plots (default: workdir)")
    parser.add_argument("--reference", help="a seed-spread JSON (benchmarks/demo_seeds.py) to "
                                            "print this run's headline figures beside")


def run(args: argparse.Namespace) -> int:
    report = evaluate(workdir=args.workdir, compare=args.compare, records=args.records,
                      split=args.split, methods=args.methods, distractors=args.distractors,
                      distractor_steps=args.distractor_steps, out=args.out)
    print(format_table(report))
    if args.reference:
        with open(args.reference) as f:
            reference = json.load(f)
        print(f"\nThis run beside {reference['runs']} seeds of the same command "
              f"({args.reference}):\n")
        print(format_comparison(report, reference["spread"]))
    print(f"\nfull report: {os.path.join(args.out or args.workdir, 'report.md')}")
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
