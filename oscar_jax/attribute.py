r"""Image attribution (paper section 5): which trusted original does an image come from, and was
it manipulated on the way?

    python -m oscar_jax.attribute add --db trusted.sqlite --workdir runs/demo photo.jpg \
        --meta provenance.json
    python -m oscar_jax.attribute query --db trusted.sqlite found_online.jpg [--explain]
    python -m oscar_jax.attribute calibrate --db trusted.sqlite --data_dir data
    python -m oscar_jax.attribute demo --workdir runs/demo --data_dir data

A trusted database is one SQLite file: the settings (hash method, model workdir, thresholds),
and for every original its code, its image and its provenance (any JSON: source, author,
time, URL, licence...). Every write is one transaction, so a database killed mid-way through
`add` holds the originals of the transactions that committed and nothing else; running `add`
again skips the images already there. The Hamming index (`oscar_jax.index`) is derived from
the codes: it is cached beside the database (`DB.index`, written atomically) and rebuilt
when it does not match.

A query hashes the image, takes the 10 nearest originals by Hamming distance, and runs
geometric verification (`oscar_jax.verification`) on each. The verdict:

* `unknown`: no candidate registers with at least `min_inliers` inliers;
* `match`: the registered candidate nearest in Hamming distance is within `match_distance`
  bits: a benign copy of that original;
* `manipulated`: the query registers onto an original (it is derived from it) but its code
  lies further than `match_distance` from it: the content was changed.

Both thresholds are calibrated (`calibrate`) on labelled data, by default the held-out half of
the demo test split, and stored in the database.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from oscar_jax import verification
from oscar_jax.index import HammingIndex, IndexFileError
from preprocessing.images import ImageDecodeError, decode_image, encode_png, read_bytes

VERDICTS = ("match", "manipulated", "unknown")
SHORTLIST = 10  # candidates that geometric verification looks at (the paper's top 10)
SCHEMA_VERSION = 1
# Before calibration: a third of the code may flip for a benign copy (the demo model and the
# classical hashes all separate benign views from manipulations somewhere near there), and a
# fundamental matrix fits a few chance correspondences, so registration needs more.
DEFAULT_MATCH_FRACTION = 1 / 3
DEFAULT_MIN_INLIERS = 15
MESSAGES = {
    "match": "A benign copy of a trusted original: its provenance applies.",
    "manipulated": "Derived from a trusted original but changed: do not trust the original's "
                   "provenance for this image.",
    "unknown": "No trusted original found for this image.",
}


class AttributionError(ValueError):
    """A trusted database that cannot be used as asked; the message says what to do."""


def default_thresholds(bits: int) -> dict[str, Any]:
    return {"match_distance": int(round(bits * DEFAULT_MATCH_FRACTION)),
            "min_inliers": DEFAULT_MIN_INLIERS, "calibrated_on": None}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mime(data: bytes) -> str:
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8": "image/jpeg", b"GIF8": "image/gif",
                  b"RIFF": "image/webp", b"BM": "image/bmp", b"II*\x00": "image/tiff",
                  b"MM\x00*": "image/tiff"}
    return next((m for s, m in signatures.items() if data.startswith(s)),
                "application/octet-stream")


# ---- verdicts and calibration ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: int
    distance: int
    inliers: int


def decide(candidates: Sequence[Candidate], thresholds: Mapping[str, Any]
           ) -> tuple[str, Candidate | None]:
    """(verdict, the original it refers to): see the module docstring."""
    verified = [c for c in candidates if c.inliers >= thresholds["min_inliers"]]
    if not verified:
        return "unknown", None
    best = min(verified, key=lambda c: (c.distance, -c.inliers))
    return ("match" if best.distance <= thresholds["match_distance"] else "manipulated"), best


def best_threshold(accept: np.ndarray, reject: np.ndarray, candidates: np.ndarray) -> int:
    """The threshold t (values <= t accepted) that minimises the false rejection rate of
    `accept` plus the false acceptance rate of `reject`; the middle of the best plateau, so
    the threshold sits as far as the data allow from both error sources."""
    accept, reject = np.asarray(accept, float), np.asarray(reject, float)
    errors = np.asarray([
        (np.mean(accept > t) if len(accept) else 0.0)
        + (np.mean(reject <= t) if len(reject) else 0.0) for t in candidates])
    best = np.flatnonzero(np.isclose(errors, errors.min()))
    # The longest run of consecutive optimal candidates, then its middle.
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    return int(candidates[run[len(run) // 2]])


def calibrate_thresholds(*, bits: int, benign: Sequence[Candidate],
                         manipulated: Sequence[Candidate], unrelated_inliers: Sequence[int],
                         source: str) -> dict[str, Any]:
    """Thresholds from labelled pairs.

    Args:
      bits: code length.
      benign: (query, its original) pairs of benign copies.
      manipulated: (query, its original) pairs of manipulated versions.
      unrelated_inliers: inliers of (query, a shortlisted original it does not derive from).
      source: what the pairs came from, stored with the thresholds.
    """
    related = np.asarray([c.inliers for c in (*benign, *manipulated)])
    unrelated = np.asarray(unrelated_inliers)
    top = int(max(related.max(initial=0), unrelated.max(initial=0))) + 1
    # Registration passes at inliers >= min_inliers, that is at -inliers <= -min_inliers.
    counts = np.arange(verification.MIN_MATCHES, top + 1)
    min_inliers = -best_threshold(-related, -unrelated, -counts)
    registered = [c for c in benign if c.inliers >= min_inliers]
    registered_bad = [c for c in manipulated if c.inliers >= min_inliers]
    match_distance = best_threshold([c.distance for c in registered],
                                    [c.distance for c in registered_bad], np.arange(bits + 1))
    return {"match_distance": match_distance, "min_inliers": int(min_inliers),
            "calibrated_on": source, "pairs": {"benign": len(benign),
                                               "manipulated": len(manipulated),
                                               "unrelated": len(unrelated)}}


# ---- the trusted database --------------------------------------------------------------------

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
        from oscar_jax.hash import load_hasher

        if method == "oscar" and not workdir:
            raise AttributionError("a database of OSCAR-Net codes needs the --workdir of a "
                                   "trained model")
        hasher = load_hasher(workdir, method)
        settings = {"schema_version": SCHEMA_VERSION, "method": method, "bits": hasher.bits,
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
                                   f"`python -m oscar_jax.attribute add --db {path} "
                                   "--workdir RUN IMAGE...`")
        connection = cls._connect(path)
        try:
            rows = connection.execute("SELECT key, value FROM settings").fetchall()
        except sqlite3.DatabaseError as error:
            connection.close()
            raise AttributionError(f"{path} is not a trusted database ({error})") from error
        settings = {k: json.loads(v) for k, v in rows}
        if settings.get("schema_version") != SCHEMA_VERSION:
            connection.close()
            raise AttributionError(f"{path} has schema version "
                                   f"{settings.get('schema_version')}, this version reads "
                                   f"{SCHEMA_VERSION}")
        from oscar_jax.hash import load_hasher

        workdir = workdir or settings["workdir"]
        if settings["method"] == "oscar" and not (workdir and os.path.isdir(workdir)):
            connection.close()
            raise AttributionError(f"the model of {path} was {settings['workdir']}, which is "
                                   "not there; pass --workdir with the same trained model")
        hasher = load_hasher(workdir, settings["method"])
        if hasher.bits != settings["bits"]:
            connection.close()
            raise AttributionError(f"{workdir} makes {hasher.bits}-bit codes but {path} holds "
                                   f"{settings['bits']}-bit codes; use the model it was made "
                                   "with")
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
                    code = self._db.execute("SELECT code FROM originals WHERE id = ?",
                                            (last,)).fetchone()[0]
                    if (len(cached) == count and cached.bits == self.bits
                            and cached.reconstruct([last])[0].tobytes() == code):
                        self._index, self._last_id = cached, int(last)
            if self._last_id != (last or 0):
                self._index = HammingIndex(self.bits)
                self._add_to_index(list(self._rows_after(0)))
                if count:
                    self._save_index()

    def _save_index(self) -> None:
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
        with tqdm(total=len(images), desc="adding originals", unit="image",
                  disable=not progress, file=sys.stderr) as bar:
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
        return ids

    # -- reading ---------------------------------------------------------------------------

    def original(self, entry_id: int) -> dict[str, Any]:
        """The stored facts of an original (KeyError when there is none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, sha256, width, height, provenance, added_at FROM originals "
                "WHERE id = ?", (int(entry_id),)).fetchone()
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
                                   (int(entry_id),)).fetchone()
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
              explain: bool = False) -> dict[str, Any]:
        """The verdict on one image, as JSON-able dict (see the module docstring)."""
        if isinstance(image, np.ndarray):
            pixels = image
        else:
            name = image if isinstance(image, str) and name == "query" else name
            pixels = decode_image(image, name=None if isinstance(image, str) else name)
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
        from oscar_jax import explain

        original = decode_image(self.original_image(entry_id)[0])
        with self._lock:
            if self._explainer is None:
                self._explainer = explain.Explainer(self.workdir)
            return original, self._explainer.dissimilarity(pixels, original)

    def heatmap(self, pixels: np.ndarray, entry_id: int) -> str:
        """The eq. 14 dissimilarity map of a query against an original, as a PNG data URL."""
        from oscar_jax import explain

        _, heat = self._dissimilarity(pixels, entry_id)
        png = encode_png(explain.overlay(pixels, heat))
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def explanation(self, pixels: np.ndarray, entry_id: int) -> np.ndarray:
        """The paper's Fig. 1 panel: [heatmap on the query | original | query]."""
        from oscar_jax import explain

        original, heat = self._dissimilarity(pixels, entry_id)
        return explain.explanation_figure(pixels, original, heat)


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


