"""The attribution tool: verdicts, calibration, geometric verification, the trusted database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from oscar_jax.attribution import verdicts, verification
from oscar_jax.attribution.database import AttributionError, TrustedDatabase
from oscar_jax.attribution.verdicts import Candidate
from oscar_jax.evaluation import table6
from preprocessing.datasets import oscar_demo
from preprocessing.images import ImageDecodeError, decode_image, encode_jpeg, encode_png
from tests.samples import photo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THRESHOLDS = {"match_distance": 10, "min_inliers": 15}


def benign_copy(image: np.ndarray, mirror: bool = False) -> np.ndarray:
    """Smaller, JPEG-compressed and perhaps mirrored: what redistribution does. (pHash, used
    for the database tests, is not mirror invariant.)"""
    small = cv2.resize(image, (image.shape[1] * 3 // 4, image.shape[0] * 3 // 4),
                       interpolation=cv2.INTER_AREA)
    small = small[:, ::-1] if mirror else small
    return decode_image(encode_jpeg(np.ascontiguousarray(small), quality=70))


# ---- verdicts and thresholds, by hand ----------------------------------------------------------


@pytest.mark.parametrize("candidates, verdict, chosen", [
    ([], "unknown", None),
    ([Candidate(1, 2, 5), Candidate(2, 9, 14)], "unknown", None),  # nothing registers
    ([Candidate(1, 4, 50)], "match", 1),
    ([Candidate(1, 10, 15)], "match", 1),  # both thresholds are inclusive
    ([Candidate(1, 11, 80)], "manipulated", 1),
    # The nearest candidate that registers wins, not the nearest candidate.
    ([Candidate(1, 3, 10), Candidate(2, 12, 40)], "manipulated", 2),
    # Equal distances: the one with more inliers.
    ([Candidate(1, 6, 25), Candidate(2, 6, 90)], "match", 2),
])
def test_decide(candidates, verdict, chosen):
    got, best = verdicts.decide(candidates, THRESHOLDS)
    assert got == verdict
    assert (best.id if best else None) == chosen


def test_early_exit_gives_the_verdict_of_checking_everything():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 11))
        distances = np.sort(rng.integers(0, 16, n))
        inliers = rng.integers(0, 60, n)
        checked = []

        def inliers_of(position, inliers=inliers, checked=checked):
            checked.append(position)
            return int(inliers[position])

        verdict, position = verdicts.verdict_with_early_exit(
            distances, list(range(n)), inliers_of, THRESHOLDS)
        full, best = verdicts.decide(
            [Candidate(i, int(d), int(k))
             for i, (d, k) in enumerate(zip(distances, inliers, strict=True))],
            THRESHOLDS)
        assert verdict == full
        assert position == (best.id if best else None)
        assert checked == sorted(checked)


def test_best_threshold_takes_the_middle_of_the_best_plateau():
    # Accepted values 1..3, rejected 8..9: any t in 3..7 separates them; the middle is 5.
    assert verdicts.best_threshold([1, 2, 3], [8, 9], np.arange(0, 12)) == 5
    # Overlap: t = 4 leaves one error of each kind (1/4 + 1/3); t = 5 leaves 0 + 2/3.
    assert verdicts.best_threshold([1, 2, 3, 5], [4, 6, 7], np.arange(0, 10)) == 3


def test_calibration_separates_the_labelled_pairs():
    benign = [Candidate(0, d, k) for d, k in [(2, 90), (5, 60), (8, 40), (3, 7)]]
    manipulated = [Candidate(0, d, k) for d, k in [(20, 80), (25, 50), (30, 45)]]
    unrelated = [5, 9, 11, 12, 14]
    t = verdicts.calibrate_thresholds(bits=64, benign=benign, manipulated=manipulated,
                                       unrelated_inliers=unrelated, source="by hand")
    # Related inliers >= 40 except one outlier (7), unrelated <= 14: 15..40 all give the
    # least error, and the middle is taken.
    assert 15 <= t["min_inliers"] <= 40 and t["min_inliers"] == 28
    # Among registered pairs benign distances are <= 8, manipulated >= 20: middle of 8..19.
    assert t["match_distance"] == 14
    assert t["calibrated_on"] == "by hand" and t["pairs"]["unrelated"] == 5


# ---- geometric verification -------------------------------------------------------------------


def test_benign_copies_register_and_unrelated_images_do_not():
    original = verification.original_features(photo("astronaut"))
    copy = verification.verify(verification.features(benign_copy(photo("astronaut"), mirror=True)),
                               original)
    rotated = verification.verify(verification.features(np.rot90(photo("astronaut")).copy()),
                                  original)
    unrelated = verification.verify(verification.features(photo("coffee")), original)
    assert copy.mirrored and copy.inliers >= 100
    assert not rotated.mirrored and rotated.inliers >= 100
    assert unrelated.inliers < verdicts.DEFAULT_MIN_INLIERS
    # USAC is seeded: the same pair gives the same answer every time.
    again = verification.verify(verification.features(photo("coffee")), original)
    assert again == unrelated


def test_blank_images_have_no_features():
    blank = verification.features(np.full((64, 64, 3), 128, np.uint8))
    assert len(blank.direct) == 0
    result = verification.verify(blank, verification.original_features(photo("camera")))
    assert result.inliers == 0


# ---- the trusted database (pHash codes: no model needed) ---------------------------------------


@pytest.fixture()
def database(tmp_path):
    db = TrustedDatabase.create(str(tmp_path / "trusted.sqlite"), method="phash",
                                thresholds=THRESHOLDS)
    names = ["astronaut", "chelsea", "rocket", "motorcycle_left"]
    ids = db.add([encode_png(photo(n)) for n in names], names=[f"{n}.png" for n in names],
                 provenance=[{"author": f"author of {n}", "url": f"https://example.org/{n}"}
                             for n in names])
    yield db, dict(zip(names, ids, strict=True))
    db.close()


def test_a_benign_copy_is_matched_with_its_provenance(database):
    db, ids = database
    answer = db.query(encode_jpeg(benign_copy(photo("chelsea")), quality=70), name="c.jpg")
    assert answer["verdict"] == "match", answer
    assert answer["original"]["id"] == ids["chelsea"]
    assert answer["original"]["provenance"]["author"] == "author of chelsea"
    assert answer["original"]["inliers"] >= THRESHOLDS["min_inliers"]
    assert answer["query"]["name"] == "c.jpg" and len(answer["query"]["code"]) == 16
    assert answer["candidates"][0]["id"] == ids["chelsea"]
    json.dumps(answer)  # the answer is JSON as it stands
    image, mime = db.original_image(ids["chelsea"])
    assert mime == "image/png" and decode_image(image).shape == photo("chelsea").shape


def test_a_manipulated_copy_is_flagged_and_an_unrelated_image_is_unknown(database):
    db, ids = database
    edited = photo("astronaut").copy()
    h, w = edited.shape[:2]
    # A salient edit: the lower half replaced by another image's content.
    edited[h // 2:] = cv2.resize(photo("rocket"), (w, h))[h // 2:]
    answer = db.query(edited)
    # pHash moves far under this edit; the untouched upper half still registers.
    assert answer["verdict"] == "manipulated", answer
    assert answer["original"]["id"] == ids["astronaut"]
    assert answer["original"]["distance"] > THRESHOLDS["match_distance"]
    unknown = db.query(photo("coffee"))
    assert unknown["verdict"] == "unknown" and unknown["original"] is None
    assert unknown["candidates"] and all(c["verified"] is False
                                         for c in unknown["candidates"])


def test_bad_input_is_refused_with_a_reason(database):
    db, _ = database
    for bad in (b"", b"not an image at all"):
        with pytest.raises(ImageDecodeError):
            db.query(bad)
    with pytest.raises(KeyError):
        db.original(9999)
    with pytest.raises(AttributionError, match="exists already"):
        TrustedDatabase.create(db.path, method="phash")
    with pytest.raises(AttributionError, match="needs the --workdir"):
        TrustedDatabase.create(db.path + ".new")


def test_adding_twice_keeps_one_entry_and_reopening_uses_or_rebuilds_the_index(database):
    db, ids = database
    again = db.add([encode_png(photo("rocket"))], names=["again.png"])
    assert again == [ids["rocket"]] and len(db) == 4
    db.set_thresholds({**THRESHOLDS, "match_distance": 7})
    path = db.path
    db.close()
    with TrustedDatabase.open(path) as reopened:
        assert len(reopened) == 4 and reopened.thresholds["match_distance"] == 7
        assert reopened.query(photo("rocket"))["original"]["id"] == ids["rocket"]
    with open(path + ".index", "wb") as f:
        f.write(b"garbage")  # a damaged cache is rebuilt from the codes
    with TrustedDatabase.open(path) as reopened:
        assert reopened.query(photo("chelsea"))["original"]["id"] == ids["chelsea"]


def test_originals_added_by_another_process_are_found(database):
    db, _ = database
    with TrustedDatabase.open(db.path) as other:
        [new] = other.add([encode_png(photo("coffee"))], names=["coffee.png"])
    answer = db.query(photo("coffee"))
    assert answer["verdict"] == "match" and answer["original"]["id"] == new


KILLER = textwrap.dedent("""
    import os, signal, sys
    from oscar_jax.attribution.database import TrustedDatabase
    from oscar_jax.inference.hasher import Hasher
    from preprocessing.datasets import oscar_demo

    calls = []
    original = Hasher.hash_arrays
    def hash_then_die(self, images):
        calls.append(1)
        if len(calls) == 3:  # two batches committed, the third is being hashed
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, images)
    Hasher.hash_arrays = hash_then_die
    db = TrustedDatabase.open(sys.argv[1])
    paths = sorted(oscar_demo.photo_paths().values())[:12]
    db.add(paths, batch_size=2)
