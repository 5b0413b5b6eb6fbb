"""Training batches from the scene-graph records: grain over array_record.

Each step's local batch is planned from the step number alone (and the seed and host shard):

    originals_per_batch identities x variants_per_original variants x views_per_variant views

The variants of an identity are its original (variant 0) and at least one manipulated
version, as the paper asks ("every original image has at least one manipulated version in a
batch"); the views are distinct benign views of each. Identities are visited epoch by epoch
in a seeded order, so every identity is seen once per epoch. A slot that an identity cannot
fill (fewer manipulated versions or views than asked) repeats a record with `valid` False,
so shapes stay static and the losses ignore it.

A batch is a dict of numpy arrays with a leading dimension of
`originals_per_batch * variants_per_original * views_per_variant`:

    image uint8 [B, G, G, 3], crops uint8 [B, N, C, C, 3], node_mask bool [B, N],
    geometry float32 [B, N, 5], shape float32 [B, N, 7], relations float32 [B, N, N, 8],
    identity int32 [B] (ordinal of the identity in the split, so unique across hosts),
    variant int32 [B], view int32 [B], valid bool [B]

Decoding (JPEG) runs in grain worker processes; the iterator's state goes into the orbax
checkpoint (`grain.checkpoint.CheckpointSave`), so a resumed run sees the same batches as an
uninterrupted one. With several hosts, every host plans the same global batch and loads only
its own contiguous share of the originals in it: the global batch of a step does not depend
on how many hosts share it out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from preprocessing import record_edits, scene_graph
from preprocessing.progress import progress

Batch = dict[str, np.ndarray]
# Fields the model reads, in the order they are stacked.
MODEL_FIELDS = ("image", "crops", "node_mask", "geometry", "shape", "relations")
LABEL_FIELDS = ("identity", "variant", "view")


def open_source(directory: str, split: str):
    """A random-access source of raw records (`tfds.data_source`-style), picklable."""
    builder = tfds.builder_from_directory(directory)
    if split not in builder.info.splits:
        raise ValueError(
            f"{directory} has no split {split!r}; it has {sorted(builder.info.splits)}"
        )
    return builder.as_data_source(split=split)


@dataclasses.dataclass(frozen=True)
class RecordIndex:
    """Labels of every record in a split, without the images.

    Attributes:
      identity: int64 [R] as stored; variant, view: int32 [R].
      ordinal: int32 [R], position of the record's identity among the split's sorted
        identities; a compact label that is the same on every host.
    """

    identity: np.ndarray
    variant: np.ndarray
    view: np.ndarray

    @property
    def ordinal(self) -> np.ndarray:
        return np.unique(self.identity, return_inverse=True)[1].astype(np.int32)

    def groups(self) -> dict[int, dict[int, np.ndarray]]:
        """identity -> variant -> record indices sorted by view."""
        out: dict[int, dict[int, np.ndarray]] = {}
        order = np.lexsort((self.view, self.variant, self.identity))
        for i in order:
            out.setdefault(int(self.identity[i]), {}).setdefault(int(self.variant[i]), [])
            out[int(self.identity[i])][int(self.variant[i])].append(int(i))
        return {k: {v: np.asarray(r) for v, r in g.items()} for k, g in out.items()}


def read_index(source, *, cache_dir: str | None = None, chunk: int = 512) -> RecordIndex:
    """Reads the labels of every record (with progress), cached as an .npz in `cache_dir`."""
    cache = None
    if cache_dir:
        tag = hashlib.sha1(repr(source).encode()).hexdigest()[:16]
        cache = os.path.join(cache_dir, f"record-index-{tag}-{len(source)}.npz")
        if os.path.exists(cache):
            with np.load(cache) as saved:
                return RecordIndex(saved["identity"], saved["variant"], saved["view"])
    n = len(source)
    labels = {name: np.zeros(n, np.int64) for name in LABEL_FIELDS}
    with progress(total=n, desc="indexing records", unit="record", disable=n < 20_000) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            for i, record in enumerate(source.__getitems__(range(start, stop)), start):
                for name in LABEL_FIELDS:
                    labels[name][i] = int(record[name])
            bar.update(stop - start)
    index = RecordIndex(
        labels["identity"], labels["variant"].astype(np.int32), labels["view"].astype(np.int32)
    )
    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        # One partial file per process: the hosts of a job may write the same cache at once.
        partial = f"{cache}.{socket.gethostname()}-{os.getpid()}.partial.npz"
        np.savez(partial, identity=index.identity, variant=index.variant, view=index.view)
        os.replace(partial, cache)
    return index


@dataclasses.dataclass(frozen=True)
class Composition:
    """How many of each a local batch holds."""

    originals: int  # identities per batch on this host
    variants: int  # variants per identity: the original and variants - 1 manipulated ones
    views: int  # benign views per variant

    @property
    def batch_size(self) -> int:
        return self.originals * self.variants * self.views


class BatchPlanner:
    """Step -> record indices and validity of that step's local batch. Pure and picklable.

    The plan is made for the global batch, `shard_count` local compositions of originals
    chosen together, and host `shard_index` keeps its share: originals
    [shard_index * originals, (shard_index + 1) * originals) of it.

    With `matched_views`, every variant of an identity contributes the views with the same
    view numbers (drawn from those all its picked variants have): with records whose variants
    share each view's transforms (`oscar_demo`'s `matched_train_views`), a manipulated view
    then differs from the original's by the edit alone."""

    def __init__(
        self,
        index: RecordIndex,
        composition: Composition,
        *,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        matched_views: bool = False,
    ):
        if composition.variants < 2:
            raise ValueError(
                "variants_per_original must be >= 2: the original and a manipulated version"
            )
        self.composition = composition
        self.seed = seed
        self.matched_views = matched_views
        self.ordinal = index.ordinal
        self.view = index.view
        groups = index.groups()
        eligible = sorted(k for k, g in groups.items() if 0 in g and len(g) >= 2)
        if not eligible:
            raise ValueError(
                "no identity has both an original (variant 0) and a manipulated version; "
                "SimCLR+ needs both. Check that the records were built with variants >= 1."
            )
        self.identities = eligible
        self.shard_index, self.shard_count = shard_index, shard_count
        self.global_originals = composition.originals * shard_count
        if len(self.identities) < self.global_originals:
            raise ValueError(
                f"{len(self.identities)} usable identities, but originals_per_batch asks "
                f"for {self.global_originals}; lower it"
            )
        self.groups = {k: groups[k] for k in self.identities}
        self.steps_per_epoch = len(self.identities) // self.global_originals

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (record indices int64 [B], valid bool [B]) for `step`."""
        c, n = self.composition, self.global_originals
        epoch, position = divmod(int(step), self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.identities))
        chosen = order[position * n : (position + 1) * n]
        rng = np.random.default_rng([self.seed, epoch, position, 1])
        records, valid = [], []
        for i in chosen:
            variants = self.groups[self.identities[i]]
            manipulated = [v for v in variants if v != 0]
            picked = [0] + list(
                rng.choice(manipulated, size=min(len(manipulated), c.variants - 1), replace=False)
            )
            if self.matched_views:
                common = sorted(set.intersection(*(set(self.view[variants[p]].tolist())
                                                   for p in picked)))
                shared = rng.choice(common, size=min(len(common), c.views), replace=False)
            for slot in range(c.variants):
                real_variant = slot < len(picked)
                views = variants[picked[slot] if real_variant else 0]
                if self.matched_views:
                    take = np.searchsorted(self.view[views], shared)
                else:
                    take = rng.choice(len(views), size=min(len(views), c.views), replace=False)
                for v in range(c.views):
                    real = real_variant and v < len(take)
                    records.append(views[take[v]] if real else views[0])
                    valid.append(real)
        # Every host draws the whole plan, so the random choices do not depend on the hosts.
        mine = slice(self.shard_index * c.batch_size, (self.shard_index + 1) * c.batch_size)
        return np.asarray(records[mine], np.int64), np.asarray(valid[mine], bool)


def stack_records(examples: list[Mapping[str, Any]], ordinal: np.ndarray | None = None,
                  indices: np.ndarray | None = None, *, with_keys: bool = False) -> Batch:
    """Decodes raw records and stacks them into one batch (see the module docstring);
    `with_keys` adds the records' `key` and `transforms` strings (which pmap cannot take)."""
    decoded = [scene_graph.decode_record(e) for e in examples]
    batch = {name: np.stack([d[name] for d in decoded]) for name in MODEL_FIELDS}
    if with_keys:
        batch["key"] = np.asarray([d["key"] for d in decoded])
        batch["transforms"] = np.asarray([d["transforms"] for d in decoded])
    if ordinal is not None and indices is not None:
        batch["identity"] = ordinal[indices]
    else:
        batch["identity"] = np.asarray([d["identity"] for d in decoded], np.int64)
    batch["variant"] = np.asarray([d["variant"] for d in decoded], np.int32)
    batch["view"] = np.asarray([d["view"] for d in decoded], np.int32)
    return batch


