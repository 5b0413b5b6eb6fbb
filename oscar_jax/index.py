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
from typing import Any

from oscar_jax import cli
from oscar_jax.inference.codes import codes_paths_path, read_codes_meta
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


def _codes_with_facts(path: str) -> tuple[Any, dict, list[str] | None]:
    """Codes, their `X.meta.json` facts ({} for hex text) and the paths of their rows (from
    `X.paths.txt`, None when there is none)."""
    codes = read_codes(path)
    paths_file = codes_paths_path(path)
    paths = None
    if path.endswith(".npy") and os.path.exists(paths_file):
        with open(paths_file, encoding="utf-8") as f:
            paths = f.read().split("\n")[:-1]
        if len(paths) != len(codes):
            raise ValueError(f"{paths_file} lists {len(paths)} paths for {len(codes)} codes; "
                             "hash the images again")
    return codes, read_codes_meta(path), paths


def _check_model(index: HammingIndex, facts: dict, index_path: str, codes_path: str) -> None:
    """Refuses codes of another model than the index's (when both say which)."""
    ours, theirs = index.info.get("fingerprint"), facts.get("fingerprint")
    if ours and theirs and ours != theirs:
        raise ValueError(
            f"{codes_path} holds codes of model {theirs} but {index_path} was built from model "
            f"{ours}; codes of two models cannot be compared: hash with the index's model, "
            "or build a new index")


def _paths_file(index_path: str) -> str:
    return index_path + ".paths.tsv"


def _append_paths(index_path: str, ids, paths: list[str] | None, *,
                  new: bool) -> None:
    """Keeps `INDEX.paths.tsv` (id<TAB>path) beside an index, for search results with paths."""
    if new and os.path.exists(_paths_file(index_path)):
        os.remove(_paths_file(index_path))
    if paths is None:
        return
    with open(_paths_file(index_path), "a", encoding="utf-8") as f:
        f.writelines(f"{i}\t{p}\n" for i, p in zip(ids.tolist(), paths, strict=True))


def _read_paths(index_path: str) -> dict[int, str]:
    if not os.path.exists(_paths_file(index_path)):
        return {}
    with open(_paths_file(index_path), encoding="utf-8") as f:
        rows = (line.rstrip("\n").split("\t", 1) for line in f if line.strip())
        return {int(i): p for i, p in rows}


def build(args: argparse.Namespace) -> int:
    if os.path.exists(args.index) and not args.overwrite:
        raise FileExistsError(
            f"{args.index} exists; pass --overwrite to replace it, or use `add` to extend it."
        )
    codes, facts, paths = _codes_with_facts(args.codes)
    index = HammingIndex(8 * codes.shape[1], args.kind, **dict(args.option))
    index.info = {k: facts[k] for k in ("method", "fingerprint") if k in facts}
    ids = index.add(codes, read_ids(args.ids, len(codes)))
    index.save(args.index)
    _append_paths(args.index, ids, paths, new=True)
    print(f"{args.index}: {index!r}", file=sys.stderr)
    return 0


def add(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    codes, facts, paths = _codes_with_facts(args.codes)
    _check_model(index, facts, args.index, args.codes)
    ids = index.add(codes, read_ids(args.ids, len(codes)))
    index.save(args.index)
    _append_paths(args.index, ids, paths, new=False)
    print(f"{args.index}: {index!r}", file=sys.stderr)
    return 0


def search(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    if args.option:
        index.set_search_options(**dict(args.option))
    queries, facts, query_paths = _codes_with_facts(args.codes)
    _check_model(index, facts, args.index, args.codes)
    if args.radius is not None:
        results = index.range_search(queries, args.radius)
    else:
        distances, ids = index.search(queries, args.k)
        results = [(d[i >= 0], i[i >= 0]) for d, i in zip(distances, ids, strict=True)]
    paths = _read_paths(args.index)
    if args.format == "json":
        rows = []
        for q, (dist, ids) in enumerate(results):
            row = {"query": q, "results": [
                {"id": int(i), "distance": int(d), **({"path": paths[int(i)]}
                                                      if int(i) in paths else {})}
                for d, i in zip(dist, ids, strict=True)]}
            if query_paths is not None:
                row["query_path"] = query_paths[q]
            rows.append(row)
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
    else:
        with_paths = bool(paths) or query_paths is not None
        header = "query\trank\tid\tdistance" + ("\tquery_path\tpath" if with_paths else "")
        lines = [header]
        for q, (dist, ids) in enumerate(results):
            for r, (d, i) in enumerate(zip(dist, ids, strict=True)):
                line = f"{q}\t{r}\t{i}\t{d}"
                if with_paths:
                    line += (f"\t{query_paths[q] if query_paths is not None else ''}"
                             f"\t{paths.get(int(i), '')}")
                lines.append(line)
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def info(args: argparse.Namespace) -> int:
    index = HammingIndex.load(args.index)
    print(json.dumps({"kind": index.kind, "bits": index.bits, "ntotal": index.ntotal,
                      "options": index.options, "exact_radius": index.exact_radius,
                      **index.info}))
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