""")


def test_a_killed_add_leaves_a_consistent_database(database, tmp_path):
    db, _ = database
    path = db.path
    db.close()
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = subprocess.run([sys.executable, str(script), path], cwd=ROOT, capture_output=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    paths = sorted(oscar_demo.photo_paths().values())[:12]
    with TrustedDatabase.open(path) as reopened:
        assert len(reopened) == 4 + 4  # the two committed batches, nothing of the third
        ids = reopened.add(paths, batch_size=5)  # running it again completes the job
        assert len(reopened) == 4 + 12 and len(set(ids)) == 12
        codes = reopened.hasher.hash_arrays([decode_image(p) for p in paths[-2:]])
        distances, found = reopened.search(codes, k=1)
        assert list(found[:, 0]) == ids[-2:] and not distances.any()


def test_command_line_add_query_and_info(tmp_path):
    db = str(tmp_path / "cli.sqlite")
    photos = oscar_demo.photo_paths()
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"source": "newsroom archive", "licence": "CC-BY-4.0"}))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "oscar_jax.attribute", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    added = cli("add", "--db", db, "--method", "phash", "--meta", str(meta), photos["camera"],
                str(bad), photos["moon"])
    assert added.returncode == 1 and f"cannot add {bad}" in added.stderr
    assert "2 originals added" in added.stderr
    query_file = tmp_path / "found.jpg"
    query_file.write_bytes(encode_jpeg(benign_copy(photo("camera")), quality=60))
    queried = cli("query", "--db", db, str(query_file), str(bad), photos["coffee"])
    assert queried.returncode == 1 and f"cannot query {bad}" in queried.stderr
    answers = [json.loads(line) for line in queried.stdout.strip().split("\n")]
    assert [a["query"]["name"] for a in answers] == ["found.jpg", "coffee.png"]
    assert answers[0]["verdict"] == "match"
    assert answers[0]["original"]["provenance"]["licence"] == "CC-BY-4.0"
    assert answers[1]["verdict"] == "unknown"
    info = json.loads(cli("info", "--db", db).stdout)
    assert info["originals"] == 2 and info["method"] == "phash" and info["bits"] == 64
    missing = cli("query", "--db", str(tmp_path / "nothing.sqlite"), str(query_file))
    assert missing.returncode == 2 and "create one with" in missing.stderr


def _flip(code: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    flipped = np.unpackbits(code)
    flipped[rng.choice(len(flipped), bits, replace=False)] ^= 1
    return np.packbits(flipped)


def test_attribution_study_calibrates_on_one_half_and_measures_the_other():
    """Table 6 on a synthetic set: codes of benign copies lie 0-3 bits from their original,
    manipulated ones 16-24 bits; a query registers onto its own original only."""
    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, (40, 8), dtype=np.uint8)
    distractors = rng.integers(0, 256, (30, 8), dtype=np.uint8)
    keys, identity, manipulated, codes = [], [], [], []
    for i, code in enumerate(originals):
        for copy in range(4):
            keys.append(f"{i}/0/{copy + 1}"), identity.append(i), manipulated.append(False)
            codes.append(_flip(code, int(rng.integers(0, 4)), rng))
            keys.append(f"{i}/1/{copy}"), identity.append(i), manipulated.append(True)
            codes.append(_flip(code, int(rng.integers(16, 25)), rng))
    identity = np.asarray(identity)
    data = table6.AttributionSet(
        database_keys=[f"{i}/0/0" for i in range(40)] + [f"d{j}" for j in range(30)],
        database_identity=np.concatenate([np.arange(40), -np.ones(30, int)]),
        query_keys=keys, query_identity=identity, query_manipulated=np.asarray(manipulated),
        calibration=table6.calibration_half(identity), images={})
    asked = []

    def inliers(query_key, original_key):
        asked.append((query_key, original_key))
        return 60 if query_key.split("/")[0] == original_key.split("/")[0] else 4

    study = table6.attribution_study(
        method="synthetic", bits=64, data=data,
        database_codes=np.concatenate([originals, distractors]),
        query_codes=np.stack(codes), pairs=inliers, workers=2)
    t = study["thresholds"]
    assert 3 <= t["match_distance"] < 16 and 5 <= t["min_inliers"] <= 60
    assert study["FPR"] == 0.0 and study["FNR"] == 0.0 and study["flagged"] == 1.0
    measured = int((~data.calibration).sum())
    assert study["queries"]["benign"] + study["queries"]["manipulated"] == measured
    assert 0 < measured < len(keys)
    assert study["verdicts"]["benign"] == {"match": study["queries"]["benign"]}
    assert study["database"] == 70
    # Calibration looked at each calibration query's own original and one other candidate.
    assert any(q.split("/")[0] != o.split("/")[0] for q, o in asked)
