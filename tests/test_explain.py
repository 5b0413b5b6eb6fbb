"""Eq. 14 GradCAM: the maths on hand-made cases, the ResNet hooks, and the trained tiny model."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import cv2
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax import train
from oscar_jax.attribution import gradcam
from oscar_jax.inference.records import stack
from oscar_jax.models import resnet
from oscar_jax.models.oscar import OscarNet
from oscar_jax.workdir import create_model, load_config
from preprocessing import scene_graph
from preprocessing.images import decode_image, encode_png
from tests import samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(cnn="tiny", code_bits=16, visual_dim=16, width=32, num_layers=1, num_heads=2,
            mlp_dim=32, projection_dim=8, dropout_rate=0.0)


# ---- GradCAM maths ----------------------------------------------------------------------------


def test_gradcam_weights_channels_by_their_mean_gradient():
    activations = np.zeros((1, 2, 2, 2), np.float32)
    activations[0, 0, 1, 0] = 3.0  # channel 0: one hot cell
    activations[0, ..., 1] = 1.0  # channel 1: flat
    gradients = np.zeros_like(activations)
    gradients[0, ..., 0] = [[4.0, 0.0], [2.0, 2.0]]  # mean 2, not used pointwise
    gradients[0, ..., 1] = -1.0
    cam = np.asarray(gradcam.gradcam(activations, gradients))
    # relu(2 * A0 - 1 * A1): 6 - 1 at the hot cell, relu(-1) = 0 elsewhere.
    np.testing.assert_allclose(cam, [[[0.0, 5.0], [0.0, 0.0]]])


def test_objective_is_eq14_with_gradients_through_the_query_only():
    z = jnp.array([1.0, 0.0, 0.0])
    positive = jnp.array([1.0, 1.0, 0.0])
    negative = jnp.array([0.0, 0.0, 2.0])
    value = gradcam.dissimilarity_objective(z, positive, negative)
    assert float(value) == pytest.approx(1 / np.sqrt(2) - 0.0)
    grads = jax.grad(gradcam.dissimilarity_objective, argnums=(0, 1, 2))(z, positive, negative)
    assert np.abs(grads[0]).sum() > 0
    np.testing.assert_array_equal(grads[1], 0.0)
    np.testing.assert_array_equal(grads[2], 0.0)
    # x+ = x: cos(z, z) is at its maximum, so only the negative term has a gradient.
    same = jax.grad(gradcam.dissimilarity_objective)(z, z, negative)
    away = jax.grad(lambda q: -gradcam.cosine(q, negative))(z)
    np.testing.assert_allclose(same, away, atol=1e-7)


# ---- feature-map cells -> query pixels --------------------------------------------------------


@pytest.mark.parametrize("height, width", [(10, 30), (30, 10), (7, 7), (1, 50), (33, 17)])
@pytest.mark.parametrize("size", [8, 32, 64])
def test_letterbox_region_is_where_scene_graph_puts_the_image(height, width, size):
    boxed = scene_graph.letterbox(np.full((height, width, 3), 255, np.uint8), size)
    rows, cols = np.flatnonzero(boxed.any(axis=(1, 2))), np.flatnonzero(boxed.any(axis=(0, 2)))
    top, left, new_h, new_w = gradcam.letterbox_region(height, width, size)
    assert (top, left, new_h, new_w) == (rows[0], cols[0], len(rows), len(cols))


def test_unletterbox_drops_the_padding_and_keeps_the_content_in_place():
    # A 32 x 16 image letterboxed to 16: content columns 4..12, padding 0..4 and 12..16.
    padding = np.zeros((8, 8), np.float32)
    padding[:, 0] = padding[:, 7] = 1.0
    assert np.abs(gradcam.unletterbox(padding, 16, 32, 16)).max() == 0.0
    content = np.zeros((8, 8), np.float32)
    content[2, 2] = 1.0  # square pixels y 4..6, x 4..6: the image's top-left quarter
    out = gradcam.unletterbox(content, 16, 32, 16)
    assert out.shape == (32, 16)
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert 8 <= y < 12 and x < 4


def test_node_boxes_recover_the_pixel_boxes_from_eq1_geometry():
    rng = np.random.default_rng(0)
    for height, width in [(64, 96), (97, 33), (256, 255)]:
        x0 = rng.integers(0, width - 1, 6)
        y0 = rng.integers(0, height - 1, 6)
        boxes = np.stack([x0, y0, rng.integers(x0 + 1, width + 1), rng.integers(y0 + 1,
                                                                                height + 1)], 1)
        geometry = np.zeros((8, 5), np.float32)
        geometry[:6] = scene_graph.geometry_features(boxes, height, width)
        mask = np.arange(8) < 6
        np.testing.assert_array_equal(gradcam.node_boxes(geometry, mask, height, width), boxes)


def test_a_crop_map_lands_in_its_box_with_the_square_padding_removed():
    # A 40 x 20 box letterboxed to 32: content rows 8..24 of the square.
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, 1, 3] = 1.0  # square rows 8..16 (box top half), columns 24..32 (box right fifth)
    box = np.array([[10, 20, 50, 40]])
    out = gradcam.paste_crop_maps(cam, box, 32, 60, 70)
    assert out.shape == (60, 70)
    outside = out.copy()
    outside[20:40, 10:50] = 0
    assert outside.max() == 0.0
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert 20 <= y < 30 and 40 <= x < 50
    assert out[20:30, 30:50].sum() > 0.7 * out.sum()
    # A second node over the same pixels: the larger value wins.
    flat = np.full((1, 4, 4), 0.5, np.float32)
    both = gradcam.paste_crop_maps(np.concatenate([cam, flat]), np.concatenate([box, box]),
                                   32, 60, 70)
    np.testing.assert_allclose(both[20:40, 10:50], np.maximum(out[20:40, 10:50], 0.5))


def test_combine_shares_one_scale_between_streams():
    strong = np.zeros((4, 4), np.float32)
    strong[0, 0] = 2.0
    weak = np.zeros((4, 4), np.float32)
    weak[3, 3] = 0.2
    heat = gradcam.combine([strong, weak])
    assert heat.dtype == np.float32 and heat[0, 0] == 1.0
    assert heat[3, 3] == pytest.approx(0.1)  # not stretched to 1 by its own peak
    np.testing.assert_array_equal(gradcam.combine([np.zeros((3, 5))]), np.zeros((3, 5)))


# ---- the ResNet hooks ---------------------------------------------------------------------------


def test_init_and_training_see_no_new_collections():
    model, batch = OscarNet(**TINY), samples.make_batch(0, batch=3, real=(3, 3, 3))
    # Shapes only (nothing compiles): what the trainer's init hands to the train state.
    variables = jax.eval_shape(lambda: train.init_variables(model, batch, seed=0))
    assert set(variables) == {"params", "batch_stats"}
    assert set(jax.eval_shape(functools.partial(model.init, train=False),
                              jax.random.key(0), batch)) == {"params", "batch_stats"}
    _, updates = jax.eval_shape(
        lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(1)}), variables, batch)
    assert set(updates) == {"batch_stats"}
    exposed = gradcam.exposed_stages(model, variables, batch)
    assert sorted(exposed) == ["global_cnn", "object_cnn"]
    assert sorted(exposed["global_cnn"]) == ["stage1", "stage2", "stage3", "stage4"]
    assert exposed["global_cnn"]["stage2"].shape == (3, 4, 4, 32)  # stride 8 on 32 px
    assert exposed["object_cnn"]["stage2"].shape == (3 * 4, 2, 2, 32)  # crops flattened
    # A 'perturbations' collection without the stage asked for is ignored, not an error.
    z = jax.eval_shape(lambda v, b: model.apply({**v, resnet.PERTURBATIONS: {}}, b,
                                                train=False), variables, batch)
    assert z.shape == (3, 16)


# ---- the trained tiny model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return samples.photo("chelsea", 96)


@pytest.fixture(scope="module")
def edited(photo) -> np.ndarray:
    query = photo.copy()
    h, w = query.shape[:2]
    query[h // 6 : h // 2, w // 2 : w - 4] = (255, 230, 0)  # a pasted yellow patch
    return query


@pytest.fixture(scope="module")
def explainer(tiny_trained) -> gradcam.Explainer:
    return gradcam.Explainer(tiny_trained[0])


def test_stage_gradients_are_dL_dA_at_the_end_of_the_stage(explainer, photo, edited):
    model, variables = explainer.model, explainer.variables
    maker = explainer.maker
    # query, original, positive: three different records.
    batch = stack([maker.record(edited), maker.record(photo),
                            maker.record(photo[:, ::-1].copy())])
    exposed = gradcam.exposed_stages(model, variables, batch)
    zeros = {s: {"stage2": jnp.zeros(m["stage2"].shape)} for s, m in exposed.items()}
    rng = np.random.default_rng(2)
    nodes = batch["crops"].shape[1]
    # The query's rows only: moving x+ or x- changes L too, but eq. 14 holds them constant.
    query_rows = {"global_cnn": 1, "object_cnn": nodes}
    direction = {s: {"stage2": jnp.asarray(rng.normal(size=z["stage2"].shape), jnp.float32)
                     .at[query_rows[s]:].set(0.0)} for s, z in zeros.items()}
    eps = 1e-3

    def at_block_outputs(perturbations, batch):
        """L with perturbations added to the output of each CNN's last stage-2 block, found
        from outside the model (a flax interceptor), independently of `ResNet.expose`."""
        def add(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            module = context.module
            if context.method_name == "__call__" and module.name == "layer2_0":
                out = out + perturbations[module.parent.name]
            return out

        with flax.linen.intercept_methods(add):
            z = model.apply(variables, batch, train=False)
        return gradcam.dissimilarity_objective(z[0], z[2], z[1])

    zeros_flat = {s: m["stage2"] for s, m in zeros.items()}

    @jax.jit
    def probe(batch):
        def loss(perturbations):
            return gradcam.dissimilarity_objective_at(model, variables, batch, perturbations)[0]

        value, grads = jax.value_and_grad(loss)(zeros)
        outside = jax.grad(at_block_outputs)(zeros_flat, batch)
        shifted = [loss(jax.tree.map(lambda d, e=e: e * d, direction)) for e in (eps, -eps)]
        return value, at_block_outputs(zeros_flat, batch), grads, outside, shifted

    value, plain, grads, outside, (plus, minus) = probe(batch)
    assert float(value) == pytest.approx(float(plain), abs=1e-6)
    for stream in zeros:
        np.testing.assert_allclose(grads[stream]["stage2"], outside[stream], rtol=1e-4,
                                   atol=1e-7)
    # x+ and x- are constants: no gradient reaches their feature maps.
    np.testing.assert_array_equal(grads["global_cnn"]["stage2"][1:], 0.0)
    np.testing.assert_array_equal(grads["object_cnn"]["stage2"][nodes:], 0.0)
    # The gradient predicts how L moves. ReLU kinks downstream make a float32 difference
    # quotient agree only to a few per cent; a wrong sign, scale or row would be far off.
    finite = (float(plus) - float(minus)) / (2 * eps)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(
        jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True))
    assert abs(analytic) > 1e-3
    assert finite == pytest.approx(analytic, rel=0.1)


def test_identical_images_give_an_all_zero_map(explainer, photo):
    result = explainer.explain(photo, photo)
    assert result.heat.shape == photo.shape[:2] and result.heat.dtype == np.float32
    assert result.loss == pytest.approx(0.0, abs=1e-6)
    assert result.sensitivity < gradcam.FLAT_SENSITIVITY
    assert not result.heat.any()


def test_an_edited_query_gets_a_map_over_its_own_pixels(explainer, photo, edited):
    assert explainer.streams == ("global_cnn", "object_cnn")
    assert explainer.stage == gradcam.DEFAULT_STAGE
    # Twice the records' size: the maps are made at 96 px and stretched back to the query.
    query = np.repeat(np.repeat(edited, 2, axis=0), 2, axis=1)
    result = explainer.explain(query, photo)
    height, width = query.shape[:2]
    assert result.heat.shape == (height, width) and result.heat.dtype == np.float32
    assert result.heat.min() >= 0.0 and result.heat.max() == pytest.approx(1.0)
    assert result.loss > 0.0 and result.sensitivity > gradcam.FLAT_SENSITIVITY
    for part in (result.global_map, result.object_map):
        assert part.shape == (height, width) and part.min() >= 0.0
    assert np.all(result.boxes >= 0) and np.all(result.boxes[:, [0, 2]] <= width)
    assert np.all(result.boxes[:, [1, 3]] <= height)
    # The doubled query shrinks back to exactly `edited`: the same record, so the same map,
    # stretched over twice the pixels (and its nodes' boxes scaled with it).
    small = explainer.explain(edited, photo)
    np.testing.assert_allclose(result.boxes, 2 * small.boxes)
    halved = cv2.resize(result.heat, edited.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(halved - small.heat).mean() < 0.02
    heat = explainer.dissimilarity(query, photo)
    np.testing.assert_array_equal(heat, result.heat)


def test_the_positive_enters_the_objective(explainer, photo, edited):
    default = explainer.explain(edited, photo)
    np.testing.assert_allclose(explainer.explain(edited, photo, edited).heat, default.heat,
                               atol=1e-6)
    # x+ = x-: d(f(x), f(x+)) - d(f(x), f(x-)) is zero for every x, so nothing moves it.
    cancelled = explainer.explain(edited, photo, positive=photo)
    assert cancelled.loss == pytest.approx(0.0, abs=1e-6)
    assert not cancelled.heat.any()


def test_inputs_that_are_not_decoded_rgb_are_refused(explainer, photo):
    with pytest.raises(ValueError, match="original must be decoded RGB uint8"):
        explainer.dissimilarity(photo, photo.astype(np.float32))


def test_ablations_explain_with_the_stream_they_have(explainer, tiny_trained, photo, edited,
                                                    monkeypatch):
    workdir = tiny_trained[0]
    example = stack([explainer.maker.record(photo)] * 2)
    trained = flax.traverse_util.flatten_dict(explainer.variables)
    rng = np.random.default_rng(5)

    def use(**fields):
        """Restores an ablated model: the trained weights where they fit, small random ones
        where the ablation changed a shape (the fusion layer); no init is compiled."""
        config = load_config(workdir)
        config.model.update(fields)
        model = create_model(config)
        shapes = flax.traverse_util.flatten_dict(jax.eval_shape(
            lambda: train.init_variables(model, example, seed=0)))
        variables = {
            path: trained[path] if path in trained and trained[path].shape == shape.shape
            else np.asarray(rng.normal(size=shape.shape) * 0.1, shape.dtype)
            for path, shape in shapes.items()}
        variables = flax.traverse_util.unflatten_dict(variables)
        monkeypatch.setattr(gradcam, "restore_inference", lambda *_: (config, model, variables))

    use(use_global=False)
    with pytest.raises(ValueError, match="stage 5 does not exist.*1, 2, 3, 4"):
        gradcam.Explainer(workdir, stage=5)
    objects_only = gradcam.Explainer(workdir)
    assert objects_only.streams == ("object_cnn",)
    result = objects_only.explain(edited, photo)
    assert result.global_map is None and result.object_map.shape == edited.shape[:2]
    assert result.heat.shape == edited.shape[:2] and result.heat.max() == pytest.approx(1.0)
    use(use_global=False, use_visual=False)
    with pytest.raises(ValueError, match="no CNN stream"):
        gradcam.Explainer(workdir)


# ---- pictures and the command line ------------------------------------------------------------


def test_overlay_and_figure_shapes(photo):
    heat = np.zeros(photo.shape[:2], np.float32)
    heat[:10, :10] = 1.0
    blended = gradcam.overlay(photo, heat, alpha=0.5)
    assert blended.shape == photo.shape and blended.dtype == np.uint8
    np.testing.assert_array_equal(gradcam.overlay(photo, heat, alpha=0.0), photo)
    # jet: 1.0 is dark red, 0.0 dark blue.
    assert blended[0, 0, 0] > blended[0, 0, 2] and blended[-1, -1, 2] > blended[-1, -1, 0]
    original = np.zeros((photo.shape[0] * 2, photo.shape[1], 3), np.uint8)  # resized to fit
    figure = gradcam.explanation_figure(photo, original, heat)
    h, w = photo.shape[:2]
    assert figure.dtype == np.uint8
    assert figure.shape == (h + 16, w + 4 + w // 2 + 4 + w, 3)
    np.testing.assert_array_equal(figure[16:, -w:], photo)
    assert (figure[:16] < 128).any()  # the labels are drawn


def test_cli_writes_the_figure_and_names_a_bad_file(tiny_trained, photo, edited, tmp_path):
    query, original = tmp_path / "query.png", tmp_path / "original.png"
    query.write_bytes(encode_png(edited))
    original.write_bytes(encode_png(photo))
    out = tmp_path / "heat.png"
    command = [sys.executable, "-m", "oscar_jax.explain", "--workdir", tiny_trained[0],
               "--out", str(out)]
    done = subprocess.run([*command, "--stage", "2", str(query), str(original)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "stage 2" in done.stderr
    figure = decode_image(str(out))
    h, w = edited.shape[:2]
    assert figure.shape == (h + 16, 3 * w + 8, 3)

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out.unlink()
    done = subprocess.run([*command, str(query), str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "broken.jpg" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()
