r"""Seconds to score Benchmark I and II at the paper's size, from codes (hashing excluded).

    python benchmarks/eval_time.py [--originals 3000 --views 50 --distractors 100000 --runs 3]

The paper's Benchmark I: 3K original queries against 3K manipulated images, 150K benign views
and 100K distractors (about 250K entries); Benchmark II: the 150K benign and 3K manipulated
images as queries against the 3K originals and the distractors. Codes are 64-bit: each original
random, its benign views a few bits away, its manipulated version further, distractors random.
Times `oscar_jax.evaluation.benchmarks.benchmark_one` and `benchmark_two` (the code path
of `oscar evaluate`), on one core.
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: it limits thread pools before the libraries load)

# isort: split

import argparse
import platform
import statistics
import time

import numpy as np

from oscar_jax.evaluation import benchmarks, codesets


def flip(codes: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Flips `bits` random bits of every 64-bit code."""
    out = codes.copy()
    for _ in range(bits):
        position = rng.integers(0, 64, len(codes))
        out[np.arange(len(codes)), position // 8] ^= (128 >> (position % 8)).astype(np.uint8)
    return out


def synthetic(originals: int, views: int, seed: int = 0) -> codesets.CodeSet:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (originals, 8), dtype=np.uint8)
    codes = [base]
    identity, variant, view = [np.arange(originals)], [np.zeros(originals)], [np.zeros(originals)]
    for v in range(1, views + 1):
        codes.append(flip(base, 3, rng))
        identity.append(np.arange(originals))
        variant.append(np.zeros(originals))
        view.append(np.full(originals, v))
    codes.append(flip(base, 20, rng))
    identity.append(np.arange(originals))
    variant.append(np.ones(originals))
    view.append(np.zeros(originals))
    n = originals * (views + 2)
    return codesets.CodeSet({"m": np.concatenate(codes)}, np.concatenate(identity).astype(int),
                            np.concatenate(variant).astype(np.int32),
                            np.concatenate(view).astype(np.int32), np.asarray([""] * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--originals", type=int, default=3000)
    parser.add_argument("--views", type=int, default=50)
    parser.add_argument("--distractors", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    records = synthetic(args.originals, args.views)
    roles = codesets.Roles.of(records)
    distractors = np.random.default_rng(1).integers(0, 256, (args.distractors, 8), np.uint8)
    counts = [args.distractors]
    print(f"{len(roles.originals)} queries; Benchmark I database "
          f"{len(roles.benign) + len(roles.manipulated) + args.distractors}; Benchmark II "
          f"{len(roles.benign)} + {len(roles.manipulated)} queries, database "
          f"{len(roles.originals) + args.distractors}; {platform.processor() or 'cpu'}")
    times = {"Benchmark I": [], "Benchmark II": []}
    for _ in range(args.runs):
        start = time.perf_counter()
        one = benchmarks.benchmark_one(records, roles, "m", distractors, counts)[-1]
        times["Benchmark I"].append(time.perf_counter() - start)
        start = time.perf_counter()
        two = benchmarks.benchmark_two(records, roles, "m", distractors, counts)[-1]
        times["Benchmark II"].append(time.perf_counter() - start)
    print(f"mmAP {one['mmAP']:.4f}, FR1 {two['FR1']:.4f} (sanity: synthetic codes)")
    print("| benchmark | runs | seconds | median |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {', '.join(f'{v:.2f}' for v in values)} | "
              f"**{statistics.median(values):.2f} s** |")


if __name__ == "__main__":
    main()
