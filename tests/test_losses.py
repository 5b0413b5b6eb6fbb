"""Tests for oscar_jax.losses against float64 loop references, and across 2 fake devices."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from oscar_jax import losses

# ----------------------------------------------------------------------------------------
# A hand-made batch: 3 identities x 2 variants x 2 views = 12 real rows, plus 4 padding rows,
# in a fixed shuffled order so that each half (one per device) mixes everything.

_E = 8


def _batch(arranged: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    identity = np.repeat(np.arange(3), 4)
    variant = np.tile(np.repeat(np.arange(2), 2), 3)
    if arranged:
        # Each image has its own direction; views are small perturbations of it.
        centres = np.eye(_E)[:6] * 3.0
        emb = centres[2 * identity + variant] + 0.1 * rng.normal(size=(12, _E))
    else:
        emb = rng.normal(size=(12, _E))
    pad = 4
    emb = np.concatenate([emb, 50.0 * rng.normal(size=(pad, _E))])
    identity = np.concatenate([identity, np.zeros(pad, int)])
    variant = np.concatenate([variant, np.zeros(pad, int)])
    valid = np.concatenate([np.ones(12, bool), np.zeros(pad, bool)])
    order = np.random.default_rng(123).permutation(16)
    return emb[order], identity[order], variant[order], valid[order]


def _jax(emb, identity, variant, valid):
    return (
        jnp.asarray(emb, jnp.float32),
        jnp.asarray(identity, jnp.int32),
        jnp.asarray(variant, jnp.int32),
        jnp.asarray(valid),
    )


# ----------------------------------------------------------------------------------------
# float64 loop references.


def _cos(emb):
    x = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    return x @ x.T


def _relations(identity, variant, valid):
    n = len(identity)
    for i in range(n):
        if not valid[i]:
            continue
        others = [j for j in range(n) if valid[j] and j != i]
        pos = [j for j in others if identity[j] == identity[i] and variant[j] == variant[i]]
        sidv = [j for j in others if identity[j] == identity[i] and variant[j] != variant[i]]
        di = [j for j in others if identity[j] != identity[i]]
        yield i, pos, sidv, di


def ref_simclr_plus(emb, identity, variant, valid, temperature=0.8, positives_in_den=True,
                    manipulated_weight=1.0):
    s = _cos(emb) / temperature
    terms = []
    for i, pos, sidv, di in _relations(identity, variant, valid):
        if not pos:
            continue
        num = sum(math.exp(s[i, j]) for j in pos)
        den = (manipulated_weight * sum(math.exp(s[i, j]) for j in sidv)
               + sum(math.exp(s[i, j]) for j in di) + (num if positives_in_den else 0.0))
        terms.append(-math.log(num / den))
    return np.mean(terms)


def ref_simclr(emb, identity, variant, valid, temperature=0.8, manipulated_negatives=True):
    s = _cos(emb) / temperature
    terms = []
    for i, pos, sidv, di in _relations(identity, variant, valid):
        negatives = sidv + di if manipulated_negatives else di
        den = sum(math.exp(s[i, j]) for j in pos + negatives)
        terms += [-math.log(math.exp(s[i, p]) / den) for p in pos]
    return np.mean(terms)


def ref_triplet(emb, identity, variant, valid, margin=0.2, mining="all", negatives="any"):
    d = 1.0 - _cos(emb)
    terms = []
    for i, pos, sidv, di in _relations(identity, variant, valid):
        neg = sidv + di if negatives == "any" else sidv
        if mining == "all":
            terms += [max(0.0, margin + d[i, p] - d[i, n]) for p in pos for n in neg]
        elif pos and neg:
            terms.append(max(0.0, margin + max(d[i, pos]) - min(d[i, neg])))
    return np.mean(terms)


def ref_triplet_plus(emb, identity, variant, valid, margin=0.2, beta=0.01, sidv_weight=0.9):
    s = _cos(emb)
    terms = []
    for i, pos, sidv, di in _relations(identity, variant, valid):
        sidv = [n for n in sidv if variant[i] == 0 or variant[n] == 0]
        weights = {"sidv": sidv_weight if sidv else 0.0, "di": 1 - sidv_weight if di else 0.0}
        if not (sidv or di):
            continue
        for p in pos:
            value = 0.0
            for name, neg in (("sidv", sidv), ("di", di)):
                if neg:
                    ell = [max(0.0, margin + s[i, n] - s[i, p]) + beta * s[i, n] for n in neg]
                    value += weights[name] * np.mean(ell)
            terms.append(value / (weights["sidv"] + weights["di"]))
    return np.mean(terms)


def ref_pairwise(emb, identity, variant, valid, margin=0.5):
    d = 1.0 - _cos(emb)
    terms = []
    for i, pos, sidv, di in _relations(identity, variant, valid):
        terms += [d[i, j] ** 2 for j in pos]
        terms += [max(0.0, margin - d[i, j]) ** 2 for j in sidv + di]
    return np.mean(terms)


def ref_original_not_first(emb, identity, variant, valid, temperature=0.2, others_weight=1.0):
    s = _cos(emb) / temperature
    terms = []
    for i, _, sidv, di in _relations(identity, variant, valid):
        original = [j for j in sidv if variant[j] == 0]
        if variant[i] == 0 or not original or not di:
            continue
        first = sum(math.exp(s[i, j]) for j in original)
        others = others_weight * sum(math.exp(s[i, j]) for j in di)
        terms.append(-math.log(1.0 - first / (first + others)))
    return np.mean(terms)


# (loss name, hyperparameters, reference); original_not_first is an extra term, not in LOSSES.
CASES = [
    ("simclr_plus", {}, ref_simclr_plus),
    ("simclr_plus", {"temperature": 0.5, "positives_in_denominator": False},
     functools.partial(ref_simclr_plus, temperature=0.5, positives_in_den=False)),
    ("simclr_plus", {"temperature": 0.2, "manipulated_weight": 8.0},
     functools.partial(ref_simclr_plus, temperature=0.2, manipulated_weight=8.0)),
    ("simclr", {}, ref_simclr),
    ("simclr", {"manipulated_negatives": False},
     functools.partial(ref_simclr, manipulated_negatives=False)),
    ("triplet", {}, ref_triplet),
    ("triplet", {"mining": "hard"}, functools.partial(ref_triplet, mining="hard")),
    ("triplet", {"negatives": "manipulated"},
     functools.partial(ref_triplet, negatives="manipulated")),
    ("triplet_plus", {}, ref_triplet_plus),
    ("pairwise_contrastive", {}, ref_pairwise),
    ("original_not_first", {}, ref_original_not_first),
    ("original_not_first", {"temperature": 1.0},
     functools.partial(ref_original_not_first, temperature=1.0)),
    ("original_not_first", {"temperature": 0.1, "others_weight": 40.0},
     functools.partial(ref_original_not_first, temperature=0.1, others_weight=40.0)),
]  # fmt: skip
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


@pytest.mark.parametrize(("name", "kwargs", "ref"), CASES, ids=IDS)
def test_matches_float64_reference(name, kwargs, ref):
    batch = _batch()
    value = float(jax.jit(functools.partial(getattr(losses, name), **kwargs))(*_jax(*batch)))
    assert value == pytest.approx(ref(*batch), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("name", "kwargs", "ref"), CASES, ids=IDS)
def test_padding_changes_nothing_and_gradient_is_finite(name, kwargs, ref):
    emb, identity, variant, valid = _batch()
    fn = functools.partial(getattr(losses, name), **kwargs)
    # The float64 reference without the padding rows at all.
    unpadded = ref(emb[valid], identity[valid], variant[valid], valid[valid])
    # Padding rows full of NaN, with labels that would make them positives of real rows.
    emb_nan = np.where(valid[:, None], emb, np.nan)
    identity_pad = np.where(valid, identity, identity[valid][0])
    variant_pad = np.where(valid, variant, variant[valid][0])
    args = _jax(emb_nan, identity_pad, variant_pad, valid)
    value, grad = jax.jit(jax.value_and_grad(fn))(*args)
    assert float(value) == pytest.approx(unpadded, rel=1e-5, abs=1e-6)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[~valid], 0.0)
    assert np.any(grad[valid] != 0.0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_arranged_embeddings_have_lower_loss_than_shuffled(name):
    emb, identity, variant, valid = _batch(arranged=True)
    shuffled = emb[np.random.default_rng(7).permutation(len(emb))]
    fn = jax.jit(losses.LOSSES[name])
    good = float(fn(*_jax(emb, identity, variant, valid)))
    bad = float(fn(*_jax(shuffled, identity, variant, valid)))
    assert good < bad


def test_simclr_plus_by_hand_in_two_dimensions():
    # Two views of image A along x, its manipulated version along y, another identity along -x.
    emb = jnp.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    identity = jnp.array([0, 0, 0, 1])
    variant = jnp.array([0, 0, 1, 0])
    valid = jnp.ones(4, bool)
    # Only rows 0 and 1 have a positive, each with cos 1 to the positive, 0 to the
    # manipulated row and -1 to the other identity (temperature 1).
    loss = jax.jit(losses.simclr_plus, static_argnames=("positives_in_denominator",))
    value = loss(emb, identity, variant, valid, temperature=1.0)
    expected = -math.log(math.e / (math.e + 1.0 + math.exp(-1.0)))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    printed = loss(emb, identity, variant, valid, temperature=1.0, positives_in_denominator=False)
    assert float(printed) == pytest.approx(-math.log(math.e / (1.0 + math.exp(-1.0))), rel=1e-6)
    # A weight of w on the manipulated row counts its term w times.
    weighted = loss(emb, identity, variant, valid, temperature=1.0, manipulated_weight=5.0)
    assert float(weighted) == pytest.approx(
        -math.log(math.e / (math.e + 5.0 + math.exp(-1.0))), rel=1e-6)
    # Nothing to compare: no anchor has a positive, and the loss is zero, not NaN.
    alone = loss(emb, jnp.arange(4), variant, valid, temperature=1.0)
    assert float(alone) == 0.0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("simclr_plus", {}), ("triplet_plus", {}), ("triplet", {}), ("original_not_first", {})],
)
def test_pmap_over_two_devices_equals_one_device(name, kwargs):
    assert jax.local_device_count() >= 2, "conftest should give 2 fake CPU devices"
    args = _jax(*_batch())
    fn = functools.partial(getattr(losses, name), **kwargs)

    def per_device(emb, identity, variant, valid):
        loss, grad = jax.value_and_grad(functools.partial(fn, axis_name="batch"))(
            emb, identity, variant, valid
        )
        return lax.pmean(loss, "batch"), grad

    split = [a.reshape((2, -1) + a.shape[1:]) for a in args]
    loss, grad = jax.pmap(per_device, axis_name="batch", devices=jax.local_devices()[:2])(*split)
    single_loss, single_grad = jax.jit(jax.value_and_grad(fn))(*args)
    np.testing.assert_allclose(np.asarray(loss), float(single_loss), rtol=1e-5, atol=1e-6)
    # Each device's gradient with respect to its rows includes the other device's anchors
    # (the transpose of all_gather), so averaging over devices gives the global gradient.
    np.testing.assert_allclose(
        np.asarray(grad).reshape(single_grad.shape) / 2, np.asarray(single_grad), atol=1e-6
    )


def test_simclr_and_simclr_plus_coincide_only_with_two_views():
    emb = jnp.asarray(np.random.default_rng(3).normal(size=(6, 4)), jnp.float32)
    variant = jnp.zeros(6, jnp.int32)
    valid = jnp.ones(6, bool)
    both = jax.jit(
        lambda identity: (
            losses.simclr(emb, identity, variant, valid),
            losses.simclr_plus(emb, identity, variant, valid),
        )
    )
    plain, plus = both(jnp.array([0, 0, 1, 1, 2, 2]))  # two views of each image
    assert float(plain) == pytest.approx(float(plus), rel=1e-6)
    plain, plus = both(jnp.array([0, 0, 0, 1, 1, 1]))  # three views of each image
    assert float(plain) != pytest.approx(float(plus), rel=1e-3)


# ----------------------------------------------------------------------------------------
# original_not_first: Benchmark II's R@1-bar as a loss.


def test_original_not_first_by_hand_in_two_dimensions():
    # A's original along x, its manipulated version at 60 degrees, B's original along y.
    emb = jnp.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    identity, variant = jnp.array([0, 0, 1]), jnp.array([0, 1, 0])
    valid = jnp.ones(3, bool)
    value = losses.original_not_first(emb, identity, variant, valid, temperature=1.0)
    # Only row 1 is a manipulated anchor: cos 0.5 to its original, cos 0.87 to B.
    first = math.exp(0.5) / (math.exp(0.5) + math.exp(math.sqrt(3) / 2))
    assert float(value) == pytest.approx(-math.log(1.0 - first), rel=1e-6)
    # Moving the edit away from its original lowers the loss; with no other identity in the
    # batch there is nothing to rank before the original, and the loss is zero, not NaN.
    further = emb.at[1].set(jnp.array([-0.5, math.sqrt(3) / 2]))
    assert float(losses.original_not_first(further, identity, variant, valid,
                                           temperature=1.0)) < float(value)
    alone = losses.original_not_first(emb[:2], identity[:2], variant[:2], valid[:2])
    assert float(alone) == 0.0
    # B counted as 5 database entries: p = e^0.5 / (e^0.5 + 5 e^0.87), a smaller loss.
    weighted = losses.original_not_first(emb, identity, variant, valid, temperature=1.0,
                                         others_weight=5.0)
    first = math.exp(0.5) / (math.exp(0.5) + 5 * math.exp(math.sqrt(3) / 2))
    assert float(weighted) == pytest.approx(-math.log(1.0 - first), rel=1e-6)
    with pytest.raises(ValueError, match="others_weight"):
        losses.original_not_first(emb, identity, variant, valid, others_weight=0.0)


def test_original_not_first_anchors_only_moves_the_manipulated_codes_alone():
    emb, identity, variant, valid = args = _jax(*_batch())
    both = jax.value_and_grad(losses.original_not_first)(*args)
    alone = jax.value_and_grad(functools.partial(losses.original_not_first,
                                                 anchors_only=True))(*args)
    assert float(alone[0]) == pytest.approx(float(both[0]), rel=1e-6)
    manipulated = np.asarray(valid & (variant > 0))
    assert np.all(np.asarray(alone[1])[~manipulated] == 0.0)
    assert np.any(np.asarray(both[1])[~manipulated & np.asarray(valid)] != 0.0)
    assert np.any(np.asarray(alone[1])[manipulated] != 0.0)
