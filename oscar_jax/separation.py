r"""Measure how well codes tell benign views from manipulated versions of the same original.

    oscar separation --workdir runs/demo [--split test] [--records DIR]

The separation is the probability that a benign view of an original is nearer it in Hamming
distance than a manipulated version is (ties count 1/2; 0.5 is chance, 1.0 perfect;
`oscar_jax.evaluation.metrics.separation`), for the trained model and for pHash on the same
records. Written to `<workdir>/separation.json` and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys

from oscar_jax import cli
from oscar_jax.evaluation.benchmarks import separation_study
from oscar_jax.evaluation.report import format_separation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a training workdir (holds "
                                                         "config.json, checkpoints/)")
    parser.add_argument("--split", help="split to evaluate (default: the config's eval_split)")
    parser.add_argument("--records", help="a built records folder made with the settings the "
                                          "model was trained on (default: the workdir's), e.g. "
                                          "oscar_demo built from your photos (--set photo_dir)")


def run(args: argparse.Namespace) -> int:
    print(format_separation(separation_study(args.workdir, args.split, args.records)))
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
