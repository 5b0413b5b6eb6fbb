r"""Hash images into packed codes, with a trained model or a classical baseline.

    oscar hash --workdir runs/demo photo.jpg other.png
    find photos -name '*.jpg' | oscar hash --workdir runs/demo --out codes.npy
    oscar hash --method pdq --format hex *.jpg

An image goes through exactly what made the model's training records (decode, shrink,
detector, scene graph, JPEG round trip; `oscar_jax.inference.records`), then the model, in
batches. `--out X.npy` writes uint8 [N, bits/8] packed codes (np.packbits order) in input
order, `X.paths.txt` with the path of each row and `X.meta.json` with the method, the code
length and the model's fingerprint (`oscar index` refuses to mix codes of two models);
`--format hex` prints `code<TAB>path` lines, `--format jsonl` one JSON object per image
(for any file name). Folders are searched recursively for images; only regular files are
read. An image that cannot be read is reported on stderr with its path and the reason, the
others still get their codes, and the exit status is 1. Baselines (`--method
ahash|phash|dhash|whash|chash|iscc|pdq`) need no workdir. With no image arguments, paths are
read from stdin, one a line, exactly as given (or NUL-separated with -0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from oscar_jax import cli
from oscar_jax.inference import baselines
from oscar_jax.inference.codes import line_safe
from oscar_jax.inference.hasher import load_hasher, save_codes
from preprocessing.images import IMAGE_EXTENSIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="a training workdir (for --method oscar)")
    parser.add_argument("--method", default="oscar", choices=["oscar", *baselines.METHODS],
                        help="the hash to compute (default: oscar, the model of --workdir)")
    parser.add_argument("--out", help="write the codes to this .npy file (with X.paths.txt "
                                      "and X.meta.json: method, bits, model fingerprint)")
    parser.add_argument("--format", choices=["npy", "hex", "jsonl"],
                        help="npy (needs --out); hex: 'code<TAB>path' lines; jsonl: one JSON "
                             "object per image, for any file name; default: npy with --out, "
                             "else hex")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes decoding and detecting (0: in this process)")
    parser.add_argument("-0", "--null", action="store_true",
                        help="stdin paths are NUL-separated (find -print0)")
    parser.add_argument("images", nargs="*",
                        help="image files or folders (searched recursively for "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))}); default: paths on stdin")


def run(args: argparse.Namespace) -> int:
    output_format = args.format or ("npy" if args.out else "hex")
    if output_format == "npy" and not args.out:
        raise ValueError("--format npy needs --out FILE.npy")
    if args.out:  # before any work: a typo in the folder must not cost a whole run
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise FileNotFoundError(f"cannot write {args.out}: {folder} is not a writable "
                                    "folder; create it or choose another --out")
    paths = cli.input_paths(args.images, null=args.null)
    # A line break or tab in a name would make the paths file or the hex lines ambiguous.
    tabular = output_format == "hex" or args.out
    unsafe = [p for p in paths if tabular and not line_safe(p)]
    paths = [p for p in paths if p not in unsafe]
    hasher = load_hasher(args.workdir, args.method)
    result = hasher.hash_paths(paths, workers=min(args.workers, len(paths)))
    result.failures.extend(
        (p, "the name holds a line break or tab; use --format jsonl (without --out)")
        for p in unsafe)
    if args.out:
        paths_file = save_codes(result, args.out, hasher)
        print(f"wrote {len(result.paths)} codes of {hasher.bits} bits to {args.out} "
              f"(paths of the rows in {paths_file}; model {hasher.fingerprint})",
              file=sys.stderr)
    if output_format == "hex":
        for code, path in zip(result.codes, result.paths, strict=True):
            print(f"{code.tobytes().hex()}\t{path}")
    elif output_format == "jsonl":
        for code, path in zip(result.codes, result.paths, strict=True):
            print(json.dumps({"path": path, "code": code.tobytes().hex()}))
        for path, reason in result.failures:
            print(json.dumps({"path": path, "error": reason}))
    if result.failures:
        print(f"{len(result.failures)} of {len(paths) + len(unsafe)} images could not be "
              "hashed:", file=sys.stderr)
        for path, reason in result.failures:
            print(f"  {path!r}: {reason}" if not line_safe(path) else f"  {path}: {reason}",
                  file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
