"""Latency of one attribution query (`TrustedDatabase.query`) on one core.

Opens a trusted database (by default the one `make demo` builds) and answers each query image
``--repeats`` times in three modes: the verdict alone, the verdict with the eq. 14 heatmap
(`explain=True`), and, for reference, the hash alone. One untimed warm-up query per image
first (compilation, the originals' SIFT features). Reports every run's median over the
images, then the median of ``--runs`` runs, in milliseconds per query.

Usage:
  python benchmarks/attribution_latency.py [--db runs/demo/trusted.sqlite]
      [--runs 3] [--repeats 5] [IMAGE ...]   (default: runs/demo/attribution/queries/*)
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: it limits thread pools before the libraries load)

# isort: split

import argparse
import glob
import os
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="runs/demo/trusted.sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("images", nargs="*")
    args = parser.parse_args()

    import cv2
    import faiss

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    from oscar_jax.attribution.database import TrustedDatabase
    from preprocessing.images import decode_image

    paths = args.images or sorted(glob.glob("runs/demo/attribution/queries/*.[jp][pn]g"))
    paths = [p for p in paths if not p.endswith(".explain.png")]
    images = {os.path.basename(p): decode_image(p) for p in paths}
    with TrustedDatabase.open(args.db) as db:
        modes = {
            "hash only": lambda im: db.hasher.hash_arrays([im]),
            "verdict": lambda im: db.query(im),
            "verdict + heatmap": lambda im: db.query(im, explain=True),
        }
        print(f"{len(db)} originals, method {db.method}; {platform.processor() or 'cpu'}, "
              f"one core; ms per query, median over images per run")
        for name, image in images.items():
            print(f"  {name}: {db.query(image)['verdict']}")
        for mode, run_one in modes.items():
            for image in images.values():
                run_one(image)  # warm-up
            medians = []
            for _ in range(args.runs):
                per_image = []
                for image in images.values():
                    start = time.perf_counter()
                    for _ in range(args.repeats):
                        run_one(image)
                    per_image.append((time.perf_counter() - start) / args.repeats * 1e3)
                medians.append(statistics.median(per_image))
            runs = ", ".join(f"{m:.1f}" for m in medians)
            print(f"{mode:<20} runs: {runs}  median {statistics.median(medians):.1f} ms")


if __name__ == "__main__":
    main()
