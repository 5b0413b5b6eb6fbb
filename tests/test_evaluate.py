"""Hashing images with a trained workdir (`oscar hash`) and the benchmarks (`oscar evaluate`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from oscar_jax import input_pipeline
from oscar_jax.evaluation import benchmarks, codesets, metrics, plots
from oscar_jax.evaluation.report import evaluate, format_table
from oscar_jax.inference import baselines
from oscar_jax.inference.codes import hamming_distance
from oscar_jax.inference.hasher import load_hasher
from oscar_jax.inference.records import ImageRecordMaker
from oscar_jax.workdir import RECORDS_JSON, load_config
from preprocessing.datasets import oscar_demo
from preprocessing.images import decode_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tiny_trained):
    """(workdir, records folder): the shared tiny demo records and tiny model."""
    return tiny_trained[:2]


def test_file_hash_equals_the_code_of_its_record(trained):
    """The query path (decode, shrink, detector, scene graph, JPEG round trip) rebuilds the
    record the builder stored, so a test original's file gets the code of its record."""
    workdir, records = trained
    hasher = load_hasher(workdir)
    assert os.path.exists(os.path.join(workdir, RECORDS_JSON))
    batch = next(input_pipeline.read_split(records, "test", batch_size=1000))
    photos = oscar_demo.photo_paths()
    chosen = [i for i, key in enumerate(batch["key"])
              if key.endswith("/0/0") and key.split("/")[0] in photos]
    assert chosen, "the tiny test split has a full-size photo original"
    paths = [photos[batch["key"][i].split("/")[0]] for i in chosen]
    result = hasher.hash_paths(paths, progress=False)
    expected = hasher.hash_records({k: v[chosen] for k, v in batch.items()})
    assert result.codes.shape == (len(paths), hasher.code_bytes) == (len(paths), 2)
    assert result.codes.dtype == np.uint8
    np.testing.assert_array_equal(result.codes, expected)
    # A different image gets a different code, and in-memory pixels equal the file.
    pixels = decode_image(paths[0])
    np.testing.assert_array_equal(hasher.hash_arrays([pixels]), expected[:1])