class LoadBatch(grain.transforms.Map):
    """Planned (indices, valid) -> decoded batch. Runs in grain worker processes."""

    def __init__(self, directory: str, split: str, ordinal: np.ndarray):
        self.directory, self.split, self.ordinal = directory, split, ordinal
        self._source = None

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def map(self, plan: tuple[np.ndarray, np.ndarray]) -> Batch:
        if self._source is None:
            self._source = open_source(self.directory, self.split)
        indices, valid = plan
        batch = stack_records(self._source.__getitems__(indices.tolist()), self.ordinal, indices)
        batch["valid"] = valid
        return batch


@dataclasses.dataclass(frozen=True)
class PhotometricJitter(grain.transforms.RandomMap):
    """Online photometric augmentation of a training batch, on top of the records' stored
    views: the stored views are few and fixed (the demo has 5 per variant), so a model can
    learn invariance to exactly those images rather than to the transforms.

    Each (original, view slot) of the batch draws one brightness, contrast, saturation and
    per-channel gain factor and one noise pattern, applied alike to the global view and every
    real node crop of each of that slot's variants: an original's view and its manipulated
    version's view in the same slot still differ by the edit alone (as with `matched_views`),
    and the records' scene graphs stay true (nothing that moves pixels, which would need new
    detections). Padding crops are left as they are. The ranges are kept inside those of the
    benign views the records draw (`preprocessing.transforms`).
    """

    composition: Composition
    strength: float = 1.0  # multiplies every range below
    brightness: float = 0.25  # factor in [1 - b, 1 + b]
    contrast: float = 0.25  # about mid-grey
    saturation: float = 0.4  # blend with the grey image
    gain: float = 0.08  # per-channel factor in [1 - g, 1 + g]
    noise: float = 8.0  # Gaussian noise with sigma up to this, in grey levels

    def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
        c, k = self.composition, self.strength
        slots = (c.originals, 1, c.views)
        brightness = rng.uniform(1 - k * self.brightness, 1 + k * self.brightness, slots)
        contrast = rng.uniform(1 - k * self.contrast, 1 + k * self.contrast, slots)
        saturation = rng.uniform(1 - k * self.saturation, 1 + k * self.saturation, slots)
        gain = rng.uniform(1 - k * self.gain, 1 + k * self.gain, (*slots, 3))
        sigma = rng.uniform(0.0, k * self.noise, slots)
        noise_seed = rng.integers(2**32, size=slots)

        def per_record(x: np.ndarray) -> np.ndarray:
            """[O, 1, V, ...] -> [B, ...] broadcast over the variants."""
            x = np.broadcast_to(x, (c.originals, c.variants, c.views, *x.shape[3:]))
            return x.reshape(c.batch_size, *x.shape[3:])

        factors = [per_record(f) for f in (brightness, contrast, saturation, gain, sigma)]
        seeds = per_record(noise_seed)

        def jitter(images: np.ndarray, b: int) -> np.ndarray:
            """uint8 [..., H, W, 3] of record b -> the same, jittered."""
            bright, contr, sat, chan, sig = (f[b] for f in factors)
            x = images.astype(np.float32) * bright
            # About mid-grey rather than each image's mean, which an edit moves: pixels the
            # edit did not touch stay equal between an original and its manipulated version.
            x = (x - 127.5) * contr + 127.5
            grey = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]
            x = (x - grey) * sat + grey
            x = x * chan.astype(np.float32)
            noise = np.random.default_rng(seeds[b]).standard_normal(images.shape[-3:])
            x = x + noise.astype(np.float32) * sig
            return np.clip(np.rint(x), 0, 255).astype(np.uint8)

        image, crops = batch["image"].copy(), batch["crops"].copy()
        for b in range(c.batch_size):
            image[b] = jitter(image[b], b)
            real = batch["node_mask"][b]
            crops[b, real] = jitter(crops[b, real], b)
        return {**batch, "image": image, "crops": crops}


