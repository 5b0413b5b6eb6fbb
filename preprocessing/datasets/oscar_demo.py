"""`oscar_demo`: the embedded data set, built from what the project's dependencies ship.

Originals come from three places, none downloaded:

* the sample photos inside scikit-image (`skimage/data`) and matplotlib (`mpl-data/sample_data`),
  or the photos of a folder (`photo_dir`);
* crops of those photos at several scales, each a further original;
* procedurally generated scenes whose objects are known exactly (`manipulations.generate_scene`).

Each original gets `variants` manipulated versions from the scripted local edits of
`preprocessing.manipulations` (object insertion spliced from another original of the same
split, removal by inpainting, recolouring, copy-move, a caption, a local warp). Every image,
original or manipulated, is stored as view 0 (untouched) and as benign views drawn with the
*train* ranges of `preprocessing.transforms` in the train split and the *test* ranges in the
test split. The split is by source photo or scene, so no original, nor any crop of the same
photo, appears in both splits. Like PSBattles360K-S, the splits `test_seen` and `test_unseen`
hold `single_views` views of each single transform (6 seen in training, 6 unseen) of every
test original, for the per-transform robustness of `python -m oscar_jax.evaluate`.

Build it with `python -m preprocessing.build --dataset oscar_demo` (config `default`), or the
`tiny` config for tests.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from preprocessing import manipulations, transforms
from preprocessing.datasets import base
from preprocessing.images import decode_image, image_files, shrink_to_fit

# Photos inside scikit-image: (file, note). Near-duplicates (the right motorcycle view, the
# chessboards) are left out so that no two originals show the same scene.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
    "ihc.png", "logo.png", "moon.png", "motorcycle_left.png", "page.png", "phantom.png",
    "retina.jpg", "rocket.jpg", "text.png",
)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def photo_paths(photo_dir: str = "") -> dict[str, str]:
    """Name -> path of every sample photo shipped inside the installed dependencies, or of
    every image file under `photo_dir` when given (named by its path there, without the
    extension, sub-folders joined by '-')."""
    if photo_dir:
        photo_dir = os.path.expanduser(photo_dir)
        if not os.path.isdir(photo_dir):
            raise FileNotFoundError(f"photo_dir {photo_dir!r} is not a folder; pass --set "
                                    "photo_dir=DIR with a folder of photos")
        paths = {}
        for path in image_files([photo_dir]):
            # Record keys are name/variant/view: sub-folders join the name with '-'.
            name = os.path.splitext(os.path.relpath(path, photo_dir))[0].replace(os.sep, "-")
            if name.lower() in paths:
                raise ValueError(f"{path} and {paths[name.lower()]} both give the photo name "
                                 f"{name.lower()!r}; rename one of them")
            paths[name.lower()] = path
        if len(paths) < 2:
            raise FileNotFoundError(f"photo_dir {photo_dir!r} holds {len(paths)} image files; "
                                    "the demo's splits need at least 2")
        return paths
    import matplotlib
    import skimage

    skimage_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    mpl_dir = os.path.join(matplotlib.get_data_path(), "sample_data")
    paths = {}
    for directory, files in ((skimage_dir, SKIMAGE_PHOTOS), (mpl_dir, MATPLOTLIB_PHOTOS)):
        for file in files:
            path = os.path.join(directory, file)
            if os.path.isfile(path):
                paths[os.path.splitext(file)[0].lower()] = path
    if not paths:
        raise FileNotFoundError(
            "no sample photos found inside scikit-image or matplotlib; reinstall them with "
            "`make install`"
        )
    return paths


@dataclasses.dataclass(eq=False)
class DemoConfig(base.SceneGraphConfig):
    """Sizes of the demo data set (on top of the record shapes of SceneGraphConfig).

    Attributes:
      photos: whether the sample photos (and their crops) are originals.
      photo_dir: a folder whose image files replace the sample photos (''), e.g. to measure
        a trained demo model on photos it has never seen, with the same edits and views.
      max_photos: use at most this many sample photos (0: all).
      crop_scales: each photo also gives one crop at each of these fractions of its side.
      num_scenes: procedurally generated scenes.
      extra_train_scenes: further generated scenes, all in the train split: more training
        originals with the held-out originals and their records left exactly as they are.
      image_size: originals are resized so their longer side is at most this.
      variants: manipulated versions per original.
      train_views: benign views per image in the train split (besides view 0).
      test_views: benign views per image in the test split (besides view 0).
      test_fraction: fraction of photos and of scenes held out for the test split.
      single_views: views of each single transform per test original, in the
        PSBattles360K-S style splits `test_seen` and `test_unseen` (0: no such splits).
      matched_train_views: in the train split, benign view k of every variant of an
        original applies the same transforms (parameters and noise), so that a manipulated
        view differs from the original's view k by the edit alone: the hardest negative
        SimCLR+ can be given. Test views stay independent per variant, as in the wild.
    """

    photos: bool = True
    photo_dir: str = ""
    max_photos: int = 0
    crop_scales: tuple[float, ...] = (0.45, 0.65)
    num_scenes: int = 48
    extra_train_scenes: int = 0
    image_size: int = 256
    variants: int = 2
    train_views: int = 4
    test_views: int = 4
    test_fraction: float = 0.25
    single_views: int = 2
    matched_train_views: bool = False


class OscarDemoMaker(base.SceneGraphMaker):
    """Makes one demo record: original -> optional manipulation -> benign view -> graph."""

    config: DemoConfig

    def edit_of(self, spec: dict) -> manipulations.Manipulated:
        """The scripted edit of a manipulated variant (`spec['variant']` >= 1): the same for
        every view of it, in any process."""
        image, masks = self.original(spec["original"])
        donor, donor_masks = self.original(spec["donor"])
        rng = base.item_rng(self.config.seed, "manipulation", spec["identity"], spec["variant"])
        return manipulations.random_manipulation(image, rng, masks=masks, donor=donor,
                                                 donor_masks=donor_masks)

    def view_of(self, item: base.WorkItem):
        spec = item.spec
        if spec["variant"] > 0:
            edited = self.edit_of(spec)
            image, masks = edited.image, edited.masks
        else:
            image, masks = self.original(spec["original"])
        if spec["view"] == 0:
            return image, masks, "", base.view_name(item.key)
        view_key = item.key
        if self.config.matched_train_views and spec["ranges"] == "train":
            view_key = f"{spec['original']['name']}/*/{spec['view']}"
        rng = base.item_rng(self.config.seed, "view", view_key)
        if spec.get("single"):
            view = transforms.single_view(image, spec["single"], rng, "test", masks=masks)
        else:
            view = transforms.random_view(image, rng, spec["ranges"], masks=masks)
        return view.image, view.masks, view.description, base.view_name(item.key)

    def original(self, spec: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """The original image (and, for scenes, its object masks) described by `spec`."""
        if spec["kind"] == "scene":
            rng = base.item_rng(self.config.seed, "scene", spec["index"])
            size = self.config.image_size
            scene = manipulations.generate_scene(rng, height=size, width=size)
            return scene.image, scene.masks
        image = _photo(spec["path"], self.config.image_size if spec["scale"] >= 1 else 0)
        if spec["scale"] < 1:
            height, width = image.shape[:2]
            crop_h, crop_w = int(height * spec["scale"]), int(width * spec["scale"])
            rng = base.item_rng(self.config.seed, "crop", spec["name"])
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            crop = image[top : top + crop_h, left : left + crop_w]
            image = shrink_to_fit(crop, self.config.image_size)
        return image, None


@functools.lru_cache(maxsize=8)
def _photo(path: str, max_side: int) -> np.ndarray:
    image = decode_image(path)
    return shrink_to_fit(image, max_side) if max_side else image


def _held_out(names: list[str], fraction: float, seed: int) -> set[str]:
    """A deterministic `fraction` of `names` (at least one when there are two or more)."""
    if len(names) < 2 or fraction <= 0:
        return set()
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    return set(sorted(names, key=lambda n: base.stable_hash(seed, "split", n))[:count])


class OscarDemo(base.SceneGraphBuilder):
    """Embedded demo data: sample photos, their crops and generated scenes, with scripted
    local manipulations and benign views; split by source photo or scene."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Splits test_seen and test_unseen: single transforms of the test originals.",
        "1.2.0": "default and scenes: train views shared by the variants of an original "
                 "(matched_train_views).",
    }
    BUILDER_CONFIGS = [
        DemoConfig(name="default", description="The demo set that `make demo` trains on.",
                   max_objects=8, crop_size=64, global_size=128, matched_train_views=True),
        DemoConfig(name="canonical",
                   description="The default set, every view in its canonical layout.",
                   max_objects=8, crop_size=64, global_size=128, matched_train_views=True,
                   canonical_layout=True),
        DemoConfig(name="tiny", description="A few records, for tests.", max_objects=4,
                   crop_size=32, global_size=64, max_photos=3, crop_scales=(0.6,), num_scenes=3,
                   image_size=96, variants=1, train_views=1, test_views=1, test_fraction=0.34,
                   single_views=1),
        DemoConfig(name="scenes", description="Generated scenes only, ground-truth detector.",
                   max_objects=8, crop_size=64, global_size=128, photos=False, num_scenes=96,
                   detector="oracle", matched_train_views=True),
    ]

    def make_maker(self) -> OscarDemoMaker:
        return OscarDemoMaker(self.builder_config)

    def originals(self) -> list[dict]:
        """Every original as a spec dict: kind, name, group (the split unit), split."""
        config: DemoConfig = self.builder_config
        originals = []
        if config.photos:
            paths = photo_paths(config.photo_dir)
            names = sorted(paths)[: config.max_photos or None]
            held_out = _held_out(names, config.test_fraction, config.seed)
            for name in names:
                split = "test" if name in held_out else "train"
                for scale in (1.0, *config.crop_scales):
                    label = name if scale >= 1 else f"{name}@{scale:g}"
                    originals.append(dict(kind="photo", name=label, group=name, split=split,
                                          path=paths[name], scale=scale))
        scene_names = [f"scene{index:04d}" for index in range(config.num_scenes)]
        held_out = _held_out(scene_names, config.test_fraction, config.seed)
        for index, name in enumerate(scene_names):
            split = "test" if name in held_out else "train"
            originals.append(dict(kind="scene", name=name, group=name, split=split, index=index))
        # After every other original, so the held-out ones keep their identities and donors.
        for index in range(config.num_scenes, config.num_scenes + config.extra_train_scenes):
            name = f"scene{index:04d}"
            originals.append(dict(kind="scene", name=name, group=name, split="train",
                                  index=index))
        return originals

    def work_items(self, manual_dir):
        del manual_dir  # everything is embedded
        config: DemoConfig = self.builder_config
        originals = self.originals()
        items: dict[str, list[base.WorkItem]] = {
            s: [] for s in ("train", "test", "test_seen", "test_unseen")}
        for identity, original in enumerate(originals):
            split = original["split"]
            donors = [o for o in originals
                      if o["split"] == split and o["group"] != original["group"]]
            views = config.train_views if split == "train" else config.test_views
            for variant in range(config.variants + 1):
                donor = None
                if variant > 0:
                    rng = base.item_rng(config.seed, "donor", identity, variant)
                    donor = donors[int(rng.integers(len(donors)))] if donors else original
                for view in range(views + 1):
                    key = f"{original['name']}/{variant}/{view}"
                    spec = dict(identity=identity, variant=variant, view=view, ranges=split,
                                original=original, donor=donor)
                    source = original.get("path", f"generated:{original['name']}")
                    items[split].append(base.WorkItem(key, split, source, spec))
            if split == "test":
                source = original.get("path", f"generated:{original['name']}")
                for set_name, names in (("seen", transforms.SEEN_SINGLE),
                                        ("unseen", transforms.UNSEEN)):
                    for t, name in enumerate(names):
                        for k in range(config.single_views):
                            spec = dict(identity=identity, variant=0,
                                        view=1 + t * config.single_views + k, ranges="test",
                                        original=original, donor=None, single=name)
                            key = f"{original['name']}/0/{name}-{k}"
                            items[f"test_{set_name}"].append(
                                base.WorkItem(key, f"test_{set_name}", source, spec))
        return {split: batch for split, batch in items.items() if batch}

    def extra_metadata(self) -> dict:
        return {"originals": [{k: v for k, v in o.items() if k != "path"}
                              for o in self.originals()]}
