"""Scene graph encoders: set symmetry, padding, degenerate graphs and the Table 3 ablations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax.models.encoder import (
    AttentionPooling,
    FirstTokenPooling,
    GraphEncoder,
    MLPGraphEncoder,
    TransformerEncoder,
    graph_mask,
)

WIDTH = 16
TINY = {"num_layers": 2, "num_heads": 2, "mlp_dim": 32, "dropout_rate": 0.1}
ATOL = 1e-5


def tiny(encoder="transformer", pooling="attention"):
    return GraphEncoder(encoder=encoder, pooling=pooling, **TINY)


def graph(batch=2, tokens=6, real=(4, 2), seed=0):
    """Random tokens [B, T, WIDTH] with the first ``real[b]`` tokens of row b real."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, tokens, WIDTH)).astype(np.float32)
    mask = np.arange(tokens)[None, :] < np.asarray(real)[:, None]
    return jnp.asarray(x), jnp.asarray(mask)


def body(encoder):
    """The bare encoder a tiny GraphEncoder holds under the name 'encoder'."""
    if encoder == "transformer":
        return TransformerEncoder(**TINY)
    return MLPGraphEncoder(**{k: v for k, v in TINY.items() if k != "num_heads"})


def init(module, x, mask):
    return module.init(jax.random.key(0), x, mask, train=False)


def run(model, params, *args, train=False, rng=None):
    """``model.apply``, run op by op: at these sizes compiling a whole graph costs more."""
    rngs = {} if rng is None else {"dropout": rng}
    return model.apply(params, *args, train=train, rngs=rngs)


@pytest.mark.parametrize("encoder", ["transformer", "mlp"])
def test_permuting_tokens_leaves_pooled_output_unchanged(encoder):
    x, mask = graph()
    model = tiny(encoder)
    params = init(model, x, mask)
    perm = np.array([3, 5, 0, 2, 4, 1])  # Mixes real and padded positions.
    out = run(model, params, x, mask, train=False)
    out_perm = run(model, params, x[:, perm], mask[:, perm], train=False)
    assert out.shape == (2, WIDTH)
    np.testing.assert_allclose(out_perm, out, atol=ATOL)


@pytest.mark.parametrize("encoder", ["transformer", "mlp"])
def test_encoders_are_permutation_equivariant(encoder):
    x, mask = graph()
    model = body(encoder)
    params = init(model, x, mask)
    perm = np.array([2, 0, 1, 3, 5, 4])
    out = run(model, params, x, mask, train=False)
    out_perm = run(model, params, x[:, perm], mask[:, perm], train=False)
    np.testing.assert_allclose(out_perm, out[:, perm], atol=ATOL)


@pytest.mark.parametrize(
    ("encoder", "pooling"),
    [("transformer", "attention"), ("mlp", "attention"), ("transformer", "first")],
)
def test_padding_with_huge_values_changes_nothing(encoder, pooling):
    x, mask = graph()
    model = tiny(encoder, pooling)
    params = init(model, x, mask)
    out = run(model, params, x, mask, train=False)
    inner = {"params": params["params"]["encoder"]}
    tokens = run(body(encoder), inner, x, mask, train=False)

    # Garbage in the existing padded slots plus three appended padded tokens.
    garbage = jnp.where(mask[..., None], x, 1e30)
    extra = jnp.stack([jnp.full((2, WIDTH), v) for v in (1e30, -1e30, jnp.inf)], axis=1)
    x_pad = jnp.concatenate([garbage, extra], axis=1)
    mask_pad = jnp.concatenate([mask, jnp.zeros((2, 3), bool)], axis=1)
    out_pad = run(model, params, x_pad, mask_pad, train=False)
    tokens_pad = run(body(encoder), inner, x_pad, mask_pad, train=False)
    np.testing.assert_allclose(out_pad, out, atol=ATOL)
    # Real positions never depend on padded ones; padded outputs stay finite.
    real = np.asarray(mask)
    np.testing.assert_allclose(
        np.asarray(tokens_pad)[:, :6][real], np.asarray(tokens)[real], atol=ATOL
    )
    assert np.isfinite(np.asarray(tokens_pad)).all()


@pytest.mark.parametrize(
    ("encoder", "pooling"),
    [("transformer", "attention"), ("mlp", "attention"), ("transformer", "first")],
)
def test_single_real_token_has_finite_outputs_and_gradients(encoder, pooling):
    x, _ = graph(real=(1, 1))
    mask = jnp.zeros((2, 6), bool).at[:, 0].set(True)  # Only the background node.
    x = jnp.where(mask[..., None], x, 1e30)
    model = tiny(encoder, pooling)
    params = init(model, x, mask)

    def loss(params, x):
        # Eval mode: dropout only rescales finite values, and its RNG is slow to set up.
        out = model.apply(params, x, mask, train=False)
        return jnp.sum(out**2), out

    grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (value, out), (g_params, g_x) = grad_fn(params, x)
    assert np.isfinite(np.asarray(out)).all() and np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(g_params))
    assert np.isfinite(np.asarray(g_x)).all()
    # Padded inputs receive no gradient; the real one does.
    assert not np.asarray(g_x)[:, 1:].any()
    assert np.abs(np.asarray(g_x)[:, 0]).sum() > 0


