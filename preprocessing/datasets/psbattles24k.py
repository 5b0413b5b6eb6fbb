"""`psbattles24k`: PS-Battles filtered and split as in the paper (supplement section 1.1).

Reads a local copy of PS-Battles laid out as its public repository is:

    originals.tsv                       id, end (file extension), ... one line per original
    photoshops.tsv                      id, original, end, ...      one line per manipulation
    originals/<id>.<end>
    photoshops/<original>/<id>.<end>

Filtering: the distance between each original and each of its manipulated versions is
measured with a feature extractor (the paper: ImageNet ResNet50 features, tau = 150, keeping
about the lower quartile of pairs). Pairs farther apart than `tau` are dropped, as are pairs
closer than `min_distance` (imperceptible edits, which the paper removed by hand). With
`tau=None` the threshold is the lower quartile of all pair distances.

Splits, by original (no original in two splits): `train` (about 21K pairs), `validation` (5 %
of the train originals), `test` (about 3K pairs: each original with `test_views` benign views
for Benchmark I, and its manipulated versions), and the PSBattles360K-S style sets
`test_seen` / `test_unseen` (`single_views` views of each single transform of the test
originals: 6 seen and 6 unseen transforms).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import os
from collections.abc import Callable

import cv2
import numpy as np
import tensorflow_datasets as tfds

from preprocessing import transforms
from preprocessing.datasets import base
from preprocessing.images import decode_image, shrink_to_fit

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place a local copy of PS-Battles in the manual folder (default `<data_dir>/downloads/manual`,
or pass `--manual_dir DIR` to `python -m preprocessing.build`), laid out as the data set's
public repository produces it with its download script:

  DIR/originals.tsv
  DIR/photoshops.tsv
  DIR/originals/<id>.<ext>
  DIR/photoshops/<original id>/<id>.<ext>

Files that are listed but missing or unreadable are reported in the outcome log and skipped.
"""


def pixel_features(image: np.ndarray) -> np.ndarray:
    """A weights-free stand-in for ResNet50 features: the 32 x 32 thumbnail, in [0, 1].

    Distances on it are L2 over 3072 values (range 0 to about 55); give `tau` on that scale or
    leave it None for the lower-quartile rule.
    """
    thumbnail = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    return thumbnail.astype(np.float32).reshape(-1) / 255.0


FEATURE_EXTRACTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"pixels": pixel_features}


