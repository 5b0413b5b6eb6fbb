r"""Separation of a demo model per kind of edit: which manipulations its codes notice.

    .venv/bin/python benchmarks/separation_by_edit.py --workdir runs/demo [--split test]

Replays the `oscar_demo` builder's scripted edit of every manipulated version in the split
(`OscarDemoMaker.edit_of`, from the records' stored settings) and prints, for the model and
pHash, the separation (`metrics.separation`) over each original's benign views and its
manipulated versions of one kind only. Demo records only: other data sets do not script
their edits.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax.evaluation import metrics  # noqa: E402
from oscar_jax.evaluation.codesets import hash_split  # noqa: E402
from oscar_jax.evaluation.table6 import builder_items  # noqa: E402
from oscar_jax.inference.codes import hamming_distance  # noqa: E402
from oscar_jax.inference.hasher import load_hasher  # noqa: E402
from oscar_jax.workdir import config_records_dir, load_config  # noqa: E402
from preprocessing import manipulations  # noqa: E402


def edit_kinds(records_dir: str, split: str) -> dict[tuple[int, int], str]:
    """(identity, variant) -> the kind of its scripted edit, for the split's manipulated
    versions, replayed by the builder that made the records."""
    made = builder_items(records_dir)
    if made is None or not hasattr(made[1], "edit_of"):
        raise SystemExit(f"{records_dir} holds no oscar_demo records: only the demo scripts "
                         "its edits")
    items, maker = made
    kinds = {}
    for item in items.get(split, []):
        spec = item.spec
        key = (spec["identity"], spec["variant"])
        if spec["variant"] > 0 and key not in kinds:
            kinds[key] = maker.edit_of(spec).description.split("(")[0]
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained demo workdir")
    parser.add_argument("--split", default="test", help="records split (default: test)")
    args = parser.parse_args()
    records_dir = config_records_dir(load_config(args.workdir))
    kinds = edit_kinds(records_dir, args.split)
    hashers = {"oscar": load_hasher(args.workdir), "phash": load_hasher(None, "phash")}
    records = hash_split(records_dir, args.split, hashers)
    pairs = list(zip(records.identity.tolist(), records.variant.tolist(), strict=True))
    missing = {p for p in pairs if p[1] > 0} - set(kinds)
    if missing:
        raise SystemExit(f"{len(missing)} manipulated versions of the records are not in the "
                         "builder's items: the records were made with other settings")
    names = list(manipulations.MANIPULATIONS)
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for method, codes in records.codes.items():
        distance = hamming_distance(codes, codes)
        cells = []
        for kind in names:
            keep = np.array([v == 0 or kinds[(i, v)] == kind for i, v in pairs])
            if not any(v > 0 and kinds[(i, v)] == kind for i, v in pairs):
                cells.append("-")
                continue
            score = metrics.separation(distance, records.identity, records.variant,
                                       records.view, keep)
            cells.append(f"{score['separation']:.3f} ({score['identities']})")
        print(f"| {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
