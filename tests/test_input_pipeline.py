"""Batch composition, determinism, host sharding and iterator checkpoints of the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oscar_jax import input_pipeline as ip
from oscar_jax.workdir import RecordsNotFoundError, records_dir
from preprocessing import build


def make_index(identities=10, variants=3, views=4, drop=()) -> ip.RecordIndex:
    """Records identity x variant x view, minus the (identity, variant, view) in `drop`."""
    rows = [(i * 1000 + 7, v, w) for i in range(identities) for v in range(variants)
            for w in range(views) if (i, v, w) not in drop]
    identity, variant, view = (np.asarray(c) for c in zip(*rows, strict=True))
    return ip.RecordIndex(identity.astype(np.int64), variant.astype(np.int32),
                          view.astype(np.int32))


def labels(index: ip.RecordIndex, records: np.ndarray):
    return index.identity[records], index.variant[records], index.view[records]


def test_batches_hold_distinct_originals_each_with_a_manipulated_version_and_views():
    index = make_index()
    planner = ip.BatchPlanner(index, ip.Composition(4, 2, 3), seed=0)
    for step in range(7):
        records, valid = planner(step)
        assert records.shape == valid.shape == (24,) and valid.all()
        identity, variant, view = labels(index, records)
        assert len(np.unique(identity)) == 4
        for ident in np.unique(identity):
            mine = identity == ident
            assert min(variant[mine]) == 0 and len(set(variant[mine])) == 2
            for v in set(variant[mine]):
                views = view[mine & (variant == v)]
                assert len(views) == 3 and len(set(views)) == 3  # distinct benign views


def test_every_identity_once_per_epoch_and_deterministic_for_a_seed():
    index = make_index(identities=12)
    planner = ip.BatchPlanner(index, ip.Composition(4, 2, 2), seed=3)
    assert planner.steps_per_epoch == 3
    for epoch in range(2):
        seen = np.concatenate([
            np.unique(index.identity[planner(epoch * 3 + s)[0]]) for s in range(3)])
        assert sorted(seen) == sorted(np.unique(index.identity))
    again = ip.BatchPlanner(index, ip.Composition(4, 2, 2), seed=3)
    other = ip.BatchPlanner(index, ip.Composition(4, 2, 2), seed=4)
    assert all(np.array_equal(planner(s)[0], again(s)[0]) for s in range(6))
    assert any(not np.array_equal(planner(s)[0], other(s)[0]) for s in range(6))


def test_hosts_share_out_the_one_host_batch():
    # Three hosts with 2 originals each load, side by side, what one host with 6 loads.
    index = make_index(identities=9, drop={(4, 2, 3), (7, 0, 1)})
    one = ip.BatchPlanner(index, ip.Composition(6, 2, 2), seed=0)
    hosts = [ip.BatchPlanner(index, ip.Composition(2, 2, 2), seed=0, shard_index=i,
                             shard_count=3) for i in range(3)]
    for step in range(5):
        plans = [host(step) for host in hosts]
        records, valid = one(step)
        np.testing.assert_array_equal(np.concatenate([r for r, _ in plans]), records)
        np.testing.assert_array_equal(np.concatenate([v for _, v in plans]), valid)
        owned = [set(index.identity[r]) for r, _ in plans]
        assert all(len(o) == 2 for o in owned) and len(set.union(*owned)) == 6


def test_missing_views_and_variants_become_invalid_slots():
    # Identity 0 has one manipulated version only, and its original has a single view.
    drop = {(0, 2, w) for w in range(4)} | {(0, 0, w) for w in range(1, 4)}
    index = make_index(identities=1, variants=3, views=4, drop=drop)
    planner = ip.BatchPlanner(index, ip.Composition(1, 3, 2), seed=0)
    records, valid = planner(0)
    identity, variant, view = labels(index, records)
    # Slots: variant 0 x 2 views (one real), variant 1 x 2 views (both real), missing variant.
    assert valid.tolist() == [True, False, True, True, False, False]
    assert variant[valid].tolist() == [0, 1, 1]


def test_matched_views_take_the_same_view_numbers_of_every_variant():
    # Identity 1's manipulated version 2 lacks view 3: only views 0-2 can be matched there.
    index = make_index(identities=6, variants=3, views=5, drop={(1, 2, 3)})
    matched = ip.BatchPlanner(index, ip.Composition(6, 3, 2), seed=0, matched_views=True)
    free = ip.BatchPlanner(index, ip.Composition(6, 3, 2), seed=0)
    unmatched_seen = False
    for step in range(6):
        for planner in (matched, free):
            records, valid = planner(step)
            assert valid.all()
            identity, variant, view = labels(index, records)
            for ident in np.unique(identity):
                mine = identity == ident
                per_variant = [sorted(view[mine & (variant == v)]) for v in set(variant[mine])]
                same = all(p == per_variant[0] for p in per_variant)
                if planner is matched:
                    assert same, (step, ident, per_variant)
                    assert len(set(per_variant[0])) == 2
                    if ident == 1007 and 2 in set(variant[mine]):
                        assert 3 not in per_variant[0]
                else:
                    unmatched_seen |= not same
    assert unmatched_seen  # without the option, views are drawn per variant


def test_planner_refuses_what_cannot_make_a_batch():
    no_manipulated = make_index(identities=4, variants=1)
    with pytest.raises(ValueError, match="manipulated version"):
        ip.BatchPlanner(no_manipulated, ip.Composition(2, 2, 2), seed=0)
    with pytest.raises(ValueError, match="lower it"):
        ip.BatchPlanner(make_index(identities=3), ip.Composition(4, 2, 2), seed=0)
    with pytest.raises(ValueError, match=">= 2"):
        ip.BatchPlanner(make_index(), ip.Composition(2, 1, 2), seed=0)


def test_identity_ordinals_are_compact_and_shared():
    index = make_index(identities=3)
    assert sorted(set(index.ordinal.tolist())) == [0, 1, 2]
    assert np.array_equal(index.ordinal[index.identity == 2007], np.full(12, 2, np.int32))


def test_missing_records_name_the_build_command(tmp_path):
    with pytest.raises(RecordsNotFoundError) as error:
        records_dir("psbattles24k", "default", str(tmp_path))
    message = str(error.value)
    assert f"python -m preprocessing.build --dataset psbattles24k --data_dir {tmp_path}" in message
    assert "--manual_dir" in message


# ---- on real records ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tiny"))
    build.build("oscar_demo", data_dir=data_dir, config="tiny", verbose=False)
    return records_dir("oscar_demo", "tiny", data_dir)


def test_batches_from_records_have_the_contract_shapes(tiny_records, tmp_path):
    composition = ip.Composition(2, 2, 2)
    dataset, example = ip.train_dataset(tiny_records, "train", composition, seed=0,
                                        num_steps=4, index_cache=str(tmp_path))
    batch = next(iter(dataset))
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["crops"].shape == (8, 5, 32, 32, 3)
    assert batch["relations"].shape == (8, 5, 5, 8)
    assert batch["node_mask"][:, 0].all()  # objects, then the background node, then padding
    assert batch["identity"].dtype == np.int32 and batch["valid"].all()
    for name in batch:
        np.testing.assert_array_equal(batch[name], example[name])
    assert list(tmp_path.glob("record-index-*.npz")), "the label index is cached"


def test_iterator_state_resumes_the_same_batches_in_worker_processes(tiny_records):
    composition = ip.Composition(2, 2, 2)
    dataset, _ = ip.train_dataset(tiny_records, "train", composition, seed=1, num_steps=8,
                                  workers=1)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))  # as the checkpoint stores it
    expected = [{k: np.array(v) for k, v in next(iterator).items()} for _ in range(3)]
    iterator.close()
    resumed = iter(ip.train_dataset(tiny_records, "train", composition, seed=1, num_steps=8,
                                    workers=1)[0])
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for name in want:
            np.testing.assert_array_equal(np.asarray(got[name]), want[name])
    resumed.close()


def test_read_split_returns_every_record_once(tiny_records):
    keys = np.concatenate([b["key"] for b in ip.read_split(tiny_records, "test", batch_size=5)])
    assert len(keys) == 12 and len(set(keys.tolist())) == 12


def slot_batch(composition: ip.Composition, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch whose variants of each (original, view slot) hold the same pixels, with the
    last node of every record a padding slot."""
    c = composition
    batch = ip.synthetic_batch(c, max_objects=3, crop_size=8, global_size=16, seed=seed)
    shape = (c.originals, c.variants, c.views)
    for name in ("image", "crops"):
        x = batch[name].reshape(*shape, *batch[name].shape[1:])
        batch[name] = np.broadcast_to(x[:, :1], x.shape).reshape(batch[name].shape).copy()
    batch["node_mask"][:] = True
    batch["node_mask"][:, -1] = False
    return batch


