"""Hamming-distance search over packed codes, on faiss binary indexes (`oscar index` is its
command line).

Codes are packed bits, uint8 [N, bits/8] in ``np.packbits`` order
(``oscar_jax.inference.codes``), as written by ``oscar hash --out X.npy``; ``read_codes``
also reads text files of hex codes, one per line (``code<TAB>anything``, as printed by
``--format hex``). Every code carries
a caller-given int64 id (>= 0); ids are kept by the index, survive save/load, and are what
searches return. The bit order inside a byte does not matter to Hamming distance, so faiss
sees the packed bytes as they are.

Kinds (``HammingIndex(bits, kind, **options)``):

* ``flat``: exact brute-force scan (``faiss.IndexBinaryFlat``). No options.
* ``multihash``: multi-index hashing (``faiss.IndexBinaryMultiHash``), for large collections
  searched with a small radius. The first ``nhash * hash_bits`` bits are cut into ``nhash``
  disjoint substrings of ``hash_bits`` bits, each the key of a hash table; a query looks up
  every key within ``nflip`` bit flips of its own substrings and computes the exact distance
  of every code found there. By the pigeonhole principle every code within
  ``exact_radius = nhash * (nflip + 1) - 1`` bits of the query is found. So ``range_search``
  with ``radius <= exact_radius`` is exact, and ``search(k)`` is exact for a query whose k-th
  nearest code is within ``exact_radius``; farther results have their true distances, but
  closer codes beyond ``exact_radius`` may be missing. Options: ``hash_bits`` (default 16),
  ``nhash`` (default ``bits // hash_bits``), ``nflip`` (default 1; a search option). A query
  costs about ``nhash * sum_{i<=nflip} C(hash_bits, i)`` lookups plus one distance per code
  in the buckets hit (``N / 2**hash_bits`` codes per bucket for uniform codes). On one core
  of an AMD EPYC, for 1M uniform 64-bit codes, one query at a time: flat 1.0 ms, multihash
  defaults (exact within 7 bits) 0.3 ms, ``hash_bits=21`` (3 tables, exact within 5 bits)
  0.05 ms; at 10M: 10 ms, 3.8 ms and 0.14 ms (``benchmarks/search_latency.py``).
* ``ivf``: inverted file (``faiss.IndexBinaryIVF`` with a flat binary quantizer): codes are
  split into ``nlist`` cells by k-means, and a query scans its ``nprobe`` nearest cells.
  Exact when ``nprobe >= nlist`` (``exact_radius == bits``); otherwise approximate, except
  that codes identical to the query are always found (``exact_radius == 0``). Needs training:
  ``train(codes)`` explicitly, or automatically on the first ``add``, on the codes given.
  Options: ``nlist`` (default ``auto_nlist(len(training codes))``, about ``sqrt(N)``; set it
  or train on a representative sample when the first batch is small) and ``nprobe`` (default
  16; a search option).

Results. ``search`` returns int32 distances and int64 ids [Q, k], each row sorted by distance
then id, padded with distance -1 and id -1 when fewer than k codes are found. Among codes at
the same distance as the k-th result, which ones make the cut is faiss's choice: the earliest
added for ``flat`` (faiss's heap breaks ties by insertion position); for ``ivf`` those in the
cells scanned first (nearest cell first), and for ``multihash`` hash-table order.
``range_search`` returns, per query, every code found at distance ``<= radius`` (inclusive;
faiss's own binary range search is strict, which is converted), sorted by distance then id.

Files. ``save`` writes one file atomically (a temporary file in the same folder, flushed and
fsynced, then ``os.replace``, then the folder fsynced), so a crash leaves either the old or
the new index, never half of one. The file is the faiss serialization followed by a JSON
metadata block (format version, kind, bits, options, ntotal, payload size and CRC-32) and a
16-byte footer (metadata length, magic); plain ``faiss.read_index_binary`` reads it too, as
it ignores the trailing bytes.

Threads. Searches (``search``, ``range_search``, ``reconstruct``, ``save``) may run
concurrently from several threads: faiss searches a const index safely and releases the GIL.
``add``, ``train`` and ``set_search_options`` change the index and take an exclusive lock;
they wait for running searches, and searches that arrive while one waits queue behind it.
Within one batched call faiss also uses its OpenMP threads (``faiss.omp_set_num_threads``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

KINDS: tuple[str, ...] = ("flat", "multihash", "ivf")
FORMAT_VERSION = 1

# Options of each kind and their defaults (None: derived from bits or the data).
_DEFAULT_OPTIONS: dict[str, dict[str, int | None]] = {
    "flat": {},
    "multihash": {"hash_bits": 16, "nhash": None, "nflip": 1},
    "ivf": {"nlist": None, "nprobe": 16},
}
# Options that only affect searching, and may change on a built index.
_SEARCH_OPTIONS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "multihash": ("nflip",),
    "ivf": ("nprobe",),
}
_FAISS_TYPES = {
    "flat": faiss.IndexBinaryFlat,
    "multihash": faiss.IndexBinaryMultiHash,
    "ivf": faiss.IndexBinaryIVF,
}
_MAGIC = b"OSCARHIX"
_FOOTER = struct.Struct("<Q8s")  # metadata length, magic
_MAX_METADATA_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 20
# k-means training sample per IVF cell: at most this many codes per centroid are used.
_IVF_TRAIN_PER_LIST = 64


class IndexFileError(ValueError):
    """An index file is missing, truncated, corrupt or not written by ``HammingIndex.save``."""


# ---- validation -----------------------------------------------------------------------------


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits <= 0:
        raise ValueError(f"bits must be a positive int, got {bits!r}.")
    if bits % 8:
        raise ValueError(
            f"bits={bits} is not a multiple of 8; faiss binary indexes store whole bytes, so "
            "pad the codes to a multiple of 8 bits (codes.pack_bits does so) and pass that."
        )
    return int(bits)


def _check_int_option(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Option {name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _resolve_options(kind: str, bits: int, options: dict[str, Any]) -> dict[str, int | None]:
    """Defaults of ``kind`` updated with ``options``, checked against ``bits``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown index kind {kind!r}; expected one of {KINDS}.")
    defaults = _DEFAULT_OPTIONS[kind]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise ValueError(f"Unknown option(s) {unknown} for kind {kind!r}; allowed: {allowed}.")
    resolved = {**defaults, **options}
    if kind == "multihash":
        hash_bits = _check_int_option("hash_bits", resolved["hash_bits"], 1)
        if hash_bits > min(bits, 64):
            raise ValueError(f"hash_bits={hash_bits} must be <= min(bits, 64) = {min(bits, 64)}.")
        nhash = resolved["nhash"]
        nhash = bits // hash_bits if nhash is None else _check_int_option("nhash", nhash, 1)
        if nhash * hash_bits > bits:
            raise ValueError(
                f"nhash * hash_bits = {nhash} * {hash_bits} exceeds bits={bits}; lower one."
            )
        nflip = _check_int_option("nflip", resolved["nflip"], 0)
        if nflip > hash_bits:
            raise ValueError(f"nflip={nflip} must be <= hash_bits={hash_bits}.")
        resolved.update(hash_bits=hash_bits, nhash=nhash, nflip=nflip)
    elif kind == "ivf":
        if resolved["nlist"] is not None:
            resolved["nlist"] = _check_int_option("nlist", resolved["nlist"], 1)
        resolved["nprobe"] = _check_int_option("nprobe", resolved["nprobe"], 1)
    return resolved


