"""Table 6 of the paper: attribution error rates, with thresholds calibrated on held-out data.

From a benchmark split's records (`oscar_jax.evaluation.codesets`): the trusted database
holds the split's originals (and, as distractors, the originals of another split or data
set); the queries are their benign views and manipulated versions, at full size (records
keep only a small global view, too small for SIFT, so each image is remade by the records'
builder). The thresholds of the verdict (`oscar_jax.attribution.verdicts`) are calibrated on
the queries of a fixed half of the originals (`calibration_half`) and the error rates are
measured on the other half:

* FPR: manipulated queries attributed as a `match` (accepted as benign copies);
* FNR: benign queries not matched to their own original.

`calibrate_database` runs the same study to set the thresholds of a trusted database.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from oscar_jax.attribution import verification
from oscar_jax.attribution.database import AttributionError, TrustedDatabase
from oscar_jax.attribution.verdicts import (
    SHORTLIST,
    Candidate,
    calibrate_thresholds,
    verdict_with_early_exit,
)
from oscar_jax.evaluation.codesets import CodeSet, Roles, hash_split, resolve_distractors
from oscar_jax.inference.codes import paired_distance
from oscar_jax.inference.hamming_index import HammingIndex
from oscar_jax.workdir import config_records_dir, load_config, read_record_settings
from preprocessing import build
from preprocessing.datasets.base import stable_hash
from preprocessing.progress import progress


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def builder_items(records_dir: str, manual_dir: str | None = None):
    """(work items by split, maker) of the builder that made a records folder, or None when
    it is not one of this project's data sets."""
    parts = os.path.normpath(os.path.abspath(records_dir)).split(os.sep)
    dataset, data_dir = parts[-3], os.sep.join(parts[:-3])
    if dataset not in build.DATASETS:
        return None
    builder_class = build.DATASETS[dataset]
    settings = read_record_settings(records_dir)
    named = {c.name: c for c in builder_class.BUILDER_CONFIGS}
    template = named.get(settings.get("name"), builder_class.BUILDER_CONFIGS[0])
    stored = {}
    for field in dataclasses.fields(template):
        if field.name in ("name", "version", "release_notes", "supported_versions", "tags"):
            continue
        if field.name in settings:
            stored[field.name] = _tuples(settings[field.name])
        elif field.default is not dataclasses.MISSING:
            # A field added to the builder after the records were made did not exist then:
            # they were made as its default makes them, whatever a released config now says.
            stored[field.name] = field.default
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


def attribution_study(*, method: str, bits: int, data: AttributionSet,
                      database_codes: np.ndarray, query_codes: np.ndarray,
                      pairs: Callable[[str, str], int],
                      workers: int | None = None) -> dict[str, Any]:
    """Calibrates the thresholds of one method on the calibration queries and measures the
    others: Table 6's FPR (manipulated queries attributed as a `match`) and FNR (benign
    queries not matched to their own original), with the rest of the confusion."""
    index = HammingIndex(bits)
    index.add(database_codes)
    k = min(SHORTLIST, len(index))
    distances, rows = index.search(query_codes, k)
    own = {int(i): r for r, i in enumerate(data.database_identity) if i >= 0}

    def calibration_pairs(q: int):
        mine = own[int(data.query_identity[q])]
        related = Candidate(mine, int(paired_distance(database_codes[mine], query_codes[q])),
                            pairs(data.query_keys[q], data.database_keys[mine]))
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


@dataclasses.dataclass
class AttributionParts:
    """Rows of the trusted database (split originals, distractors) and of the queries."""

    originals: np.ndarray
    distractors: np.ndarray
    queries: np.ndarray


def attribution_data(records: str, split: str, test: CodeSet, roles: Roles,
                     pool: CodeSet | None, source: tuple[str, str] | None
                     ) -> tuple[AttributionParts, AttributionSet]:
    """The trusted database (the split's originals and the distractors' originals) and the
    queries (benign views and manipulated versions) of Table 6, with full-size pixels."""
    pool_rows = (np.flatnonzero((pool.variant == 0) & (pool.view == 0)) if pool is not None
                 else np.zeros(0, int))
    queries = np.concatenate([roles.benign, roles.manipulated])
    wanted = {split: list(test.keys[np.concatenate([roles.originals, queries])])}
    images = regenerate_views(records, wanted)
    pool_keys = []
    if pool is not None:
        remade = regenerate_views(source[0], {source[1]: list(pool.keys[pool_rows])})
        images.update({f"distractor:{k}": v for k, v in remade.items()})
        pool_keys = [f"distractor:{k}" for k in pool.keys[pool_rows]]
    data = AttributionSet(
        database_keys=list(test.keys[roles.originals]) + pool_keys,
        database_identity=np.concatenate([test.identity[roles.originals],
                                          -np.ones(len(pool_rows), np.int64)]),
        query_keys=list(test.keys[queries]), query_identity=test.identity[queries],
        query_manipulated=test.variant[queries] > 0,
        calibration=calibration_half(test.identity[queries]), images=images)
    missing = [k for k in (*data.database_keys, *data.query_keys) if k not in images]
    if missing:
        raise ValueError(f"{len(missing)} images (e.g. {missing[0]}) cannot be remade by the "
                         "data set's builder; attribution needs them at full size")
    return AttributionParts(roles.originals, pool_rows, queries), data


def attribution_studies(records: str, split: str, test: CodeSet, roles: Roles,
                        pool: CodeSet | None, source: tuple[str, str] | None,
                        names: Sequence[str]) -> dict[str, dict]:
    """Table 6 of every method: thresholds calibrated on half of the queries' originals,
    FPR and FNR measured on the other half (`oscar_jax.attribution_study`)."""
    parts, data = attribution_data(records, split, test, roles, pool, source)
    pairs = PairCache(data.images)
    studies = {}
    for name in progress(names, desc="attribution (Table 6)", unit="method"):
        codes = [test.codes[name][parts.originals]]
        if pool is not None:
            codes.append(pool.codes[name][parts.distractors])
        bits = int(np.asarray(test.codes[name]).shape[1] * 8)
        studies[name] = attribution_study(
            method=name, bits=bits, data=data, database_codes=np.concatenate(codes),
            query_codes=test.codes[name][parts.queries], pairs=pairs)
    return studies


def calibrate_database(db: TrustedDatabase, *, records: str | None = None,
                       split: str = "test", distractors: str | None = "train") -> dict:
    """Calibrates a database's thresholds on labelled records (by default those its model
    was trained on: the calibration half of the test split, with the train split as
    distractors), stores them, and returns the study (Table 6 on the other half)."""
    if records is None:
        if not db.workdir:
            raise AttributionError("a baseline database has no training run: pass --records "
                                   "of a built data set to calibrate on")
        records = config_records_dir(load_config(db.workdir))
    hashers = {db.method: db.hasher}
    test = hash_split(records, split, hashers)
    roles = Roles.of(test)
    source = resolve_distractors(distractors, records)
    pool = hash_split(*source, hashers) if source else None
    study = attribution_studies(records, split, test, roles, pool, source,
                                         [db.method])[db.method]
    study["thresholds"]["calibrated_on"] = (
        f"{records} split {split} ({study['thresholds']['calibrated_on']})")
    db.set_thresholds(study["thresholds"])
    return study
