"""Tests for oscar_jax.metrics: pessimistic ties, mmAP (eq. 12), FR1 (eq. 13), histograms."""

from fractions import Fraction as F

import numpy as np
import pytest

from oscar_jax.evaluation import metrics
from oscar_jax.inference import codes

# ----------------------------------------------------------------------------------------
# Straightforward references: build the whole ranking explicitly, then walk it.


def _reference_order(dist, rel, man, distractors):
    """Item labels of one query in pessimistic order: 'r', 'm' or 'i' per position."""
    items = []
    for col, d in enumerate(dist):
        cls = 0 if man[col] else (2 if rel[col] else 1)
        items.append((int(d), cls, col, "m" if man[col] else ("r" if rel[col] else "i")))
    for j, d in enumerate(distractors):
        items.append((int(d), 1, len(dist) + j, "i"))
    return [label for *_, label in sorted(items)]


def _reference_scores(order):
    """AP, AP@R, mmAP, mmAP@R of one ranking given as a list of labels."""
    num_rel = order.count("r")
    if num_rel == 0:
        return {k: float("nan") for k in ("mAP", "mAP@R", "mmAP", "mmAP@R")}
    sums = dict.fromkeys(("mAP", "mAP@R", "mmAP", "mmAP@R"), 0.0)
    hits, seen_manipulated = 0, False
    for k, label in enumerate(order, start=1):
        seen_manipulated |= label == "m"
        if label != "r":
            continue
        hits += 1
        precision = hits / k
        sums["mAP"] += precision
        sums["mAP@R"] += precision if k <= num_rel else 0.0
        sums["mmAP"] += 0.0 if seen_manipulated else precision
        sums["mmAP@R"] += precision if (k <= num_rel and not seen_manipulated) else 0.0
    return {k: v / num_rel for k, v in sums.items()}


def _reference_benchmark_one(dist, rel, man, distractor_dist):
    per_query = [
        _reference_scores(_reference_order(dist[q], rel[q], man[q], distractor_dist[q]))
        for q in range(dist.shape[0])
    ]
    keep = [q for q in range(dist.shape[0]) if rel[q].any()]
    out = {k: float(np.mean([per_query[q][k] for q in keep])) for k in per_query[0]}
    out["queries"] = len(keep)
    return out


def _random_case(rng, queries=5, items=24, bits=16, distractors=40):
    dist = rng.integers(0, bits + 1, size=(queries, items))
    label = rng.integers(0, 3, size=(queries, items))  # 0 irrelevant, 1 relevant, 2 manipulated
    rel, man = label == 1, label == 2
    rel[0] = False  # one query without relevant items: excluded from the means
    distractor_dist = rng.integers(0, bits + 1, size=(queries, distractors))
    hist = np.stack([np.bincount(row, minlength=bits + 1) for row in distractor_dist])
    return dist, rel, man, distractor_dist, hist


# ----------------------------------------------------------------------------------------
# Benchmark I.


def test_ties_are_broken_pessimistically():
    # Columns A (relevant, d=2), B (irrelevant, d=2), C (relevant, d=5). The relevant A is
    # placed after B although its column comes first: order B, A, C.
    # Pessimistic AP = (1/2 + 2/3) / 2 = 7/12; optimistic (A, B, C) would be (1 + 2/3) / 2 = 5/6.
    dist = np.array([[2, 2, 5]])
    rel = np.array([[True, False, True]])
    np.testing.assert_array_equal(metrics.ranks(dist, rel), [[2, 1, 3]])
    ap = metrics.average_precision(dist, rel)
    assert ap[0] == pytest.approx(7 / 12)
    assert ap[0] < 5 / 6


def test_manipulated_goes_before_distractors_and_relevant_after():
    # One relevant (col 0) and one manipulated (col 1) item, both at d=1, plus one distractor
    # at d=1 and one at d=0. Order: distractor(0), manipulated(1), distractor(1), relevant(1).
    dist = np.array([[1, 1]])
    rel = np.array([[True, False]])
    man = np.array([[False, True]])
    hist = np.array([[1, 1, 0, 0]])
    np.testing.assert_array_equal(metrics.ranks(dist, rel, man, hist), [[4, 2]])
    # AP = 1/4; mmAP = 0 (the manipulated item is ranked first).
    out = metrics.benchmark_one_scores(dist, rel, man, hist)
    assert out["mAP"] == pytest.approx(1 / 4)
    assert out["mmAP"] == 0.0
    assert out["queries"] == 1