def test_cli_keeps_going_past_bad_images(trained, tmp_path):
    workdir, _ = trained
    good = [oscar_demo.photo_paths()[n] for n in ("astronaut", "coffee")]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    inputs = [good[0], str(empty), good[1], str(text)]
    out = tmp_path / "codes.npy"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [sys.executable, "-m", "oscar_jax.hash", "--workdir", workdir, "--out", str(out),
         "--format", "hex", "--workers", "2"],
        input="\n".join(inputs) + "\n", cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"{empty}: " in run.stderr and f"{text}: " in run.stderr
    assert "2 of 4 images could not be hashed" in run.stderr
    codes = np.load(out)
    assert codes.shape == (2, load_config(workdir).model.code_bits // 8)
    assert (tmp_path / "codes.paths.txt").read_text().split("\n")[:2] == good
    lines = [line.split("\t") for line in run.stdout.strip().split("\n")]
    assert [path for _, path in lines] == good
    assert [bytes.fromhex(code) for code, _ in lines] == [c.tobytes() for c in codes]


def test_baseline_method_needs_no_workdir(tmp_path):
    path = oscar_demo.photo_paths()["chelsea"]
    hasher = load_hasher(None, "phash")
    result = hasher.hash_paths([path, str(tmp_path / "missing.jpg")], progress=False)
    assert result.paths == [path] and result.failures[0][1] == "file not found"
    np.testing.assert_array_equal(result.codes,
                                  baselines.hash_images("phash", [decode_image(path)]))
    with pytest.raises(ValueError, match="unknown method 'sha1'"):
        load_hasher(None, "sha1")
    with pytest.raises(ValueError, match="needs the --workdir"):
        load_hasher(None, "oscar")


def test_oracle_records_cannot_hash_new_images(trained, tmp_path):
    with pytest.raises(ValueError, match="cannot run on new images"):
        ImageRecordMaker({"detector": "oracle"})
    # A model trained on oracle records is evaluated on its records (the diagnostic that tells
    # a detector failure from a model failure) and refuses new images with the same message.
    workdir, records = trained
    oracle = shutil.copytree(workdir, tmp_path / "oracle_run")
    settings = json.loads((oracle / RECORDS_JSON).read_text())
    (oracle / RECORDS_JSON).write_text(json.dumps({**settings, "detector": "oracle"}))
    hasher = load_hasher(str(oracle))
    batch = next(input_pipeline.read_split(records, "test", batch_size=1000))
    np.testing.assert_array_equal(hasher.hash_records(batch),
                                  load_hasher(workdir).hash_records(batch))
    photo = oscar_demo.photo_paths()["coffee"]
    for refused in (lambda: hasher.hash_paths([photo], progress=False),
                    lambda: hasher.hash_arrays([decode_image(photo)])):
        with pytest.raises(ValueError, match="'oracle' detector.* cannot run on new images"):
            refused()


def synthetic_codeset(codes: dict[str, np.ndarray], identities: int, views: int,
                      manipulated: int) -> codesets.CodeSet:
    identity, variant, view = [], [], []
    for i in range(identities):
        for v in range(manipulated + 1):
            for w in range(views + 1):
                identity.append(i), variant.append(v), view.append(w)
    n = len(identity)
    for name, c in codes.items():
        assert len(c) == n, name
    return codesets.CodeSet(codes, np.asarray(identity), np.asarray(variant), np.asarray(view),
                            np.asarray([""] * n))


def test_benchmarks_of_a_perfect_and_of_a_constant_hash():
    """A code that ignores benign views and flips under manipulation scores 1 on Benchmark I
    and R@1 = R@1-bar = 1 (FR1 = 1/2, eq. 13's maximum); a constant code ties everywhere,
    and ties go against the method: every score is 0."""
    rng = np.random.default_rng(0)
    identities, views, manipulated = 5, 3, 2
    base = rng.integers(0, 256, (identities, 8), dtype=np.uint8)
    perfect = []
    for i in range(identities):
        for v in range(manipulated + 1):
            code = base[i] if v == 0 else base[i] ^ rng.integers(0, 256, 8, dtype=np.uint8)
            perfect += [code] * (views + 1)
    n = len(perfect)
    records = synthetic_codeset({"perfect": np.asarray(perfect),
                                 "constant": np.zeros((n, 8), np.uint8)},
                                identities, views, manipulated)
    roles = codesets.Roles.of(records)
    assert len(roles.originals) == identities
    assert len(roles.benign) == identities * views
    assert len(roles.manipulated) == identities * manipulated * (views + 1)
    distractors = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    counts = [0, 25, 50]

    one = benchmarks.benchmark_one(records, roles, "perfect", distractors, counts)
    two = benchmarks.benchmark_two(records, roles, "perfect", distractors, counts)
    assert [s["mmAP"] for s in one] == [1.0, 1.0, 1.0]
    assert two[-1]["R@1"] == 1.0 and two[-1]["R@1_bar"] == 1.0 and two[-1]["FR1"] == 0.5

    one = benchmarks.benchmark_one(records, roles, "constant", distractors, counts)
    two = benchmarks.benchmark_two(records, roles, "constant", distractors, counts)
    assert all(s["mmAP"] == 0.0 for s in one)
    assert two[0]["R@1"] == 0.0 and two[0]["R@1_bar"] == 0.0 and two[0]["FR1"] == 0.0


def test_histogram_benchmarks_equal_the_full_distance_matrix():
    """The evaluator labels only each query's own records and counts the rest by histogram;
    the scores equal metrics on the full query x database matrix (few bits: many ties)."""
    rng = np.random.default_rng(1)
    identities, views, manipulated = 6, 3, 2
    n = identities * (manipulated + 1) * (views + 1)
    codes = rng.integers(0, 256, (n, 1), dtype=np.uint8) & 0b111  # 3 bits vary
    records = synthetic_codeset({"m": codes}, identities, views, manipulated)
    roles = codesets.Roles.of(records)
    distractors = rng.integers(0, 8, (40, 1), dtype=np.uint8)
    ident = records.identity

    one = benchmarks.benchmark_one(records, roles, "m", distractors, [0, 40])
    database = np.concatenate([roles.benign, roles.manipulated])
    distance = hamming_distance(codes[roles.originals], codes[database])
    same = ident[roles.originals][:, None] == ident[database][None, :]
    relevant = same & (records.variant[database] == 0)
    expected = metrics.benchmark_one_scores(distance, relevant, same & ~relevant)
    assert one[0] == pytest.approx(expected)
    full = hamming_distance(codes[roles.originals], np.concatenate([codes[database], distractors]))
    pad = np.zeros((len(roles.originals), len(distractors)), bool)
    expected = metrics.benchmark_one_scores(full, np.hstack([relevant, pad]),
                                     np.hstack([same & ~relevant, pad]))
    assert one[1] == pytest.approx(expected)

    two = benchmarks.benchmark_two(records, roles, "m", distractors, [40])[0]
    originals = np.concatenate([codes[roles.originals], distractors])
    column = {int(i): c for c, i in enumerate(ident[roles.originals])}
    expected = metrics.benchmark_two_scores(
        hamming_distance(codes[roles.benign], originals),
        np.asarray([column[int(i)] for i in ident[roles.benign]]),
        hamming_distance(codes[roles.manipulated], originals),
        np.asarray([column[int(i)] for i in ident[roles.manipulated]]))
    assert two == pytest.approx(expected)


def test_roles_need_originals_views_and_manipulations():
    records = synthetic_codeset({"m": np.zeros((4, 8), np.uint8)}, 2, 1, 0)
    with pytest.raises(ValueError, match="manipulated versions"):
        codesets.Roles.of(records)


def test_distractor_counts_and_transform_names():
    assert benchmarks.distractor_counts(0, 4) == [0]
    assert benchmarks.distractor_counts(10, 4) == [0, 2, 5, 8, 10]
    assert codesets.transform_name("gaussian_blur(sigma=1.5)") == "gaussian_blur"
    assert codesets.transform_name("") == "none"


def test_evaluate_writes_the_report_tables_and_plots(trained, tmp_path):
    workdir, records = trained
    # --compare takes more trained workdirs (ablations, code lengths): here the same run
    # again, which must score exactly as the main model.
    report = evaluate(workdir=workdir, compare=[workdir],
                               methods=["oscar", "phash", "pdq"], distractors="train",
                               distractor_steps=2, out=str(tmp_path))
    compared = report["methods"].pop(os.path.basename(workdir))
    assert compared["benchmark_one"] == report["methods"]["oscar"]["benchmark_one"]
    assert compared["robustness"] == report["methods"]["oscar"]["robustness"]
    train_size = len(input_pipeline.open_source(records, "train"))
    assert report["distractor_counts"] == [0, round(train_size / 2), train_size]
    assert set(report["methods"]) == {"oscar", "phash", "pdq"}
    assert report["methods"]["pdq"]["bits"] == 256
    for method in report["methods"].values():
        for key, value in (*method["benchmark_one"].items(),
                           *method["benchmark_two"].items()):
            if not key.endswith("queries"):
                assert 0.0 <= value <= 1.0, key
        assert len(method["scalability"]["FR1"]) == 3
        seen = method["robustness"]["seen"]
        assert {"compress", "rotate", "padding", "mixed"} <= set(seen)
        assert {"shot_noise", "pixelate"} <= set(method["robustness"]["unseen"])
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["methods"]["oscar"]["workdir"] == workdir
    markdown = (tmp_path / "report.md").read_text()
    assert "| oscar | 16 |" in markdown and "Tables 4 and 5" in markdown
    assert "FR1 per unseen transform" in markdown
    # Table 6: every method's verdicts on the measured half add up to its queries.
    for method in report["methods"].values():
        study = method["attribution"]
        assert 0.0 <= study["FPR"] <= 1.0 and 0.0 <= study["FNR"] <= 1.0
        for kind in ("benign", "manipulated"):
            assert sum(study["verdicts"][kind].values()) == study["queries"][kind]
        assert study["thresholds"]["min_inliers"] >= 8
    assert "## Attribution (Table 6)" in markdown and "| oscar | " in markdown
    for plot in ("scalability.png", "robustness.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert "I: mmAP" in format_table(report)


def test_distractors_must_be_unrelated(trained, tmp_path):
    workdir, _ = trained
    with pytest.raises(ValueError, match="distractors must be unrelated"):
        evaluate(workdir=workdir, methods=["ahash"], distractors="test_seen",
                          out=str(tmp_path), plots=False)


def test_code_length_plot_from_models_of_several_lengths(tmp_path):
    def method(bits, mmap, fr1):
        return {"bits": bits, "workdir": f"runs/bits{bits}", "robustness": {},
                "benchmark_one": {"mmAP": mmap}, "benchmark_two": {"FR1": fr1}}

    report = {"distractor_counts": [0], "methods": {
        "bits32": method(32, 0.5, 0.30), "bits64": method(64, 0.6, 0.33),
        "phash": {**method(64, 0.2, 0.1), "workdir": None}}}
    assert [p[1] for p in plots.code_length_points(report)] == [32, 64]
    assert plots.write_plots(report, str(tmp_path)) == ["code_length.png"]
    assert (tmp_path / "code_length.png").stat().st_size > 1000


def test_distractors_made_with_other_settings_are_refused(trained, tmp_path):
    workdir, records = trained
    other = tmp_path / "distractors"
    shutil.copytree(records, other)
    metadata = json.loads((other / "metadata.json").read_text())
    metadata["config"]["crop_size"], metadata["config"]["max_objects"] = 224, 16
    (other / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError) as error:
        evaluate(workdir=workdir, methods=["ahash"], distractors=f"{other}:train",
                 out=str(tmp_path), plots=False)
    message = str(error.value)
    assert "crop_size 224 (evaluated records: " in message
    assert "max_objects 16" in message and "Rebuild" in message
    # The same folder with the evaluated settings is accepted.
    shutil.copy(os.path.join(records, "metadata.json"), other / "metadata.json")
    assert codesets.resolve_distractors(f"{other}:train", records) == (str(other), "train")


def test_records_made_otherwise_than_the_model_was_trained_on_are_refused(trained, tmp_path):
    workdir, records = trained
    other = tmp_path / "records"
    shutil.copytree(records, other)
    metadata = json.loads((other / "metadata.json").read_text())
    trained_on = metadata["config"]["crop_size"]
    metadata["config"]["crop_size"] = 2 * trained_on
    (other / "metadata.json").write_text(json.dumps(metadata))
    for run in (lambda: benchmarks.separation_study(workdir, "test", str(other)),
                lambda: evaluate(workdir=workdir, records=str(other), out=str(tmp_path),
                                 plots=False, attribution=False)):
        with pytest.raises(ValueError, match=rf"crop_size {2 * trained_on} \(trained on: "
                                             rf"{trained_on}\).*--set crop_size={trained_on}"):
            run()
    # A copy made the same way is measured like the records themselves.
    shutil.copy(os.path.join(records, "metadata.json"), other / "metadata.json")
    result = benchmarks.separation_study(workdir, "test", str(other))
    assert result["records_dir"] == str(other)
    assert result["methods"]["oscar"] == benchmarks.separation_study(workdir)["methods"]["oscar"]


def test_records_in_another_layout_than_the_model_are_refused(trained, tmp_path):
    """A model trained on canonical-layout records measured on records as drawn (or the
    reverse) would be scored on views its own query path never makes."""
    workdir, records = trained
    other = tmp_path / "records"
    shutil.copytree(records, other)
    metadata = json.loads((other / "metadata.json").read_text())
    assert not metadata["config"].get("canonical_layout")
    metadata["config"]["canonical_layout"] = True
    (other / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"canonical_layout True \(trained on: False\).*"
                                         r"--set canonical_layout=false"):
        benchmarks.separation_study(workdir, "test", str(other))
    # Records made before the field existed were made without it: the same as False.
    del metadata["config"]["canonical_layout"]
    (other / "metadata.json").write_text(json.dumps(metadata))
    assert benchmarks.separation_study(workdir, "test", str(other))["records_dir"] == str(other)


def test_query_record_equals_the_stored_record_field_by_field(trained):
    """For every full-size photo original of the records (at least two), the query path's
    record equals the builder's stored record in each model field, and different photos get
    different codes."""
    workdir, records = trained
    maker = ImageRecordMaker(json.load(open(os.path.join(workdir, RECORDS_JSON))))
    photos = oscar_demo.photo_paths()
    stored = {}
    for split in ("train", "test"):
        batch = next(input_pipeline.read_split(records, split, batch_size=1000))
        for i, key in enumerate(batch["key"]):
            if key.endswith("/0/0") and key.split("/")[0] in photos:
                stored[key.split("/")[0]] = {k: v[i] for k, v in batch.items()}
    assert len(stored) >= 2, f"the tiny records hold two full-size photos: {sorted(stored)}"
    for name, record in stored.items():
        rebuilt = maker.record(photos[name])
        for field in input_pipeline.MODEL_FIELDS:
            np.testing.assert_array_equal(rebuilt[field], record[field],
                                          err_msg=f"{name}: field {field}")
    codes = load_hasher(workdir).hash_records(
        {k: np.stack([r[k] for r in stored.values()]) for k in input_pipeline.MODEL_FIELDS})
    assert len({bytes(c) for c in codes}) == len(stored), "different photos, different codes"


def test_seed_spread_and_the_comparison_beside_it():
    from oscar_jax.evaluation.report import format_comparison, headline, seed_spread

    def report(mmap, fpr, fnr, phash_mmap=0.15):
        return {"methods": {
            "oscar": {"workdir": "runs/demo", "benchmark_one": {"mmAP": mmap},
                      "benchmark_two": {"R@1_bar": 0.3},
                      "separation": {"separation": 0.6},
                      "attribution": {"FPR": fpr, "FNR": fnr}},
            "phash": {"workdir": None, "benchmark_one": {"mmAP": phash_mmap},
                      "benchmark_two": {"R@1_bar": 0.49},
                      "separation": {"separation": 0.49},
                      "attribution": {"FPR": 0.1, "FNR": 0.8}},
            "pdq": {"workdir": None, "benchmark_one": {"mmAP": 0.25},
                    "benchmark_two": {"R@1_bar": 0.39},
                    "separation": {"separation": 0.48},
                    "attribution": {"FPR": 0.0, "FNR": 0.9}}}}

    assert headline(report(0.1, 0.2, 0.3))["oscar"]["Table 6 FPR+FNR"] == pytest.approx(0.5)
    spread = seed_spread([report(0.1, 0.2, 0.3), report(0.2, 0.2, 0.5), report(0.3, 0.2, 0.4)])
    mmap = spread["oscar"]["I: mmAP"]
    assert mmap["mean"] == pytest.approx(0.2) and mmap["std"] == pytest.approx(0.1)
    assert (mmap["min"], mmap["max"], mmap["runs"]) == (0.1, 0.3, 3)
    assert spread["oscar"]["Table 6 FPR"]["std"] == pytest.approx(0.0, abs=1e-12)
    rows = {line.split(" | ")[0].lstrip("| "): line
            for line in format_comparison(report(0.12, 0.2, 0.3), spread).splitlines()[2:]}
    assert rows["I: mmAP"] == (
        "| I: mmAP | 0.1200 | 0.2000 +- 0.1000 (0.1000-0.3000, 3) | pdq 0.2500 |")
    assert rows["Table 6 FPR"].endswith("| pdq 0.0000 |")  # lower is better
    assert rows["separation"].endswith("| phash 0.4900 |")  # higher is better
    # The share of manipulated queries whose original is not first: higher is better too.
    assert rows["II: R@1-bar"].endswith("| phash 0.4900 |")
    with pytest.raises(ValueError, match="no method 'oscar'"):
        format_comparison({"methods": {}}, spread)


def test_records_made_before_a_builder_field_existed_regenerate_as_they_were_made(tmp_path):
    # The released `default` config now matches train views across variants; records whose
    # metadata predates that field were made unmatched and must be regenerated unmatched.
    from oscar_jax.evaluation.table6 import builder_items

    default = next(c for c in oscar_demo.OscarDemo.BUILDER_CONFIGS if c.name == "default")
    assert default.matched_train_views
    settings = {k: v for k, v in dataclasses.asdict(default).items()
                if k not in ("version", "release_notes", "supported_versions", "tags")}
    for stored, expected in ((None, False), (True, True)):
        records = tmp_path / str(stored) / "oscar_demo" / "default" / "1.1.0"
        records.mkdir(parents=True)
        made = {k: v for k, v in settings.items() if k != "matched_train_views"}
        if stored is not None:
            made["matched_train_views"] = stored
        (records / "metadata.json").write_text(json.dumps({"config": made}))
        _, maker = builder_items(str(records))
        assert maker.config.matched_train_views is expected

