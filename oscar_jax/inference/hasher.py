"""Images -> packed codes, with the trained model of a workdir or a classical baseline.

`load_hasher(workdir)` restores the latest checkpoint of a training run and the settings of
its records; `Hasher.hash_paths` then decodes and detects in worker processes and runs the
model in batches (`oscar_jax.inference.records` makes each image's record exactly as the
training records were made). `load_hasher(method="phash")` and the other baselines of
`oscar_jax.inference.baselines` hash the decoded image itself. Every hasher returns uint8
[N, bits/8] packed codes (`oscar_jax.inference.codes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from oscar_jax.inference import baselines
from oscar_jax.inference.codes import codes_meta_path, codes_paths_path, pack_bits
from oscar_jax.inference.records import ImageRecordMaker, new_images_problem, prepare, stack
from oscar_jax.input_pipeline import MODEL_FIELDS
from oscar_jax.workdir import model_fingerprint, record_settings, restore_inference
from preprocessing.progress import progress as show_progress

# Model batches are padded to this size, so the model compiles once.
EVAL_BATCH = 64
def model_encoder(workdir: str
                  ) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray], int, str]:
    """(encode, bits, fingerprint): `encode` maps a batch of decoded records to packed codes
    of the workdir's trained model (latest checkpoint)."""
    config, model, variables = restore_inference(workdir)
    fingerprint = model_fingerprint(variables, config, record_settings(workdir))

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
            out.append(pack_bits(z >= 0))  # sign(0) = +1, as in training
        return np.concatenate(out)

    return encode, int(config.model.code_bits), fingerprint


# ---- hashers ---------------------------------------------------------------------------------


@dataclasses.dataclass
class HashResult:
    """Codes of the images that could be read, in input order, and the ones that could not."""

    codes: np.ndarray  # uint8 [N, bytes]
    paths: list[str]  # the input of each row of codes
    failures: list[tuple[str, str]]  # (path, reason)


class Hasher:
    """Packed codes of images, for the trained model of a workdir or a classical baseline.

    Attributes:
      method: 'oscar' or a name of `oscar_jax.inference.baselines.METHODS`.
      bits: code length.
      fingerprint: which model makes these codes (`workdir.model_fingerprint`, or the
        baseline and its library version): codes of different fingerprints never mix.
    """

    def __init__(self, method: str, bits: int, *, maker: ImageRecordMaker | None = None,
                 encode: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                 fingerprint: str = "", images_refused: str | None = None):
        self.method, self.bits, self.maker, self._encode = method, bits, maker, encode
        self.fingerprint = fingerprint
        # Set for a model whose records cannot be made for new images (the oracle detector):
        # it hashes records, and refuses images with this message.
        self.images_refused = images_refused

    def _check_images_allowed(self) -> None:
        if self.images_refused:
            raise ValueError(self.images_refused)

    @property
    def code_bytes(self) -> int:
        return (self.bits + 7) // 8

    def hash_records(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Decoded records (as `input_pipeline.read_split` yields) -> uint8 [B, bytes].
        Baselines hash the records' global view."""
        if self._encode is not None:
            return self._encode(batch)
        return baselines.hash_images(self.method, list(batch["image"]))

    def hash_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded RGB images uint8 [H, W, 3] -> uint8 [N, bytes]."""
        self._check_images_allowed()
        if self.maker is None:
            return baselines.hash_images(self.method, list(images))
        return self.hash_records(stack([self.maker.record(im) for im in images]))

    def hash_paths(self, paths: Iterable[str], *, workers: int = 0, progress: bool = True,
                   total: int | None = None) -> HashResult:
        """Image files -> codes, decoding and detecting in `workers` processes (0: here)."""
        self._check_images_allowed()
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

        with _job_results(jobs, workers) as results, show_progress(
                total=total or len(paths), desc=f"hashing ({self.method})", unit="image",
                disable=not progress) as bar:
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
    """In-order `prepare` results, in a spawned pool (JAX and fork do not mix) or here."""
    if workers <= 0 or len(jobs) <= 1:
        yield map(prepare, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        yield pool.imap(prepare, jobs, chunksize=2)
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
        settings = record_settings(workdir)
        problem = new_images_problem(settings)
        maker = None if problem else ImageRecordMaker(settings)
        encode, bits, fingerprint = model_encoder(workdir)
        return Hasher("oscar", bits, maker=maker, encode=encode, fingerprint=fingerprint,
                      images_refused=problem)
    if method not in baselines.METHODS:
        raise ValueError(f"unknown method {method!r}; choose oscar or one of "
                         f"{', '.join(baselines.METHODS)}")
    return Hasher(method, baselines.bits(method), fingerprint=baselines.fingerprint(method))


def save_codes(result: HashResult, out: str, hasher: Hasher) -> str:
    """Saves the codes as .npy, the paths of its rows as `X.paths.txt` and the method, bits
    and fingerprint as `X.meta.json`; returns the paths file. Paths holding a line break
    cannot be listed one a line: callers refuse them (`codes.line_safe`)."""
    np.save(out, result.codes)
    paths_file = codes_paths_path(out)
    with open(paths_file, "w", encoding="utf-8") as f:
        f.writelines(p + "\n" for p in result.paths)
    with open(codes_meta_path(out), "w", encoding="utf-8") as f:
        json.dump({"method": hasher.method, "bits": hasher.bits,
                   "fingerprint": hasher.fingerprint, "rows": len(result.paths)}, f, indent=2)
    return paths_file