def _read(image: str | bytes) -> bytes:
    return read_bytes(image, image if isinstance(image, str) else "<bytes>")


# ---- calibration and Table 6 -----------------------------------------------------------------


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def builder_items(records_dir: str, manual_dir: str | None = None):
    """(work items by split, maker) of the builder that made a records folder, or None when
    it is not one of this project's data sets."""
    from oscar_jax.hash import read_record_settings
    from preprocessing import build

    parts = os.path.normpath(os.path.abspath(records_dir)).split(os.sep)
    dataset, data_dir = parts[-3], os.sep.join(parts[:-3])
    if dataset not in build.DATASETS:
        return None
    builder_class = build.DATASETS[dataset]
    settings = read_record_settings(records_dir)
    named = {c.name: c for c in builder_class.BUILDER_CONFIGS}
    template = named.get(settings.get("name"), builder_class.BUILDER_CONFIGS[0])
    fields = {f.name for f in dataclasses.fields(template)} - {
        "name", "version", "release_notes", "supported_versions", "tags"}
    stored = {k: _tuples(v) for k, v in settings.items() if k in fields}
    config = template
    if any(getattr(template, k) != v for k, v in stored.items()):
        # TFDS refuses a changed config under a released config's name.
        config = dataclasses.replace(template, name=f"{settings.get('name')}-records", **stored)
    builder = builder_class(data_dir=data_dir, config=config)
    if manual_dir is None:
        manual_dir = os.path.join(data_dir, "downloads", "manual")
    return builder.work_items(manual_dir), builder.make_maker()


