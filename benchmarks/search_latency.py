"""Top-k Hamming search latency over random 64-bit codes on one core, as a Markdown table.

For each database size, the codes are uniform random 64-bit codes (uint8 [N, 8]) and each
method answers top-k queries:

* ``flat``, ``multihash``, ``ivf``: `oscar_jax.inference.hamming_index.HammingIndex` of that
  kind, faiss on one OpenMP thread, with default options (multihash: 4 tables of 16 bits, nflip
  1, exact within 7 bits; ivf: nlist about sqrt(N), nprobe 16) or those given as
  ``kind:key=value,...`` (the default list has ``multihash:hash_bits=21``: 3 tables of 21 bits,
  exact within 5 bits).
* ``numpy``: a plain scan, one query at a time: XOR on a uint64 view, ``np.bitwise_count``,
  ``np.argpartition``.

Two query sets: ``near`` (the real workload: database codes with 0 to ``--max-flips`` random
bits flipped, i.e. near duplicates) and ``random`` (uniform random codes, whose nearest code
is about 15 bits away at 1M: the worst case for multihash and ivf, which are then
approximate). Each repetition times ``--single`` queries one call at a time and one batched
call of ``--batch`` queries (``--scan-batch`` for the numpy scan, which is a loop over queries
anyway). Reported: the median over every single-query call of all repetitions, and the median
over repetitions of batch time / batch size, in ms per query; "exact top-1" and "exact top-k"
are the shares of the first ``--batch`` queries whose nearest distance, or whose k distances,
equal the true ones (from the numpy scan); "build" is the time to add (and for ivf train on)
all codes. One untimed warm-up query precedes the timings.

Usage:
  python benchmarks/search_latency.py [--sizes 1000000 10000000] [--repeats 5]
      [--single 50] [--batch 1000] [--scan-batch 100] [--k 10] [--max-flips 4]
      [--methods flat multihash multihash:hash_bits=21 ivf numpy] [--query-sets near random]
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: it limits thread pools before the libraries load)

# isort: split

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import faiss
import numpy as np

from oscar_jax.inference.hamming_index import HammingIndex

BITS = 64
DEFAULT_METHODS = ("flat", "multihash", "multihash:hash_bits=21", "ivf", "numpy")

# queries uint8 [Q, 8] -> distances [Q, k], sorted ascending.
SearchFn = Callable[[np.ndarray], np.ndarray]


def random_codes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform random 64-bit codes, uint8 [count, 8]."""
    return rng.integers(0, 1 << 64, count, dtype=np.uint64).view(np.uint8).reshape(count, 8)


def near_duplicates(rng: np.random.Generator, codes: np.ndarray, count: int,
                    max_flips: int) -> np.ndarray:
    """``count`` random rows of codes uint8 [N, 8] with 0..max_flips distinct bits flipped."""
    rows = codes[rng.integers(0, len(codes), count)].view(np.uint64).reshape(-1).copy()
    for i, flips in enumerate(rng.integers(0, max_flips + 1, count)):
        for bit in rng.choice(BITS, int(flips), replace=False):
            rows[i] ^= np.uint64(1) << np.uint64(bit)
    return rows.view(np.uint8).reshape(count, 8)


def numpy_scan(codes: np.ndarray, k: int) -> SearchFn:
    """The plain numpy baseline over codes uint8 [N, 8]: one query at a time (blocks of
    queries are slower here, their [block, N] temporaries leave the caches)."""
    database = codes.view(np.uint64).reshape(-1)

    def search(queries: np.ndarray) -> np.ndarray:
        words = queries.view(np.uint64).reshape(-1)
        out = np.empty((len(words), k), np.uint8)
        for row, word in enumerate(words):
            dist = np.bitwise_count(database ^ word)
            out[row] = np.sort(dist[np.argpartition(dist, k - 1)[:k]])
        return out

    return search


def index_search(index: HammingIndex, k: int) -> SearchFn:
    return lambda queries: index.search(queries, k)[0]


