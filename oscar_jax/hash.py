r"""Hash images into packed codes, with a trained model or a classical baseline.

    oscar hash --workdir runs/demo photo.jpg other.png
    find photos -name '*.jpg' | oscar hash --workdir runs/demo --out codes.npy
    oscar hash --method pdq --format hex *.jpg

An image goes through exactly what made the model's training records (decode, shrink,
detector, scene graph, JPEG round trip; `oscar_jax.inference.records`), then the model, in
batches. `--out X.npy` writes uint8 [N, bits/8] packed codes (np.packbits order) in input
order and `X.paths.txt` with the path of each row; `--format hex` prints `code<TAB>path`
lines. An image that cannot be read is reported on stderr with its path and the reason, the
others still get their codes, and the exit status is 1. Baselines (`--method
ahash|phash|dhash|whash|chash|iscc|pdq`) need no workdir. With no image arguments, paths are
read from stdin, one a line.
"""

from __future__ import annotations

import argparse
import os
import sys

from oscar_jax import cli
from oscar_jax.inference import baselines
from oscar_jax.inference.hasher import load_hasher, save_codes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="a training workdir (for --method oscar)")
    parser.add_argument("--method", default="oscar", choices=["oscar", *baselines.METHODS],
                        help="the hash to compute (default: oscar, the model of --workdir)")
    parser.add_argument("--out", help="write the codes to this .npy file (and X.paths.txt)")
    parser.add_argument("--format", choices=["npy", "hex"],
                        help="npy (needs --out) or hex lines on stdout; default: npy with "
                             "--out, else hex")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes decoding and detecting (0: in this process)")
    parser.add_argument("images", nargs="*", help="image files (default: paths on stdin)")


def run(args: argparse.Namespace) -> int:
    paths = cli.input_paths(args.images)
    output_format = args.format or ("npy" if args.out else "hex")
    if output_format == "npy" and not args.out:
        raise ValueError("--format npy needs --out FILE.npy")
    hasher = load_hasher(args.workdir, args.method)
    result = hasher.hash_paths(paths, workers=min(args.workers, len(paths)))
    if args.out:
        paths_file = save_codes(result, args.out)
        print(f"wrote {len(result.paths)} codes of {hasher.bits} bits to {args.out} "
              f"(paths of the rows in {paths_file})", file=sys.stderr)
    if output_format == "hex":
        for code, path in zip(result.codes, result.paths, strict=True):
            print(f"{code.tobytes().hex()}\t{path}")
    if result.failures:
        print(f"{len(result.failures)} of {len(paths)} images could not be hashed:",
              file=sys.stderr)
        for path, reason in result.failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