def regenerate_views(records_dir: str, keys: Mapping[str, Sequence[str]],
                     manual_dir: str | None = None) -> dict[str, np.ndarray]:
    """Full-size pixels of records, remade by their builder (records keep only a small
    global view, too small for SIFT): {key: RGB uint8}. Keys the builder cannot remake
    (e.g. a data set whose manual files are gone) are left out."""
    found = builder_items(records_dir, manual_dir)
    if found is None:
        return {}
    items, maker = found
    images = {}
    for split, wanted in keys.items():
        wanted = set(wanted)
        for item in items.get(split, []):
            if item.key in wanted:
                images[item.key] = maker.view_of(item)[0]
    return images


@dataclasses.dataclass
class AttributionSet:
    """Labelled images for calibrating thresholds and measuring attribution (Table 6).

    The trusted database holds `database_*` (the originals of the evaluated split and the
    distractors, identity -1); queries are their benign copies and manipulated versions.
    Queries of identities in `calibration_identities` calibrate; the others are measured.
    """

    database_keys: list[str]
    database_identity: np.ndarray  # int64 [D]
    query_keys: list[str]
    query_identity: np.ndarray  # int64 [Q]
    query_manipulated: np.ndarray  # bool [Q]
    calibration: np.ndarray  # bool [Q]
    images: dict[str, np.ndarray]  # key -> RGB uint8


