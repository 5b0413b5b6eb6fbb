"""OscarNet: shapes, every Table 3 ablation, node-order invariance, gradients to both CNNs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax import hashing
from oscar_jax.models.oscar import OscarNet, grid_pool, split_width
from tests.samples import make_batch

TINY = dict(cnn="tiny", code_bits=16, visual_dim=16, width=32, num_layers=1, num_heads=2,
            mlp_dim=32, projection_dim=8, dropout_rate=0.0)
# Table 3 of the paper, as fields (B differs from A by pretraining only).
ABLATIONS = {
    "A": dict(use_global=False, use_shape=False, use_geometry=False, use_edges=False),
    "C": dict(use_global=False, use_shape=False, use_edges=False),
    "D": dict(use_global=False, use_edges=False),
    "E": dict(use_global=False),
    "F_cnn": dict(use_objects=False),
    "G_first_token": dict(pooling="first"),
    "H_gnn": dict(encoder="mlp"),
    "I_thresholded": dict(graph="thresholded"),
    "J_full": dict(),
}


@functools.cache
def initialised(**fields):
    model = OscarNet(**{**TINY, **fields})
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0),
                                                                     make_batch())
    return model, variables


@functools.cache
def jitted_apply(**fields):
    """One compiled eval-mode forward per configuration, shared by the tests."""
    return jax.jit(functools.partial(OscarNet(**{**TINY, **fields}).apply, train=False))


def test_split_width_sums_exactly():
    assert split_width(512, 3) == [171, 171, 170]
    assert sum(split_width(33, 4)) == 33


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_with_the_right_output(name):
    model = OscarNet(**{**TINY, **ABLATIONS[name]})

    def init_and_apply():
        variables = model.init(jax.random.key(0), make_batch(), train=False)
        return variables, model.apply(variables, make_batch(), train=False)

    variables, z = jax.eval_shape(init_and_apply)  # shapes only: nothing is compiled
    assert z.shape == (2, 16)
    params = variables["params"]
    assert ("global_cnn" in params) == ABLATIONS[name].get("use_global", True)
    assert ("relation_encoder" in params) == (
        ABLATIONS[name].get("use_edges", True) and ABLATIONS[name].get("use_objects", True))
    assert "code_projection" in params


def test_a_model_without_streams_is_refused():
    with pytest.raises(ValueError, match="use_global or use_objects"):
        OscarNet(**TINY, use_global=False, use_objects=False).init(
            jax.random.key(0), make_batch(), train=False)


def permute_nodes(batch, order):
    """The same graph with its real nodes listed in `order` (batch row 0)."""
    out = {k: np.array(v) for k, v in batch.items()}
    full = np.concatenate([order, np.arange(len(order), out["node_mask"].shape[1])])
    for key in ("crops", "node_mask", "geometry", "shape"):
        out[key][0] = out[key][0][full]
    out["relations"][0] = out["relations"][0][full][:, full]
    return out


def test_full_model_is_finite_and_ignores_node_order():
    _, variables = initialised()
    batch = make_batch()
    apply = jitted_apply()
    z = np.asarray(apply(variables, batch))
    assert z.shape == (2, 16) and np.isfinite(z).all()
    permuted = np.asarray(apply(variables, permute_nodes(batch, np.array([2, 0, 1]))))
    np.testing.assert_allclose(permuted, z, rtol=1e-4, atol=1e-4)
    changed = dict(batch, geometry=batch["geometry"] + 0.3 * batch["node_mask"][..., None])
    assert np.abs(np.asarray(apply(variables, changed)) - z).max() > 1e-3


def test_thresholded_graph_changes_the_embedding_when_it_cuts_edges():
    _, variables = initialised()  # the thresholded graph has the same parameters
    batch = make_batch()
    batch["relations"][..., 6] = 0.0  # no overlaps: only the diagonal stays connected
    z_cut = np.asarray(jitted_apply(graph="thresholded", edge_distance=0.0)(variables, batch))
    z_full = np.asarray(jitted_apply()(variables, batch))
    assert np.isfinite(z_cut).all()
    assert np.abs(z_cut[0] - z_full[0]).max() > 1e-4  # row 0 has 3 objects, edges were cut


def test_gradients_reach_both_cnns_through_the_sign():
    model, variables = initialised()
    batch = make_batch()

    def loss(params):
        z = model.apply({**variables, "params": params}, batch, train=False)
        u, _ = hashing.hash_codes(z, "sign")
        projected = model.apply({**variables, "params": params}, u, method=OscarNet.project)
        return jnp.sum(projected**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for stream in ("global_cnn", "object_cnn"):
        kernel = np.asarray(grads[stream]["conv1"]["kernel"])
        assert np.isfinite(kernel).all() and np.abs(kernel).sum() > 0, stream


# Each input field, the switch that reads it, and a perturbation of its real entries.
FEATURES = {
    "image": ("use_global", lambda b: dict(b, image=255 - b["image"])),
    "crops": ("use_visual", lambda b: dict(b, crops=255 - b["crops"])),
    "shape": ("use_shape",
              lambda b: dict(b, shape=b["shape"] + 2.0 * b["node_mask"][..., None])),
    "geometry": ("use_geometry",
                 lambda b: dict(b, geometry=b["geometry"][:, ::-1] * b["node_mask"][..., None])),
    "relations": ("use_edges", lambda b: dict(b, relations=-b["relations"])),
    "image_frequencies": ("use_frequency", lambda b: dict(b, image=255 - b["image"])),
}


@pytest.mark.parametrize("field", sorted(FEATURES))
@pytest.mark.parametrize("switch_on", [True, False])
def test_each_input_moves_z_exactly_when_its_switch_is_on(field, switch_on):
    """A model that read `geometry` for the Hu moments, or ignored a switch, fails here."""
    switch, perturb = FEATURES[field]
    fields = {switch: switch_on}
    if switch == "use_visual" and not switch_on:
        fields["use_global"] = True  # keep a second visual source; objects still run
    if switch == "use_frequency":
        fields["use_global"] = False  # FG reads the image too
    model = OscarNet(**{**TINY, **fields})
    batch = make_batch()
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), batch)
    apply = jax.jit(functools.partial(model.apply, train=False))
    before = np.asarray(apply(variables, batch))
    after = np.asarray(apply(variables, perturb(batch)))
    if switch_on:
        assert np.abs(after - before).max() > 1e-4, f"{field} is ignored with {switch} on"
    else:
        np.testing.assert_array_equal(after, before, err_msg=f"{field} leaks with {switch} off")


def test_grid_pool_is_the_mean_of_each_cell_in_row_major_order():
    rng = np.random.default_rng(0)
    feature_map = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    pooled = np.asarray(grid_pool(jnp.asarray(feature_map), 2))
    want = [feature_map[b, r * 2:(r + 1) * 2, c * 3:(c + 1) * 3].mean(axis=(0, 1))
            for b in range(2) for r in range(2) for c in range(2)]
    np.testing.assert_allclose(pooled.reshape(8, 3), np.stack(want), rtol=1e-6)
    with pytest.raises(ValueError, match="does not divide the 4 x 6 feature map"):
        grid_pool(jnp.asarray(feature_map), 4)


@pytest.mark.parametrize("grid", [0, 2])
def test_the_spatial_stream_reads_the_image_past_fg_s_pooling(grid):
    """With FG's head zeroed, the image reaches z only through FS: a model that dropped the
    stream, or fed it the pooled vector, fails here."""
    batch = make_batch()
    batch["image"] = np.repeat(np.repeat(batch["image"], 2, axis=1), 2, axis=2)  # 64 px: 2 x 2
    model = OscarNet(**{**TINY, "use_objects": False, "global_grid": grid})
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), batch)
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    params["global_cnn"]["head"]["kernel"] = np.zeros_like(params["global_cnn"]["head"]["kernel"])
    variables = {**variables, "params": params}
    apply = jax.jit(functools.partial(model.apply, train=False))
    # Swapping the image's left and right halves keeps FG's pooled features nearly, FS's not.
    moved = dict(batch, image=np.roll(batch["image"], 32, axis=2))
    change = np.abs(np.asarray(apply(variables, moved)) - np.asarray(apply(variables, batch)))
    if grid:
        assert change.max() > 1e-3
        assert params["grid_embed"]["kernel"].shape[0] == 4 * 128  # 2 x 2 cells of 128
    else:
        np.testing.assert_array_equal(change, 0)
    with pytest.raises(ValueError, match="global_grid=2 needs use_global"):
        OscarNet(**{**TINY, "use_global": False, "global_grid": 2}).init(
            jax.random.key(0), batch, train=False)