def _as_codes(codes: ArrayLike, bits: int, name: str) -> NDArray[np.uint8]:
    """Checks packed codes: uint8 [N, bits/8] -> C-contiguous uint8 [N, bits/8]."""
    array = np.asarray(codes)
    width = bits // 8
    if array.ndim != 2:
        hint = f" (one code? pass {name}[None])" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be uint8 [N, {width}], got shape {array.shape}{hint}.")
    if array.dtype != np.uint8:
        raise ValueError(
            f"{name} must be packed bits, uint8 [N, {width}], got dtype {array.dtype}; pack "
            "codes with oscar_jax.inference.codes.pack_bits."
        )
    if array.shape[1] != width:
        hint = ""
        if array.shape[1] == bits and array.max(initial=0) <= 1:
            hint = ("; these look like unpacked bits, pack them with "
                    "oscar_jax.inference.codes.pack_bits")
        raise ValueError(
            f"{name} has {array.shape[1]} bytes per code ({8 * array.shape[1]} bits), the index "
            f"has {bits} bits ({width} bytes per code){hint}."
        )
    return np.ascontiguousarray(array)


def _as_ids(ids: ArrayLike, count: int) -> NDArray[np.int64]:
    """Checks ids: integers [count], all >= 0 and distinct -> int64 [count]."""
    array = np.asarray(ids)
    if array.shape != (count,):
        raise ValueError(f"ids must have shape ({count},), one per code; got {array.shape}.")
    if count and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {array.dtype}.")
    if count and array.min() < 0:
        raise ValueError(
            f"ids must be >= 0 (-1 marks a missing result), got {int(array.min())}."
        )
    if array.dtype == np.uint64 and count and array.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64.")
    return np.ascontiguousarray(array, dtype=np.int64)