def calibration_half(identity: np.ndarray) -> np.ndarray:
    """A fixed half of the identities (by a stable hash), to calibrate on."""
    from preprocessing.datasets.base import stable_hash

    return np.asarray([stable_hash("calibration", int(i)) % 2 == 0 for i in identity])


@dataclasses.dataclass
class PairCache:
    """Inliers of (query, original) pairs, shared by every method of one study; called from
    many threads."""

    images: Mapping[str, np.ndarray]  # key -> RGB uint8
    inliers: dict = dataclasses.field(default_factory=dict)
    query_features: dict = dataclasses.field(default_factory=dict)
    original_features: dict = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _features(self, cache: dict, key: str, make):
        if key not in cache:
            made = make(self.images[key])
            with self.lock:
                cache.setdefault(key, made)
        return cache[key]

    def __call__(self, query_key: str, original_key: str) -> int:
        pair = (query_key, original_key)
        if pair not in self.inliers:
            self.inliers[pair] = verification.verify(
                self._features(self.query_features, query_key, verification.features),
                self._features(self.original_features, original_key,
                               verification.original_features)).inliers
        return self.inliers[pair]


def verdict_with_early_exit(distances: np.ndarray, keys: Sequence[str], inliers_of,
                            thresholds: Mapping[str, Any]) -> tuple[str, int | None]:
    """`decide` over a shortlist sorted by distance, verifying only until the verdict is
    certain: once a candidate registers, no later candidate can be nearer. Returns (verdict,
    position in the shortlist of the original it refers to)."""
    candidates, found_at = [], None
    for position, (distance, key) in enumerate(zip(distances, keys, strict=True)):
        if found_at is not None and distance > found_at:
            break
        candidates.append(Candidate(position, int(distance), inliers_of(key)))
        if candidates[-1].inliers >= thresholds["min_inliers"]:
            found_at = int(distance)
    verdict, chosen = decide(candidates, thresholds)
    return verdict, (chosen.id if chosen else None)


def attribution_study(*, method: str, bits: int, data: AttributionSet,
                      database_codes: np.ndarray, query_codes: np.ndarray,
                      pairs: Callable[[str, str], int],
                      workers: int | None = None) -> dict[str, Any]:
    """Calibrates the thresholds of one method on the calibration queries and measures the
    others: Table 6's FPR (manipulated queries attributed as a `match`) and FNR (benign
    queries not matched to their own original), with the rest of the confusion."""
    from concurrent.futures import ThreadPoolExecutor

    index = HammingIndex(bits)
    index.add(database_codes)
    k = min(SHORTLIST, len(index))
    distances, rows = index.search(query_codes, k)
    own = {int(i): r for r, i in enumerate(data.database_identity) if i >= 0}

    def calibration_pairs(q: int):
        mine = own[int(data.query_identity[q])]
        related = Candidate(mine, int(np.count_nonzero(np.unpackbits(
            database_codes[mine] ^ query_codes[q]))), pairs(data.query_keys[q],
                                                             data.database_keys[mine]))
        others = [int(r) for r in rows[q] if r >= 0 and r != mine]
        unrelated = pairs(data.query_keys[q], data.database_keys[others[0]]) if others else None
        return related, unrelated

    calibrate_on = np.flatnonzero(data.calibration)
    measure_on = np.flatnonzero(~data.calibration)
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        found = list(pool.map(calibration_pairs, calibrate_on))
        benign = [r for (r, _), q in zip(found, calibrate_on, strict=True)
                  if not data.query_manipulated[q]]
        manipulated = [r for (r, _), q in zip(found, calibrate_on, strict=True)
                       if data.query_manipulated[q]]
        thresholds = calibrate_thresholds(
            bits=bits, benign=benign, manipulated=manipulated,
            unrelated_inliers=[u for _, u in found if u is not None],
            source=f"{len(calibrate_on)} calibration queries")

        def measure(q: int):
            keys = [data.database_keys[r] for r in rows[q] if r >= 0]
            verdict, position = verdict_with_early_exit(
                distances[q][: len(keys)], keys,
                lambda key: pairs(data.query_keys[q], key), thresholds)
            refers = None if position is None else int(data.database_identity[rows[q][position]])
            return verdict, refers

        outcomes = list(pool.map(measure, measure_on))
    counts: dict[str, dict[str, int]] = {"benign": {}, "manipulated": {}}
    for q, (verdict, refers) in zip(measure_on, outcomes, strict=True):
        kind = "manipulated" if data.query_manipulated[q] else "benign"
        right = refers == int(data.query_identity[q])
        label = verdict if verdict == "unknown" or right else f"{verdict} (wrong original)"
        counts[kind][label] = counts[kind].get(label, 0) + 1
    n_benign = sum(counts["benign"].values())
    n_manipulated = sum(counts["manipulated"].values())
    matched_manipulated = sum(v for k, v in counts["manipulated"].items()
                              if k.startswith("match"))
    return {
        "thresholds": thresholds,
        "FPR": matched_manipulated / max(n_manipulated, 1),
        "FNR": 1 - counts["benign"].get("match", 0) / max(n_benign, 1),
        "flagged": counts["manipulated"].get("manipulated", 0) / max(n_manipulated, 1),
        "queries": {"benign": n_benign, "manipulated": n_manipulated},
        "database": len(database_codes), "verdicts": counts,
    }


