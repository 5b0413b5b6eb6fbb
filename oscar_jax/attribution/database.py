"""The trusted database: originals with their codes, images and provenance in one SQLite file,
searchable by Hamming distance, answering queries with a verdict.

    db = TrustedDatabase.create("trusted.sqlite", workdir="runs/demo")
    db.add(["photo.jpg"], provenance={"source": "newsroom archive"})
    db.query("found_online.jpg")   # {"verdict": "match", "original": {...}, ...}

One file holds the settings (hash method, model workdir, thresholds) and, for every original,
its code, its image as added and its provenance (any JSON: source, author, time, URL,
licence...). Every write is one transaction, so a database killed mid-way through `add` holds
the originals of the transactions that committed and nothing else; adding again skips the
images already there (identified by SHA-256). The Hamming index
(`oscar_jax.inference.hamming_index`) is derived from the codes: it is cached beside the
database (`DB.index`, written atomically) and rebuilt when it does not match.

A query hashes the image, takes the `SHORTLIST` nearest originals by Hamming distance and
runs geometric verification on them until the verdict is certain
(`oscar_jax.attribution.verdicts`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from oscar_jax.attribution import gradcam, verification
from oscar_jax.attribution.verdicts import (
    MESSAGES,
    SHORTLIST,
    Candidate,
    default_thresholds,
    verdict_with_early_exit,
)
from oscar_jax.inference.hamming_index import HammingIndex, IndexFileError
from oscar_jax.inference.hasher import load_hasher
from preprocessing.images import (
    DEFAULT_MAX_PIXELS,
    decode_image,
    encode_png,
    read_bytes,
    shrink_to_fit,
)
from preprocessing.progress import progress as show_progress

SCHEMA_VERSION = 2  # 2: the model's fingerprint is stored and checked
_SQLITE_HEADER = b"SQLite format 3\0"
# Heatmaps are computed and encoded at most this many pixels a side (a screen's worth).
HEATMAP_SIDE = 1024


class AttributionError(ValueError):
    """A trusted database that cannot be used as asked; the message says what to do."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mime(data: bytes) -> str:
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8": "image/jpeg", b"GIF8": "image/gif",
                  b"RIFF": "image/webp", b"BM": "image/bmp", b"II*\x00": "image/tiff",
                  b"MM\x00*": "image/tiff"}
    return next((m for s, m in signatures.items() if data.startswith(s)),
                "application/octet-stream")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS originals (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    code BLOB NOT NULL,
    image BLOB NOT NULL,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    provenance TEXT NOT NULL,
    added_at TEXT NOT NULL
);
"""


class _FeatureCache:
    """SIFT features of stored originals, most recently used kept (queries revisit them)."""

    def __init__(self, size: int = 256):
        self.size, self._items, self._lock = size, {}, threading.Lock()

    def get(self, key: int, make) -> verification.Features:
        with self._lock:
            if key in self._items:
                self._items[key] = self._items.pop(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return value


class TrustedDatabase:
    """Originals with their codes, images and provenance in one SQLite file, searchable by
    Hamming distance. Thread-safe: the web server queries it from many threads."""

    def __init__(self, path: str, connection: sqlite3.Connection, settings: dict[str, Any],
                 hasher):
        self.path, self._db, self._settings, self.hasher = path, connection, settings, hasher
        self._lock = threading.RLock()
        self._features = _FeatureCache()
        self._explainer = None
        self._index = HammingIndex(self.bits)
        self.added_count = 0  # originals this handle has inserted (not other processes)
        self._load_index()

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        # Autocommit mode: every write below opens its own explicit transaction.
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    @classmethod
    def create(cls, path: str, *, workdir: str | None = None, method: str = "oscar",
               thresholds: Mapping[str, Any] | None = None) -> TrustedDatabase:
        """A new, empty database for the codes of `method` ('oscar': the model of `workdir`)."""
        if os.path.exists(path):
            raise AttributionError(f"{path} exists already; open it, or choose a new path")
        if method == "oscar" and not workdir:
            raise AttributionError("a database of OSCAR-Net codes needs the --workdir of a "
                                   "trained model")
        hasher = load_hasher(workdir, method)
        settings = {"schema_version": SCHEMA_VERSION, "method": method, "bits": hasher.bits,
                    "fingerprint": hasher.fingerprint,
                    "workdir": os.path.abspath(workdir) if workdir else None,
                    "thresholds": dict(thresholds or default_thresholds(hasher.bits)),
                    "created_at": _now()}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        connection = cls._connect(path)
        with _transaction(connection):
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.executemany("INSERT INTO settings VALUES (?, ?)",
                                   [(k, json.dumps(v)) for k, v in settings.items()])
        return cls(path, connection, settings, hasher)

    @classmethod
    def open(cls, path: str, *, workdir: str | None = None) -> TrustedDatabase:
        """An existing database; `workdir` replaces the stored model path (a moved run)."""
        if not os.path.isfile(path):
            raise AttributionError(f"no trusted database at {path}; create one with "
                                   f"`oscar attribute add --db {path} "
                                   "--workdir RUN IMAGE...`")
        # Checked before SQLite opens it: SQLite would turn an empty file into a database.
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            what = "empty (0 bytes)" if not header else "not an SQLite file"
            raise AttributionError(f"{path} is {what}, not a trusted database; restore it from "
                                   "a backup or create a new one with `oscar attribute add`")
        try:
            connection = cls._connect(path)
            rows = connection.execute("SELECT key, value FROM settings").fetchall()
        except sqlite3.DatabaseError as error:
            raise AttributionError(f"{path} is not a readable trusted database ({error}); "
                                   "restore it from a backup") from error
        settings = {k: json.loads(v) for k, v in rows}
        if settings.get("schema_version") != SCHEMA_VERSION:
            connection.close()
            raise AttributionError(f"{path} has schema version "
                                   f"{settings.get('schema_version')}, this version reads "
                                   f"{SCHEMA_VERSION}; add its originals to a new database "
                                   "with `oscar attribute add`")
        workdir = workdir or settings["workdir"]
        if settings["method"] == "oscar" and not (workdir and os.path.isdir(workdir)):
            connection.close()
            raise AttributionError(f"the model of {path} was {settings['workdir']}, which is "
                                   "not there; pass --workdir with the same trained model")
        hasher = load_hasher(workdir, settings["method"])
        if hasher.fingerprint != settings["fingerprint"]:
            connection.close()
            source = f"{workdir} is model" if settings["method"] == "oscar" else "this is"
            raise AttributionError(
                f"{path} holds codes of model {settings['fingerprint']} but {source} "
                f"{hasher.fingerprint} (another run, or the run was trained further); pass "
                "--workdir of the run the database was made with, or add the originals to a "
                "new database with this model")
        settings["workdir"] = os.path.abspath(workdir) if workdir else None
        return cls(path, connection, settings, hasher)

    @classmethod
    def open_or_create(cls, path: str, *, workdir: str | None = None,
                       method: str = "oscar") -> TrustedDatabase:
        if os.path.exists(path):
            return cls.open(path, workdir=workdir)
        return cls.create(path, workdir=workdir, method=method)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TrustedDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- settings --------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return self._settings["method"]

    @property
    def bits(self) -> int:
        return int(self._settings["bits"])

    @property
    def workdir(self) -> str | None:
        return self._settings["workdir"]

    @property
    def thresholds(self) -> dict[str, Any]:
        return dict(self._settings["thresholds"])

    def set_thresholds(self, thresholds: Mapping[str, Any]) -> None:
        missing = {"match_distance", "min_inliers"} - set(thresholds)
        if missing:
            raise AttributionError(f"thresholds need {sorted(missing)}")
        with self._lock, _transaction(self._db):
            self._db.execute("UPDATE settings SET value = ? WHERE key = 'thresholds'",
                             (json.dumps(dict(thresholds)),))
        self._settings["thresholds"] = dict(thresholds)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM originals").fetchone()[0]

    # -- the index -------------------------------------------------------------------------

    @property
    def index_path(self) -> str:
        return self.path + ".index"

    def _rows_after(self, last_id: int) -> Iterator[tuple[int, bytes]]:
        yield from self._db.execute("SELECT id, code FROM originals WHERE id > ? ORDER BY id",
                                    (last_id,))

    def _add_to_index(self, rows: Sequence[tuple[int, bytes]]) -> None:
        if rows:
            ids = np.asarray([r[0] for r in rows], np.int64)
            codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), -1)
            self._index.add(codes, ids)
            self._last_id = int(ids.max())

    def _load_index(self) -> None:
        """The cached index if it holds exactly the stored codes, else rebuilt from them."""
        with self._lock:
            count, last = self._db.execute("SELECT COUNT(*), MAX(id) FROM originals").fetchone()
            self._last_id = 0
            if count and os.path.exists(self.index_path):
                with contextlib.suppress(IndexFileError, OSError, ValueError):
                    cached = HammingIndex.load(self.index_path)
                    if (len(cached) == count and cached.bits == self.bits
                            and cached.info.get("codes_digest") == self._codes_digest()):
                        self._index, self._last_id = cached, int(last)
            if self._last_id != (last or 0):
                self._index = HammingIndex(self.bits)
                self._add_to_index(list(self._rows_after(0)))
                if count:
                    self._save_index()

    def _codes_digest(self) -> str:
        """SHA-256 of every (id, code) row: the cached index is used only for exactly these."""
        digest = hashlib.sha256(self._settings["fingerprint"].encode())
        for entry_id, code in self._db.execute("SELECT id, code FROM originals ORDER BY id"):
            digest.update(entry_id.to_bytes(8, "little", signed=True) + bytes(code))
        return digest.hexdigest()

    def _save_index(self) -> None:
        self._index.info = {"fingerprint": self._settings["fingerprint"],
                            "codes_digest": self._codes_digest()}
        with contextlib.suppress(OSError):  # a read-only folder still answers queries
            self._index.save(self.index_path)

    def _refresh(self) -> None:
        """Picks up originals added since, by this connection or another process (ids only
        grow: originals are never deleted)."""
        last = self._db.execute("SELECT MAX(id) FROM originals").fetchone()[0] or 0
        if last > self._last_id:
            self._add_to_index(list(self._rows_after(self._last_id)))

    # -- adding ----------------------------------------------------------------------------

    def add(self, images: Sequence[str | bytes], *, names: Sequence[str] | None = None,
            provenance: Sequence[Mapping] | Mapping | None = None, batch_size: int = 64,
            progress: bool = False) -> list[int]:
        """Stores originals (paths or encoded bytes) with their provenance; returns their ids
        in input order. An image stored already (same bytes) keeps its entry and id; one
        that cannot be decoded raises ImageDecodeError before anything of its batch is
        written. Each batch is one transaction."""
        images = list(images)
        names = list(names) if names is not None else [
            os.path.basename(i) if isinstance(i, str) else f"image{n}"
            for n, i in enumerate(images)]
        if isinstance(provenance, Mapping) or provenance is None:
            provenance = [dict(provenance or {})] * len(images)
        if not len(images) == len(names) == len(provenance):
            raise AttributionError("give one name and one provenance record per image")
        ids: list[int] = []
        with show_progress(total=len(images), desc="adding originals", unit="image",
                           disable=not progress) as bar:
            for start in range(0, len(images), batch_size):
                part = slice(start, start + batch_size)
                ids.extend(self._add_batch(images[part], names[part], provenance[part]))
                bar.update(len(images[part]))
        # The cached index is written once: an add stopped before here leaves a stale cache,
        # which the next open detects and rebuilds from the stored codes.
        with self._lock:
            self._refresh()
            self._save_index()
        return ids

    def _add_batch(self, images, names, provenance) -> list[int]:
        data = [_read(i) for i in images]
        digests = [hashlib.sha256(d).hexdigest() for d in data]
        pixels = [decode_image(d, name=n) for d, n in zip(data, names, strict=True)]
        codes = self.hasher.hash_arrays(pixels)
        ids = []
        with self._lock, _transaction(self._db):
            for d, digest, p, name, code, meta in zip(data, digests, pixels, names, codes,
                                                      provenance, strict=True):
                known = self._db.execute("SELECT id FROM originals WHERE sha256 = ?",
                                         (digest,)).fetchone()
                if known:
                    ids.append(known[0])
                    continue
                cursor = self._db.execute(
                    "INSERT INTO originals (name, sha256, code, image, mime, width, height, "
                    "provenance, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, digest, code.tobytes(), d, _mime(d), p.shape[1], p.shape[0],
                     json.dumps(dict(meta)), _now()))
                ids.append(cursor.lastrowid)
                self.added_count += 1
        return ids

    # -- reading ---------------------------------------------------------------------------

    def original(self, entry_id: int) -> dict[str, Any]:
        """The stored facts of an original (KeyError when there is none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, sha256, width, height, provenance, added_at FROM originals "
                "WHERE id = ?", (_entry_id(entry_id),)).fetchone()
        if row is None:
            raise KeyError(entry_id)
        keys = ("id", "name", "sha256", "width", "height", "provenance", "added_at")
        entry = dict(zip(keys, row, strict=True))
        entry["provenance"] = json.loads(entry["provenance"])
        entry["image_url"] = f"/api/originals/{entry['id']}/image"
        return entry

    def original_image(self, entry_id: int) -> tuple[bytes, str]:
        """(encoded bytes, mime type) of an original, as it was added."""
        with self._lock:
            row = self._db.execute("SELECT image, mime FROM originals WHERE id = ?",
                                   (_entry_id(entry_id),)).fetchone()
        if row is None:
            raise KeyError(entry_id)
        return bytes(row[0]), row[1]

    def _original_features(self, entry_id: int) -> verification.Features:
        def make():
            return verification.original_features(
                decode_image(self.original_image(entry_id)[0]))

        return self._features.get(entry_id, make)

    # -- querying --------------------------------------------------------------------------

    def search(self, codes: np.ndarray, k: int = SHORTLIST) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) [Q, k] of the nearest originals; id -1 where there are fewer."""
        with self._lock:
            self._refresh()
            if len(self._index) == 0:
                return (np.zeros((len(codes), 0), np.int32), np.zeros((len(codes), 0), np.int64))
            return self._index.search(codes, min(k, len(self._index)))

    def query(self, image: str | bytes | np.ndarray, *, name: str = "query",
              explain: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
        """The verdict on one image, as JSON-able dict (see the module docstring). Encoded
        images over `max_pixels` are refused from their header, before decoding."""
        if isinstance(image, np.ndarray):
            pixels = image
        else:
            name = image if isinstance(image, str) and name == "query" else name
            pixels = decode_image(image, name=None if isinstance(image, str) else name,
                                  max_pixels=max_pixels)
        with self._lock:  # one model call at a time; SIFT and matching run in parallel
            code = self.hasher.hash_arrays([pixels])
        distances, ids = self.search(code)
        features = verification.features(pixels)
        thresholds = self.thresholds
        shortlist = [(int(d), int(i)) for d, i in zip(distances[0], ids[0], strict=True)
                     if i >= 0]
        inliers: dict[int, int] = {}

        def inliers_of(entry_id: int) -> int:
            check = verification.verify(features, self._original_features(entry_id))
            inliers[entry_id] = check.inliers
            return check.inliers

        # Verification stops once the verdict is certain (see verdict_with_early_exit).
        verdict, position = verdict_with_early_exit(
            [d for d, _ in shortlist], [i for _, i in shortlist], inliers_of, thresholds)
        chosen = None
        if position is not None:
            entry_id = shortlist[position][1]
            chosen = Candidate(entry_id, shortlist[position][0], inliers[entry_id])
        answer: dict[str, Any] = {
            "verdict": verdict, "message": MESSAGES[verdict], "original": None,
            "candidates": [], "method": self.method, "bits": self.bits,
            "thresholds": {k: thresholds[k] for k in ("match_distance", "min_inliers")},
            "query": {"name": os.path.basename(name), "code": code[0].tobytes().hex(),
                      "width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        }
        for distance, entry_id in shortlist:
            checked = inliers.get(entry_id)
            answer["candidates"].append({
                "id": entry_id, "name": self.original(entry_id)["name"], "distance": distance,
                "inliers": checked,
                "verified": None if checked is None else checked >= thresholds["min_inliers"]})
        if chosen is not None:
            answer["original"] = {**self.original(chosen.id), "distance": chosen.distance,
                                  "inliers": chosen.inliers}
            if explain and self.method == "oscar":
                answer["heatmap"] = self.heatmap(pixels, chosen.id)
        return answer

    def warm_up(self) -> None:
        """Compiles the model (and the explainer) by answering one stored original, so the
        first person to ask does not wait for it."""
        with self._lock:
            row = self._db.execute("SELECT id FROM originals ORDER BY id LIMIT 1").fetchone()
        if row is not None:
            self.query(decode_image(self.original_image(row[0])[0]),
                       explain=self.method == "oscar")

    def _dissimilarity(self, pixels: np.ndarray, entry_id: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(the original's pixels, the eq. 14 map of the query against it)."""
        original = decode_image(self.original_image(entry_id)[0])
        with self._lock:
            if self._explainer is None:
                self._explainer = gradcam.Explainer(self.workdir)
            return original, self._explainer.dissimilarity(pixels, original)

    def heatmap(self, pixels: np.ndarray, entry_id: int) -> str:
        """The eq. 14 dissimilarity map of a query against an original, as a PNG data URL of
        at most `HEATMAP_SIDE` pixels a side, whatever the size of the query."""
        pixels = shrink_to_fit(pixels, HEATMAP_SIDE)
        _, heat = self._dissimilarity(pixels, entry_id)
        png = encode_png(gradcam.overlay(pixels, heat))
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def explanation(self, pixels: np.ndarray, entry_id: int) -> np.ndarray:
        """The paper's Fig. 1 panel: [heatmap on the query | original | query], the query at
        most `HEATMAP_SIDE` pixels a side."""
        pixels = shrink_to_fit(pixels, HEATMAP_SIDE)
        original, heat = self._dissimilarity(pixels, entry_id)
        return gradcam.explanation_figure(pixels, original, heat)


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: the file only changes in here."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _entry_id(value: Any) -> int:
    """An id as SQLite stores it; KeyError (no such original) outside its int64 range."""
    entry_id = int(value)
    if not -(2**63) <= entry_id < 2**63:
        raise KeyError(value)
    return entry_id


def _read(image: str | bytes) -> bytes:
    return read_bytes(image, image if isinstance(image, str) else "<bytes>")