def auto_nlist(count: int) -> int:
    """The number of IVF cells used for ``count`` training codes: about ``sqrt(count)``,
    with at least 39 codes per cell (what faiss's k-means asks for), between 1 and 65536."""
    return max(1, min(round(math.sqrt(count)), count // 39, 65536))


# ---- a readers-writer lock ------------------------------------------------------------------


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that arrive later.

    ``with lock.reading:`` / ``with lock.writing:`` (plain objects, no generator, as searches
    of one query take only tens of microseconds).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self.reading = _Reading(self)
        self.writing = _Writing(self)


class _Reading:
    def __init__(self, lock: _ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            while lock._writing or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._cond:
            lock._readers -= 1
            if not lock._readers and lock._writers_waiting:
                lock._cond.notify_all()


class _Writing:
    def __init__(self, lock: _ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            lock._writers_waiting += 1
            try:
                while lock._writing or lock._readers:
                    lock._cond.wait()
            except BaseException:
                lock._writers_waiting -= 1
                lock._cond.notify_all()  # readers may be waiting for this writer only
                raise
            lock._writers_waiting -= 1
            lock._writing = True

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._cond:
            lock._writing = False
            lock._cond.notify_all()


# ---- atomic files ---------------------------------------------------------------------------


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` all at once: ``write(f)`` fills a temporary file in the same folder,
    which is flushed, fsynced and renamed over ``path``. On any error the temporary file is
    removed and an existing ``path`` is left untouched."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Folder {folder} does not exist; create it first.")
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not every platform or file system can fsync a folder.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _ChecksumWriter:
    """File-object adaptor for faiss's callback writer: counts bytes and their CRC-32."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = 0
        self.crc = 0

    def __call__(self, data: bytes) -> int:
        self._f.write(data)
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return len(data)


def _read_metadata(f: BinaryIO, path: str) -> dict[str, Any]:
    """The JSON metadata block at the end of an index file; checks the payload's CRC."""
    size = os.fstat(f.fileno()).st_size
    if size < _FOOTER.size:
        raise IndexFileError(f"{path} is too short ({size} bytes) to be an index file.")
    f.seek(size - _FOOTER.size)
    meta_len, magic = _FOOTER.unpack(f.read(_FOOTER.size))
    if magic != _MAGIC:
        raise IndexFileError(
            f"{path} is not an index written by HammingIndex.save (no {_MAGIC!r} footer); it "
            "may be truncated, or another kind of file. Rebuild it with "
            "`oscar index build`."
        )
    if meta_len > min(_MAX_METADATA_BYTES, size - _FOOTER.size):
        raise IndexFileError(f"{path} is corrupt: metadata length {meta_len} is impossible.")
    f.seek(size - _FOOTER.size - meta_len)
    try:
        meta = json.loads(f.read(meta_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFileError(f"{path} is corrupt: unreadable metadata ({e}).") from e
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has index format version {version!r}; this code reads up to "
            f"{FORMAT_VERSION}. Upgrade oscar_jax or rebuild the index."
        )
    missing = {"kind", "bits", "options", "ntotal", "payload_bytes", "payload_crc32"} - set(meta)
    if missing:
        raise IndexFileError(f"{path} is corrupt: metadata lacks {sorted(missing)}.")
    if meta["payload_bytes"] != size - _FOOTER.size - meta_len:
        raise IndexFileError(
            f"{path} is corrupt: {size - _FOOTER.size - meta_len} index bytes, metadata says "
            f"{meta['payload_bytes']}."
        )
    f.seek(0)
    crc, left = 0, meta["payload_bytes"]
    while left:
        chunk = f.read(min(left, _CHUNK_BYTES))
        if not chunk:
            raise IndexFileError(f"{path} is truncated.")
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    if crc != meta["payload_crc32"]:
        raise IndexFileError(f"{path} is corrupt: checksum mismatch; rebuild the index.")
    return meta


# ---- the index ------------------------------------------------------------------------------


def _empty_results(queries: int, k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    return np.full((queries, k), -1, np.int32), np.full((queries, k), -1, np.int64)


class HammingIndex:
    """Nearest-neighbour and range search by Hamming distance over packed codes with ids.

    See the module docstring for the kinds, their options and guarantees, the order of
    results, the file format and thread safety.

    Args:
      bits: code length in bits, a multiple of 8; codes are uint8 [N, bits / 8].
      kind: ``"flat"``, ``"multihash"`` or ``"ivf"``.
      **options: options of the kind (``hash_bits``, ``nhash``, ``nflip`` for multihash;
        ``nlist``, ``nprobe`` for ivf).
    """

    def __init__(self, bits: int, kind: str = "flat", **options: Any) -> None:
        self._bits = _check_bits(bits)
        self._options = _resolve_options(kind, self._bits, options)
        self._kind = kind
        self._lock = _ReadWriteLock()
        # Sorted ids and their insertion positions, for duplicate checks and reconstruct;
        # built lazily from the index (None until needed), guarded by _cache_lock.
        self._cache_lock = threading.Lock()
        self._sorted_ids: NDArray[np.int64] | None = np.empty(0, np.int64)
        self._sorted_pos: NDArray[np.int64] | None = np.empty(0, np.int64)
        self._index = self._new_faiss_index(self._options.get("nlist") or 1)
        # JSON-able facts about the codes, saved with the index: e.g. the `fingerprint` of
        # the model that made them, so that codes of another model are refused.
        self.info: dict[str, Any] = {}

    # -- properties --

    @property
    def bits(self) -> int:
        """Code length in bits."""
        return self._bits

    @property
    def kind(self) -> str:
        """``"flat"``, ``"multihash"`` or ``"ivf"``."""
        return self._kind

    @property
    def options(self) -> dict[str, int | None]:
        """The options in effect (defaults resolved; ``nlist`` is None until ivf is trained)."""
        return dict(self._options)

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        """False only for an ivf index before ``train`` or its first ``add``."""
        return bool(self._index.is_trained)

    @property
    def exact_radius(self) -> int:
        """Every code within this Hamming distance of a query is found (see module docs)."""
        if self._kind == "multihash":
            return min(self._bits, self._options["nhash"] * (self._options["nflip"] + 1) - 1)
        if self._kind == "ivf":
            nlist = self._options["nlist"]  # None before training with an automatic nlist
            return self._bits if nlist is not None and self._options["nprobe"] >= nlist else 0
        return self._bits

    @property
    def faiss_index(self) -> faiss.IndexBinary:
        """The underlying ``faiss.IndexBinaryIDMap``; changing it bypasses all checks."""
        return self._index

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self._options.items())
        extra = f", {options}" if options else ""
        return f"HammingIndex(bits={self._bits}, kind={self._kind!r}{extra}, ntotal={self.ntotal})"

    # -- building --

    def _new_faiss_index(self, nlist: int) -> faiss.IndexBinaryIDMap:
        """An empty faiss index of this kind, wrapped to store ids; it owns its parts."""
        bits, options = self._bits, self._options
        if self._kind == "flat":
            base = faiss.IndexBinaryFlat(bits)
        elif self._kind == "multihash":
            base = faiss.IndexBinaryMultiHash(bits, options["nhash"], options["hash_bits"])
            base.nflip = options["nflip"]
        else:
            quantizer = faiss.IndexBinaryFlat(bits)
            base = faiss.IndexBinaryIVF(quantizer, bits, nlist)
            quantizer.this.disown()
            base.own_fields = True
            base.nprobe = options["nprobe"]
            base.cp.max_points_per_centroid = _IVF_TRAIN_PER_LIST
            # Positions -> list entries, so that codes can be reconstructed.
            base.make_direct_map(True)
        index = faiss.IndexBinaryIDMap(base)
        base.this.disown()
        index.own_fields = True
        return index

    def _base(self) -> Any:
        """The wrapped faiss index (flat, multihash or ivf), downcast."""
        return faiss.downcast_IndexBinary(self._index.index)

    def train(self, codes: ArrayLike) -> None:
        """Trains an ivf index on codes uint8 [N, bits/8]; a no-op for flat and multihash.

        ``nlist`` is the option if given, else ``auto_nlist(N)``. An ivf index is trained once;
        to retrain, build a new index.
        """
        codes = _as_codes(codes, self._bits, "codes")
        with self._lock.writing:
            self._train_locked(codes)

    def _train_locked(self, codes: NDArray[np.uint8]) -> None:
        if self._kind != "ivf":
            return
        if self._index.is_trained:
            raise ValueError(
                "This ivf index is already trained; build a new HammingIndex to retrain it."
            )
        nlist = self._options["nlist"] or auto_nlist(len(codes))
        if len(codes) < nlist:
            raise ValueError(
                f"ivf training needs at least nlist={nlist} codes, got {len(codes)}; train on "
                "more codes or pass a smaller nlist."
            )
        sample = _IVF_TRAIN_PER_LIST * nlist
        if len(codes) > sample:
            # faiss would subsample too, but only after turning every code into floats.
            rows = np.random.default_rng(0).choice(len(codes), sample, replace=False)
            codes = codes[np.sort(rows)]
        index = self._new_faiss_index(nlist)
        index.train(codes)
        self._index = index
        self._options["nlist"] = nlist

    def _id_cache(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(sorted ids, their insertion positions), both int64 [ntotal]. Call with _cache_lock."""
        if self._sorted_ids is None or self._sorted_pos is None:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
            order = np.argsort(ids, kind="stable")
            self._sorted_ids, self._sorted_pos = ids[order], order.astype(np.int64)
        return self._sorted_ids, self._sorted_pos

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None) -> NDArray[np.int64]:
        """Adds codes uint8 [N, bits/8] with ids int64 [N] (>= 0, distinct, new to the index).

        Without ids, they continue from the largest id so far (``ntotal, ntotal + 1, ...`` when
        every add used default ids, i.e. row numbers). An untrained ivf index is first trained
        on these codes. Returns the ids, int64 [N].
        """
        codes = _as_codes(codes, self._bits, "codes")
        count = len(codes)
        with self._lock.writing, self._cache_lock:
            sorted_ids, sorted_pos = self._id_cache()
            if ids is None:
                start = max(self.ntotal, int(sorted_ids[-1]) + 1 if len(sorted_ids) else 0)
                new_ids = np.arange(start, start + count, dtype=np.int64)
            else:
                new_ids = _as_ids(ids, count)
            order = np.argsort(new_ids, kind="stable")
            new_sorted = new_ids[order]
            repeated = new_sorted[1:][new_sorted[1:] == new_sorted[:-1]]
            if len(repeated):
                raise ValueError(
                    f"ids repeat within this batch: {np.unique(repeated)[:10].tolist()}; every "
                    "code needs its own id."
                )
            slots = np.searchsorted(sorted_ids, new_sorted)
            present = slots < len(sorted_ids)
            present[present] = sorted_ids[slots[present]] == new_sorted[present]
            if present.any():
                raise ValueError(
                    f"ids already in the index: {new_sorted[present][:10].tolist()}; pass new "
                    "ids (or none, to continue after the largest id)."
                )
            if count == 0:
                return new_ids
            if not self._index.is_trained:
                self._train_locked(codes)
            start_pos = self.ntotal
            self._index.add_with_ids(codes, new_ids)
            self._sorted_ids = np.insert(sorted_ids, slots, new_sorted)
            self._sorted_pos = np.insert(sorted_pos, slots, start_pos + order)
        return new_ids

    def set_search_options(self, **options: int) -> None:
        """Changes search-time options: ``nflip`` (multihash) or ``nprobe`` (ivf)."""
        allowed = _SEARCH_OPTIONS[self._kind]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"{unknown} cannot change after building a {self._kind!r} index; search options "
                f"are: {', '.join(allowed) or 'none'}."
            )
        resolved = _resolve_options(self._kind, self._bits, {**self._options, **options})
        with self._lock.writing:
            base = self._base()
            for name in options:
                setattr(base, name, resolved[name])
                self._options[name] = resolved[name]

    # -- searching --

    def search(
        self, queries: ArrayLike, k: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """The k nearest codes of each query.

        Args:
          queries: uint8 [Q, bits/8].
          k: number of results per query, >= 1 (may exceed ntotal).

        Returns:
          ``(distances, ids)``: int32 [Q, k] and int64 [Q, k], each row sorted by distance then
          id, padded with -1 (distance and id) where fewer than k codes are found.
        """
        queries = _as_codes(queries, self._bits, "queries")
        k = _check_int_option("k", k, 1)
        with self._lock.reading:
            total = self.ntotal
            if total == 0 or len(queries) == 0:
                return _empty_results(len(queries), k)
            distances, ids = self._index.search(queries, min(k, total))
        found = ids >= 0
        if not found.all():
            distances[~found] = -1
        # faiss sorts by distance, ties in its scan order (flat: insertion position); here ties
        # go by id. Missing results (-1) stay last.
        key = np.where(found, distances, self._bits + 1)
        if (key[:, 1:] == key[:, :-1]).any():
            order = np.lexsort((ids, key), axis=-1)
            rows = np.arange(len(ids))[:, None]
            distances, ids = distances[rows, order], ids[rows, order]
        if k > ids.shape[1]:
            fill_d, fill_i = _empty_results(len(queries), k - ids.shape[1])
            distances = np.concatenate([distances, fill_d], axis=1)
            ids = np.concatenate([ids, fill_i], axis=1)
        return distances, ids

    def range_search(
        self, queries: ArrayLike, radius: int
    ) -> list[tuple[NDArray[np.int32], NDArray[np.int64]]]:
        """Every code found within Hamming distance ``radius`` (inclusive) of each query.

        Args:
          queries: uint8 [Q, bits/8].
          radius: int >= 0; a code at distance exactly ``radius`` is included.

        Returns:
          A list of Q ``(distances int32 [M_q], ids int64 [M_q])``, sorted by distance then id.
        """
        queries = _as_codes(queries, self._bits, "queries")
        radius = _check_int_option("radius", radius, 0)
        empty = (np.empty(0, np.int32), np.empty(0, np.int64))
        with self._lock.reading:
            if self.ntotal == 0:
                return [empty for _ in range(len(queries))]
            # faiss keeps distances < radius; distances are integers, so <= r is < r + 1.
            limits, distances, ids = self._index.range_search(
                queries, min(radius, self._bits) + 1
            )
        distances = distances.astype(np.int32)
        results = []
        for start, stop in zip(limits[:-1], limits[1:], strict=True):
            d, i = distances[start:stop], ids[start:stop].astype(np.int64)
            order = np.lexsort((i, d))
            results.append((d[order], i[order]))
        return results

    def reconstruct(self, ids: ArrayLike) -> NDArray[np.uint8]:
        """The stored codes of ``ids`` int [M]: uint8 [M, bits/8]; KeyError for unknown ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock.reading:
            with self._cache_lock:
                sorted_ids, sorted_pos = self._id_cache()
            slots = np.searchsorted(sorted_ids, ids)
            slots = np.minimum(slots, max(len(sorted_ids) - 1, 0))
            known = sorted_ids[slots] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
            if not known.all():
                raise KeyError(f"ids not in the index: {ids[~known][:10].tolist()}.")
            base = self._base()
            source = base.storage if self._kind == "multihash" else base
            out = np.empty((len(ids), self._bits // 8), np.uint8)
            for row, position in enumerate(sorted_pos[slots]):
                out[row] = source.reconstruct(int(position))
        return out

    # -- files --

    def save(self, path: str) -> None:
        """Writes the index to ``path`` atomically (see module docs); overwrites ``path``."""

        def write(f: BinaryIO) -> None:
            sink = _ChecksumWriter(f)
            faiss.write_index_binary(self._index, faiss.PyCallbackIOWriter(sink))
            meta = {
                "format_version": FORMAT_VERSION,
                "kind": self._kind,
                "bits": self._bits,
                "options": self._options,
                "ntotal": self.ntotal,
                "payload_bytes": sink.size,
                "payload_crc32": sink.crc,
                "info": self.info,
            }
            block = json.dumps(meta, sort_keys=True).encode("utf-8")
            f.write(block)
            f.write(_FOOTER.pack(len(block), _MAGIC))

        with self._lock.reading:
            atomic_write(path, write)

    @classmethod
    def load(cls, path: str) -> HammingIndex:
        """Reads an index written by ``save``; ``IndexFileError`` if it is missing or corrupt."""
        try:
            f = open(path, "rb")
        except FileNotFoundError as e:
            raise IndexFileError(
                f"Index file {path} not found; build one with `oscar index build`."
            ) from e
        with f:
            meta = _read_metadata(f, path)
            f.seek(0)
            left = meta["payload_bytes"]

            def read(size: int) -> bytes:
                nonlocal left
                data = f.read(min(size, left))
                left -= len(data)
                return data

            try:
                index = faiss.read_index_binary(faiss.PyCallbackIOReader(read))
            except RuntimeError as e:
                raise IndexFileError(f"{path}: faiss cannot read the index ({e}).") from e
        kind, bits = meta["kind"], meta["bits"]
        if kind not in KINDS or not isinstance(index, faiss.IndexBinaryIDMap):
            raise IndexFileError(f"{path} holds an unexpected index (kind {kind!r}).")
        base = faiss.downcast_IndexBinary(index.index)
        if not isinstance(base, _FAISS_TYPES[kind]) or index.d != bits:
            raise IndexFileError(
                f"{path}: metadata says a {bits}-bit {kind} index, the file holds a "
                f"{index.d}-bit {type(base).__name__}."
            )
        if index.ntotal != meta["ntotal"]:
            raise IndexFileError(f"{path}: metadata ntotal does not match the index.")
        try:
            self = cls(bits, kind, **meta["options"])
        except (TypeError, ValueError) as e:
            raise IndexFileError(f"{path} has invalid metadata options ({e}).") from e
        self._index = index
        self._sorted_ids = self._sorted_pos = None
        self.info = dict(meta.get("info") or {})
        return self


# ---- code files -----------------------------------------------------------------------------


def read_codes(path: str) -> NDArray[np.uint8]:
    """Codes from ``.npy`` (uint8 [N, B]) or a text file of hex codes, one per line.

    Text lines are ``code`` or ``code<TAB>anything`` (``oscar hash --format hex``); blank
    lines and lines starting with ``#`` are skipped.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Codes file {path} not found.")
    if path.endswith(".npy"):
        codes = np.load(path, allow_pickle=False)
        if codes.ndim != 2 or codes.dtype != np.uint8:
            raise ValueError(
                f"{path} holds {codes.dtype} {codes.shape}; expected packed codes uint8 [N, B] "
                "as written by `oscar hash --out X.npy`."
            )
        return codes
    rows: list[bytes] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            field = text.split(None, 1)[0]
            try:
                code = bytes.fromhex(field)
            except ValueError as e:
                raise ValueError(f"{path}:{number}: {field!r} is not a hex code.") from e
            if rows and len(code) != len(rows[0]):
                raise ValueError(
                    f"{path}:{number}: code of {8 * len(code)} bits, earlier lines have "
                    f"{8 * len(rows[0])}."
                )
            rows.append(code)
    if not rows:
        raise ValueError(f"{path} holds no codes.")
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1)


def read_ids(path: str | None, count: int) -> NDArray[np.int64] | None:
    """Ids from ``.npy`` (integers [count]), or None without a path."""
    if path is None:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"Ids file {path} not found.")
    return _as_ids(np.load(path, allow_pickle=False), count)