def calibrate_database(db: TrustedDatabase, *, records: str | None = None,
                       split: str = "test", distractors: str | None = "train") -> dict:
    """Calibrates a database's thresholds on labelled records (by default those its model
    was trained on: the calibration half of the test split, with the train split as
    distractors), stores them, and returns the study (Table 6 on the other half)."""
    from oscar_jax import evaluate, input_pipeline, train

    if records is None:
        if not db.workdir:
            raise AttributionError("a baseline database has no training run: pass --records "
                                   "of a built data set to calibrate on")
        config = train.load_config(db.workdir)
        records = input_pipeline.records_dir(config.dataset, config.dataset_config,
                                             config.data_dir)
    hashers = {db.method: db.hasher}
    test = evaluate.hash_split(records, split, hashers)
    roles = evaluate.Roles.of(test)
    source = evaluate.resolve_distractors(distractors, records)
    pool = evaluate.hash_split(*source, hashers) if source else None
    study = evaluate.attribution_studies(records, split, test, roles, pool, source,
                                         [db.method])[db.method]
    study["thresholds"]["calibrated_on"] = (
        f"{records} split {split} ({study['thresholds']['calibrated_on']})")
    db.set_thresholds(study["thresholds"])
    return study


def _demo_provenance(item, split: str) -> dict[str, Any]:
    original = item.spec["original"]
    photo = original["kind"] == "photo"
    return {"source": "oscar_jax demo data" + (" (a photo shipped with scikit-image)" if photo
                                              else " (a generated scene)"),
            "title": original["name"], "record": item.key, "split": split,
            "licence": "see scikit-image's data README" if photo else "CC0",
            "url": "https://scikit-image.org/docs/stable/api/skimage.data.html" if photo
            else None}


