"""ResNets: shapes, torchvision-compatible weight loading, BatchNorm across devices."""

from __future__ import annotations

import functools
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax.models import resnet
from oscar_jax.models.torch_files import read_state_dict
from tests.backbone_references import DATA, RESNET_INPUT, reference_images, resnet_state

TINY_BOTTLENECK = functools.partial(resnet.ResNet, stage_sizes=(1, 2), block="bottleneck",
                                    width=8)


def init(model, size=32, batch=2):
    images = jnp.zeros((batch, size, size, 3))
    # Jitted: eager initialisation dispatches hundreds of small ops one by one.
    return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), images)


def fake_variables(model, size=32):
    """Variables of `model` with random values, from shapes alone (nothing compiled)."""
    shapes = jax.eval_shape(lambda: init(model, size))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes)


def apply(model, variables, images):
    return jax.jit(functools.partial(model.apply, train=False))(variables, images)


def flax_to_torchvision(path: tuple[str, ...]) -> str:
    """The inverse of `torchvision_to_flax`, written out independently for the tests."""
    collection, *modules, leaf = path
    names = []
    for module in modules:
        if module.startswith("layer"):
            stage, index = module.split("_")
            names += [stage, index]
        elif module == "downsample_conv":
            names += ["downsample", "0"]
        elif module == "downsample_bn":
            names += ["downsample", "1"]
        else:
            names.append(module)
    field = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
             "var": "running_var"}[leaf]
    return ".".join(names + [field])


def random_torchvision_state(variables, rng) -> dict[str, np.ndarray]:
    """A torchvision-style state dict (OIHW kernels) matching `variables`, random values."""
    state = {}
    for path, value in flax.traverse_util.flatten_dict(variables).items():
        if path[1] == "head":
            continue
        array = rng.normal(size=value.shape).astype(np.float32)
        if path[-1] == "var":
            array = np.abs(array) + 0.5
        if path[-1] == "kernel":
            array = np.transpose(array, (3, 2, 0, 1)) * 0.2  # HWIO -> OIHW
        state[flax_to_torchvision(path)] = array
    state["fc.weight"] = rng.normal(size=(10, 64)).astype(np.float32)  # ignored on load
    state["bn1.num_batches_tracked"] = np.array(7)
    return state


def test_resnet50_has_torchvision_parameter_count():
    shapes = jax.eval_shape(lambda: init(resnet.ResNet50(), size=64))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    # torchvision resnet50: 25,557,032 parameters, of which the fc layer has 2,049,000.
    assert count == 25_557_032 - 2_049_000


@pytest.mark.parametrize("variant", sorted(resnet.VARIANTS))
def test_variants_give_embeddings_of_the_requested_size(variant):
    model = resnet.VARIANTS[variant](output_dim=24)
    images = jnp.ones((2, 64, 64, 3))
    out = jax.eval_shape(lambda: apply(model, init(model, 64), images))
    assert out.shape == (2, 24) and out.dtype == jnp.float32
    pooled = jax.eval_shape(lambda: apply(resnet.VARIANTS[variant](), init(model, 64), images))
    expected = {"resnet50": 2048, "resnet18": 512, "tiny": 128}[variant]
    assert pooled.shape == (2, expected)


def test_tiny_resnet_runs_and_is_finite():
    model = resnet.ResNetTiny(output_dim=8)
    out = np.asarray(apply(model, init(model), np.ones((2, 32, 32, 3), np.float32)))
    assert out.shape == (2, 8) and np.isfinite(out).all()


def test_npz_with_torchvision_names_loads_exactly(tmp_path):
    model = TINY_BOTTLENECK(output_dim=5)
    variables = fake_variables(model)
    state = random_torchvision_state(variables, np.random.default_rng(0))
    np.savez(tmp_path / "weights.npz", **state)
    merged = resnet.merge_pretrained(variables, resnet.load_pretrained(tmp_path / "weights.npz"))
    flat = flax.traverse_util.flatten_dict(merged)
    kernel = flat[("params", "layer2_0", "conv2", "kernel")]
    np.testing.assert_array_equal(kernel, state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat[("batch_stats", "layer1_0", "downsample_bn", "var")],
                                  state["layer1.0.downsample.1.running_var"])
    # The head is not in ImageNet weights: it keeps its initialisation.
    np.testing.assert_array_equal(flat[("params", "head", "kernel")],
                                  variables["params"]["head"]["kernel"])


