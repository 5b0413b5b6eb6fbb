r"""Attribute images: which trusted original does an image come from, and was it manipulated?

    oscar attribute add --db trusted.sqlite --workdir runs/demo photo.jpg --meta provenance.json
    oscar attribute query --db trusted.sqlite found_online.jpg [--explain]
    oscar attribute calibrate --db trusted.sqlite
    oscar attribute info --db trusted.sqlite
    oscar attribute demo --workdir runs/demo

The trusted database and the verdicts are described in `oscar_jax.attribution.database`;
`calibrate` sets the thresholds from labelled records (Table 6, `oscar_jax.evaluation.table6`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from oscar_jax import cli
from oscar_jax.attribution.database import AttributionError, TrustedDatabase
from oscar_jax.evaluation.demo import build_demo
from oscar_jax.evaluation.table6 import calibrate_database
from oscar_jax.inference import baselines
from preprocessing.images import ImageDecodeError, decode_image, encode_png


def demo(args: argparse.Namespace) -> int:
    db_path = args.db or os.path.join(args.workdir, "trusted.sqlite")
    queries = build_demo(args.workdir, db_path, args.out or os.path.join(args.workdir,
                                                                         "attribution"))
    for path, truth in queries:
        print(f"{path}: {truth}")
    return 0


def _provenance(meta: str | None, images: list[str]) -> list[dict]:
    """One provenance object per image from a --meta JSON file: one object for all images,
    a list with one object per image, or an object keyed by the images' paths or file
    names."""
    if not meta:
        return [{} for _ in images]
    try:
        with open(meta, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as error:
        raise AttributionError(f"--meta {meta} is not valid JSON ({error}); fix the file") from None
    if isinstance(value, list):
        if len(value) == len(images) and all(isinstance(v, dict) for v in value):
            return value
    elif isinstance(value, dict):
        keyed = [value.get(p, value.get(os.path.basename(p))) for p in images]
        if any(k is not None for k in keyed):
            missing = [p for p, k in zip(images, keyed, strict=True) if not isinstance(k, dict)]
            if missing:
                raise AttributionError(f"--meta {meta} is keyed by file name but has no object "
                                       f"for {missing[0]} ({len(missing)} images in all)")
            return keyed
        return [value] * len(images)
    raise AttributionError(f"{meta} must hold a JSON object (the provenance of every image), "
                           f"an object keyed by file name, or a list of {len(images)} objects, "
                           "one per image in order")


def add(args: argparse.Namespace) -> int:
    images = cli.input_paths(args.images)
    provenance = _provenance(args.meta, images)
    good, failures = [], []
    for path, meta in zip(images, provenance, strict=True):
        try:
            decode_image(path)
            good.append((path, meta))
        except ImageDecodeError as error:
            failures.append((path, error.reason))
    with TrustedDatabase.open_or_create(args.db, workdir=args.workdir,
                                        method=args.method) as db:
        ids = db.add([p for p, _ in good], provenance=[m for _, m in good], progress=True)
        print(f"{db.added_count} originals added ({len(ids) - db.added_count} were there "
              f"already); {len(db)} in {args.db}", file=sys.stderr)
    for path, reason in failures:
        print(f"cannot add {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _text_line(path: str, answer: dict) -> str:
    original = answer["original"]
    if original is None:
        return f"{answer['verdict']:<12} {path}"
    return (f"{answer['verdict']:<12} {path} -> {original['name']} (id {original['id']}, "
            f"distance {original['distance']}/{answer['bits']}, {original['inliers']} inliers)")


def query(args: argparse.Namespace) -> int:
    images = cli.input_paths(args.images)
    failures = 0
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        if args.explain and db.method != "oscar":
            print(f"warning: --explain needs a database of OSCAR-Net codes; {args.db} holds "
                  f"{db.method} codes, so no heatmaps are written", file=sys.stderr)
        if not db.thresholds.get("calibrated_on"):
            print(f"warning: {args.db} has default thresholds, not calibrated ones; verdicts "
                  f"are rough until `oscar attribute calibrate --db {args.db}`",
                  file=sys.stderr)
        for path in images:
            try:
                pixels = decode_image(path)
                answer = db.query(pixels, name=path)
            except ImageDecodeError as error:
                print(f"cannot query {path}: {error.reason}", file=sys.stderr)
                failures += 1
                continue
            if args.explain and answer["original"] is not None and db.method == "oscar":
                folder = args.explain_dir or os.path.dirname(os.path.abspath(path))
                os.makedirs(folder, exist_ok=True)
                out = os.path.join(folder, os.path.splitext(os.path.basename(path))[0]
                                   + ".explain.png")
                with open(out, "wb") as f:
                    f.write(encode_png(db.explanation(pixels, answer["original"]["id"])))
                answer["explanation"] = out
            if args.format == "text":
                print(_text_line(path, answer)
                      + (f"  [heatmap: {answer['explanation']}]" if "explanation" in answer
                         else ""))
            else:
                print(json.dumps(answer))
    return 1 if failures else 0


def calibrate(args: argparse.Namespace) -> int:
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        study = calibrate_database(db, records=args.records, split=args.split,
                                   distractors=args.distractors or None)
    t = study["thresholds"]
    print(f"calibrated: match_distance {t['match_distance']}, min_inliers {t['min_inliers']} "
          f"({t['calibrated_on']}); on the other half: FPR {study['FPR']:.4f}, "
          f"FNR {study['FNR']:.4f}, manipulated flagged {study['flagged']:.4f}")
    return 0


def info(args: argparse.Namespace) -> int:
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        print(json.dumps({"path": db.path, "originals": len(db), "method": db.method,
                          "bits": db.bits, "workdir": db.workdir,
                          "thresholds": db.thresholds}, indent=2))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, run) -> argparse.ArgumentParser:
        sub = cli.add_subcommand(commands, name, help_text, run)
        sub.add_argument("--db", required=True, help="the trusted database (SQLite file)")
        sub.add_argument("--workdir", help="the trained model (stored in the database; give "
                                           "it to create one, or if the run moved)")
        return sub

    sub = command("add", "store originals with their provenance", add)
    sub.add_argument("--method", default="oscar", choices=["oscar", *baselines.METHODS],
                     help="hash of a new database: oscar (the model of --workdir) or a "
                          "classical baseline")
    sub.add_argument("--meta", help="JSON file: one provenance object for every image, or a "
                                    "list with one object per image")
    sub.add_argument("images", nargs="*", help="image files (default: paths on stdin)")

    sub = command("query", "attribute images: verdict, original and provenance as JSON", query)
    sub.add_argument("--explain", action="store_true",
                     help="write the dissimilarity heatmap (eq. 14) as NAME.explain.png")
    sub.add_argument("--explain_dir", help="folder for the heatmaps (default: beside each "
                                           "query)")
    sub.add_argument("--format", choices=("json", "text"), default="json",
                     help="one JSON object per line, or one line of text per image")
    sub.add_argument("images", nargs="*", help="image files (default: paths on stdin)")

    sub = command("calibrate", "set the thresholds from labelled records", calibrate)
    sub.add_argument("--records", help="a built data set (default: the model's own)")
    sub.add_argument("--split", default="test", help="split with originals, benign views and "
                                                     "manipulated versions")
    sub.add_argument("--distractors", default="train",
                     help="'train' (another split of the records), DIR[:SPLIT] of another data "
                          "set, or '' for none")

    command("info", "print the database's settings", info)

    sub = cli.add_subcommand(commands, "demo", "a trusted database of the demo originals, "
                             "calibrated, and three queries to attribute", demo)
    sub.add_argument("--workdir", required=True, help="the trained demo model")
    sub.add_argument("--db", help="where to write it (default: WORKDIR/trusted.sqlite)")
    sub.add_argument("--out", help="folder for the demo queries (default: WORKDIR/attribution)")


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