@dataclasses.dataclass(frozen=True)
class OnlineEdits(grain.transforms.RandomMap):
    """Fresh manipulated versions: for a `rate` share of a batch's originals, the first
    manipulated variant slot is replaced by the original's own records (same views) with one
    newly drawn edit (`preprocessing.record_edits`) painted alike into every view's global
    view and crops. The records hold two fixed edits per original, which a model can learn
    one by one; drawn afresh, no edit is seen twice. Splices take their donor from another
    original of the batch. Labels stay those of the slot (identity, variant 1), so the loss
    counts the edit as a manipulated version; needs `matched_views`-style slots, which every
    composition has: the views of the replaced slot become the original's."""

    composition: Composition
    rate: float = 0.5  # share of originals whose manipulated slot is edited afresh

    def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
        c = self.composition
        if c.variants < 2:
            raise ValueError("online edits replace a manipulated variant slot; the batch has "
                             "none (set variants_per_original to 2 or more)")
        out = {k: v.copy() for k, v in batch.items()}

        def slot(o: int, variant: int, view: int) -> int:
            return (o * c.variants + variant) * c.views + view

        for o in np.flatnonzero(rng.random(c.originals) < self.rate):
            first = slot(o, 0, 0)
            edit = record_edits.draw_edit(rng, batch["image"][first], batch["geometry"][first],
                                          batch["node_mask"][first])
            donor_original = (o + 1 + rng.integers(max(c.originals - 1, 1))) % c.originals
            for view in range(c.views):
                source, target = slot(o, 0, view), slot(o, 1, view)
                for name in (*MODEL_FIELDS, "view", "valid"):
                    if name in batch:
                        out[name][target] = batch[name][source]
                donor = batch["image"][slot(donor_original, 0, view)]
                out["image"][target], out["crops"][target] = record_edits.apply_edit(
                    edit, batch["image"][source], batch["crops"][source],
                    batch["geometry"][source], batch["node_mask"][source], donor=donor)
        return out


