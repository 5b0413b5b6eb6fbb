"""What every scene-graph data set shares: work items, resumable processing, outcome logs.

A builder turns its inputs into a deterministic list of `WorkItem`s, one per record to write
(identity / variant / view). A picklable `RecordMaker` turns one item into one record; it is
a pure function of the item and the builder config (its random draws are seeded by the item
key), so the same item gives the same record in any process, in any order, on any rerun.

`run_items` processes items in fixed-size chunks on worker processes and stores each finished
chunk atomically in a work folder. Killed at any moment and rerun, it reuses the finished
chunks and computes only the rest, so the records are exactly those of an uninterrupted run.
Every item gets one `Outcome` (ok, skipped with a reason, or error with a reason), and inputs
that a builder drops before they become items (a missing file, a pair filtered out) get one
too, so the log accounts for every input.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow_datasets as tfds

from preprocessing import detect, layout, scene_graph
from preprocessing.files import atomic_write_bytes
from preprocessing.images import ImageDecodeError, encode_png
from preprocessing.progress import progress

Status = Literal["ok", "skipped", "error"]
# Items per cached chunk: small enough that a kill loses little work, large enough that the
# work folder holds few files.
CHUNK_SIZE = 8


class SkipItem(Exception):
    """Raised by a RecordMaker for an input that is fine but should not become a record."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One record to make.

    Attributes:
      key: the record's stable id, `identity/variant/view`; unique within the data set.
      split: the split the record belongs to.
      source: the input file or generator the item reads, as shown in the outcome log.
      spec: JSON-serialisable instructions for the builder's RecordMaker.
    """

    key: str
    split: str
    source: str
    spec: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one item or one dropped input; one line of the outcome log."""

    key: str
    split: str
    source: str
    status: Status
    reason: str = ""
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


RecordMaker = Callable[[WorkItem], dict]


def view_name(key: str) -> str:
    """The file name a stored view has when exported, and the name detections are looked up
    by (`coco_json`): the record key plus `.png`."""
    return f"{key}.png"


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash of `parts` that is the same in every process and Python version."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def item_rng(seed: int, *parts: Any) -> np.random.Generator:
    """The Generator for one item: independent of processing order and worker count."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_hash(*parts)]))


def fingerprint(value: Any) -> str:
    """A short content hash of a JSON-serialisable value (dataclasses allowed)."""

    def default(obj):
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        return repr(obj)

    text = json.dumps(value, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_one(maker: RecordMaker, item: WorkItem) -> tuple[Outcome, dict | None]:
    """Runs `maker` on `item`, turning every failure into an outcome instead of an exception."""
    start = time.perf_counter()
    record, status, reason = None, "ok", ""
    try:
        record = maker(item)
    except SkipItem as e:
        status, reason = "skipped", str(e)
    except ImageDecodeError as e:
        status, reason = "error", e.reason
    except Exception as e:  # noqa: BLE001 - one bad input must never stop a build
        status = "error"
        reason = f"{type(e).__name__}: {e}"
        last = traceback.extract_tb(e.__traceback__)[-1:]
        if last:
            reason += f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})"
    outcome = Outcome(item.key, item.split, item.source, status, reason,
                      round(time.perf_counter() - start, 4))
    return outcome, record


def _make_chunk(args: tuple[RecordMaker, Sequence[WorkItem]]) -> list[tuple[Outcome, dict | None]]:
    maker, items = args
    return [make_one(maker, item) for item in items]


def _init_worker() -> None:
    # One OpenCV thread per process: the parallelism is across processes.
    import cv2

    cv2.setNumThreads(1)


def write_outcomes(path: str, outcomes: Iterable[Outcome]) -> None:
    """Writes a JSONL outcome log atomically (a reader never sees half a log)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, "".join(o.to_json() + "\n" for o in outcomes).encode())


def read_outcomes(path: str) -> list[Outcome]:
    with open(path) as f:
        return [Outcome(**json.loads(line)) for line in f if line.strip()]


def parallel_map(fn: Callable, args: Sequence, *, workers: int, desc: str, unit: str = "item"):
    """`[fn(a) for a in args]` on worker processes, in order, with a progress bar."""
    results = []
    with progress(total=len(args), desc=desc, unit=unit) as bar:
        if workers <= 0 or len(args) <= 1:
            for a in args:
                results.append(fn(a))
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker) as pool:
            for result in pool.imap(fn, args):
                results.append(result)
                bar.update()
    return results