def per_query_ms(search: SearchFn, queries: np.ndarray) -> float:
    start = time.perf_counter()
    search(queries)
    return (time.perf_counter() - start) * 1e3 / len(queries)


def measure(search: SearchFn, single: np.ndarray, batch: np.ndarray,
            repeats: int) -> tuple[float, float, list[float]]:
    """(median ms of one-query calls, median over repetitions of batched ms/query, the
    batched values)."""
    search(single[:1])
    one_at_a_time, batched = [], []
    for _ in range(repeats):
        one_at_a_time += [per_query_ms(search, single[i : i + 1]) for i in range(len(single))]
        batched.append(per_query_ms(search, batch))
    return statistics.median(one_at_a_time), statistics.median(batched), batched


def parse_method(spec: str) -> tuple[str, dict[str, int]]:
    """``kind`` or ``kind:key=value,...`` -> (kind, options)."""
    kind, _, rest = spec.partition(":")
    if kind not in ("flat", "multihash", "ivf", "numpy"):
        raise argparse.ArgumentTypeError(f"unknown method {spec!r}")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value)
    return kind, options


def build(method: str, codes: np.ndarray, k: int) -> tuple[SearchFn, float]:
    """The search function of a method spec over codes, and the seconds it took to build."""
    kind, options = parse_method(method)
    start = time.perf_counter()
    if kind == "numpy":
        search = numpy_scan(codes, k)
    else:
        index = HammingIndex(BITS, kind, **options)
        index.add(codes)
        search = index_search(index, k)
    return search, time.perf_counter() - start


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single", type=int, default=50, help="one-query calls per repeat")
    parser.add_argument("--batch", type=int, default=1000, help="queries per batched call")
    parser.add_argument("--scan-batch", type=int, default=100,
                        help="queries per batched call of the numpy scan")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-flips", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="flat, multihash, ivf (each optionally kind:key=value,...), numpy")
    parser.add_argument("--query-sets", nargs="+", default=["near", "random"],
                        choices=["near", "random"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for method in args.methods:
        parse_method(method)
    faiss.omp_set_num_threads(1)

    print(f"# {cpu_name()}, 1 thread, numpy {np.__version__}, faiss {faiss.__version__}, "
          f"Python {platform.python_version()}; k={args.k}, {args.repeats} repetitions of "
          f"{args.single} one-query calls and one batch of {args.batch} queries "
          f"({args.scan_batch} for numpy)", flush=True)
    rows = ["| codes | method | queries | one at a time (ms/query) | batched (ms/query) "
            "| exact top-1 | exact top-k | build (s) |", "|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        codes = random_codes(rng, size)
        count = max(args.single, args.batch)
        query_sets = {
            "near": near_duplicates(rng, codes, count, args.max_flips),
            "random": random_codes(rng, count),
        }
        query_sets = {name: query_sets[name] for name in args.query_sets}
        truth_fn = numpy_scan(codes, args.k)
        truth = {name: truth_fn(q[: args.batch]) for name, q in query_sets.items()}
        for method in args.methods:
            search, build_s = build(method, codes, args.k)
            for name, queries in query_sets.items():
                batch = queries[: args.scan_batch if method == "numpy" else args.batch]
                single_ms, batch_ms, batched = measure(
                    search, queries[: args.single], batch, args.repeats
                )
                found = search(queries[: args.batch]).astype(np.int64)
                top1 = float(np.mean(found[:, 0] == truth[name][:, 0]))
                topk = float(np.mean((found == truth[name]).all(axis=1)))
                print(json.dumps({"codes": size, "method": method, "queries": name,
                                  "single_ms": single_ms, "batched_ms": batched,
                                  "exact_top1": top1, "exact_topk": topk, "build_s": build_s}),
                      flush=True)
                rows.append(f"| {size:,} | {method} | {name} | {single_ms:.3f} | "
                            f"{batch_ms:.3f} | {top1:.1%} | {topk:.1%} | {build_s:.1f} |")
            del search
            gc.collect()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