@pytest.mark.parametrize("encoder", ["transformer", "mlp"])
def test_extra_attention_mask_removes_edges(encoder):
    x, mask = graph(real=(4, 4))
    model = tiny(encoder)
    params = init(model, x, mask)
    full = run(model, params, x, mask, train=False)
    everything = jnp.ones((2, 6, 6), bool)
    np.testing.assert_allclose(
        run(model, params, x, mask, everything, train=False), full, atol=ATOL
    )
    # Ablation I: cut node 0 from nodes 1-3 in both directions.
    sparse = everything.at[:, 0, 1:].set(False).at[:, 1:, 0].set(False)
    cut = run(model, params, x, mask, sparse, train=False)
    assert np.isfinite(np.asarray(cut)).all()
    assert np.abs(np.asarray(cut) - np.asarray(full)).max() > 1e-3


def test_graph_mask_keeps_self_edges_only_for_padding():
    mask = jnp.array([[True, True, False]])
    adjacency = np.asarray(graph_mask(mask, jnp.zeros((1, 3, 3), bool)))
    np.testing.assert_array_equal(adjacency[0], np.eye(3, dtype=bool))
    adjacency = np.asarray(graph_mask(mask))
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    np.testing.assert_array_equal(adjacency[0], expected)
    with pytest.raises(ValueError, match=r"\[B, T, T\]"):
        graph_mask(mask, jnp.ones((1, 3, 4), bool))


def test_first_token_pooling_returns_the_first_encoding():
    x, mask = graph()
    model = tiny(pooling="first")
    params = init(model, x, mask)
    out = run(model, params, x, mask, train=False)
    tokens = run(body("transformer"), {"params": params["params"]["encoder"]}, x, mask, train=False)
    np.testing.assert_allclose(out, tokens[:, 0], atol=ATOL)
    np.testing.assert_array_equal(FirstTokenPooling().apply({}, x, mask), x[:, 0])


def test_attention_pooling_is_a_convex_combination_of_real_tokens():
    x, mask = graph()
    pool = AttentionPooling(attention_dim=8)
    params = pool.init(jax.random.key(0), x, mask)
    out = np.asarray(pool.apply(params, x, mask))
    # With identical real tokens every weighting returns that token.
    same = jnp.where(mask[..., None], x[:, :1], 123.0)
    np.testing.assert_allclose(pool.apply(params, same, mask), x[:, 0], atol=ATOL)
    lo = np.where(mask[..., None], x, np.inf).min(1)
    hi = np.where(mask[..., None], x, -np.inf).max(1)
    assert (out >= lo - ATOL).all() and (out <= hi + ATOL).all()


def test_dropout_only_in_training():
    x, mask = graph()
    model = tiny()
    params = init(model, x, mask)
    a = run(model, params, x, mask, train=False)
    b = run(model, params, x, mask, train=False)
    np.testing.assert_array_equal(a, b)
    c = run(model, params, x, mask, train=True, rng=jax.random.key(1))
    d = run(model, params, x, mask, train=True, rng=jax.random.key(2))
    assert np.abs(np.asarray(c) - np.asarray(d)).max() > 1e-4


def test_official_default_shapes():
    x = jax.ShapeDtypeStruct((2, 17, 512), jnp.float32)
    mask = jax.ShapeDtypeStruct((2, 17), jnp.bool_)
    model = GraphEncoder()
    params = jax.eval_shape(
        lambda x, mask: model.init(jax.random.key(0), x, mask, train=False), x, mask
    )
    blocks = [k for k in params["params"]["encoder"] if k.startswith("block_")]
    assert len(blocks) == 6
    mlp = params["params"]["encoder"]["block_0"]["mlp"]
    assert mlp["fc1"]["kernel"].shape == (512, 1024)
    out = jax.eval_shape(lambda p, x, mask: model.apply(p, x, mask, train=False), params, x, mask)
    assert out.shape == (2, 512)


@pytest.mark.parametrize(("field", "value"), [("encoder", "gcn"), ("pooling", "mean")])
def test_unknown_component_names_are_rejected(field, value):
    x, mask = graph()
    with pytest.raises(ValueError, match="choose one of"):
        init(GraphEncoder(**{field: value}, **TINY), x, mask)