def run_items(
    items: Sequence[WorkItem],
    maker: RecordMaker,
    *,
    work_dir: str,
    workers: int = 0,
    desc: str = "records",
) -> Iterator[tuple[str, dict]]:
    """Yields `(key, record)` for every item that succeeds, in item order; resumable.

    Finished chunks are stored under `work_dir` named by a fingerprint of their items and the
    maker, so a changed config never reuses stale results. The outcome of every item is
    written to `work_dir/outcomes.jsonl` once all items are done.

    Args:
      items: the items of one split, in a deterministic order.
      maker: picklable; called once per item, in this process or a worker.
      work_dir: where chunks and the outcome log live; created if missing.
      workers: worker processes; 0 processes everything in this process.
      desc: label of the progress bar.
    """
    os.makedirs(work_dir, exist_ok=True)
    maker_print = fingerprint(getattr(maker, "config", type(maker).__qualname__))
    chunks = [list(items[i : i + CHUNK_SIZE]) for i in range(0, len(items), CHUNK_SIZE)]
    paths = []
    for chunk in chunks:
        chunk_print = fingerprint([maker_print, [(it.key, it.spec) for it in chunk]])
        paths.append(os.path.join(work_dir, f"chunk-{chunk_print}.pkl"))
    pending = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    pending_set = set(pending)

    outcomes: list[Outcome] = []
    with progress(total=len(items), desc=desc, unit="rec") as bar:
        bar.update(sum(len(chunk) for i, chunk in enumerate(chunks) if i not in pending_set))
        pool = None
        if workers > 0 and len(pending) > 1:
            context = multiprocessing.get_context("spawn")
            pool = context.Pool(workers, initializer=_init_worker)
            computed = pool.imap(_make_chunk, [(maker, chunks[i]) for i in pending])
        else:
            computed = (_make_chunk((maker, chunks[i])) for i in pending)
        try:
            for i, path in enumerate(paths):
                if i in pending_set:
                    results = next(computed)
                    atomic_write_bytes(path, pickle.dumps(results, pickle.HIGHEST_PROTOCOL))
                    bar.update(len(results))
                else:
                    with open(path, "rb") as f:
                        results = pickle.load(f)
                for outcome, record in results:
                    outcomes.append(outcome)
                    if outcome.status == "ok":
                        yield outcome.key, record
                bar.set_postfix(failed=sum(o.status != "ok" for o in outcomes), refresh=False)
        finally:
            if pool is not None:
                pool.terminate()
    log = os.path.join(work_dir, "outcomes.jsonl")
    write_outcomes(log, outcomes)
    check_not_all_failed(outcomes, desc, log)


def check_not_all_failed(outcomes: Sequence[Outcome], desc: str, log: str) -> None:
    """Raises a one-line ValueError when a split has inputs and every one failed: TFDS cannot
    write an empty split, and its own error ("No examples were yielded") says nothing of why."""
    if not outcomes or any(o.status == "ok" for o in outcomes):
        return
    reasons = collections.Counter(o.reason for o in outcomes).most_common(2)
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons)
    example = min(outcomes, key=lambda o: o.key).source
    raise ValueError(f"all {len(outcomes)} inputs of {desc} failed, so it would be "
                     f"empty: {listed}, e.g. {example} (every outcome: {log})")


@dataclasses.dataclass(eq=False)
class SceneGraphConfig(tfds.core.BuilderConfig):
    """What shapes the records of any scene-graph data set.

    Attributes:
      max_objects: detected objects kept per image; records have max_objects + 1 nodes.
      crop_size: side of the square node crops.
      global_size: side of the square global view.
      encoding: 'jpeg' stores images as JPEG bytes; 'raw' as uint8 arrays.
      jpeg_quality: quality of the stored JPEGs.
      detector: backend name for `preprocessing.detect.make_detector`.
      detector_options: keyword options for that backend, as sorted (name, value) pairs.
      min_score: detections below this score are dropped.
      seed: root seed of every random draw.
      canonical_layout: every view (and query) is put in its canonical frame before it is
        detected (`preprocessing.layout`: black frame cut, black-cornered rotation undone,
        corners outside the inscribed ellipse blacked out, mirrored to one orientation).
    """

    max_objects: int = 16
    crop_size: int = 224
    global_size: int = 224
    encoding: str = "jpeg"
    jpeg_quality: int = 95
    detector: str = "classical"
    detector_options: tuple[tuple[str, Any], ...] = ()
    min_score: float = 0.5
    seed: int = 0
    canonical_layout: bool = False

    def record_options(self) -> dict:
        return dict(max_objects=self.max_objects, crop_size=self.crop_size,
                    global_size=self.global_size, encoding=self.encoding)