def resolve_extractor(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A registered extractor name, or `package.module:function` taking RGB uint8 [H, W, 3]."""
    if name in FEATURE_EXTRACTORS:
        return FEATURE_EXTRACTORS[name]
    if ":" not in name:
        raise ValueError(
            f"unknown feature extractor {name!r}: use one of {sorted(FEATURE_EXTRACTORS)} or "
            "'package.module:function' (a function from an RGB uint8 image to a vector)"
        )
    module, function = name.split(":", 1)
    return getattr(importlib.import_module(module), function)


@dataclasses.dataclass(eq=False)
class PSBattlesConfig(base.SceneGraphConfig):
    """PS-Battles filtering, split and view counts.

    Attributes:
      feature_extractor: name in FEATURE_EXTRACTORS or 'package.module:function'.
      tau: keep pairs with feature distance <= tau; None: the lower quartile of distances.
      min_distance: drop pairs closer than this (imperceptible edits such as watermarks).
      max_side: images are shrunk so their longer side is at most this before anything else.
      test_fraction: fraction of originals held out for test (2,960 of 24,157 pairs).
      validation_fraction: fraction of the train originals kept for validation.
      train_views: benign views per train/validation image, besides view 0.
      test_views: benign views per test original (Benchmark I uses 50), besides view 0.
      manipulated_test_views: benign views per manipulated test image, besides view 0.
      single_views: views of each single transform per test original (360K-S uses 10).
    """

    feature_extractor: str = "pixels"
    tau: float | None = None
    min_distance: float = 0.0
    max_side: int = 640
    test_fraction: float = 2960 / 24157
    validation_fraction: float = 0.05
    train_views: int = 8
    test_views: int = 50
    manipulated_test_views: int = 0
    single_views: int = 10


class FeatureMaker:
    """Feature vector of one image, for the distance filter (a RecordMaker for `run_items`)."""

    def __init__(self, extractor: str, max_side: int):
        self.config = ("features", extractor, max_side)
        self.extractor, self.max_side = extractor, max_side

    def __call__(self, item: base.WorkItem) -> dict:
        image = shrink_to_fit(decode_image(item.spec["path"]), self.max_side)
        return {"feature": np.asarray(resolve_extractor(self.extractor)(image), np.float32)}


class PSBattlesMaker(base.SceneGraphMaker):
    """One record: a PS-Battles file -> (benign view) -> scene graph."""

    config: PSBattlesConfig

    def view_of(self, item: base.WorkItem):
        spec = item.spec
        image = shrink_to_fit(decode_image(spec["path"]), self.config.max_side)
        if spec["view"] == 0:
            return image, None, "", base.view_name(item.key)
        rng = base.item_rng(self.config.seed, "view", item.key)
        if spec.get("single"):
            view = transforms.single_view(image, spec["single"], rng, "test")
        else:
            view = transforms.random_view(image, rng, spec["ranges"])
        return view.image, None, view.description, base.view_name(item.key)


def read_tsv(path: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a PS-Battles TSV as dicts; says which columns are missing if the header is off."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; found {reader.fieldnames}")
        return [row for row in reader if row.get("id")]


def _file_name(row: dict[str, str]) -> str:
    return f"{row['id']}.{row['end'].lstrip('.')}"


class Psbattles24k(base.SceneGraphBuilder):
    """PS-Battles filtered to its subtlest manipulations, split by original (PSBattles24K)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [PSBattlesConfig(name="default", description="The paper's sizes.")]

    def make_maker(self) -> PSBattlesMaker:
        return PSBattlesMaker(self.builder_config)

    def _distances(self, root: str, pairs: list[tuple[dict, dict]]) -> dict[str, object]:
        """Path -> feature vector, or the reason the file could not be read."""
        config: PSBattlesConfig = self.builder_config
        paths = sorted({p for pair in pairs for p in pair_paths(root, *pair)})
        items = [base.WorkItem(p, "_features", p, {"path": p}) for p in paths]
        maker = FeatureMaker(config.feature_extractor, config.max_side)
        features: dict[str, object] = dict(
            (key, record["feature"])
            for key, record in base.run_items(
                items, maker, work_dir=os.path.join(self.work_dir, "_features"),
                workers=self.workers, desc="psbattles24k/features")
        )
        log = os.path.join(self.work_dir, "_features", "outcomes.jsonl")
        for outcome in base.read_outcomes(log):
            if outcome.status != "ok":
                features[outcome.key] = outcome.reason
        return features

    def work_items(self, manual_dir):
        if manual_dir is None or not os.path.isdir(manual_dir):
            raise FileNotFoundError(
                f"manual folder {manual_dir!r} not found.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        config: PSBattlesConfig = self.builder_config
        originals = {r["id"]: r for r in read_tsv(os.path.join(manual_dir, "originals.tsv"),
                                                  ("id", "end"))}
        photoshops = read_tsv(os.path.join(manual_dir, "photoshops.tsv"), ("id", "original", "end"))
        pairs = []
        for row in sorted(photoshops, key=lambda r: (r["original"], r["id"])):
            if row["original"] not in originals:
                self.drop(f"photoshops/{row['original']}/{row['id']}", _file_name(row), "error",
                          f"its original {row['original']!r} is not listed in originals.tsv")
                continue
            pairs.append((originals[row["original"]], row))
        features = self._distances(manual_dir, pairs)

        # Distances of the pairs whose two files both decoded; every other pair is dropped.
        measured, unusable_originals = [], set()
        for original, shop in pairs:
            original_path, shop_path = pair_paths(manual_dir, original, shop)
            shop_key = f"photoshops/{shop['original']}/{shop['id']}"
            if isinstance(features.get(original_path), str):
                unusable_originals.add(original["id"])
                self.drop(shop_key, shop_path, "skipped", "its original could not be read")
            elif isinstance(features.get(shop_path), str):
                self.drop(shop_key, shop_path, "error", str(features[shop_path]))
            else:
                distance = float(np.linalg.norm(features[original_path] - features[shop_path]))
                measured.append((original, shop, distance))
        for original_id in sorted(unusable_originals):
            path = os.path.join(manual_dir, "originals", _file_name(originals[original_id]))
            self.drop(f"originals/{original_id}", path, "error", str(features[path]))

        tau = config.tau
        if tau is None and measured:
            tau = float(np.percentile([d for _, _, d in measured], 25))
        kept: dict[str, list[dict]] = {}
        for original, shop, distance in measured:
            shop_key = f"photoshops/{shop['original']}/{shop['id']}"
            shop_path = pair_paths(manual_dir, original, shop)[1]
            if distance > tau:
                self.drop(shop_key, shop_path, "skipped",
                          f"feature distance {distance:.3f} > tau {tau:.3f}")
            elif distance < config.min_distance:
                self.drop(shop_key, shop_path, "skipped",
                          f"near-duplicate: distance {distance:.3f} < {config.min_distance}")
            else:
                kept.setdefault(original["id"], []).append(shop)
        used = {o["id"] for o, _, _ in measured} | unusable_originals
        for original_id in sorted(set(originals) - set(kept)):
            if original_id not in unusable_originals:
                reason = ("no manipulated version passed the filter" if original_id in used
                          else "no manipulated version listed")
                path = os.path.join(manual_dir, "originals", _file_name(originals[original_id]))
                self.drop(f"originals/{original_id}", path, "skipped", reason)
        self.info.metadata["tau"] = tau
        return self._split_items(manual_dir, originals, kept)

    def _split_items(self, root: str, originals: dict, kept: dict[str, list[dict]]):
        config: PSBattlesConfig = self.builder_config
        ids = sorted(kept)
        order = sorted(ids, key=lambda i: base.stable_hash(config.seed, "split", i))
        num_test = round(config.test_fraction * len(ids)) if len(ids) > 1 else 0
        test = set(order[:num_test])
        train_ids = order[num_test:]
        validation = set(train_ids[: round(config.validation_fraction * len(train_ids))])
        items: dict[str, list[base.WorkItem]] = {
            s: [] for s in ("train", "validation", "test", "test_seen", "test_unseen")}

        def add(split, original_id, variant, view, path, identity, **extra):
            key = f"{original_id}/{variant}/{extra.pop('tag', view)}"
            spec = dict(identity=identity, variant=variant, view=view, path=path,
                        ranges="train" if split in ("train", "validation") else "test", **extra)
            items[split].append(base.WorkItem(key, split, path, spec))

        for identity, original_id in enumerate(ids):
            split = "test" if original_id in test else (
                "validation" if original_id in validation else "train")
            original_path = os.path.join(root, "originals", _file_name(originals[original_id]))
            images = [(0, original_path)] + [
                (variant, pair_paths(root, originals[original_id], shop)[1])
                for variant, shop in enumerate(sorted(kept[original_id], key=lambda r: r["id"]), 1)
            ]
            for variant, path in images:
                if split != "test":
                    views = config.train_views
                else:
                    views = config.test_views if variant == 0 else config.manipulated_test_views
                for view in range(views + 1):
                    add(split, original_id, variant, view, path, identity)
            if split == "test":
                for set_name, names in (("seen", transforms.SEEN_SINGLE),
                                        ("unseen", transforms.UNSEEN)):
                    for t, name in enumerate(names):
                        for k in range(config.single_views):
                            view = 1 + t * config.single_views + k
                            add(f"test_{set_name}", original_id, 0, view, original_path, identity,
                                single=name, tag=f"{name}-{k}")
        return {split: batch for split, batch in items.items() if batch}


def pair_paths(root: str, original: dict, shop: dict) -> tuple[str, str]:
    """Paths of an original and one of its manipulated versions in the manual folder."""
    return (os.path.join(root, "originals", _file_name(original)),
            os.path.join(root, "photoshops", shop["original"], _file_name(shop)))