def test_mmap_with_manipulated_in_the_middle():
    # Distances are distinct, so the order is the column order:
    # rank 1 rel, 2 irr, 3 rel, 4 manipulated, 5 rel, 6 rel.
    # AP   = (1/1 + 2/3 + 3/5 + 4/6) / 4 = 44/15 / 4 = 11/15.
    # mmAP = (1/1 + 2/3) / 4 = 5/12: the relevant items at ranks 5 and 6 come after the
    #        manipulated one and add nothing, but still count in the denominator.
    dist = np.array([[1, 2, 3, 4, 5, 6]])
    rel = np.array([[1, 0, 1, 0, 1, 1]], bool)
    man = np.array([[0, 0, 0, 1, 0, 0]], bool)
    assert metrics.average_precision(dist, rel, man)[0] == pytest.approx(11 / 15)
    assert metrics.average_precision(dist, rel, man, masked=True)[0] == pytest.approx(5 / 12)
    # Without manipulated items, mmAP is AP.
    assert metrics.average_precision(dist, rel, masked=True)[0] == pytest.approx(11 / 15)


def test_mmap_at_r():
    # Order = column order: 1 rel, 2 irr, 3 irr, 4 rel, 5 rel, 6 manipulated, 7 rel; R = 4.
    # AP      = (1 + 2/4 + 3/5 + 4/7) / 4 = 187/280
    # mmAP    = (1 + 2/4 + 3/5) / 4      = 21/40
    # mmAP@R  = (1 + 2/4) / 4            = 3/8  (top 4 only: ranks 1 and 4; denominator R)
    # The manipulated item is at rank 6, outside the top R, so AP@R = mmAP@R here.
    dist = np.array([[0, 1, 2, 3, 4, 5, 6]])
    rel = np.array([[1, 0, 0, 1, 1, 0, 1]], bool)
    man = np.array([[0, 0, 0, 0, 0, 1, 0]], bool)
    out = metrics.benchmark_one_scores(dist, rel, man)
    assert out["mAP"] == pytest.approx(187 / 280)
    assert out["mmAP"] == pytest.approx(21 / 40)
    assert out["mmAP@R"] == pytest.approx(3 / 8)
    assert out["mAP@R"] == pytest.approx(3 / 8)
    # A manipulated item tied with the relevant one at rank 1 goes first: mmAP@R drops to 0.
    dist2 = np.array([[0, 1, 2, 3, 4, 0, 6]])
    assert metrics.benchmark_one_scores(dist2, rel, man)["mmAP@R"] == 0.0


