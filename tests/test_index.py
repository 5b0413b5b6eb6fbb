"""Hamming index: exactness against brute force, ids, files, and the command line."""

import json
import os
import subprocess
import sys
import threading

import faiss
import numpy as np
import pytest

from oscar_jax import index as index_cli
from oscar_jax.inference import hamming_index as index_lib
from oscar_jax.inference.codes import hamming_distance
from oscar_jax.inference.hamming_index import HammingIndex, IndexFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_codes(rng, count, bits):
    return rng.integers(0, 256, (count, bits // 8), dtype=np.uint8)


def flip_bits(rng, codes, flips):
    """Copies of codes with ``flips[i]`` distinct random bits flipped in row i."""
    bits = codes.shape[1] * 8
    out = np.unpackbits(codes, axis=1)
    for row, count in enumerate(flips):
        out[row, rng.choice(bits, int(count), replace=False)] ^= 1
    return np.packbits(out, axis=1)


def clustered_codes(rng, count, bits, centres=50, max_flips=6):
    """Codes in small clusters (a random centre, copies within max_flips bits), shuffled."""
    base = random_codes(rng, centres, bits)
    members = base[rng.integers(0, centres, count)]
    return flip_bits(rng, members, rng.integers(0, max_flips + 1, count))


def brute_force_knn(queries, codes, ids, k):
    """Reference: k smallest by (distance, insertion position), then sorted by (distance, id)."""
    dist = hamming_distance(queries, codes)
    out_d = np.full((len(queries), k), -1, np.int64)
    out_i = np.full((len(queries), k), -1, np.int64)
    for q, row in enumerate(dist):
        keep = np.lexsort((np.arange(len(codes)), row))[:k]
        order = np.lexsort((ids[keep], row[keep]))
        out_d[q, : len(keep)] = row[keep][order]
        out_i[q, : len(keep)] = ids[keep][order]
    return out_d, out_i


def brute_force_range(queries, codes, ids, radius):
    dist = hamming_distance(queries, codes)
    results = []
    for row in dist:
        hit = np.flatnonzero(row <= radius)
        order = np.lexsort((ids[hit], row[hit]))
        results.append((row[hit][order], ids[hit][order]))
    return results


def assert_range_equal(got, expected):
    assert len(got) == len(expected)
    for (gd, gi), (ed, ei) in zip(got, expected, strict=True):
        assert gd.dtype == np.int32 and gi.dtype == np.int64
        np.testing.assert_array_equal(gd, ed)
        np.testing.assert_array_equal(gi, ei)


@pytest.mark.parametrize("bits", [64, 256])
def test_flat_matches_brute_force(bits):
    rng = np.random.default_rng(bits)
    codes = clustered_codes(rng, 600, bits, centres=20, max_flips=3)
    codes[100:140] = codes[0]  # a tie group larger than k
    ids = rng.permutation(10_000)[:600].astype(np.int64)
    queries = np.concatenate([codes[:5], random_codes(rng, 5, bits)])
    index = HammingIndex(bits, "flat")
    index.add(codes[:250], ids[:250])
    index.add(codes[250:], ids[250:])
    for k in (1, 7, 50, 603):
        distances, found = index.search(queries, k)
        assert distances.dtype == np.int32 and found.dtype == np.int64
        assert distances.shape == found.shape == (10, k)
        expected_d, expected_i = brute_force_knn(queries, codes, ids, k)
        np.testing.assert_array_equal(distances, expected_d)
        np.testing.assert_array_equal(found, expected_i)
    assert_range_equal(index.range_search(queries, bits // 4),
                       brute_force_range(queries, codes, ids, bits // 4))


def test_k_larger_than_ntotal_pads_with_minus_one():
    rng = np.random.default_rng(0)
    codes = random_codes(rng, 3, 64)
    for kind in index_lib.KINDS:
        index = HammingIndex(64, kind)
        distances, ids = index.search(codes, 4)  # empty index
        assert (distances == -1).all() and (ids == -1).all()
        index.add(codes)
        distances, ids = index.search(codes, 5)
        assert distances.shape == (3, 5)
        assert (distances[:, 3:] == -1).all() and (ids[:, 3:] == -1).all()
        assert (ids[:, 0] == np.arange(3)).all() and (distances[:, 0] == 0).all()


@pytest.mark.parametrize("bits", [64, 128])
def test_multihash_exact_within_its_radius(bits):
    rng = np.random.default_rng(1)
    codes = clustered_codes(rng, 3000, bits, centres=300, max_flips=4)
    ids = np.arange(3000, dtype=np.int64) * 3
    index = HammingIndex(bits, "multihash", hash_bits=16, nflip=1)
    index.add(codes, ids)
    radius = index.exact_radius
    assert radius == (bits // 16) * 2 - 1
    # Near duplicates: database codes with up to `radius` bits flipped.
    queries = flip_bits(rng, codes[:40], rng.integers(0, radius + 1, 40))
    assert_range_equal(index.range_search(queries, radius),
                       brute_force_range(queries, codes, ids, radius))
    distances, found = index.search(queries, 5)
    expected_d, _ = brute_force_knn(queries, codes, ids, 5)
    within = expected_d <= radius
    np.testing.assert_array_equal(distances[within], expected_d[within])


def test_multihash_returned_distances_are_true_distances():
    rng = np.random.default_rng(2)
    codes = clustered_codes(rng, 2000, 64, centres=100, max_flips=8)
    index = HammingIndex(64, "multihash", nflip=0)
    assert index.exact_radius == 3
    index.add(codes)
    queries = flip_bits(rng, codes[:30], rng.integers(0, 8, 30))
    distances, found = index.search(queries, 10)
    for q in range(len(queries)):
        hit = found[q] >= 0
        true = hamming_distance(queries[q : q + 1], codes[found[q][hit]])[0]
        np.testing.assert_array_equal(distances[q][hit], true)
    index.set_search_options(nflip=2)
    assert index.exact_radius == 11


@pytest.mark.parametrize("bits", [64, 256])
def test_ivf_exact_with_all_lists_probed(bits):
    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 2000, bits, centres=40, max_flips=5)
    ids = rng.permutation(2000).astype(np.int64) + 7
    index = HammingIndex(bits, "ivf", nlist=16, nprobe=16)
    assert not index.is_trained
    index.add(codes, ids)  # trains on the first add
    assert index.is_trained and index.exact_radius == bits
    queries = np.concatenate([flip_bits(rng, codes[:10], [2] * 10), random_codes(rng, 4, bits)])
    expected_d, expected_i = brute_force_knn(queries, codes, ids, 8)
    distances, found = index.search(queries, 8)
    np.testing.assert_array_equal(distances, expected_d)
    # Which codes tied with the k-th make the cut depends on the order lists are scanned.
    before_last_tie = expected_d < expected_d[:, -1:]
    np.testing.assert_array_equal(found[before_last_tie], expected_i[before_last_tie])
    assert_range_equal(index.range_search(queries, 6),
                       brute_force_range(queries, codes, ids, 6))


def test_ivf_training_and_identical_codes_always_found():
    rng = np.random.default_rng(4)
    codes = clustered_codes(rng, 4000, 64, centres=100)
    index = HammingIndex(64, "ivf", nprobe=1)
    index.train(codes[:2000])
    assert index.options["nlist"] == index_lib.auto_nlist(2000)
    assert index.exact_radius == 0
    with pytest.raises(ValueError, match="already trained"):
        index.train(codes)
    index.add(codes)
    distances, found = index.search(codes[:50], 1)
    assert (distances[:, 0] == 0).all()
    with pytest.raises(ValueError, match="at least nlist"):
        HammingIndex(64, "ivf", nlist=100).train(codes[:50])


def test_range_search_boundary_is_inclusive():
    rng = np.random.default_rng(5)
    base = random_codes(rng, 1, 64)
    codes = flip_bits(rng, np.repeat(base, 4, axis=0), [0, 3, 5, 9])
    for kind in index_lib.KINDS:
        index = HammingIndex(64, kind)
        index.add(codes, np.array([10, 11, 12, 13]))
        (d5, i5), = index.range_search(base, 5)
        np.testing.assert_array_equal(d5, [0, 3, 5])
        np.testing.assert_array_equal(i5, [10, 11, 12])
        (d4, i4), = index.range_search(base, 4)
        np.testing.assert_array_equal(i4, [10, 11])
        (d0, i0), = index.range_search(base, 0)
        np.testing.assert_array_equal(i0, [10])


@pytest.mark.parametrize("kind", index_lib.KINDS)
def test_ids_and_options_survive_save_and_load(tmp_path, kind):
    rng = np.random.default_rng(6)
    codes = clustered_codes(rng, 1000, 64)
    ids = rng.choice(1 << 40, 1000, replace=False).astype(np.int64)
    options = {"flat": {}, "multihash": {"nflip": 2}, "ivf": {"nprobe": 3}}[kind]
    index = HammingIndex(64, kind, **options)
    index.add(codes, ids)
    path = str(tmp_path / "codes.faiss")
    index.save(path)
    loaded = HammingIndex.load(path)
    assert (loaded.kind, loaded.bits, loaded.ntotal) == (kind, 64, 1000)
    assert loaded.options == index.options
    for a, b in zip(index.search(codes[:20], 5), loaded.search(codes[:20], 5), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.reconstruct(ids[[5, 0, 999]]), codes[[5, 0, 999]])
    with pytest.raises(KeyError, match="not in the index"):
        loaded.reconstruct([ids.max() + 1])
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(codes[:2], ids[:2])
    new_ids = loaded.add(codes[:2])
    np.testing.assert_array_equal(new_ids, [ids.max() + 1, ids.max() + 2])
    # Plain faiss reads the file too.
    assert faiss.read_index_binary(path).ntotal == 1000


def test_default_ids_are_row_numbers():
    codes = random_codes(np.random.default_rng(7), 10, 64)
    index = HammingIndex(64)
    np.testing.assert_array_equal(index.add(codes[:4]), np.arange(4))
    np.testing.assert_array_equal(index.add(codes[4:]), np.arange(4, 10))
    assert index.search(codes[7:8], 1)[1][0, 0] == 7


def test_bad_inputs_give_clear_errors():
    rng = np.random.default_rng(8)
    codes = random_codes(rng, 5, 64)
    index = HammingIndex(64)
    with pytest.raises(ValueError, match="multiple of 8"):
        HammingIndex(60)
    with pytest.raises(ValueError, match="Unknown index kind"):
        HammingIndex(64, "lsh")
    with pytest.raises(ValueError, match="Unknown option"):
        HammingIndex(64, "flat", nprobe=3)
    with pytest.raises(ValueError, match="exceeds bits"):
        HammingIndex(64, "multihash", hash_bits=16, nhash=5)
    with pytest.raises(ValueError, match="unpacked bits"):
        index.add(np.unpackbits(codes, axis=1))
    with pytest.raises(ValueError, match="dtype"):
        index.add(codes.astype(np.int32))
    with pytest.raises(ValueError, match=r"codes\[None\]"):
        index.add(codes[0])
    with pytest.raises(ValueError, match="repeat within"):
        index.add(codes, [1, 2, 3, 2, 5])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(codes, [1, 2, 3, -4, 5])
    with pytest.raises(ValueError, match="shape"):
        index.add(codes, [1, 2])
    assert index.ntotal == 0
    index.add(codes, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"already in the index: \[3\]"):
        index.add(codes[:2], [3, 9])
    with pytest.raises(ValueError, match="cannot change"):
        index.set_search_options(nprobe=2)


def test_failed_save_keeps_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    path = str(tmp_path / "codes.faiss")
    index = HammingIndex(64)
    index.add(random_codes(rng, 100, 64))
    index.save(path)
    before = open(path, "rb").read()
    index.add(random_codes(rng, 100, 64))

    def write_half_then_fail(faiss_index, callback):
        callback(b"IBxM" + b"\0" * 1000)  # part of an index, then the writer dies
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(faiss, "PyCallbackIOWriter", lambda callback: callback)
        patch.setattr(faiss, "write_index_binary", write_half_then_fail)
        with pytest.raises(RuntimeError, match="disk full"):
            index.save(path)
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
        with pytest.raises(OSError, match="rename failed"):
            index.save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["codes.faiss"]
    assert HammingIndex.load(path).ntotal == 100
    index.save(path)
    assert HammingIndex.load(path).ntotal == 200
    assert os.listdir(tmp_path) == ["codes.faiss"]


def test_load_rejects_missing_garbage_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(IndexFileError, match="not found"):
        HammingIndex.load(str(tmp_path / "missing.faiss"))
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(IndexFileError, match="not an index written by HammingIndex.save"):
        HammingIndex.load(str(garbage))
    tiny = tmp_path / "tiny.faiss"
    tiny.write_bytes(b"abc")
    with pytest.raises(IndexFileError, match="too short"):
        HammingIndex.load(str(tiny))
    path = tmp_path / "codes.faiss"
    index = HammingIndex(64)
    index.add(random_codes(np.random.default_rng(10), 50, 64))
    index.save(str(path))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match="not an index written"):
        HammingIndex.load(str(truncated))
    corrupt = bytearray(data)
    corrupt[100] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(IndexFileError, match="checksum"):
        HammingIndex.load(str(path))


def test_concurrent_searches_and_adds():
    rng = np.random.default_rng(11)
    codes = random_codes(rng, 4000, 64)
    index = HammingIndex(64, "multihash")
    index.add(codes[:1000])
    errors = []

    def searcher():
        try:
            for _ in range(30):
                distances, ids = index.search(codes[:20], 1)
                assert (distances[:, 0] == 0).all() and (ids[:, 0] == np.arange(20)).all()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(1000, 4000, 500):
        index.add(codes[start : start + 500])
    for thread in threads:
        thread.join()
    assert not errors and index.ntotal == 4000


# ---- command line ---------------------------------------------------------------------------


def test_cli_build_add_search_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(12)
    codes = random_codes(rng, 200, 64)
    more = random_codes(rng, 50, 64)
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "ids.npy", np.arange(200) * 10)
    np.save(tmp_path / "more.npy", more)
    queries = tmp_path / "queries.txt"
    queries.write_text(f"{codes[3].tobytes().hex()}\tphoto.jpg\n\n{more[1].tobytes().hex()}\n")
    index_path = str(tmp_path / "codes.faiss")
    main = index_cli.main

    assert main(["build", "--codes", str(tmp_path / "codes.npy"), "--ids",
                 str(tmp_path / "ids.npy"), "--index", index_path, "--kind", "multihash",
                 "--option", "nflip=2"]) == 0
    capsys.readouterr()
    # An error that stops a tool is one line naming the tool, and exit status 2.
    assert main(["build", "--codes", str(tmp_path / "codes.npy"), "--index", index_path]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.startswith("python -m oscar_jax.index: error:")
    assert len(err.strip().splitlines()) == 1
    assert main(["add", "--index", index_path, "--codes", str(tmp_path / "more.npy")]) == 0
    capsys.readouterr()

    assert main(["search", "--index", index_path, "--codes", str(queries), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query\trank\tid\tdistance"
    rows = [line.split("\t") for line in lines[1:]]
    assert rows[0] == ["0", "0", "30", "0"] and rows[2][:3] == ["1", "0", "1992"]
    assert len(rows) == 4

    assert main(["search", "--index", index_path, "--codes", str(queries), "--radius", "0",
                 "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == [{"query": 0, "results": [{"id": 30, "distance": 0}]},
                      {"query": 1, "results": [{"id": 1992, "distance": 0}]}]

    assert main(["info", "--index", index_path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "multihash" and info["ntotal"] == 250 and info["options"]["nflip"] == 2

    assert main(["search", "--index", index_path, "--codes", str(queries)]) == 2
    assert main(["search", "--index", str(tmp_path / "nope.faiss"), "--codes", str(queries),
                 "-k", "1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_entry_point_in_a_subprocess(tmp_path):
    codes = random_codes(np.random.default_rng(13), 30, 64)
    np.save(tmp_path / "codes.npy", codes)
    index_path = str(tmp_path / "codes.faiss")
    assert index_cli.main(["build", "--codes", str(tmp_path / "codes.npy"), "--index",
                           index_path]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "oscar_jax.index", "search", "--index", index_path, "--codes",
         str(tmp_path / "codes.npy"), "-k", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 31 and lines[5] == "4\t0\t4\t0"
