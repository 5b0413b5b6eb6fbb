"""Codes on the host: bits packed eight to a byte, compared by Hamming distance (numpy).

Training turns the embedding z into u = sign(z) in {-1, 1} (`oscar_jax.hashing`); storage
keeps the bits (u + 1) / 2, packed in ``np.packbits`` order (big-endian within a byte, a
trailing partial byte zero padded): uint8 [N, ceil(D / 8)]. Every method of the project, the
model and the classical baselines alike, stores codes this way, and everything that compares
them counts bits with `popcount`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# np.bitwise_count exists from numpy 2.0; older versions use a byte lookup table.
_BITWISE_COUNT = getattr(np, "bitwise_count", None)
_BYTE_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
    axis=1).astype(np.uint8)


def popcount(x: NDArray) -> NDArray[np.uint8]:
    """Number of set bits of each unsigned integer, elementwise (uint8 of the same shape).

    Without `np.bitwise_count` (numpy < 2) only uint8 input is accepted."""
    if _BITWISE_COUNT is not None:
        return _BITWISE_COUNT(x)
    if np.asarray(x).dtype != np.uint8:
        raise TypeError("popcount on numpy < 2 counts bytes: pass uint8 (view the words as "
                        "uint8)")
    return _BYTE_POPCOUNT[x]


def counts_words() -> bool:
    """Whether `popcount` takes words wider than a byte (uint16 to uint64)."""
    return _BITWISE_COUNT is not None


def pack_bits(u: ArrayLike) -> NDArray[np.uint8]:
    """Packs codes [..., D] into bytes uint8 [..., ceil(D / 8)].

    A bit is set where ``u > 0``, so {-1, 1}, {0, 1} and bool codes all work.
    """
    return np.packbits(np.asarray(u) > 0, axis=-1)


def unpack_bits(packed: ArrayLike, num_bits: int) -> NDArray[np.uint8]:
    """Inverse of ``pack_bits``: uint8 [..., B] -> {0, 1} uint8 [..., num_bits]."""
    packed = np.asarray(packed, dtype=np.uint8)
    if num_bits > 8 * packed.shape[-1]:
        raise ValueError(f"num_bits={num_bits} exceeds the {8 * packed.shape[-1]} bits stored.")
    return np.unpackbits(packed, axis=-1, count=num_bits)


def check_codes(name: str, x: ArrayLike) -> NDArray[np.uint8]:
    """`x` as packed codes uint8 [N, B], or a TypeError / ValueError naming `name`."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must be packed codes of dtype uint8, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be packed codes [N, bytes], got shape {arr.shape}.")
    return arr


def paired_distance(a: ArrayLike, b: ArrayLike) -> NDArray[np.int64]:
    """Hamming distances between corresponding packed codes: [..., B] x [..., B] -> int64
    [...] (shapes broadcast)."""
    xor = np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    return popcount(xor).sum(axis=-1, dtype=np.int64)


def hamming_distance(queries: ArrayLike, database: ArrayLike, *,
                     max_elements: int = 1 << 24) -> NDArray[np.int64]:
    """Hamming distances between packed codes: uint8 [Q, B] x [M, B] -> int64 [Q, M].

    Queries are compared a block at a time so that the [rows, M, B] intermediate holds at
    most `max_elements` bytes.
    """
    q = check_codes("queries", queries)
    m = check_codes("database", database)
    if q.shape[1] != m.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} bytes per code but database {m.shape[1]}.")
    if max_elements < 1:
        raise ValueError(f"max_elements must be positive, got {max_elements}.")
    rows = max(1, max_elements // max(1, m.shape[0] * m.shape[1]))
    out = np.empty((q.shape[0], m.shape[0]), dtype=np.int64)
    for start in range(0, q.shape[0], rows):
        out[start : start + rows] = paired_distance(q[start : start + rows, None, :],
                                                    m[None, :, :])
    return out


# ---- code files -----------------------------------------------------------------------------


def codes_meta_path(codes_path: str) -> str:
    """Where the facts of a codes file are written: `X.npy` -> `X.meta.json`."""
    return os.path.splitext(codes_path)[0] + ".meta.json"


def codes_paths_path(codes_path: str) -> str:
    """Where the image path of each row of a codes file is listed: `X.npy` -> `X.paths.txt`."""
    return os.path.splitext(codes_path)[0] + ".paths.txt"


def read_codes_meta(codes_path: str) -> dict[str, Any]:
    """The `X.meta.json` of a codes file, or {} when there is none (hex text, older files)."""
    path = codes_meta_path(codes_path)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def line_safe(path: str) -> bool:
    """Whether `path` can be written one a line, tab-separated, without ambiguity."""
    return not any(c in path for c in "\n\r\t")
