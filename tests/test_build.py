"""Builders and `python -m preprocessing.build`: outcomes, resumability, Beam, PS-Battles."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from preprocessing import build, manipulations, scene_graph, transforms
from preprocessing.datasets import base, oscar_demo, psbattles24k
from preprocessing.images import encode_jpeg
from preprocessing.manipulations import generate_scene, random_manipulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_VERSION = str(oscar_demo.OscarDemo.VERSION)

# The smallest demo set that still has photos, crops, scenes, manipulations and views.
MICRO = dict(max_photos="2", num_scenes="2", crop_scales="0.6", test_fraction="0.5",
             single_views="0")


def micro_config(**extra):
    return build.make_config("oscar_demo", "tiny", overrides={**MICRO, **extra},
                             config_name="micro")


def read_records(path: str) -> dict[str, dict]:
    """key -> decoded record, over every split of a built data set."""
    builder = tfds.builder_from_directory(path)
    records = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            record = scene_graph.decode_record(source[i])
            record["split"] = split
            records[str(record["key"])] = record
    return records


def assert_same_records(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        for field, value in a[key].items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(b[key][field]),
                                          err_msg=f"{key}: {field}")


@pytest.fixture(scope="module")
def micro_build(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("micro"))
    return build.build("oscar_demo", data_dir=data_dir, config=micro_config(), verbose=False)


def test_demo_build_outcomes_reconcile(micro_build):
    summary = micro_build.summary
    totals = summary["totals"]
    assert totals["inputs"] == totals["ok"] + totals["skipped"] + totals["error"]
    assert totals["error"] == 0, summary["reasons"]
    # 2 photos x (full + 1 crop) + 2 scenes = 6 originals; x (original + 1 edit) x 2 views.
    assert totals["ok"] == 6 * 2 * 2
    assert sum(summary["records"].values()) == totals["ok"]
    with open(micro_build.outcomes_path) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == totals["inputs"]
    assert len({line["key"] for line in lines}) == len(lines)  # one outcome per input


def test_demo_records_follow_the_contract(micro_build):
    records = read_records(micro_build.builder.data_dir)
    config = micro_build.builder.builder_config
    n = config.max_objects + 1
    groups = {}
    for key, record in records.items():
        name, variant, view = key.split("/")
        assert (int(variant), int(view)) == (record["variant"], record["view"])
        assert record["image"].shape == (config.global_size, config.global_size, 3)
        assert record["crops"].shape == (n, config.crop_size, config.crop_size, 3)
        assert record["relations"].shape == (n, n, 8)
        assert record["node_mask"].any()  # the background node at least
        applied = transforms.parse_description(str(record["transforms"]))
        if record["view"] == 0:
            assert applied == ()
        else:
            names = [t.name for t in applied]
            assert names[:2] == ["compress", "resize"] and 1 <= len(names) - 2 <= 3
            grid = transforms.TRANSFORMS["compress"]
            values = grid.train_values if record["split"] == "train" else grid.test_values
            assert np.isclose(values, applied[0].params["quality"]).any()
        groups.setdefault(name.split("@")[0], set()).add(record["split"])
    assert all(len(splits) == 1 for splits in groups.values()), groups  # split by source
    assert {s for splits in groups.values() for s in splits} == {"train", "test"}


def test_manipulated_versions_differ_from_originals(micro_build):
    records = read_records(micro_build.builder.data_dir)
    for key in records:
        name, variant, view = key.split("/")
        if variant == "1" and view == "0":
            original = records[f"{name}/0/0"]["image"].astype(int)
            edited = records[key]["image"].astype(int)
            assert records[key]["identity"] == records[f"{name}/0/0"]["identity"]
            assert np.abs(original - edited).max() > 40, key


def test_matched_train_views_share_transforms_across_variants(tmp_path):
    config = micro_config(matched_train_views="true", train_views="2", test_views="2")
    builder = build.DATASETS["oscar_demo"](data_dir=str(tmp_path), config=config)
    items, maker = builder.work_items(None), builder.make_maker()
    for split, matched in (("train", True), ("test", False)):
        views = {}
        for item in items[split]:
            name, variant, view = item.key.split("/")
            if view != "0":
                image, _, description, _ = maker.view_of(item)
                views[name, variant, view] = image, description
        pairs = [(views[name, "0", view], edited) for (name, variant, view), edited
                 in views.items() if variant != "0"]
        assert len(pairs) == 3 * 2  # 3 originals per split x 1 manipulated version x 2 views
        for (original, original_how), (edited, edited_how) in pairs:
            assert (original_how == edited_how) == matched, (split, original_how, edited_how)
            if matched:  # the same noise too: most pixels agree, the edit's do not
                agree = np.all(np.abs(original.astype(int) - edited.astype(int)) <= 8, axis=-1)
                assert 0.5 < agree.mean() < 1.0


def test_edit_of_replays_the_stored_manipulated_version(tmp_path):
    builder = build.DATASETS["oscar_demo"](data_dir=str(tmp_path), config=micro_config())
    maker = builder.make_maker()
    manipulated = [item for item in builder.work_items(None)["train"]
                   if item.spec["variant"] > 0 and item.spec["view"] == 0]
    assert manipulated
    for item in manipulated:
        edit = maker.edit_of(item.spec)
        assert edit.description.split("(")[0] in manipulations.MANIPULATIONS
        np.testing.assert_array_equal(maker.view_of(item)[0], edit.image)
        assert edit.changed.any()


def test_extra_train_scenes_leave_the_held_out_records_as_they_are(tmp_path, micro_build):
    result = build.build("oscar_demo", data_dir=str(tmp_path),
                         config=micro_config(extra_train_scenes="2"), verbose=False)
    more, base = read_records(result.builder.data_dir), read_records(micro_build.builder.data_dir)
    held_out = {k: r for k, r in base.items() if r["split"] != "train"}
    assert held_out and set(held_out) <= set(more)
    assert_same_records({k: more[k] for k in held_out}, held_out)
    added = {k for k in set(more) - set(base)}
    assert {more[k]["split"] for k in added} == {"train"}
    assert {k.split("/")[0] for k in added} == {"scene0002", "scene0003"}  # after the 2 scenes
    assert len(added) == 2 * 2 * 2  # 2 scenes x (original + 1 edit) x 2 views


def test_photo_dir_replaces_the_sample_photos(tmp_path):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for name, target in (("astronaut", "a.png"), ("coffee", "trip/b.png"),
                         ("chelsea", "trip/c.png")):
        shutil.copy(oscar_demo.photo_paths()[name], photos / target)
    (photos / "notes.txt").write_text("not a photo")
    config = micro_config(photo_dir=str(photos), max_photos="0", num_scenes="0")
    builder = build.DATASETS["oscar_demo"](data_dir=str(tmp_path / "data"), config=config)
    originals = builder.originals()
    assert sorted({o["group"] for o in originals}) == ["a", "trip-b", "trip-c"]
    assert {o["path"] for o in originals} == {str(photos / p) for p in
                                              ("a.png", "trip/b.png", "trip/c.png")}
    assert {o["split"] for o in originals} == {"train", "test"}
    # Two files that would give one name, or too few photos, are refused.
    shutil.copy(photos / "a.png", photos / "trip-b.png")
    with pytest.raises(ValueError, match="both give the photo name 'trip-b'"):
        oscar_demo.photo_paths(str(photos))
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(photos / "a.png", single / "a.png")
    with pytest.raises(FileNotFoundError, match="holds 1 image files"):
        oscar_demo.photo_paths(str(single))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        oscar_demo.photo_paths(str(single / "a.png"))


def _chunk_count(data_dir: str) -> int:
    return sum(name.startswith("chunk-") for _, _, files in os.walk(data_dir) for name in files)


@pytest.mark.parametrize("beam", [False, True], ids=["in_process", "beam"])
def test_a_split_whose_every_input_fails_is_one_clear_error(tmp_path, beam):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["a", "b", "c"]
    held_out = oscar_demo._held_out(names, float(MICRO["test_fraction"]), 0)
    for name, sample in zip(names, ("astronaut", "coffee", "chelsea"), strict=True):
        data = open(oscar_demo.photo_paths()[sample], "rb").read()
        (photos / f"{name}.png").write_bytes(data[:500] if name in held_out else data)
    config = micro_config(photo_dir=str(photos), max_photos="0", num_scenes="0")
    with pytest.raises(ValueError, match=r"all \d+ inputs of oscar_demo/test failed, so it "
                                         r"would be empty: .*, e.g. .*photos/[abc].png"):
        build.build("oscar_demo", data_dir=str(tmp_path / "data"), config=config,
                    beam=beam, verbose=False)


def test_killed_build_resumes_to_identical_records(tmp_path, micro_build):
    data_dir = str(tmp_path / "killed")
    command = [sys.executable, "-m", "preprocessing.build", "--dataset", "oscar_demo",
               "--config", "tiny", "--config_name", "micro", "--workers", "0",
               "--data_dir", data_dir] + [f"--set={k}={v}" for k, v in MICRO.items()]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _chunk_count(data_dir) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the build finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < _chunk_count(data_dir) < 6
    assert not os.path.isdir(os.path.join(data_dir, "oscar_demo", "micro", DEMO_VERSION))

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "outcome log" in resumed.stdout
    path = os.path.join(data_dir, "oscar_demo", "micro", DEMO_VERSION)
    assert_same_records(read_records(path), read_records(micro_build.builder.data_dir))
    with open(os.path.join(data_dir, "_work", "oscar_demo", "micro", DEMO_VERSION,
                           "outcomes.jsonl")) as f:
        keys = [json.loads(line)["key"] for line in f]
    assert len(keys) == len(set(keys)) == micro_build.summary["totals"]["inputs"]


def test_beam_pipeline_makes_the_same_records(tmp_path, micro_build):
    result = build.build("oscar_demo", data_dir=str(tmp_path), config=micro_config(), beam=True,
                         verbose=False)
    assert result.summary["totals"] == micro_build.summary["totals"]
    assert_same_records(read_records(result.builder.data_dir),
                        read_records(micro_build.builder.data_dir))


def test_worker_processes_make_the_same_records(tmp_path, micro_build):
    result = build.build("oscar_demo", data_dir=str(tmp_path), config=micro_config(), workers=2,
                         verbose=False)
    assert_same_records(read_records(result.builder.data_dir),
                        read_records(micro_build.builder.data_dir))


def test_changed_config_gets_its_own_name_and_unknown_fields_are_refused():
    assert build.make_config("oscar_demo", "tiny").name == "tiny"
    changed = build.make_config("oscar_demo", "tiny", overrides={"variants": "3"})
    assert changed.name.startswith("tiny-") and changed.variants == 3
    with pytest.raises(ValueError, match="no field 'nope'"):
        build.make_config("oscar_demo", "tiny", overrides={"nope": "1"})
    with pytest.raises(ValueError, match="unknown dataset"):
        build.make_config("imagenet")


def test_cli_explains_a_missing_psbattles_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "preprocessing.build", "--dataset", "psbattles24k",
         "--data_dir", str(tmp_path), "--manual_dir", str(tmp_path / "nowhere"), "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "originals.tsv" in result.stderr and "manual" in result.stderr


# ---- PS-Battles on a generated fixture ---------------------------------------------------

def write_psbattles_fixture(root) -> dict:
    """A small PS-Battles tree in the public layout, with a missing and a corrupt file."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "originals")
    originals, photoshops = [], []
    for index in range(8):
        original_id = f"o{index:02d}"
        scene = generate_scene(rng, height=96, width=128)
        (root / "originals" / f"{original_id}.jpg").write_bytes(encode_jpeg(scene.image, 95))
        originals.append({"id": original_id, "end": "jpg", "score": "1"})
        os.makedirs(root / "photoshops" / original_id)
        for k in range(3):
            shop_id = f"{original_id}p{k}"
            if k == 2:  # one very different image: the distance filter must drop it
                image = generate_scene(rng, height=96, width=128).image
            else:
                image = random_manipulation(scene.image, rng, masks=scene.masks).image
            (root / "photoshops" / original_id / f"{shop_id}.png").write_bytes(
                encode_jpeg(image, 95))
            photoshops.append({"id": shop_id, "original": original_id, "end": "png"})
    photoshops.append({"id": "o00missing", "original": "o00", "end": "jpg"})  # listed, absent
    (root / "photoshops" / "o01" / "o01corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    photoshops.append({"id": "o01corrupt", "original": "o01", "end": "jpg"})
    photoshops.append({"id": "orphan", "original": "o99", "end": "jpg"})  # original not listed
    for name, rows in (("originals.tsv", originals), ("photoshops.tsv", photoshops)):
        with open(root / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["url"], delimiter="\t",
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return {"originals": originals, "photoshops": photoshops}


@pytest.fixture(scope="module")
def psbattles(tmp_path_factory):
    root = tmp_path_factory.mktemp("psbattles")
    listing = write_psbattles_fixture(root)
    config = psbattles24k.PSBattlesConfig(
        name="fixture", max_objects=4, crop_size=32, global_size=64, tau=None,
        test_fraction=0.25, validation_fraction=0.2, train_views=1, test_views=2,
        single_views=1)
    result = build.build("psbattles24k", data_dir=str(tmp_path_factory.mktemp("data")),
                         config=config, manual_dir=str(root), verbose=False)
    return listing, result


def test_psbattles_every_listed_input_has_an_outcome(psbattles):
    listing, result = psbattles
    outcomes = result.builder.outcomes()
    by_key = {o.key: o for o in outcomes}
    assert len(by_key) == len(outcomes)
    record_sources = {o.source for o in outcomes if o.status == "ok"}
    for shop in listing["photoshops"]:
        key = f"photoshops/{shop['original']}/{shop['id']}"
        used = any(s.endswith(f"{shop['id']}.{shop['end']}") for s in record_sources)
        assert used != (key in by_key), key  # either in records or dropped, never both
    assert by_key["photoshops/o00/o00missing"].status == "error"
    assert "not found" in by_key["photoshops/o00/o00missing"].reason
    assert by_key["photoshops/o01/o01corrupt"].status == "error"
    assert by_key["photoshops/o99/orphan"].status == "error"
    assert "not listed" in by_key["photoshops/o99/orphan"].reason
    filtered = [o for o in outcomes if "tau" in o.reason]
    assert filtered and all(o.status == "skipped" for o in filtered)
    assert result.summary["totals"]["inputs"] == len(outcomes)


def test_psbattles_splits_are_disjoint_by_original(psbattles):
    _, result = psbattles
    records = read_records(result.builder.data_dir)
    splits_of = {}
    for record in records.values():
        split = record["split"].replace("_seen", "").replace("_unseen", "")
        splits_of.setdefault(int(record["identity"]), set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {"train", "validation", "test", "test_seen", "test_unseen"} <= set(
        result.summary["records"])
    seen = {transforms.parse_description(str(r["transforms"]))[0].name
            for r in records.values() if r["split"] == "test_seen"}
    unseen = {transforms.parse_description(str(r["transforms"]))[0].name
              for r in records.values() if r["split"] == "test_unseen"}
    assert seen == set(transforms.SEEN_SINGLE) and unseen == set(transforms.UNSEEN)
    test_originals = [r for r in records.values() if r["split"] == "test" and r["variant"] == 0]
    assert len(test_originals) == 3 * len({int(r["identity"]) for r in test_originals})


def test_pixel_feature_distance_ranks_edits_below_other_images():
    rng = np.random.default_rng(1)
    scene = generate_scene(rng, height=96, width=128)
    edited = random_manipulation(scene.image, rng, masks=scene.masks).image
    other = generate_scene(rng, height=96, width=128).image
    f = psbattles24k.pixel_features
    assert np.linalg.norm(f(scene.image) - f(edited)) < np.linalg.norm(f(scene.image) - f(other))


# ---- distractors ---------------------------------------------------------------------------

def test_distractors_give_every_file_one_outcome(tmp_path):
    from tests.bad_images import write_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected = write_corpus(str(corpus))
    (corpus / "notes.txt").write_text("not an image")
    config = build.make_config("distractors", overrides={"max_objects": "2", "crop_size": "32",
                                                         "global_size": "32"},
                               input_path=str(corpus))
    result = build.build("distractors", data_dir=str(tmp_path / "data"), config=config,
                         verbose=False)
    outcomes = {o.key: o for o in result.builder.outcomes()}
    files = sorted(os.listdir(corpus))
    assert sorted(outcomes) == files
    assert outcomes["notes.txt"].status == "skipped"
    for name, want in expected.items():
        if name not in outcomes:
            continue  # listed-but-absent entries of the corpus are not files in the folder
        assert outcomes[name].status == ("ok" if want.ok else "error"), (name, outcomes[name])
    records = read_records(result.builder.data_dir)
    assert len(records) == result.summary["totals"]["ok"]
    assert all(r["identity"] < 0 for r in records.values())
    assert base.summarize(list(outcomes.values()))["totals"]["inputs"] == len(files)


def test_exported_views_come_back_through_coco_json(tmp_path, micro_build):
    from pycocotools import mask as mask_utils

    from preprocessing.images import decode_image

    views = tmp_path / "views"
    summary = build.export_views("oscar_demo", str(views), data_dir=str(tmp_path),
                                 config=micro_config())
    assert summary["totals"]["ok"] == micro_build.summary["totals"]["ok"]
    # What a detector run elsewhere would return: one object, the centre quarter of each view.
    results = {}
    for path in sorted(views.rglob("*.png")):
        height, width = decode_image(path).shape[:2]
        mask = np.zeros((height, width), np.uint8, order="F")
        top, left = height // 4, width // 4
        mask[top : top + height // 2, left : left + width // 2] = 1
        rle = mask_utils.encode(mask)
        rle["counts"] = rle["counts"].decode()
        box = [left, top, width // 2, height // 2]
        results[str(path.relative_to(views))] = [
            {"bbox": box, "score": 0.9, "category_id": 1, "segmentation": rle}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert len(results) == summary["totals"]["ok"]

    config = build.make_config("oscar_demo", "tiny", overrides={**MICRO, "detector": "coco_json"},
                               detector_options={"path": str(tmp_path / "results.json")},
                               config_name="micro-coco")
    result = build.build("oscar_demo", data_dir=str(tmp_path / "data"), config=config,
                         verbose=False)
    assert result.summary["totals"]["error"] == 0, result.summary["reasons"]
    for record in read_records(result.builder.data_dir).values():
        assert record["node_mask"].sum() == 2  # the imported object and the background
        np.testing.assert_allclose(record["geometry"][0][:4], [0.5, 0.5, 0.5, 0.5], atol=0.03)


# ---- Beam runners --------------------------------------------------------------------------

def test_beam_worker_processes_make_the_same_records(tmp_path):
    """The DirectRunner in multi-processing mode (SDK workers in their own processes) writes
    the records the in-process pipeline writes, every feature of every record."""
    import psutil

    workers, done = set(), threading.Event()

    def watch():  # the SDK worker processes the DirectRunner starts
        while not done.wait(0.2):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    # The Python processes themselves, not the shells that start them.
                    if "apache_beam.runners.worker.sdk_worker_main" in child.cmdline():
                        workers.add(child.pid)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        spread = build.build("oscar_demo", data_dir=str(tmp_path / "processes"), config="tiny",
                             beam=True, beam_workers=2, verbose=False)
    finally:
        done.set()
        watcher.join()
    assert len(workers) >= 2, workers
    single = build.build("oscar_demo", data_dir=str(tmp_path / "in_process"), config="tiny",
                         beam=True, verbose=False)
    assert spread.summary["totals"] == single.summary["totals"]
    assert spread.summary["totals"]["error"] == 0, spread.summary["reasons"]
    records = read_records(spread.builder.data_dir)
    assert len(records) == spread.summary["totals"]["ok"] > 0
    assert_same_records(records, read_records(single.builder.data_dir))


def test_beam_runner_and_options_reach_the_pipeline(monkeypatch, tmp_path):
    runner, options = build.beam_pipeline("FlinkRunner", ["flink_master=host:8081",
                                                          "--environment_type=LOOPBACK"])
    assert type(runner).__name__ == "FlinkRunner"
    chosen = options.get_all_options()
    assert chosen["flink_master"] == "host:8081" and chosen["environment_type"] == "LOOPBACK"
    runner, options = build.beam_pipeline(None, ["save_main_session"], workers=3)
    chosen = options.get_all_options()
    assert type(runner).__name__.endswith("DirectRunner") and chosen["save_main_session"]
    assert (chosen["direct_num_workers"], chosen["direct_running_mode"]) == (
        3, "multi_processing")
    with pytest.raises(ValueError, match="Unexpected pipeline runner"):
        build.beam_pipeline("NoSuchRunner")
    with pytest.raises(ValueError, match="DirectRunner setting"):
        build.beam_pipeline("SparkRunner", workers=2)

    class Captured(Exception):
        pass

    seen = {}

    def capture(self, *, download_config):
        seen["config"] = download_config
        raise Captured  # stop before any work

    monkeypatch.setattr(base.SceneGraphBuilder, "download_and_prepare", capture)
    with pytest.raises(Captured):
        build.build("oscar_demo", data_dir=str(tmp_path), config=micro_config(),
                    beam_runner="SparkRunner", beam_options=["spark_master_url=spark://h:7077"],
                    verbose=False)
    assert type(seen["config"].beam_runner).__name__ == "SparkRunner"
    assert seen["config"].beam_options.get_all_options()["spark_master_url"] == "spark://h:7077"


def test_cli_runs_a_beam_runner_given_by_name(tmp_path, micro_build):
    command = [sys.executable, "-m", "preprocessing.build", "--dataset", "oscar_demo",
               "--config", "tiny", "--config_name", "micro", "--workers", "0",
               "--data_dir", str(tmp_path)] + [f"--set={k}={v}" for k, v in MICRO.items()]
    result = subprocess.run(command + ["--beam_runner", "DirectRunner", "--beam_option",
                                       "direct_running_mode=in_memory"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "outcome log" in result.stdout
    path = os.path.join(str(tmp_path), "oscar_demo", "micro", DEMO_VERSION)
    assert_same_records(read_records(path), read_records(micro_build.builder.data_dir))
    wrong = subprocess.run(command + ["--beam_runner", "NoSuchRunner"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "Unexpected pipeline runner" in wrong.stderr
