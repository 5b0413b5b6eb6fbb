r"""Build, extend and search Hamming indexes of packed codes.

    oscar index build --codes codes.npy --index codes.faiss --kind multihash
    oscar index add --index codes.faiss --codes more.npy --ids more_ids.npy
    oscar index search --index codes.faiss --codes queries.npy -k 10
    oscar index search --index codes.faiss --codes queries.txt --radius 8
    oscar index info --index codes.faiss

Codes come from `oscar hash --out X.npy` (or its `--format hex` lines); the index kinds and
their options are described in `oscar_jax.inference.hamming_index`. `search` prints one line
per result: query, rank, id, distance (or JSON with `--format json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from oscar_jax import cli
from oscar_jax.inference.hamming_index import KINDS, HammingIndex, read_codes, read_ids


def _parse_option(text: str) -> tuple[str, int | None]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value, e.g. nprobe=32.")
    if value.lower() in ("none", "auto"):
        return name, None
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Option {name} needs an int, got {value!r}.") from None


def build(args: argparse.Namespace) -> int:
    if os.path.exists(args.index) and not args.overwrite:
        raise FileExistsError(
            f"{args.index} exists; pass --overwrite to replace it, or use `add` to extend it."
        )
    codes = read_codes(args.codes)
    index = HammingIndex(8 * codes.shape[1], args.kind, **dict(args.option))
    index.add(codes, read_ids(args.ids, len(codes)))
    index.save(args.index)
    print(f"{args.index}: {index!r}", file=sys.stderr)
    return 0


def add(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    codes = read_codes(args.codes)
    index.add(codes, read_ids(args.ids, len(codes)))
    index.save(args.index)
    print(f"{args.index}: {index!r}", file=sys.stderr)
    return 0


def search(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    if args.option:
        index.set_search_options(**dict(args.option))
    queries = read_codes(args.codes)
    if args.radius is not None:
        results = index.range_search(queries, args.radius)
    else:
        distances, ids = index.search(queries, args.k)
        results = [(d[i >= 0], i[i >= 0]) for d, i in zip(distances, ids, strict=True)]
    if args.format == "json":
        rows = [
            {
                "query": q,
                "results": [
                    {"id": int(i), "distance": int(d)} for d, i in zip(dist, ids, strict=True)
                ],
            }
            for q, (dist, ids) in enumerate(results)
        ]
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
    else:
        lines = ["query\trank\tid\tdistance"]
        for q, (dist, ids) in enumerate(results):
            lines += [f"{q}\t{r}\t{i}\t{d}" for r, (d, i) in enumerate(zip(dist, ids, strict=True))]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def info(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    print(json.dumps({"kind": index.kind, "bits": index.bits, "ntotal": index.ntotal,
                      "options": index.options, "exact_radius": index.exact_radius}))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    codes_help = ".npy uint8 [N, bits/8], or a text file of hex codes (code<TAB>anything)"
    option_help = "kind option as key=value (repeatable), e.g. nprobe=32, nflip=2, nlist=auto"

    sub = cli.add_subcommand(commands, "build", "make a new index from codes", build)
    sub.add_argument("--codes", required=True, help=codes_help)
    sub.add_argument("--ids", help=".npy int [N]; default: row numbers")
    sub.add_argument("--index", required=True, help="index file to write")
    sub.add_argument("--kind", choices=KINDS, default="flat", help="index kind")
    sub.add_argument("--option", type=_parse_option, action="append", default=[],
                     help=option_help)
    sub.add_argument("--overwrite", action="store_true", help="replace an existing index")

    sub = cli.add_subcommand(commands, "add", "add codes to an index (saved atomically)", add)
    sub.add_argument("--index", required=True, help="the index file")
    sub.add_argument("--codes", required=True, help=codes_help)
    sub.add_argument("--ids", help=".npy int [N]; default: after the largest id")

    sub = cli.add_subcommand(commands, "search", "search an index; prints query, rank, id, "
                             "distance", search)
    sub.add_argument("--index", required=True, help="the index file")
    sub.add_argument("--codes", required=True, help=codes_help)
    mode = sub.add_mutually_exclusive_group(required=True)
    mode.add_argument("-k", type=int, help="the k nearest codes of each query")
    mode.add_argument("--radius", type=int, help="every code within this distance (inclusive)")
    sub.add_argument("--format", choices=("tsv", "json"), default="tsv", help="output format")
    sub.add_argument("--option", type=_parse_option, action="append", default=[],
                     help="search option as key=value: nprobe (ivf), nflip (multihash)")

    sub = cli.add_subcommand(commands, "info", "print an index's kind, bits, size and options",
                             info)
    sub.add_argument("--index", required=True, help="the index file")


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
