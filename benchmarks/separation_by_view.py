r"""Separation per kind of benign view: does a hash lose to geometry or to the edits?

    .venv/bin/python benchmarks/separation_by_view.py --workdir runs/demo [--split test]
    .venv/bin/python benchmarks/separation_by_view.py --records data/oscar_demo/default/1.2.0

Hashes a records split with the trained model (with --workdir) and the classical baselines,
and prints the separation (`metrics.separation`) over all views, then over the views that
skip one geometric transform (flip, rotation, padding: those that move an image's layout;
JPEG and resizing are in every view), and over the views that skip all three. Every
record a subset keeps goes out of both sides: a manipulated version's views that were
flipped leave with the benign views that were. A hash that separates well only without the
geometric views loses to layout changes; one that stays low everywhere does not see the
edits well enough against photometric changes.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax.evaluation import metrics  # noqa: E402
from oscar_jax.evaluation.codesets import hash_split  # noqa: E402
from oscar_jax.inference.baselines import METHODS, parse_names  # noqa: E402
from oscar_jax.inference.codes import hamming_distance  # noqa: E402
from oscar_jax.inference.hasher import load_hasher  # noqa: E402
from oscar_jax.workdir import config_records_dir, load_config  # noqa: E402
from preprocessing import transforms  # noqa: E402

# The transforms that move pixels to other places in the frame; resizing is left out, since
# every view is resized and the records letterbox each view to one size.
LAYOUT = tuple(name for name in transforms.SECONDARY if transforms.TRANSFORMS[name].geometric)


def view_subsets(descriptions: np.ndarray) -> dict[str, np.ndarray]:
    """Named record masks: 'all', 'no <t>' for each layout transform t, 'no layout change'.

    Args:
      descriptions: str [R], each record's applied transforms (`transforms.View.description`).
    """
    applied = [{t.name for t in transforms.parse_description(str(d))} for d in descriptions]
    subsets = {"all": np.ones(len(applied), bool)}
    for name in LAYOUT:
        subsets[f"no {name}"] = np.array([name not in names for names in applied])
    subsets["no layout change"] = np.array([not (names & set(LAYOUT)) for names in applied])
    return subsets


def separation_by_view(distance: np.ndarray, identity: np.ndarray, variant: np.ndarray,
                       view: np.ndarray, subsets: dict[str, np.ndarray]) -> dict[str, float]:
    """Subset name (of `view_subsets`) -> separation over the records it keeps (NaN where no
    original keeps a reference, a benign view and a manipulated record)."""
    out = {}
    for name, keep in subsets.items():
        try:
            score = metrics.separation(distance, identity, variant, view, keep)["separation"]
        except ValueError:
            score = float("nan")
        out[name] = score
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="a trained workdir (its codes are the 'oscar' row)")
    parser.add_argument("--records", help="records folder (default: the workdir's)")
    parser.add_argument("--split", default="test", help="records split (default: test)")
    parser.add_argument("--baselines", default="pdq,phash",
                        help=f"comma-separated classical hashes ({', '.join(METHODS)})")
    args = parser.parse_args(argv)
    if not (args.workdir or args.records):
        parser.error("give --workdir (a trained model) or --records (baselines only)")
    try:
        baselines = parse_names(args.baselines)
    except ValueError as e:
        parser.error(str(e))
    records_dir = args.records or config_records_dir(load_config(args.workdir))
    hashers = {"oscar": load_hasher(args.workdir)} if args.workdir else {}
    hashers.update({name: load_hasher(None, name) for name in baselines})
    records = hash_split(records_dir, args.split, hashers)
    subsets = view_subsets(records.transforms)
    print(f"Separation by benign view, {args.split} split ({len(records.identity)} records)\n")
    print("| method | " + " | ".join(f"{n} ({int(m.sum())})" for n, m in subsets.items()) + " |")
    print("|---|" + "---|" * len(subsets))
    for method, codes in records.codes.items():
        scores = separation_by_view(hamming_distance(codes, codes), records.identity,
                                    records.variant, records.view, subsets)
        print(f"| {method} | " + " | ".join(f"{s:.3f}" for s in scores.values()) + " |")
    print("\n(in brackets: the records each column keeps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