def test_photometric_jitter_is_matched_per_slot_and_leaves_padding_and_labels():
    composition = ip.Composition(3, 2, 2)
    batch = slot_batch(composition)
    jitter = ip.PhotometricJitter(composition)
    out = jitter.random_map(batch, np.random.default_rng(0))
    for name in batch:
        if name not in ("image", "crops"):
            np.testing.assert_array_equal(out[name], batch[name], err_msg=name)
    np.testing.assert_array_equal(out["crops"][:, -1], batch["crops"][:, -1])  # padding
    assert not np.array_equal(out["image"], batch["image"])
    # Variants of one (original, view slot) are jittered alike; view slots and originals not.
    image = out["image"].reshape(3, 2, 2, 16, 16, 3)
    crops = out["crops"].reshape(3, 2, 2, 4, 8, 8, 3)
    np.testing.assert_array_equal(image[:, 0], image[:, 1])
    np.testing.assert_array_equal(crops[:, 0], crops[:, 1])
    original = batch["image"].reshape(3, 2, 2, 16, 16, 3)
    change = image.astype(int) - original
    assert not np.array_equal(change[:, :, 0], change[:, :, 1])
    assert not np.array_equal(change[0], change[1])
    # The same generator state gives the same batch.
    again = jitter.random_map(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(again["image"], out["image"])


def test_photometric_jitter_brightness_alone_scales_each_record_within_its_range():
    composition = ip.Composition(2, 2, 3)
    batch = slot_batch(composition)
    batch["image"][:] = 100
    only_brightness = ip.PhotometricJitter(composition, strength=0.5, brightness=1.0,
                                           contrast=0.0, saturation=0.0, gain=0.0, noise=0.0)
    out = only_brightness.random_map(batch, np.random.default_rng(3))["image"].astype(int)
    per_record = out.reshape(12, -1)
    assert (per_record == per_record[:, :1]).all()  # one factor per image, no noise
    assert per_record.min() >= 50 and per_record.max() <= 150  # factors in [0.5, 1.5]
    assert per_record.min() < 75 and per_record.max() > 125  # drawn over that range
    value = per_record[:, 0].reshape(2, 2, 3)  # original, variant, view slot
    np.testing.assert_array_equal(value[:, 0], value[:, 1])  # one factor per slot
    assert all(len(set(value[o, 0].tolist())) == 3 for o in range(2))


def test_jittered_batches_are_drawn_from_seed_and_step(tiny_records):
    composition = ip.Composition(2, 2, 2)
    plain, _ = ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=3)
    jittered, example = ip.train_dataset(tiny_records, "train", composition, seed=0,
                                         num_steps=3, photometric_jitter=1.0)
    again, _ = ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=3,
                                photometric_jitter=1.0)
    plain, jittered, again = (list(d) for d in (plain, jittered, again))
    np.testing.assert_array_equal(jittered[0]["image"], example["image"])
    for p, j, a in zip(plain, jittered, again, strict=True):
        np.testing.assert_array_equal(j["image"], a["image"])
        assert not np.array_equal(j["image"], p["image"])
        np.testing.assert_array_equal(j["geometry"], p["geometry"])
    assert not np.array_equal(jittered[0]["image"] - plain[0]["image"],
                              jittered[1]["image"] - plain[1]["image"])
    with pytest.raises(ValueError, match="photometric_jitter must be >= 0"):
        ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=3,
                         photometric_jitter=-0.5)


