"""FF, the frequency stream: the DCT by hand, what it ignores and what it reads."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
import scipy.fft

from oscar_jax.models import frequency
from tests.samples import make_batch


def _apply(images: np.ndarray, **fields) -> np.ndarray:
    stream = frequency.FrequencyStream(output_dim=8, **fields)
    variables = stream.init(jax.random.key(0), images)
    return np.asarray(stream.apply(variables, images))


def test_dct_matrix_is_the_orthonormal_dct_ii():
    basis = frequency.dct_matrix(16)
    np.testing.assert_allclose(basis, scipy.fft.dct(np.eye(16), norm="ortho", axis=0),
                               atol=1e-6)
    np.testing.assert_allclose(basis @ basis.T, np.eye(16), atol=1e-5)


def _pattern(side: int, ky: int, kx: int) -> np.ndarray:
    """uint8 [1, side, side, 3]: grey with a cosine of ky, kx half-periods in y, x."""
    rows, cols = np.mgrid[:side, :side]
    wave = (np.cos(np.pi * (2 * rows + 1) * ky / (2 * side))
            * np.cos(np.pi * (2 * cols + 1) * kx / (2 * side)))
    return np.repeat(np.round(128 + 90 * wave).astype(np.uint8)[None, ..., None], 3, axis=-1)


def test_brightness_and_contrast_do_not_move_it():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (2, 64, 64, 3)).astype(np.float64)
    dimmer = np.round(0.5 * image + 60).astype(np.uint8)
    np.testing.assert_allclose(_apply(dimmer), _apply(image.astype(np.uint8)), rtol=0.05,
                               atol=0.05)


def test_it_reads_the_frequencies_of_the_image():
    a, b = _pattern(64, 2, 3), _pattern(64, 3, 2)
    assert np.abs(_apply(a) - _apply(b)).max() > 0.1
    # Frequencies only in the dropped first row and column (and the DC) read as flat.
    np.testing.assert_allclose(_apply(_pattern(64, 0, 3)), _apply(np.full_like(a, 128)),
                               atol=1e-3)


def test_views_smaller_than_the_resolution_and_odd_sizes():
    assert _apply(_pattern(32, 2, 3)).shape == (1, 8)
    with pytest.raises(ValueError, match="multiple of the frequency stream's resolution"):
        _apply(np.zeros((1, 100, 100, 3), np.uint8))


def test_the_canonical_demo_configs():
    from configs import demo as demo_config
    from preprocessing.datasets import oscar_demo

    configs = {c.name: c for c in oscar_demo.OscarDemo.BUILDER_CONFIGS}
    canonical, default = configs["canonical"], configs["default"]
    assert canonical.canonical_layout and not default.canonical_layout
    # The same originals, splits and views: only the layout step differs.
    differ = {"name", "description", "canonical_layout"}
    assert {f.name: getattr(canonical, f.name) for f in dataclasses.fields(canonical)
            if f.name not in differ} == {f.name: getattr(default, f.name)
                                         for f in dataclasses.fields(default)
                                         if f.name not in differ}
    main, pretrain = demo_config.get_config(), demo_config.get_config("pretrain")
    assert main.dataset_config == pretrain.dataset_config == "canonical"
    assert main.model.use_frequency and main.model.use_objects and main.warm_start
    assert pretrain.model.use_frequency and not pretrain.model.use_objects
    assert not pretrain.warm_start
    # Warm start carries the first phase's codes: both phases must agree on their length.
    assert main.model.code_bits == pretrain.model.code_bits == 256
    assert main.loss_kwargs.manipulated_weight == 16
    assert pretrain.loss_kwargs.manipulated_weight == 1
    assert main.online_edits == 1 and pretrain.online_edits == 0
    raw, raw_pretrain = demo_config.get_config("raw"), demo_config.get_config("raw,pretrain")
    assert raw.dataset_config == raw_pretrain.dataset_config == "default"
    assert not (raw.model.use_frequency or raw.warm_start or raw_pretrain.model.use_frequency)
    assert raw.model.code_bits == raw_pretrain.model.code_bits == 64
    assert raw.loss_kwargs.manipulated_weight == 1
    assert raw.online_edits == raw_pretrain.online_edits == 0
    # The tiny test model keeps its cold, FF-free phases: the tests switch FF on themselves.
    tiny = demo_config.get_config("tiny")
    assert tiny.dataset_config == "tiny" and not (tiny.model.use_frequency or tiny.warm_start)
    with pytest.raises(ValueError, match="unknown config argument"):
        demo_config.get_config("canonical")


@pytest.fixture(scope="module")
def frequency_pretraining(tiny_trained, tmp_path_factory):
    """(workdir, data_dir): the tiny global CNN + FF + FS (2 x 2 cells) pretraining, trained
    2 steps."""
    from configs import demo as demo_config
    from oscar_jax import train

    _, _, data_dir = tiny_trained
    config = demo_config.get_config("tiny,pretrain")
    config.data_dir, config.total_steps, config.log_every = data_dir, 2, 1
    config.model.use_frequency, config.model.global_grid = True, 2
    workdir = str(tmp_path_factory.mktemp("ff") / "pretrain")
    train.train_and_evaluate(config, workdir)
    return workdir, data_dir


def test_a_model_with_the_frequency_stream_trains(frequency_pretraining):
    from oscar_jax.workdir import load_config, restore_inference

    workdir, _ = frequency_pretraining
    _, _, variables = restore_inference(workdir)
    kernel = np.asarray(variables["params"]["frequency"]["embed"]["kernel"])
    assert np.isfinite(kernel).all() and kernel.shape[1] == load_config(workdir).model.visual_dim


def test_a_warm_start_begins_with_the_pretrained_codes(frequency_pretraining):
    from configs import demo as demo_config
    from oscar_jax import input_pipeline, train
    from oscar_jax.workdir import create_model, restore_inference

    workdir, data_dir = frequency_pretraining
    config = demo_config.get_config("tiny")
    config.data_dir, config.init_from, config.warm_start = data_dir, workdir, True
    config.model.use_frequency, config.model.global_grid = True, 2  # FF and FS carried
    records = os.path.join(data_dir, "oscar_demo", "tiny")
    records = os.path.join(records, sorted(os.listdir(records))[0])
    batch = next(iter(input_pipeline.read_split(records, "test", batch_size=4)))
    inputs = {k: batch[k] for k in input_pipeline.MODEL_FIELDS}
    model = create_model(config)
    variables = train.initial_variables(config, model, inputs)
    _, pretrained, pretrained_variables = restore_inference(workdir)
    np.testing.assert_allclose(model.apply(variables, inputs, train=False),
                               pretrained.apply(pretrained_variables, inputs, train=False),
                               rtol=1e-5, atol=1e-5)
    # Without the warm start the fusion is fresh and the codes differ.
    config.warm_start = False
    cold = train.initial_variables(config, model, inputs)
    assert np.abs(np.asarray(model.apply(cold, inputs, train=False)) - np.asarray(
        pretrained.apply(pretrained_variables, inputs, train=False))).max() > 1e-3


def test_a_warm_start_refuses_a_run_of_other_streams(tiny_trained):
    from configs import demo as demo_config
    from oscar_jax import train
    from oscar_jax.workdir import create_model

    workdir, _, data_dir = tiny_trained  # a full model, objects and all
    config = demo_config.get_config("tiny")
    config.data_dir, config.init_from, config.warm_start = data_dir, workdir, True
    with pytest.raises(ValueError, match="warm_start needs a pretraining run"):
        train.initial_variables(config, create_model(config), make_batch())


def test_a_warm_start_refuses_a_run_whose_global_streams_differ(frequency_pretraining):
    from configs import demo as demo_config
    from oscar_jax import input_pipeline, train
    from oscar_jax.workdir import create_model

    workdir, data_dir = frequency_pretraining  # FG, FF and FS
    records = os.path.join(data_dir, "oscar_demo", "tiny")
    records = os.path.join(records, sorted(os.listdir(records))[0])
    batch = next(iter(input_pipeline.read_split(records, "test", batch_size=2)))
    inputs = {k: batch[k] for k in input_pipeline.MODEL_FIELDS}
    for streams in (dict(global_grid=0), dict(use_frequency=False)):
        config = demo_config.get_config("tiny")
        config.data_dir, config.init_from, config.warm_start = data_dir, workdir, True
        config.model.use_frequency, config.model.global_grid = True, 2
        config.model.update(streams)
        with pytest.raises(ValueError, match="warm_start needs a pretraining run"):
            train.initial_variables(config, create_model(config), inputs)
