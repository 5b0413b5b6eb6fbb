r"""Show where a query differs from its original: GradCAM of the paper's eq. 14.

    oscar explain --workdir runs/demo --out heat.png query.jpg original.jpg
    oscar explain --workdir runs/demo --out heat.png query.jpg original.jpg \
        --positive benign_view_of_query.jpg --stage 2

Writes a panel like the paper's Fig. 1: the heat map over the query, the original, the
query (`oscar_jax.attribution.gradcam` explains the method).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from oscar_jax import cli
from oscar_jax.attribution.gradcam import DEFAULT_STAGE, Explainer, write_explanation
from preprocessing.images import decode_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a training workdir (its latest "
                                                         "checkpoint)")
    parser.add_argument("--out", required=True, help="PNG to write: heat over the query | "
                                                     "original | query")
    parser.add_argument("--positive", help="a benign view of the query (x+ of eq. 14); "
                                           "default: the query itself")
    parser.add_argument("--stage", type=int, default=DEFAULT_STAGE,
                        help="ResNet stage GradCAM reads (1 = finest; default %(default)s)")
    parser.add_argument("query", help="the image to explain (x)")
    parser.add_argument("original", help="the trusted original it was matched to (x-)")


def run(args: argparse.Namespace) -> int:
    # Decoded before the model loads, so a bad file fails in a second, naming itself.
    query, original = decode_image(args.query), decode_image(args.original)
    positive = decode_image(args.positive) if args.positive else None
    explainer = Explainer(args.workdir, stage=args.stage)
    result = explainer.explain(query, original, positive)
    write_explanation(args.out, query, original, result.heat)
    y, x = np.unravel_index(int(np.argmax(result.heat)), result.heat.shape)
    print(f"wrote {args.out}: L(x|x+,x-) = {result.loss:.4f}, map peaks at x={x}, y={y} "
          f"of the query (stage {explainer.stage}, streams {', '.join(explainer.streams)})",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
