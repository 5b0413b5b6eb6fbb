r"""Images -> packed codes, with a trained model or a classical baseline.

    python -m oscar_jax.hash --workdir runs/demo photo.jpg other.png
    find photos -name '*.jpg' | python -m oscar_jax.hash --workdir runs/demo --out codes.npy
    python -m oscar_jax.hash --method phash --format hex *.jpg

An image goes through exactly what made the model's training records: the project's one decode
path, the same shrinking, the detector backend and options, scene graph and JPEG round trip as
the records (their settings are saved in the workdir as `records.json` by the trainer, or read
from the records' metadata), then the model, in batches. `--out X.npy` writes uint8
[N, bits/8] packed codes (np.packbits order) in input order and `X.paths.txt` with the path of
each row; `--format hex` prints `code<TAB>path` lines. An image that cannot be read is reported
on stderr with its path and the reason, the others still get their codes, and the exit status
is 1. Baselines (`--method ahash|phash|dhash|whash|chash|iscc|pdq`) need no workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from oscar_jax.input_pipeline import MODEL_FIELDS
from preprocessing import scene_graph
from preprocessing.datasets import base
from preprocessing.images import ImageDecodeError, decode_image, shrink_to_fit

# Model batches are padded to this size, so the model compiles once.
EVAL_BATCH = 64
# Written into a workdir by the trainer: the settings of the records it trained on.
RECORDS_JSON = "records.json"
# Detectors that need something only a data set build has.
_NEEDS_BUILD = {"oracle": "ground-truth masks of generated scenes"}


# ---- records settings and the image -> record path ------------------------------------------


def read_record_settings(directory: str) -> dict[str, Any]:
    """The builder config a records folder was made with (its `metadata.json`)."""
    path = os.path.join(directory, "metadata.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {directory} is not a built records folder")
    with open(path) as f:
        return json.load(f)["config"]


def record_settings(workdir: str) -> dict[str, Any]:
    """How the records a workdir was trained on were made: `records.json` in the workdir, or
    the metadata of the records its config names."""
    path = os.path.join(workdir, RECORDS_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from oscar_jax import input_pipeline, train

    config = train.load_config(workdir)
    directory = input_pipeline.records_dir(config.dataset, config.dataset_config,
                                           config.data_dir)
    return read_record_settings(directory)


class ImageRecordMaker(base.SceneGraphMaker):
    """A query image -> the record its training data would hold (view 0, no labels).

    The spec of a `WorkItem` holds either `path` or `pixels` (uint8 [H, W, 3]).
    """

    def __init__(self, settings: dict[str, Any]):
        if settings["detector"] in _NEEDS_BUILD:
            raise ValueError(
                f"the records were made with the {settings['detector']!r} detector, which uses "
                f"{_NEEDS_BUILD[settings['detector']]} and cannot run on new images; train on "
                "records of a detector that can (e.g. oscar_demo `default`, `classical`)")
        fields = {f.name for f in dataclasses.fields(base.SceneGraphConfig)}
        kwargs = {k: v for k, v in settings.items() if k in fields and k not in (
            "name", "version", "release_notes", "supported_versions", "description", "tags")}
        kwargs["detector_options"] = tuple(tuple(kv) for kv in kwargs.get("detector_options", ()))
        super().__init__(base.SceneGraphConfig(name="query", **kwargs))
        # Originals are shrunk before anything else: `image_size` (oscar_demo) or `max_side`.
        self.max_side = int(settings.get("max_side") or settings.get("image_size") or 0)

    def __getstate__(self):
        return {**super().__getstate__(), "max_side": self.max_side}

    def view_of(self, item: base.WorkItem):
        spec = item.spec
        image = spec["pixels"] if "pixels" in spec else decode_image(spec["path"])
        if self.max_side:
            image = shrink_to_fit(image, self.max_side)
        return image, None, "", os.path.basename(item.key)

    def record(self, source: str | np.ndarray, name: str = "image") -> dict[str, np.ndarray]:
        """A path or decoded RGB pixels -> the decoded model fields of its record."""
        if isinstance(source, np.ndarray):
            spec, name = dict(identity=-1, variant=0, view=0, pixels=source), name
        else:
            spec, name = dict(identity=-1, variant=0, view=0, path=source), source
        example = self(base.WorkItem(name, "query", name, spec))
        decoded = scene_graph.decode_record(example)  # the records' JPEG round trip
        return {field: decoded[field] for field in MODEL_FIELDS}


def stack(records: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {field: np.stack([r[field] for r in records]) for field in MODEL_FIELDS}


def model_encoder(workdir: str) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray], int]:
    """(encode, bits): `encode` maps a batch of decoded records to packed codes of the
    workdir's trained model (latest checkpoint)."""
    import jax

    from oscar_jax import hashing, train

    config, model, variables = train.restore_inference(workdir)

    @jax.jit
    def embed(batch):
        return model.apply(variables, batch, train=False)

    def encode(batch: dict[str, np.ndarray]) -> np.ndarray:
        n = len(batch["image"])
        out = []
        for start in range(0, n, EVAL_BATCH):
            inputs, size = {}, min(EVAL_BATCH, n - start)
            # Static shapes: batches are padded to a power of two up to EVAL_BATCH, so a
            # single query (the attribution server) does not pay for 64 images, and the
            # model compiles at most 7 times.
            padded = min(EVAL_BATCH, 1 << (size - 1).bit_length())
            for name in MODEL_FIELDS:
                x = batch[name][start : start + size]
                pad = np.zeros((padded - size, *x.shape[1:]), x.dtype)
                inputs[name] = np.concatenate([x, pad])
            z = np.asarray(embed(inputs))[:size]
            out.append(hashing.pack_bits(z >= 0))  # sign(0) = +1, as in training
        return np.concatenate(out)

    return encode, int(config.model.code_bits)


