"""`distractors`: any folder or list of images -> scene-graph records, for search databases.

Distractors stand in for the paper's Stock4.7M: unrelated images added to the database in
Benchmark I and II and the scalability tables. Every input gets one outcome: files whose
extension is not an image's are skipped with that reason, unreadable images are errors.
Records carry negative identities (-1, -2, ...), which no data set's originals use.

    python -m preprocessing.build --dataset distractors --input DIR_OR_LIST [--config_name NAME]
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from preprocessing.datasets import base
from preprocessing.images import IMAGE_EXTENSIONS, decode_image, shrink_to_fit


@dataclasses.dataclass(eq=False)
class DistractorConfig(base.SceneGraphConfig):
    """Where the distractors come from.

    Attributes:
      input: a folder (searched recursively) or a text file with one image path per line.
      max_side: images are shrunk so their longer side is at most this (the paper's are VGA).
    """

    input: str = ""
    max_side: int = 640


def list_inputs(source: str) -> list[str]:
    """Every file under a folder, or every path in a list file, sorted; hidden files skipped."""
    if os.path.isdir(source):
        found = []
        for directory, folders, files in os.walk(source):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            found.extend(os.path.join(directory, f) for f in files if not f.startswith("."))
        return sorted(found)
    if os.path.isfile(source):
        base_dir = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        return [p if os.path.isabs(p) else os.path.join(base_dir, p)
                for p in lines if p and not p.startswith("#")]
    raise FileNotFoundError(
        f"distractor input {source!r} is neither a folder nor a list file; pass --input DIR "
        "or --input LIST.txt (one image path per line)"
    )


class DistractorMaker(base.SceneGraphMaker):
    config: DistractorConfig

    def view_of(self, item: base.WorkItem):
        image = shrink_to_fit(decode_image(item.spec["path"]), self.config.max_side)
        return image, None, "", base.view_name(item.key)


class Distractors(base.SceneGraphBuilder):
    """Unrelated images as records, to enlarge search databases."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [DistractorConfig(name="default", description="Set --input to a folder.")]

    def make_maker(self) -> DistractorMaker:
        return DistractorMaker(self.builder_config)

    def work_items(self, manual_dir):
        del manual_dir
        config: DistractorConfig = self.builder_config
        if not config.input:
            raise ValueError("the distractors data set needs an input: pass --input DIR or LIST")
        root = config.input if os.path.isdir(config.input) else ""
        items = []
        for path in list_inputs(config.input):
            key = os.path.relpath(path, root) if root else path
            if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
                self.drop(key, path, "skipped", "extension is not an image's", "distractors")
                continue
            identity = -1 - len(items)
            spec = dict(identity=identity, variant=0, view=0, path=path)
            items.append(base.WorkItem(key, "distractors", path, spec))
        return {"distractors": items}
