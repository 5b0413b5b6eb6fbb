"""No silent mix-ups: model fingerprints on codes, indexes and databases; inputs that are not
regular files, odd file names and damaged databases; bounded work per server request."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from oscar_jax import attribute, cli, train
from oscar_jax import hash as hash_cli
from oscar_jax import index as index_cli
from oscar_jax.attribution import server
from oscar_jax.attribution.database import AttributionError, TrustedDatabase
from oscar_jax.inference.hasher import load_hasher
from oscar_jax.workdir import load_config
from preprocessing.images import encode_jpeg, encode_png
from tests.samples import photo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def retrained(tiny_trained, tmp_path_factory):
    """(workdir, a copy of it trained one step further): two models of the same config."""
    workdir = tiny_trained[0]
    copy = str(tmp_path_factory.mktemp("retrained") / "run")
    shutil.copytree(workdir, copy)
    config = load_config(copy)
    config.total_steps += 1
    train.train_and_evaluate(config, copy)
    return workdir, copy


def test_fingerprint_is_stable_and_changes_with_the_weights(retrained):
    workdir, copy = retrained
    first, again, other = (load_hasher(w) for w in (workdir, workdir, copy))
    assert first.fingerprint == again.fingerprint and len(first.fingerprint) == 16
    assert other.fingerprint != first.fingerprint
    assert load_hasher(None, "phash").fingerprint.startswith("phash:imagehash=")


def test_a_database_refuses_another_model_and_a_retrained_run(retrained, tmp_path, capsys):
    workdir, copy = retrained
    path = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(path, workdir=workdir) as db:
        db.add([encode_png(photo("coffee", 96))], names=["coffee.png"])
        made_with = db.hasher.fingerprint
    # Another run (the pretraining run, a copy trained further) given at open: refused.
    with pytest.raises(AttributionError, match=f"model {made_with}.*pass --workdir"):
        TrustedDatabase.open(path, workdir=copy)
    # The run the database names is trained further in place: detected at open.
    moved = str(tmp_path / "moved.sqlite")
    shutil.copy(path, moved)
    with sqlite3.connect(moved) as raw:
        raw.execute("UPDATE settings SET value = ? WHERE key = 'workdir'",
                    (json.dumps(os.path.abspath(copy)),))
    with pytest.raises(AttributionError, match="trained further"):
        TrustedDatabase.open(moved)
    # The command line: one line, status 2, nothing stored.
    image = tmp_path / "tea.png"
    image.write_bytes(encode_png(photo("chelsea", 96)))
    assert attribute.main(["add", "--db", path, "--workdir", copy, str(image)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1
    with TrustedDatabase.open(path) as db:
        assert len(db) == 1


def test_codes_files_and_indexes_carry_the_fingerprint(tmp_path, capsys):
    images = []
    for name in ("coffee", "chelsea", "rocket"):
        images.append(str(tmp_path / f"{name}.png"))
        with open(images[-1], "wb") as f:
            f.write(encode_png(photo(name, 64)))
    codes = str(tmp_path / "p.npy")
    assert hash_cli.main(["--method", "phash", "--out", codes, "--workers", "0", *images]) == 0
    meta = json.load(open(str(tmp_path / "p.meta.json")))
    assert meta["fingerprint"] == load_hasher(None, "phash").fingerprint and meta["rows"] == 3
    index = str(tmp_path / "p.faiss")
    assert index_cli.main(["build", "--codes", codes, "--index", index]) == 0
    capsys.readouterr()
    assert index_cli.main(["search", "--index", index, "--codes", codes, "-k", "1"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["query", "rank", "id", "distance", "query_path", "path"]
    assert rows[1][4:] == [images[0], images[0]]  # results name their images
    # Codes that claim another model are refused by search and add, naming both.
    other = str(tmp_path / "d.npy")
    shutil.copy(codes, other)
    shutil.copy(str(tmp_path / "p.paths.txt"), str(tmp_path / "d.paths.txt"))
    json.dump({**meta, "fingerprint": "0123456789abcdef"}, open(str(tmp_path / "d.meta.json"),
                                                                 "w"))
    for command in (["search", "--index", index, "--codes", other, "-k", "1"],
                    ["add", "--index", index, "--codes", other]):
        assert index_cli.main(command) == 2
        err = capsys.readouterr().err
        assert "0123456789abcdef" in err and meta["fingerprint"] in err


def test_hash_keeps_paths_exact_and_refuses_ambiguous_names(tmp_path, capsys, monkeypatch):
    odd = tmp_path / "two\nlines.png"
    spaced = tmp_path / "ends in space .png"
    for path in (odd, spaced):
        path.write_bytes(encode_png(photo("coffee", 48)))
    # stdin: a trailing space is part of the name.
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{spaced}\n"))
    assert hash_cli.main(["--method", "phash", "--workers", "0"]) == 0
    assert capsys.readouterr().out.endswith(f"\t{spaced}\n")
    # A line break cannot go into hex lines or the paths file: reported, the rest hashed.
    assert hash_cli.main(["--method", "phash", "--workers", "0", str(odd), str(spaced)]) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "line break" in err
    # JSON lines hold any name.
    assert hash_cli.main(["--method", "phash", "--workers", "0", "--format", "jsonl",
                          str(odd)]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(odd)


def test_hash_refuses_an_unwritable_output_before_hashing(tmp_path, capsys):
    started = time.monotonic()
    assert hash_cli.main(["--method", "phash", "--out", str(tmp_path / "no" / "x.npy"),
                          str(tmp_path)]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    assert time.monotonic() - started < 5


def test_a_fifo_among_the_inputs_is_reported_not_waited_for(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = tmp_path / "ok.png"
    good.write_bytes(encode_png(photo("coffee", 48)))
    assert hash_cli.main(["--method", "phash", "--workers", "0", str(fifo), str(good),
                          "/dev/zero"]) == 1
    out, err = capsys.readouterr()
    assert "FIFO" in err and "character device" in err and out.count("\n") == 1


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"not a database", "not an SQLite"),
                                            (b"SQLite format 3\0" + b"\0" * 90, "readable")])
def test_a_damaged_or_empty_database_file_is_refused(tmp_path, content, words):
    path = tmp_path / "db.sqlite"
    path.write_bytes(content)
    with pytest.raises(AttributionError, match=words):
        TrustedDatabase.open(str(path))
    assert path.read_bytes() == content  # nothing was written into it


def test_a_code_changed_in_the_table_is_noticed_by_the_cached_index(tmp_path):
    path = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(path, method="phash") as db:
        ids = db.add([encode_png(photo(n, 96)) for n in ("coffee", "chelsea", "rocket")])
    with sqlite3.connect(path) as raw:  # the middle code, edited behind the cache's back
        raw.execute("UPDATE originals SET code = ? WHERE id = ?", (b"\xff" * 8, ids[1]))
    with TrustedDatabase.open(path) as db:
        distances, found = db.search(np.full((1, 8), 255, np.uint8), k=1)
        assert found[0, 0] == ids[1] and distances[0, 0] == 0


def test_concurrent_adds_count_only_their_own_inserts(tmp_path):
    path = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(path, method="phash") as first, \
            TrustedDatabase.open(path) as second:
        shared, own = encode_png(photo("coffee", 96)), encode_png(photo("rocket", 96))
        second.add([shared])
        first.add([shared, own])
        assert (first.added_count, second.added_count) == (1, 1)


def test_meta_keyed_by_file_name_and_bad_meta(tmp_path, capsys):
    images = []
    for name in ("coffee", "rocket"):
        images.append(tmp_path / f"{name}.png")
        images[-1].write_bytes(encode_png(photo(name, 96)))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"coffee.png": {"author": "A"}, str(images[1]): {"author": "B"}}))
    db = str(tmp_path / "db.sqlite")
    assert attribute.main(["add", "--db", db, "--method", "phash", "--meta", str(meta),
                           *map(str, images)]) == 0
    with TrustedDatabase.open(db) as opened:
        authors = [opened.original(i)["provenance"] for i in (1, 2)]
    assert authors == [{"author": "A"}, {"author": "B"}]
    meta.write_text("{not json")
    capsys.readouterr()
    assert attribute.main(["add", "--db", db, "--meta", str(meta), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_query_warns_about_defaults_and_a_useless_explain(tmp_path, capsys):
    image = tmp_path / "coffee.png"
    image.write_bytes(encode_png(photo("coffee", 96)))
    db = str(tmp_path / "db.sqlite")
    assert attribute.main(["add", "--db", db, "--method", "phash", str(image)]) == 0
    capsys.readouterr()
    assert attribute.main(["query", "--db", db, "--explain", str(image)]) == 0
    err = capsys.readouterr().err
    assert "not calibrated" in err and "--explain needs" in err


def test_an_id_beyond_int64_is_not_found(tmp_path):
    with TrustedDatabase.create(str(tmp_path / "db.sqlite"), method="phash") as db:
        client = server.create_app(db).test_client()
        for route in ("/api/originals/9223372036854775808/image",
                      "/api/originals/99999999999999999999999"):
            assert client.get(route).status_code == 404


def test_a_huge_upload_is_refused_with_bounded_memory(tmp_path):
    """A 7900 x 7900 JPEG of a few MB: refused from its header with 413, while the server's
    peak memory stays under 1 GiB (it used to decode, explain and encode it in 6 GB)."""
    path = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(path, method="phash") as db:
        db.add([encode_png(photo("coffee", 96))])
    big = cv2.resize(photo("astronaut", 512), (7900, 7900), interpolation=cv2.INTER_LINEAR)
    data = encode_jpeg(big, quality=30)
    del big
    process = subprocess.Popen(
        [sys.executable, "-m", "oscar_jax.serve", "--db", path, "--port", "0",
         "--max_upload_mb", "50"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        line = process.stdout.readline()
        base = line.split(" on ")[1].split("/ ")[0]
        request = urllib.request.Request(f"{base}/api/query?explain=1", data=data,
                                         headers={"Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=120)
        assert refused.value.code == 413
        answer = refused.value.read()
        assert b"megapixels" in answer and len(answer) < 2000
        with open(f"/proc/{process.pid}/status") as f:
            peak_kb = next(int(x.split()[1]) for x in f if x.startswith("VmHWM"))
        assert peak_kb < 1024 * 1024, f"server peaked at {peak_kb / 1024:.0f} MB"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_heatmap_answer_is_bounded_for_a_large_query(tiny_trained, tmp_path):
    path = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(path, workdir=tiny_trained[0]) as db:
        [entry] = db.add([encode_png(photo("coffee", 256))])
        large = cv2.resize(photo("coffee", 512), (4000, 3000), interpolation=cv2.INTER_LINEAR)
        answer = db.query(encode_jpeg(large, quality=80), explain=True)
        if answer["original"] is None:  # the tiny model may not register it; force the map
            answer["heatmap"] = db.heatmap(large, entry)
        heat = answer["heatmap"]
        assert len(json.dumps(answer)) < 4 * 2**20
        png = cv2.imdecode(np.frombuffer(__import__("base64").b64decode(heat.split(",")[1]),
                                         np.uint8), cv2.IMREAD_COLOR)
        assert max(png.shape[:2]) <= 1024


def test_version_and_help_everywhere(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("oscar-jax ")
    for name in cli.COMMANDS:
        if name != "train":
            assert cli.main([name, "--version"]) == 0
            assert "oscar-jax" in capsys.readouterr().out