class SceneGraphMaker:
    """Shared core of the RecordMakers: detector on the view -> scene graph -> record.

    Subclasses implement `view_of(item) -> (image, gt_masks, transforms_text, name)`; the
    detector is created lazily so instances pickle cheaply to worker processes.
    """

    def __init__(self, config: SceneGraphConfig):
        self.config = config
        self._detector = None

    def __getstate__(self):
        return {"config": self.config, "_detector": None}

    @property
    def detector(self):
        if self._detector is None:
            options = dict(self.config.detector_options)
            if self.config.detector in ("classical", "coco_json", "detectron2"):
                options.setdefault("max_objects", self.config.max_objects)
                options.setdefault("min_score", self.config.min_score)
            self._detector = detect.make_detector(self.config.detector, **options)
        return self._detector

    @abc.abstractmethod
    def view_of(self, item: WorkItem) -> tuple[np.ndarray, np.ndarray | None, str, str]:
        """The image to store for `item`, its ground-truth masks or None, the transforms
        applied (as text), and the name detectors look detections up by."""

    def __call__(self, item: WorkItem) -> dict:
        image, gt_masks, transforms, name = self.view_of(item)
        if self.config.canonical_layout:
            image, gt_masks = layout.canonical_layout(image, gt_masks)
        detections = self.detector(image, name=name, gt_masks=gt_masks)
        graph = scene_graph.build_scene_graph(
            image, detections, max_objects=self.config.max_objects,
            crop_size=self.config.crop_size, global_size=self.config.global_size,
            min_score=self.config.min_score,
        )
        spec = item.spec
        return scene_graph.encode_record(
            graph, key=item.key, identity=int(spec["identity"]), variant=int(spec["variant"]),
            view=int(spec["view"]), transforms=transforms, encoding=self.config.encoding,
            jpeg_quality=self.config.jpeg_quality,
        )


class SceneGraphBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder whose records are scene graphs made by a `SceneGraphMaker`.

    Subclasses define `BUILDER_CONFIGS`, `work_items(manual_dir)` and `make_maker()`.
    Extra constructor options (not part of the records, so not part of the config):

      workers: worker processes for the record makers (0: in this process).
      use_beam: return an Apache Beam pipeline from `_generate_examples`, for
        `download_and_prepare(download_config=DownloadConfig(beam_runner=...))`.
      work_root: where chunks and outcome logs live; defaults to `<data_dir>/_work`.
    """

    def __init__(self, *, workers: int = 0, use_beam: bool = False, work_root: str | None = None,
                 **kwargs):
        self.workers = workers
        self.use_beam = use_beam
        kwargs.setdefault("file_format", "array_record")  # random access for grain; no TF
        super().__init__(**kwargs)
        self.work_root = work_root or os.path.join(self._data_dir_root, "_work")
        self._dropped: list[Outcome] = []

    # TFDS announces a download of "Unknown size" for every builder; these records are made
    # here from local inputs, so one line says where they go and the summary table follows.
    def _log_download_bytes(self) -> None:
        print(f"building {self.name}/{self.builder_config.name} {self.version} into "
              f"{self.data_dir}", flush=True)

    def _log_download_done(self) -> None:
        pass

    # ---- what subclasses provide -------------------------------------------------------
    @abc.abstractmethod
    def work_items(self, manual_dir: str | None) -> dict[str, list[WorkItem]]:
        """Split name -> the items of that split, in a deterministic order. Inputs dropped
        before becoming items are reported through `self.drop(...)`."""

    @abc.abstractmethod
    def make_maker(self) -> SceneGraphMaker:
        """The picklable RecordMaker for this builder's config."""

    def extra_metadata(self) -> dict:
        """JSON-serialisable facts stored in the data set's metadata."""
        return {}

    # ---- shared machinery --------------------------------------------------------------
    def drop(self, key: str, source: str, status: Status, reason: str, split: str = "") -> None:
        """Records an input that never becomes an item (so it still has an outcome)."""
        self._dropped.append(Outcome(key, split, source, status, reason))

    @property
    def work_dir(self) -> str:
        """Chunks and logs of this data set, config and version."""
        return os.path.join(self.work_root, self.name, self.builder_config.name, str(self.version))

    def _info(self) -> tfds.core.DatasetInfo:
        config: SceneGraphConfig = self.builder_config
        metadata = {"config": dataclasses.asdict(config), **self.extra_metadata()}
        metadata["config"]["detector_options"] = [list(kv) for kv in config.detector_options]
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=scene_graph.record_features(**config.record_options()),
            metadata=tfds.core.MetadataDict(json.loads(json.dumps(metadata, default=str))),
        )

    def _split_generators(self, dl_manager):
        manual_dir = None
        if self.MANUAL_DOWNLOAD_INSTRUCTIONS:
            try:
                manual_dir = os.fspath(dl_manager.manual_dir)
            except AssertionError:
                pass  # the folder is missing; work_items explains what to put where
        self._dropped = []
        splits = self.work_items(manual_dir)
        write_outcomes(os.path.join(self.work_dir, "dropped.jsonl"), self._dropped)
        keys = [it.key for items in splits.values() for it in items]
        if len(keys) != len(set(keys)):
            raise ValueError(f"{self.name}: work item keys are not unique")
        return {split: self._generate_examples(items, split) for split, items in splits.items()}

    def _generate_examples(self, items: list[WorkItem], split: str):
        maker = self.make_maker()
        split_dir = os.path.join(self.work_dir, split)
        if self.use_beam:
            return _beam_transform(items, maker, split_dir, f"{self.name}/{split}")
        return run_items(items, maker, work_dir=split_dir, workers=self.workers,
                         desc=f"{self.name}/{split}")

    def export_views(self, out_dir: str, manual_dir: str | None = None) -> list[Outcome]:
        """Writes every view the detector would see as `out_dir/<key>.png` (lossless).

        Run a detector elsewhere on these files (e.g. Mask R-CNN on a GPU machine), save COCO
        results keyed by the same relative file names, and build with
        `--detector coco_json --detector_option path=results.json`.
        """
        self._dropped = []
        items = [it for batch in self.work_items(manual_dir).values() for it in batch]
        maker = self.make_maker()

        def export(item: WorkItem) -> dict:
            image, _, _, name = maker.view_of(item)
            path = os.path.join(out_dir, name.lstrip(os.sep))  # never outside out_dir
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, encode_png(image))
            return {}

        results = [make_one(export, item)[0]
                   for item in progress(items, desc=f"{self.name}/export", unit="view")]
        return self._dropped + results

    def outcomes(self) -> list[Outcome]:
        """Every outcome of the last build: dropped inputs, then each split's items."""
        result = []
        dropped = os.path.join(self.work_dir, "dropped.jsonl")
        if os.path.exists(dropped):
            result.extend(read_outcomes(dropped))
        splits = sorted(os.listdir(self.work_dir)) if os.path.isdir(self.work_dir) else []
        for split in splits:
            if split.startswith("_"):
                continue  # intermediate passes (features for filtering), not records
            path = os.path.join(self.work_dir, split, "outcomes.jsonl")
            if os.path.isfile(path):
                result.extend(read_outcomes(path))
        return result


