"""The attribution part of `make demo`: a calibrated trusted database of the demo originals and
three queries to attribute (a benign copy, a manipulated version, an unrelated scene).

    oscar attribute demo --workdir runs/demo
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from oscar_jax.attribution.database import AttributionError, TrustedDatabase
from oscar_jax.evaluation.table6 import builder_items, calibrate_database, calibration_half
from oscar_jax.workdir import config_records_dir, load_config
from preprocessing import manipulations
from preprocessing.datasets.base import item_rng
from preprocessing.images import encode_jpeg, encode_png


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
    """The model's Table 6 study from the `oscar evaluate` report in its workdir (the same
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
    records = config_records_dir(load_config(workdir))
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
