"""Hashing throughput of a trained model and of the classical baselines on one core.

Hashes N decoded images (uint8 RGB arrays, the skimage sample photos shrunk so that the longer
side is ``--side`` px with the project's area interpolation, cycled to N) with each method of
`oscar_jax.inference.baselines`. Only hashing is timed: the images are decoded and resized
before the clock starts. Each method gets one untimed warm-up pass over a few images, then
``--runs`` timed passes over all N; the table gives every run and the median in images per
second. With `--workdir`, the trained model is measured twice: end to end from the decoded image
(detector, scene graph, the records' JPEG round trip, model: `Hasher.hash_arrays`) and the model
alone on the prepared records (`Hasher.hash_records`, as `oscar evaluate` runs it).

Usage:
  python benchmarks/hash_throughput.py [--workdir runs/demo] [--num-images 500] [--side 256]
      [--runs 3] [--methods ahash,phash,...]
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: it limits thread pools before the libraries load)

# isort: split

import argparse
import platform
import statistics
import time

import cv2
import numpy as np
from skimage import data

from oscar_jax.inference import baselines
from preprocessing.images import shrink_to_fit

# skimage sample photos that ship with the package (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry",
          "hubble_deep_field", "retina")
WARMUP_IMAGES = 5


def sample_images(num_images: int, side: int) -> list[np.ndarray]:
    """The sample photos as uint8 RGB [H, W, 3], longer side ``side`` px, cycled to N.

    Photos smaller than ``side`` are not enlarged.
    """
    photos = [shrink_to_fit(np.ascontiguousarray(getattr(data, name)()[..., :3]), side)
              for name in PHOTOS]
    return [photos[i % len(photos)] for i in range(num_images)]


def images_per_second(hash_fn, images) -> float:
    """One timed pass of ``hash_fn(images)``, in images per second."""
    start = time.perf_counter()
    hash_fn(images)
    return len(images) / (time.perf_counter() - start)


def measure(names: list[str], images: list[np.ndarray], runs: int) -> dict[str, list[float]]:
    """Images per second of each method: {name: [run 1, ..., run ``runs``]}."""
    results = {}
    for name in names:
        def hash_fn(batch, name=name):
            return baselines.hash_images(name, batch)

        hash_fn(images[:WARMUP_IMAGES])
        results[name] = [images_per_second(hash_fn, images) for _ in range(runs)]
    return results


def measure_model(workdir: str, images: list[np.ndarray], runs: int) -> dict[str, list[float]]:
    """Images per second of a trained model, end to end and on prepared records."""
    from oscar_jax.inference.hasher import load_hasher
    from oscar_jax.inference.records import stack

    hasher = load_hasher(workdir)
    hasher.hash_arrays(images[:WARMUP_IMAGES])  # compiles the model
    end_to_end = [images_per_second(hasher.hash_arrays, images) for _ in range(runs)]
    records = stack([hasher.maker.record(im) for im in images])

    def model_only(batch):
        return hasher.hash_records(batch)

    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        model_only(records)
        rates.append(len(images) / (time.perf_counter() - start))
    return {f"oscar {workdir} (end to end)": end_to_end,
            f"oscar {workdir} (model on records)": rates}


def markdown_table(results: dict[str, list[float]]) -> str:
    """Rows of method, bits, each run and the median (images / s), median ms per image."""
    runs = len(next(iter(results.values())))
    header = ["method", "bits"] + [f"run {i + 1} (img/s)" for i in range(runs)]
    header += ["median (img/s)", "ms / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rates in results.items():
        median = statistics.median(rates)
        bits = str(baselines.bits(name)) if name in baselines.METHODS else "model"
        cells = [name, bits] + [f"{r:.1f}" for r in rates]
        cells += [f"{median:.1f}", f"{1000 / median:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--side", type=int, default=256, help="longer side of each image, px")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="also measure this trained model")
    parser.add_argument("--methods", default=",".join(baselines.METHODS),
                        help="comma-separated names of oscar_jax.inference.baselines.METHODS")
    args = parser.parse_args()
    if args.num_images < 1 or args.runs < 1 or args.side < 1:
        parser.error("--num-images, --side and --runs must be at least 1")
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    for name in names:
        baselines.get(name)  # fails early, listing the known names
    cv2.setNumThreads(1)

    images = sample_images(args.num_images, args.side)
    shapes = sorted({im.shape[:2] for im in images})
    print(f"{len(images)} decoded uint8 RGB images, longer side {args.side} px "
          f"({len(shapes)} sizes, e.g. {shapes[0]}); decode and resize not timed; "
          f"1 thread; {args.runs} timed runs per method; Python {platform.python_version()}, "
          f"numpy {np.__version__}\n")
    results = measure_model(args.workdir, images, args.runs) if args.workdir else {}
    results.update(measure(names, images, args.runs))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