def test_online_edits_replace_the_manipulated_slot_with_an_edited_copy_of_the_original():
    composition = ip.Composition(4, 3, 2)
    batch = ip.synthetic_batch(composition, max_objects=3, crop_size=16, global_size=32, seed=1)
    batch["node_mask"][:] = [True, True, True, False]
    batch["image"] = np.clip(batch["image"], 30, 255)  # nothing reads as a letterbox bar
    batch["variant"] = np.tile(np.repeat(np.arange(3), 2), 4).astype(np.int32)
    batch["view"] = np.arange(24, dtype=np.int32) % 2 + 10 * (np.arange(24) // 2 % 3)
    batch["valid"][:] = True
    batch["valid"][1] = False  # view slot 1 of original 0 repeats a record
    out = ip.OnlineEdits(composition, rate=1.0).random_map(batch, np.random.default_rng(0))
    slots = lambda x: x.reshape(4, 3, 2, *x.shape[1:])  # noqa: E731
    for name in ("node_mask", "geometry", "shape", "relations", "view", "valid"):
        np.testing.assert_array_equal(slots(out[name])[:, 1], slots(batch[name])[:, 0], name)
    for name in ("identity", "variant"):
        np.testing.assert_array_equal(out[name], batch[name], name)
    for name in ("image", "crops"):
        np.testing.assert_array_equal(slots(out[name])[:, [0, 2]], slots(batch[name])[:, [0, 2]])
    edited, original = slots(out["image"])[:, 1], slots(batch["image"])[:, 0]
    changed = (edited != original).any(axis=-1).mean(axis=(-1, -2))  # [originals, views]
    assert (changed > 0.005).all() and (changed < 0.2).all(), changed
    np.testing.assert_array_equal(slots(out["crops"])[:, 1, :, 3],  # padding crops
                                  slots(batch["crops"])[:, 0, :, 3])
    # One edit per original, painted into both of its views at the same place.
    where = (edited != original).any(axis=-1)
    assert all((where[o, 0] & where[o, 1]).sum() > 0.5 * where[o, 0].sum() for o in range(4))
    off = ip.OnlineEdits(composition, rate=0.0).random_map(batch, np.random.default_rng(0))
    for name in batch:
        np.testing.assert_array_equal(off[name], batch[name])
    with pytest.raises(ValueError, match="variants_per_original"):
        ip.OnlineEdits(ip.Composition(2, 1, 2)).random_map(
            ip.synthetic_batch(ip.Composition(2, 1, 2), max_objects=1, crop_size=8,
                               global_size=16, seed=0), np.random.default_rng(0))


def test_online_edits_are_drawn_from_seed_and_step_and_checked(tiny_records):
    composition = ip.Composition(2, 2, 2)
    plain, _ = ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=2)
    edited, _ = ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=2,
                                 online_edits=1.0)
    again, _ = ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=2,
                                online_edits=1.0)
    for p, e, a in zip(list(plain), list(edited), list(again), strict=True):
        np.testing.assert_array_equal(e["image"], a["image"])
        first = e["image"].reshape(2, 2, 2, *e["image"].shape[1:])
        source = p["image"].reshape(first.shape)
        np.testing.assert_array_equal(first[:, 0], source[:, 0])  # originals untouched
        assert not np.array_equal(first[:, 1], source[:, 0])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="online_edits is a share"):
            ip.train_dataset(tiny_records, "train", composition, seed=0, num_steps=2,
                             online_edits=bad)