def _beam_transform(items: list[WorkItem], maker: RecordMaker, split_dir: str, desc: str):
    """The same records as `run_items`, as a Beam PTransform; outcomes go to a JSONL file,
    and a split whose every input fails stops the pipeline with `check_not_all_failed`."""
    import apache_beam as beam

    os.makedirs(split_dir, exist_ok=True)
    outcome_path = os.path.join(split_dir, "outcomes.jsonl")

    class MakeRecords(beam.PTransform):
        def expand(self, pipeline):
            results = (
                pipeline
                | "Items" >> beam.Create(items, reshuffle=True)
                | "Make" >> beam.Map(lambda item: make_one(maker, item))
            )
            outcomes = results | "Outcome" >> beam.Map(lambda result: result[0])
            _ = (
                outcomes
                | "Outcomes" >> beam.Map(lambda outcome: outcome.to_json())
                | "WriteOutcomes" >> beam.io.WriteToText(
                    outcome_path, shard_name_template="", num_shards=1)
            )
            # Every failure's outcome is small; a split of only failures is what is checked.
            _ = (
                outcomes
                | "Failed" >> beam.Filter(lambda outcome: outcome.status != "ok")
                | "FailedOnly" >> beam.combiners.ToList()
                | "NotAllFailed" >> beam.Map(_check_beam_split, len(items), desc, outcome_path)
            )
            return (
                results
                | "Succeeded" >> beam.Filter(lambda result: result[0].status == "ok")
                | "Keyed" >> beam.Map(lambda result: (result[0].key, result[1]))
            )

    return MakeRecords()


def _check_beam_split(failed: list[Outcome], total: int, desc: str, log: str) -> None:
    if total and len(failed) == total:
        check_not_all_failed(failed, desc, log)


def summarize(outcomes: Sequence[Outcome]) -> dict:
    """Totals by split and status plus the commonest reasons; totals always reconcile."""
    by_split: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for o in outcomes:
        counts = by_split.setdefault(o.split or "(input)", {"ok": 0, "skipped": 0, "error": 0})
        counts[o.status] += 1
        if o.status != "ok":
            short = f"{o.status}: {o.reason.split(' (at ')[0][:120]}"
            reasons[short] = reasons.get(short, 0) + 1
    totals = {s: sum(c[s] for c in by_split.values()) for s in ("ok", "skipped", "error")}
    totals["inputs"] = len(outcomes)
    assert totals["inputs"] == totals["ok"] + totals["skipped"] + totals["error"]
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {"totals": totals, "splits": by_split, "reasons": dict(top)}