def _evaluated_study(workdir: str, records: str) -> dict | None:
    """The model's Table 6 study from the `oscar_jax.evaluate` report in its workdir (the same
    calibration `calibrate_database` runs), if there is one for these records."""
    path = os.path.join(workdir, "report.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        report = json.load(f)
    model = report.get("methods", {}).get("oscar", {})
    if (report.get("records") != records or "attribution" not in model
            or os.path.abspath(model.get("workdir") or "") != os.path.abspath(workdir)):
        return None
    if os.path.getmtime(path) < os.path.getmtime(os.path.join(workdir, "config.json")):
        return None
    return model["attribution"]


def build_demo(workdir: str, db_path: str, out: str) -> list[tuple[str, str]]:
    """The demo's trusted database: every demo original (the test split's and, as
    distractors, the train split's), thresholds calibrated on the calibration half; and three
    queries from the other half. Returns [(query path, what it really is)]."""
    from oscar_jax import input_pipeline, train
    from preprocessing import manipulations
    from preprocessing.datasets.base import item_rng
    from preprocessing.images import encode_jpeg

    config = train.load_config(workdir)
    records = input_pipeline.records_dir(config.dataset, config.dataset_config,
                                         config.data_dir)
    found = builder_items(records)
    if found is None:
        raise AttributionError(f"{records} was not made by a data set of this project")
    items, maker = found
    db = TrustedDatabase.open_or_create(db_path, workdir=workdir)
    with db:
        originals = [(item, split) for split in ("test", "train") for item in items[split]
                     if item.spec["variant"] == 0 and item.spec["view"] == 0]
        db.add([encode_png(maker.view_of(item)[0]) for item, _ in originals],
               names=[item.key.split("/")[0] + ".png" for item, _ in originals],
               provenance=[_demo_provenance(item, split) for item, split in originals],
               progress=True)
        study = _evaluated_study(workdir, records)
        if study is None:
            study = calibrate_database(db, records=records)
        else:
            db.set_thresholds(study["thresholds"])
        t = study["thresholds"]
        print(f"{len(db)} trusted originals in {db_path}; thresholds: match within "
              f"{t['match_distance']} bits, at least {t['min_inliers']} inliers; Table 6 on "
              f"the held-out half: FPR {study['FPR']:.4f}, FNR {study['FNR']:.4f}",
              file=sys.stderr)
    held_out = [item for item in items["test"]
                if not calibration_half(np.asarray([item.spec["identity"]]))[0]]
    benign = next(i for i in held_out if i.spec["variant"] == 0 and i.spec["view"] > 0)
    originals_by_identity = {i.spec["identity"]: i for i in items["test"]
                             if i.spec["variant"] == 0 and i.spec["view"] == 0}

    def changed_area(item) -> float:
        """Fraction of pixels a manipulation changed (ground truth, not the model's view)."""
        edited = maker.view_of(item)[0]
        source = maker.view_of(originals_by_identity[item.spec["identity"]])[0]
        if edited.shape != source.shape:
            return 0.0
        return float(np.mean(np.abs(edited.astype(int) - source).max(axis=-1) > 24))

    # The demo shows the most visible edit of a held-out photo (chosen by pixels changed;
    # generated scenes are flat colour, with too few keypoints to show registration).
    edited = max((i for i in held_out if i.spec["variant"] > 0 and i.spec["view"] == 0
                  and i.spec["original"]["kind"] == "photo"
                  and i.spec["identity"] != benign.spec["identity"]), key=changed_area)
    scene = manipulations.generate_scene(item_rng(10_007, "unrelated demo query"),
                                         height=256, width=256).image
    folder = os.path.join(out, "queries")
    os.makedirs(folder, exist_ok=True)
    queries = [
        ("benign_copy.jpg", encode_jpeg(maker.view_of(benign)[0], quality=80),
         f"a benign copy of {benign.key.split('/')[0]} ({benign.key})"),
        ("manipulated.png", encode_png(maker.view_of(edited)[0]),
         f"a manipulated version of {edited.key.split('/')[0]} ({edited.key})"),
        ("unrelated.png", encode_png(scene), "a scene that is not in the database"),
    ]
    written = []
    for name, data, truth in queries:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        written.append((path, truth))
    return written


def _cmd_demo(args: argparse.Namespace) -> int:
    db_path = args.db or os.path.join(args.workdir, "trusted.sqlite")
    queries = build_demo(args.workdir, db_path, args.out or os.path.join(args.workdir,
                                                                         "attribution"))
    for path, truth in queries:
        print(f"{path}: {truth}")
    return 0


# ---- command line ----------------------------------------------------------------------------


def _provenance(meta: str | None, count: int) -> list[dict]:
    if not meta:
        return [{} for _ in range(count)]
    with open(meta, encoding="utf-8") as f:
        value = json.load(f)
    if isinstance(value, dict):
        return [value] * count
    if isinstance(value, list) and len(value) == count and all(isinstance(v, dict)
                                                               for v in value):
        return value
    raise AttributionError(f"{meta} must hold a JSON object (the provenance of every image) "
                           f"or a list of {count} objects, one per image in order")


def _image_arguments(images: Sequence[str]) -> list[str]:
    if images:
        return list(images)
    if sys.stdin.isatty():
        raise AttributionError("give image paths, or pipe them on stdin, one a line")
    return [line.strip() for line in sys.stdin if line.strip()]


def _cmd_add(args: argparse.Namespace) -> int:
    images = _image_arguments(args.images)
    provenance = _provenance(args.meta, len(images))
    good, failures = [], []
    for path, meta in zip(images, provenance, strict=True):
        try:
            decode_image(path)
            good.append((path, meta))
        except ImageDecodeError as error:
            failures.append((path, error.reason))
    with TrustedDatabase.open_or_create(args.db, workdir=args.workdir,
                                        method=args.method) as db:
        before = len(db)
        ids = db.add([p for p, _ in good], provenance=[m for _, m in good], progress=True)
        print(f"{len(db) - before} originals added ({len(ids) - (len(db) - before)} were "
              f"there already); {len(db)} in {args.db}", file=sys.stderr)
    for path, reason in failures:
        print(f"cannot add {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _text_line(path: str, answer: dict) -> str:
    original = answer["original"]
    if original is None:
        return f"{answer['verdict']:<12} {path}"
    return (f"{answer['verdict']:<12} {path} -> {original['name']} (id {original['id']}, "
            f"distance {original['distance']}/{answer['bits']}, {original['inliers']} inliers)")


def _cmd_query(args: argparse.Namespace) -> int:
    images = _image_arguments(args.images)
    failures = 0
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        study = calibrate_database(db, records=args.records, split=args.split,
                                   distractors=args.distractors or None)
    t = study["thresholds"]
    print(f"calibrated: match_distance {t['match_distance']}, min_inliers {t['min_inliers']} "
          f"({t['calibrated_on']}); on the other half: FPR {study['FPR']:.4f}, "
          f"FNR {study['FNR']:.4f}, manipulated flagged {study['flagged']:.4f}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        print(json.dumps({"path": db.path, "originals": len(db), "method": db.method,
                          "bits": db.bits, "workdir": db.workdir,
                          "thresholds": db.thresholds}, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m oscar_jax.attribute",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--db", required=True, help="the trusted database (SQLite file)")
        sub.add_argument("--workdir", help="the trained model (stored in the database; give "
                                           "it to create one, or if the run moved)")
        return sub

    add = command("add", "store originals with their provenance")
    add.add_argument("--method", default="oscar", help="hash of a new database: oscar (the "
                     "model of --workdir) or ahash, phash, dhash, whash, chash, iscc, pdq")
    add.add_argument("--meta", help="JSON file: one provenance object for every image, or a "
                                    "list with one object per image")
    add.add_argument("images", nargs="*", help="image files (default: paths on stdin)")
    add.set_defaults(run=_cmd_add)

    query = command("query", "attribute images: verdict, original and provenance as JSON")
    query.add_argument("--explain", action="store_true",
                       help="write the dissimilarity heatmap (eq. 14) as NAME.explain.png")
    query.add_argument("--explain_dir", help="folder for the heatmaps (default: beside each "
                                             "query)")
    query.add_argument("--format", choices=("json", "text"), default="json",
                       help="one JSON object per line, or one line of text per image")
    query.add_argument("images", nargs="*", help="image files (default: paths on stdin)")
    query.set_defaults(run=_cmd_query)

    calibrate = command("calibrate", "set the thresholds from labelled records")
    calibrate.add_argument("--records", help="a built data set (default: the model's own)")
    calibrate.add_argument("--split", default="test", help="split with originals, benign "
                                                           "views and manipulated versions")
    calibrate.add_argument("--distractors", default="train",
                           help="'train' (another split of the records), DIR[:SPLIT] of "
                                "another data set, or '' for none")
    calibrate.set_defaults(run=_cmd_calibrate)

    info = command("info", "print the database's settings")
    info.set_defaults(run=_cmd_info)

    demo = commands.add_parser("demo", help="a trusted database of the demo test originals, "
                                            "calibrated, and three queries to attribute")
    demo.add_argument("--workdir", required=True, help="the trained demo model")
    demo.add_argument("--db", help="where to write it (default: WORKDIR/trusted.sqlite)")
    demo.add_argument("--out", help="folder for the demo queries (default: "
                                    "WORKDIR/attribution)")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads
    try:
        return args.run(args)
    except (AttributionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