def test_merge_fails_loudly_on_unexpected_names_shapes_and_gaps():
    model = TINY_BOTTLENECK()
    variables = fake_variables(model)
    good = {tuple(p): np.asarray(v) for p, v in
            flax.traverse_util.flatten_dict(variables).items()}
    extra = {**good, ("params", "layer9_0", "conv1", "kernel"): np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match="no place in the model"):
        resnet.merge_pretrained(variables, extra)
    wrong = dict(good)
    wrong[("params", "conv1", "kernel")] = np.zeros((3, 3, 3, 8), np.float32)
    with pytest.raises(ValueError, match="shape mismatches"):
        resnet.merge_pretrained(variables, wrong)
    partial = {p: v for p, v in good.items() if p[1] != "layer2_1"}
    with pytest.raises(ValueError, match="not in the file"):
        resnet.merge_pretrained(variables, partial)
    with pytest.raises(ValueError, match="unexpected torchvision parameter"):
        resnet.torchvision_to_flax("avgpool.weight")


def test_merge_into_a_submodule_with_prefix():
    class Wrapper(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x, *, train):
            return TINY_BOTTLENECK(name="global_cnn")(x, train=train)

    variables = fake_variables(Wrapper())
    inner = fake_variables(TINY_BOTTLENECK())
    pretrained = {p: np.asarray(v) + 1.0 for p, v in
                  flax.traverse_util.flatten_dict(inner).items()}
    merged = resnet.merge_pretrained(variables, pretrained, prefix=("global_cnn",))
    np.testing.assert_allclose(merged["params"]["global_cnn"]["conv1"]["kernel"],
                               np.asarray(inner["params"]["conv1"]["kernel"]) + 1.0)


def test_missing_weights_file_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resnet.load_pretrained(tmp_path / "absent.pth")


def test_matches_a_torch_reference_on_a_saved_state_dict():
    """A state dict written by torch.save and the output of a torchvision-style network on
    it, both made once by tests/make_torch_references.py; read here without PyTorch."""
    path = os.path.join(DATA, "resnet_reference.pth")
    # The file holds exactly the seeded weights, read back by the torch-free reader.
    saved = read_state_dict(path)
    expected_state = resnet_state()
    assert list(saved) == list(expected_state)
    for name, value in expected_state.items():
        np.testing.assert_array_equal(saved[name], value)
    model = TINY_BOTTLENECK()
    variables = resnet.merge_pretrained(init(model, size=40), resnet.load_pretrained(path))
    ours = np.asarray(apply(model, variables, reference_images(RESNET_INPUT)))
    with np.load(os.path.join(DATA, "backbone_references.npz")) as references:
        np.testing.assert_allclose(ours, references["resnet"], rtol=1e-4, atol=1e-4)


def test_batch_norm_ignores_masked_rows_in_training():
    """Statistics over real crops only: appending padding rows (masked out) changes neither
    the real rows' outputs nor the updated statistics (float64, so rounding hides nothing)."""
    with jax.enable_x64(True):
        model = resnet.ResNetTiny(output_dim=8, dtype=jnp.float64)
        variables = jax.tree.map(lambda x: x.astype(jnp.float64), init(model, size=16))
        rng = np.random.default_rng(0)
        real = rng.normal(size=(3, 16, 16, 3))
        padded = np.concatenate([real, np.zeros((5, 16, 16, 3))])
        mask = np.arange(8) < 3

        @jax.jit
        def run(images, mask):
            return model.apply(variables, images, train=True, mask=mask,
                               mutable=["batch_stats"])

        alone, alone_stats = run(real, np.ones(3, bool))
        with_padding, padded_stats = run(padded, mask)
        np.testing.assert_allclose(np.asarray(with_padding)[:3], np.asarray(alone), atol=1e-10)
        for a, b in zip(jax.tree.leaves(alone_stats), jax.tree.leaves(padded_stats),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)
        # Without the mask the padding does shift the real rows (the test can fail).
        unmasked, _ = run(padded, np.ones(8, bool))
        assert not np.allclose(np.asarray(unmasked)[:3], np.asarray(alone), atol=1e-3)


def test_batch_norm_statistics_are_averaged_across_devices():
    if jax.local_device_count() < 2:
        pytest.skip("needs 2 devices; tests/conftest.py asks XLA for 2 fake CPU devices")
    model = resnet.ResNetTiny(bn_axis_name="batch")
    single = resnet.ResNetTiny()
    variables = init(single, size=16)
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)

    def stats(m, batch):
        _, updates = m.apply(variables, batch, train=True, mutable=["batch_stats"])
        return updates["batch_stats"]

    whole = jax.jit(functools.partial(stats, single))(images)
    halves = images.reshape(2, 2, 16, 16, 3)  # [devices, per-device batch, H, W, C]
    per_device = jax.pmap(lambda b: stats(model, b), axis_name="batch")(halves)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(per_device), strict=True):
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(a), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(b)[1], rtol=1e-6)
