"""EfficientNet-Lite0: the torch-free state dict reader, a torch reference, the packaged
ImageNet weights, and the masked BatchNorm of node crops."""

from __future__ import annotations

import functools
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax.models import efficientnet, resnet
from oscar_jax.models.torch_files import read_state_dict
from tests.backbone_references import DATA, LITE0_INPUT, lite0_state, reference_images
from tests.samples import photo


@functools.cache
def variables_for(size: int, classes: int | None = 1000):
    model = efficientnet.EfficientNetLite0(classes=classes)
    return model, jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), jnp.zeros((1, size, size, 3)))


def test_matches_a_torch_reference_on_generated_weights(tmp_path):
    """Seeded weights under the real names, saved as .npz, loaded and merged: the logits
    equal those tests/make_torch_references.py computed with PyTorch on the same weights."""
    np.savez(tmp_path / "lite0.npz", **lite0_state())
    model, variables = variables_for(LITE0_INPUT[1])
    weights = efficientnet.load_pretrained(tmp_path / "lite0.npz", keep_classifier=True)
    merged = resnet.merge_pretrained(variables, weights, allow_missing=())
    ours = np.asarray(jax.jit(functools.partial(model.apply, train=False))(
        merged, reference_images(LITE0_INPUT)))
    with np.load(os.path.join(DATA, "backbone_references.npz")) as references:
        np.testing.assert_allclose(ours, references["lite0"], rtol=1e-4, atol=2e-4)


def test_the_packaged_imagenet_weights_classify_sample_photos():
    """ImageNet classes of scikit-image's photos: a cat, an espresso, a motorbike."""
    model, variables = variables_for(224)
    weights = efficientnet.load_pretrained(keep_classifier=True)
    merged = resnet.merge_pretrained(variables, weights, allow_missing=())
    import cv2

    names = {"chelsea": {281, 282, 283, 284, 285}, "coffee": {504, 967, 968},
             "motorcycle_left": {665, 670}}
    images = np.stack([cv2.resize(photo(n, 512), (224, 224), interpolation=cv2.INTER_AREA)
                       for n in names])
    logits = np.asarray(model.apply(merged, efficientnet.normalize_images(images),
                                    train=False))
    for (name, classes), row in zip(names.items(), logits, strict=True):
        assert int(np.argmax(row)) in classes, (name, np.argsort(-row)[:5])


def test_loading_refuses_unknown_names_and_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="unexpected EfficientNet parameter"):
        efficientnet.torch_to_flax("_blocks.0._se_reduce.weight")
    state = lite0_state()
    state["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **state)
    _, variables = variables_for(LITE0_INPUT[1], classes=None)
    with pytest.raises(ValueError, match="shape mismatches"):
        resnet.merge_pretrained(variables, efficientnet.load_pretrained(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="not found"):
        efficientnet.load_pretrained(tmp_path / "absent.pth")


def test_the_state_dict_reader_runs_no_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ValueError, match="may not hold posix.system|may not hold os.system"):
        read_state_dict(path)


def test_batch_norm_ignores_masked_crops_in_training():
    """In float64, where no rounding hides a difference: padding slots change nothing."""
    with jax.enable_x64(True):
        model = efficientnet.EfficientNetLite0(output_dim=8, dtype=jnp.float64)
        variables = jax.tree.map(
            lambda x: x.astype(jnp.float64),
            jax.jit(functools.partial(model.init, train=False))(
                jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
        real = np.random.default_rng(0).normal(size=(3, 32, 32, 3))
        padded = np.concatenate([real, np.zeros((4, 32, 32, 3))])

        @jax.jit
        def run(images, mask):
            return model.apply(variables, images, train=True, mask=mask,
                               mutable=["batch_stats"])[0]

        np.testing.assert_allclose(np.asarray(run(padded, np.arange(7) < 3))[:3],
                                   np.asarray(run(real, np.ones(3, bool))), atol=1e-10)