# ---- hashers ---------------------------------------------------------------------------------


@dataclasses.dataclass
class HashResult:
    """Codes of the images that could be read, in input order, and the ones that could not."""

    codes: np.ndarray  # uint8 [N, bytes]
    paths: list[str]  # the input of each row of codes
    failures: list[tuple[str, str]]  # (path, reason)


def _prepare(job: tuple[ImageRecordMaker | None, str]) -> tuple[str, Any, str | None]:
    """Worker: path -> (path, record or pixels, error). Never raises on a bad image."""
    maker, path = job
    try:
        if maker is None:
            return path, decode_image(path), None
        return path, maker.record(path), None
    except ImageDecodeError as error:
        return path, None, error.reason
    except Exception as error:  # noqa: BLE001 - one bad input must not stop the others
        return path, None, f"{type(error).__name__}: {error}"


class Hasher:
    """Packed codes of images, for the trained model of a workdir or a classical baseline.

    Attributes:
      method: 'oscar' or a name of `oscar_jax.baselines.METHODS`.
      bits: code length.
    """

    def __init__(self, method: str, bits: int, *, maker: ImageRecordMaker | None = None,
                 encode: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None):
        self.method, self.bits, self.maker, self._encode = method, bits, maker, encode

    @property
    def code_bytes(self) -> int:
        return (self.bits + 7) // 8

    def hash_records(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Decoded records (as `input_pipeline.read_split` yields) -> uint8 [B, bytes].
        Baselines hash the records' global view."""
        if self._encode is not None:
            return self._encode(batch)
        from oscar_jax import baselines

        return baselines.hash_images(self.method, list(batch["image"]))

    def hash_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded RGB images uint8 [H, W, 3] -> uint8 [N, bytes]."""
        if self.maker is None:
            from oscar_jax import baselines

            return baselines.hash_images(self.method, list(images))
        return self.hash_records(stack([self.maker.record(im) for im in images]))

    def hash_paths(self, paths: Iterable[str], *, workers: int = 0, progress: bool = True,
                   total: int | None = None) -> HashResult:
        """Image files -> codes, decoding and detecting in `workers` processes (0: here)."""
        paths = list(paths)
        jobs = [(self.maker, p) for p in paths]
        codes, done, failures, pending = [], [], [], []

        def flush():
            if pending:
                if self.maker is None:
                    codes.append(self.hash_arrays([item for _, item in pending]))
                else:
                    codes.append(self.hash_records(stack([item for _, item in pending])))
                done.extend(path for path, _ in pending)
                pending.clear()

        with _job_results(jobs, workers) as results, tqdm(
                total=total or len(paths), desc=f"hashing ({self.method})", unit="image",
                disable=not progress, file=sys.stderr) as bar:
            for path, item, error in results:
                if error is not None:
                    failures.append((path, error))
                    bar.write(f"cannot hash {path}: {error}", file=sys.stderr)
                else:
                    pending.append((path, item))
                    if len(pending) == EVAL_BATCH:
                        flush()
                bar.update(1)
            flush()
        packed = np.concatenate(codes) if codes else np.zeros((0, self.code_bytes), np.uint8)
        return HashResult(packed, done, failures)


@contextlib.contextmanager
def _job_results(jobs: list, workers: int) -> Iterator[Iterator[tuple[str, Any, str | None]]]:
    """In-order `_prepare` results, in a spawned pool (JAX and fork do not mix) or here."""
    if workers <= 0 or len(jobs) <= 1:
        yield map(_prepare, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        yield pool.imap(_prepare, jobs, chunksize=2)
    finally:
        pool.terminate()
        pool.join()


def load_hasher(workdir: str | None = None, method: str = "oscar") -> Hasher:
    """The hasher of a trained workdir (method 'oscar') or of a classical baseline.

    Raises:
      FileNotFoundError: the workdir has no config or checkpoint.
      ValueError: an unknown method, or 'oscar' without a workdir.
    """
    if method == "oscar":
        if not workdir:
            raise ValueError("method 'oscar' needs the --workdir of a trained model")
        maker = ImageRecordMaker(record_settings(workdir))
        encode, bits = model_encoder(workdir)
        return Hasher("oscar", bits, maker=maker, encode=encode)
    from oscar_jax import baselines

    if method not in baselines.METHODS:
        raise ValueError(f"unknown method {method!r}; choose oscar or one of "
                         f"{', '.join(baselines.METHODS)}")
    return Hasher(method, baselines.bits(method))


# ---- command line ----------------------------------------------------------------------------


def write_codes(result: HashResult, out: str) -> str:
    """Saves the codes as .npy and the paths of its rows beside it; returns the paths file."""
    np.save(out, result.codes)
    paths_file = os.path.splitext(out)[0] + ".paths.txt"
    with open(paths_file, "w", encoding="utf-8") as f:
        f.writelines(p + "\n" for p in result.paths)
    return paths_file


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (for --method oscar).")
    flags.DEFINE_enum("method", "oscar", ["oscar", "ahash", "phash", "dhash", "whash", "chash",
                                          "iscc", "pdq"], "The hash to compute.")
    flags.DEFINE_string("out", None, "Write codes to this .npy file (and X.paths.txt).")
    flags.DEFINE_enum("format", None, ["npy", "hex"],
                      "npy (needs --out) or hex lines on stdout; default: npy with --out, "
                      "else hex.")
    flags.DEFINE_integer("workers", os.cpu_count() or 1,
                         "Processes decoding and detecting (0: in this process).")


def main(argv: Sequence[str]) -> int:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads
    paths = list(argv[1:])
    if not paths:
        if sys.stdin.isatty():
            raise app.UsageError("give image paths, or pipe them on stdin, one a line")
        paths = [line.strip() for line in sys.stdin if line.strip()]
    output_format = FLAGS.format or ("npy" if FLAGS.out else "hex")
    if output_format == "npy" and not FLAGS.out:
        raise app.UsageError("--format npy needs --out FILE.npy")
    hasher = load_hasher(FLAGS.workdir, FLAGS.method)
    result = hasher.hash_paths(paths, workers=min(FLAGS.workers, len(paths)))
    if FLAGS.out:
        paths_file = write_codes(result, FLAGS.out)
        print(f"wrote {len(result.paths)} codes of {hasher.bits} bits to {FLAGS.out} "
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


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