def test_ap_matches_sort_based_formula_without_ties():
    rng = np.random.default_rng(0)
    queries, items, bits = 8, 40, 64
    dist = np.stack([rng.permutation(bits + 1)[:items] for _ in range(queries)])
    rel = rng.random((queries, items)) < 0.3
    rel[:, 0] = True
    expected = []
    for q in range(queries):
        hits = rel[q][np.argsort(dist[q])]
        precision = np.cumsum(hits) / np.arange(1, items + 1)
        expected.append(np.sum(precision * hits) / hits.sum())
    np.testing.assert_allclose(metrics.average_precision(dist, rel), expected, rtol=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_distractor_histogram_equals_explicit_distractors(seed):
    rng = np.random.default_rng(seed)
    dist, rel, man, distractor_dist, hist = _random_case(rng)
    explicit_dist = np.concatenate([dist, distractor_dist], axis=1)
    pad = np.zeros(distractor_dist.shape, bool)
    explicit_rel = np.concatenate([rel, pad], axis=1)
    explicit_man = np.concatenate([man, pad], axis=1)

    with_hist = metrics.benchmark_one_scores(dist, rel, man, hist)
    explicit = metrics.benchmark_one_scores(explicit_dist, explicit_rel, explicit_man)
    reference = _reference_benchmark_one(dist, rel, man, distractor_dist)
    assert with_hist["queries"] == explicit["queries"] == reference["queries"] == 4
    for key in ("mAP", "mAP@R", "mmAP", "mmAP@R"):
        assert with_hist[key] == pytest.approx(explicit[key], rel=1e-12), key
        assert with_hist[key] == pytest.approx(reference[key], rel=1e-12), key

    # Relevant and manipulated items have the same ranks either way.
    rank = metrics.ranks(dist, rel, man, hist)
    explicit_rank = metrics.ranks(explicit_dist, explicit_rel, explicit_man)[:, : dist.shape[1]]
    np.testing.assert_array_equal(rank[rel | man], explicit_rank[rel | man])
    # All ranks of one query are distinct and leave room for every distractor.
    for q in range(dist.shape[0]):
        assert len(set(rank[q])) == dist.shape[1]
        assert rank[q].max() <= dist.shape[1] + hist[q].sum()

    # Benchmark II through the histogram, the same way.
    target = rng.integers(0, dist.shape[1], size=dist.shape[0])
    two_hist = metrics.benchmark_two_scores(dist, target, dist, target, hist, hist)
    two_explicit = metrics.benchmark_two_scores(explicit_dist, target, explicit_dist, target)
    for key, value in two_hist.items():
        assert value == pytest.approx(two_explicit[key], rel=1e-12), key


def test_queries_without_relevant_items():
    dist = np.array([[1, 2]])
    rel = np.zeros((1, 2), bool)
    assert np.isnan(metrics.average_precision(dist, rel)[0])
    out = metrics.benchmark_one_scores(dist, rel, None)
    assert out["queries"] == 0 and np.isnan(out["mAP"]) and np.isnan(out["mmAP@R"])


# ----------------------------------------------------------------------------------------
# Benchmark II.


def test_benchmark_two_by_hand():
    bins = 9  # 8-bit codes
    # Benign queries (target ranked last among its ties):
    #   q0 d=[0,3,5,6], target 0, one distractor at d=1     -> rank 1 (hit)
    #   q1 d=[2,2,7,8], target 0, tie with column 1         -> rank 2
    #   q2 d=[4,1,4,0], target 2: cols 1, 3 nearer, col 0 tied, one distractor at d=4 -> rank 5
    # R@1 = 1/3, mAP = (1 + 1/2 + 1/5) / 3 = 17/30.
    benign = np.array([[0, 3, 5, 6], [2, 2, 7, 8], [4, 1, 4, 0]])
    benign_target = np.array([0, 0, 2])
    benign_hist = np.zeros((3, bins), int)
    benign_hist[0, 1] = 1
    benign_hist[2, 4] = 1
    # Manipulated queries (target ranked first among its ties):
    #   m0 d=[1,1,5,5], target 0, tie with column 1         -> rank 1 (original found)
    #   m1 d=[6,2,6,3], target 2: cols 1, 3 nearer, col 0 tied goes after -> rank 3
    #   m2 d=[3,4,5,6], target 3: 3 columns + 1 distractor (d=0) nearer, 2 tied at d=6 -> rank 5
    # R@1_bar = 1 - 1/3 = 2/3, mAP_bar = 1 - (1 + 1/3 + 1/5) / 3 = 1 - 23/45 = 22/45.
    manipulated = np.array([[1, 1, 5, 5], [6, 2, 6, 3], [3, 4, 5, 6]])
    manipulated_target = np.array([0, 2, 3])
    manipulated_hist = np.zeros((3, bins), int)
    manipulated_hist[2, 0] = 1
    manipulated_hist[2, 6] = 2

    np.testing.assert_array_equal(
        metrics.target_ranks(benign, benign_target, benign_hist), [1, 2, 5]
    )
    np.testing.assert_array_equal(
        metrics.target_ranks(manipulated, manipulated_target, manipulated_hist, target_first=True),
        [1, 3, 5],
    )
    out = metrics.benchmark_two_scores(
        benign, benign_target, manipulated, manipulated_target, benign_hist, manipulated_hist
    )
    r1, r1_bar = F(1, 3), F(2, 3)
    m, m_bar = F(17, 30), F(22, 45)
    assert out["R@1"] == pytest.approx(float(r1))
    assert out["R@1_bar"] == pytest.approx(float(r1_bar))
    assert out["mAP"] == pytest.approx(float(m))
    assert out["mAP_bar"] == pytest.approx(float(m_bar))
    assert out["FR1"] == pytest.approx(float(r1 * r1_bar / (r1 + r1_bar)))  # 2/9
    assert out["FmAP"] == pytest.approx(float(m * m_bar / (m + m_bar)))  # 2244/8550
    assert out["benign_queries"] == out["manipulated_queries"] == 3

    # Target ranks agree with the general ranking: benign target = the only relevant item,
    # manipulated target = the only manipulated item.
    onehot = np.eye(4, dtype=bool)
    general = metrics.ranks(benign, onehot[benign_target], None, benign_hist)
    np.testing.assert_array_equal(general[np.arange(3), benign_target], [1, 2, 5])
    general = metrics.ranks(
        manipulated, np.zeros((3, 4), bool), onehot[manipulated_target], manipulated_hist
    )
    np.testing.assert_array_equal(general[np.arange(3), manipulated_target], [1, 3, 5])


def test_benchmark_two_empty_side_gives_nan():
    out = metrics.benchmark_two_scores(
        np.array([[0, 1]]), np.array([0]), np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    )
    assert out["R@1"] == 1.0 and out["mAP"] == 1.0 and out["benign_queries"] == 1
    assert out["manipulated_queries"] == 0
    for key in ("R@1_bar", "mAP_bar", "FR1", "FmAP"):
        assert np.isnan(out[key]), key


def test_f_score_reproduces_supplement_table_2():
    # OSCAR-Net row of the supplement's Table 2.
    assert metrics.f_score(0.6635, 0.8105) == pytest.approx(0.3648, abs=5e-5)
    assert metrics.f_score(0.7866, 0.7283) == pytest.approx(0.3782, abs=5e-5)
    # cHash row, to check a second pair.
    assert metrics.f_score(0.2284, 0.6264) == pytest.approx(0.1674, abs=5e-5)
    assert metrics.f_score(0.0, 0.0) == 0.0
    assert np.isnan(metrics.f_score(float("nan"), 0.5))
    np.testing.assert_allclose(metrics.f_score([1.0, 0.0], [1.0, 0.0]), [0.5, 0.0])


# ----------------------------------------------------------------------------------------
# Distances.


@pytest.mark.parametrize("num_bytes", [8, 7, 32])
@pytest.mark.parametrize("fallback", [False, True])
def test_distance_histogram_matches_brute_force(num_bytes, fallback, monkeypatch):
    if fallback:
        monkeypatch.setattr(codes, "_BITWISE_COUNT", None)
    rng = np.random.default_rng(num_bytes)
    queries = rng.integers(0, 256, size=(5, num_bytes), dtype=np.uint8)
    database = rng.integers(0, 256, size=(301, num_bytes), dtype=np.uint8)
    database[:3] = queries[:3]  # distance 0
    database[3] = ~queries[0]  # the maximal distance 8 * num_bytes
    bins = 8 * num_bytes + 1
    brute = codes.hamming_distance(queries, database)
    expected = np.stack([np.bincount(row, minlength=bins) for row in brute])
    got = metrics.distance_histogram(queries, database, chunk=64, query_chunk=2)
    assert got.shape == (5, bins) and got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(metrics.distance_histogram(queries, database), expected)
    np.testing.assert_array_equal(
        codes.hamming_distance(queries, database, max_elements=1000), brute)


def test_distance_histogram_edge_shapes():
    codes = np.zeros((2, 4), np.uint8)
    assert metrics.distance_histogram(codes, np.zeros((0, 4), np.uint8)).sum() == 0
    assert metrics.distance_histogram(np.zeros((0, 4), np.uint8), codes).shape == (0, 33)


# ----------------------------------------------------------------------------------------
# Input validation.


def test_input_validation():
    codes = np.zeros((2, 4), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        metrics.distance_histogram(codes.astype(np.int32), codes)
    with pytest.raises(ValueError, match="bytes per code"):
        metrics.distance_histogram(codes, np.zeros((2, 5), np.uint8))
    with pytest.raises(ValueError, match="positive"):
        metrics.distance_histogram(codes, codes, chunk=0)

    dist = np.array([[1, 2, 3]])
    rel = np.array([[True, False, False]])
    with pytest.raises(ValueError, match="both relevant and manipulated"):
        metrics.ranks(dist, rel, rel)
    with pytest.raises(TypeError, match="boolean"):
        metrics.ranks(dist, rel.astype(int))
    with pytest.raises(ValueError, match="shape"):
        metrics.ranks(dist, rel[:, :2])
    with pytest.raises(TypeError, match="integers"):
        metrics.ranks(dist.astype(float), rel)
    with pytest.raises(ValueError, match="negative"):
        metrics.ranks(-dist, rel)
    with pytest.raises(ValueError, match="does not fit"):
        metrics.ranks(dist, rel, None, np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="queries=1"):
        metrics.ranks(dist, rel, None, np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="negative counts"):
        metrics.ranks(dist, rel, None, -np.ones((1, 4), int))
    with pytest.raises(ValueError, match="0..2"):
        metrics.benchmark_two_scores(dist, np.array([3]), dist, np.array([0]))
    with pytest.raises(ValueError, match="one column per query"):
        metrics.benchmark_two_scores(dist, np.array([0, 1]), dist, np.array([0]))


def test_separation_by_hand():
    # One identity: reference r, benign views b1 b2, manipulated m1 m2.
    identity = np.zeros(5, int)
    variant = np.array([0, 0, 0, 1, 2])
    view = np.array([0, 1, 2, 0, 0])
    distance = np.zeros((5, 5))
    distance[0] = [0, 1, 4, 4, 2]  # b1=1, b2=4; m1=4, m2=2
    # pairs: (1,4) win, (1,2) win, (4,4) tie, (4,2) loss -> (1 + 1 + 0.5 + 0) / 4
    result = metrics.separation(distance, identity, variant, view)
    assert result["separation"] == pytest.approx(0.625)
    assert result["benign_distance"] == pytest.approx(2.5)
    assert result["manipulated_distance"] == pytest.approx(3.0)
    # m1 and m2 are untransformed (view 0): the edits alone, at 4 and 2, neither unseen.
    assert result["edit_distance"] == pytest.approx(3.0) and result["edits_unseen"] == 0.0
    view_one = metrics.separation(distance, identity, variant, np.array([0, 1, 2, 1, 0]))
    assert view_one["edit_distance"] == pytest.approx(2.0)  # m1 is a view of its edit now
    unseen = distance.copy()
    unseen[0, 4] = 0  # m2's edit moves no bit
    assert metrics.separation(unseen, identity, variant, view)["edits_unseen"] == 0.5
    no_edit_alone = metrics.separation(distance, identity, variant, np.array([0, 1, 2, 1, 2]))
    assert np.isnan(no_edit_alone["edit_distance"]) and np.isnan(no_edit_alone["edits_unseen"])
    # A second identity without manipulated versions is left out, not scored.
    result = metrics.separation(np.pad(distance, ((0, 2), (0, 2))), np.r_[identity, 1, 1],
                        np.r_[variant, 0, 0], np.r_[view, 0, 1])
    assert result["identities"] == 1 and result["separation"] == pytest.approx(0.625)
    # keep: b2 and m2 left out -> the single pair (b1=1, m1=4) is a win.
    kept = metrics.separation(distance, identity, variant, view,
                              keep=np.array([True, True, False, True, False]))
    assert kept["separation"] == 1.0 and kept["benign_distance"] == 1.0
    assert kept["manipulated_distance"] == 4.0
    with pytest.raises(ValueError, match="no identity"):
        metrics.separation(distance, identity, variant, view, keep=variant == 0)


def test_target_gap_by_hand():
    distance = np.array([[3, 1, 5],
                         [0, 4, 4],
                         [2, 2, 7]])
    own, other = metrics.target_gap(distance, np.array([1, 2, 0]))
    np.testing.assert_array_equal(own, [1, 4, 2])
    np.testing.assert_array_equal(other, [3, 0, 2])  # a tie with another entry counts as other
    own, other = metrics.target_gap(np.array([[5]]), np.array([0]))
    assert own[0] == 5 and np.isinf(other[0])  # nothing else in the database