def train_dataset(
    directory: str,
    split: str,
    composition: Composition,
    *,
    seed: int,
    num_steps: int,
    workers: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    index_cache: str | None = None,
    matched_views: bool = False,
    photometric_jitter: float = 0.0,
    online_edits: float = 0.0,
) -> tuple[grain.IterDataset, Batch]:
    """The training batches of `num_steps` steps as a grain dataset (iterate it, checkpoint
    its iterator), and the first batch decoded here, for shapes. With `photometric_jitter`
    above 0, every batch is augmented by `PhotometricJitter` of that strength, drawn from the
    seed and the step; with `online_edits` above 0, that share of each batch's originals gets
    a freshly edited manipulated version first (`OnlineEdits`)."""
    source = open_source(directory, split)
    index = read_index(source, cache_dir=index_cache)
    planner = BatchPlanner(index, composition, seed=seed, shard_index=shard_index,
                           shard_count=shard_count, matched_views=matched_views)
    load = LoadBatch(directory, split, index.ordinal)
    steps = grain.MapDataset.range(num_steps).map(planner).map(load)
    if not 0 <= online_edits <= 1:
        raise ValueError(f"online_edits is a share of the originals in [0, 1] (0: off), got "
                         f"{online_edits}")
    if online_edits > 0:
        steps = steps.random_map(OnlineEdits(composition, float(online_edits)),
                                 seed=int(np.random.SeedSequence([seed, shard_index, 3])
                                          .generate_state(1)[0]))
    if photometric_jitter < 0:
        raise ValueError(f"photometric_jitter must be >= 0 (0: off), got {photometric_jitter}")
    if photometric_jitter > 0:
        # Host shards of one step draw different factors: their originals differ anyway.
        steps = steps.random_map(PhotometricJitter(composition, float(photometric_jitter)),
                                 seed=int(np.random.SeedSequence([seed, shard_index, 2])
                                          .generate_state(1)[0]))
    dataset = steps.to_iter_dataset(grain.ReadOptions(num_threads=0 if workers else 2,
                                                      prefetch_buffer_size=2))
    if workers:
        if not flags.FLAGS.is_parsed():
            # grain's worker processes read absl flags; outside an absl app, use defaults.
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                                   per_worker_buffer_size=2))
    return dataset, steps[0]


def read_split(directory: str, split: str, *, batch_size: int = 256) -> Iterator[Batch]:
    """Every record of a split in stored order, in decoded batches with the original labels
    and `key` and `transforms` strings; for evaluation."""
    source = open_source(directory, split)
    for start in range(0, len(source), batch_size):
        examples = source.__getitems__(range(start, min(len(source), start + batch_size)))
        yield stack_records(examples, with_keys=True)


def synthetic_batch(
    composition: Composition, *, max_objects: int, crop_size: int, global_size: int, seed: int
) -> Batch:
    """A batch of random inputs with the real shapes and label layout (benchmarks, tests)."""
    rng = np.random.default_rng(seed)
    b, n = composition.batch_size, max_objects + 1
    per_identity = composition.variants * composition.views
    # Real nodes first (objects, then the background node), then padding, as in the records.
    node_mask = np.arange(n)[None, :] < rng.integers(1, n + 1, (b, 1))
    return {
        "image": rng.integers(0, 256, (b, global_size, global_size, 3), np.uint8),
        "crops": rng.integers(0, 256, (b, n, crop_size, crop_size, 3), np.uint8),
        "node_mask": node_mask,
        "geometry": rng.random((b, n, scene_graph.GEOMETRY_DIM), np.float32),
        "shape": rng.normal(size=(b, n, scene_graph.SHAPE_DIM)).astype(np.float32),
        "relations": rng.normal(size=(b, n, n, scene_graph.RELATION_DIM)).astype(np.float32),
        "identity": (np.arange(b) // per_identity).astype(np.int32),
        "variant": ((np.arange(b) // composition.views) % composition.variants).astype(np.int32),
        "view": (np.arange(b) % composition.views).astype(np.int32),
        "valid": np.ones(b, bool),
    }
