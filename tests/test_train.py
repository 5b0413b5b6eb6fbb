"""The trainer: schedule, resume after SIGTERM, init_from, NaN stop, configs, runlocal."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import common
from configs import demo as demo_config
from configs import full as full_config
from oscar_jax import hashing, input_pipeline, losses, train
from oscar_jax.workdir import (
    ConfigConflictError,
    check_resume,
    create_model,
    restore_inference,
)
from preprocessing import build
from tests.processes import dies_with_parent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, **changes):
    config = demo_config.get_config("tiny")
    config.data_dir = data_dir
    for key, value in changes.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("records"))
    build.build("oscar_demo", data_dir=path, config="tiny", verbose=False)
    return path


def read_metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_params(workdir) -> dict:
    _, _, variables = restore_inference(str(workdir))
    return variables


def run_cli(workdir, data_dir, *extra, wait=True):
    command = [sys.executable, "-m", "oscar_jax.train", "--config", "configs/demo.py:tiny",
               "--workdir", str(workdir), f"--config.data_dir={data_dir}", *extra]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if wait:
        return subprocess.run(dies_with_parent(command), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    return subprocess.Popen(dies_with_parent(command), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_step_decay_schedule():
    config = common.get_base_config()
    config.learning_rate, config.total_steps = 1e-3, 100
    config.lr_decay_at, config.lr_decay_factor = (0.5, 0.8), 0.1
    schedule = train.learning_rate_schedule(config)
    values = [float(schedule(s)) for s in (0, 49, 50, 79, 80, 99)]
    np.testing.assert_allclose(values, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)


def test_weight_decay_is_l2_added_to_the_gradient():
    config = common.get_base_config()
    config.weight_decay, config.learning_rate = 0.5, 1.0
    tx = train.create_optimizer(config)
    params = {"w": np.float32(2.0)}
    updates, _ = tx.update({"w": np.float32(0.0)}, tx.init(params), params)
    # Adam's first step moves by -lr * sign(g), and g = 0 + 0.5 * 2 is positive.
    np.testing.assert_allclose(float(updates["w"]), -1.0, rtol=1e-4)


def test_first_non_finite_names_the_step():
    history = [(1, {"loss": 1.0}), (2, {"loss": float("nan")}), (3, {"loss": float("inf")})]
    assert train.first_non_finite(history)[0] == 2
    assert train.first_non_finite(history[:1]) is None


def test_every_config_field_has_a_comment_and_every_config_loads():
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))
    assert len(files) >= 5
    for path in files:
        with open(path) as f:
            lines = f.read().splitlines()
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if stripped.startswith(("c.", "m.", "config.")) and " = " in stripped:
                assert "#" in stripped, f"{path}:{number} has no comment: {stripped}"
        tree = ast.parse("\n".join(lines))
        if any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body):
            assert "python -m oscar_jax.train" in (ast.get_docstring(tree) or ""), path
    assert full_config.get_config().model.cnn == "resnet50"


def test_full_config_without_records_prints_the_build_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "oscar_jax.train", "--config", "configs/full.py",
         "--workdir", str(tmp_path / "run"), f"--config.data_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"python -m preprocessing.build --dataset psbattles24k --data_dir {tmp_path}" in (
        result.stderr)


@pytest.mark.heavy
def test_runlocal_full_model_compiles_and_steps(tmp_path):
    assert jax.local_device_count() == 2
    config = full_config.get_config("runlocal")
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step[0]) == 1
    (metrics,) = read_metrics(tmp_path)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["model"]["cnn"] == "resnet50" and saved["model"]["num_layers"] == 6
    assert "jax" in json.load(open(tmp_path / "versions.json"))["packages"]


def test_non_finite_loss_stops_with_the_step(tmp_path, monkeypatch):
    real = input_pipeline.synthetic_batch

    def poisoned(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch["geometry"][:] = np.nan
        return batch

    monkeypatch.setattr(input_pipeline, "synthetic_batch", poisoned)
    config = tiny_config("unused", synthetic_data=True, total_steps=3, log_every=3)
    config.synthetic.max_objects, config.synthetic.crop_size = 2, 16
    config.synthetic.global_size = 32
    with pytest.raises(FloatingPointError, match="at step 1;"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints"), "no checkpoint after a NaN"


def test_loss_falls_on_a_tiny_set(data_dir, tmp_path):
    config = tiny_config(data_dir, total_steps=40, log_every=5, checkpoint_every=40)
    config.learning_rate, config.lr_decay_at = 3e-3, (0.9,)
    train.train_and_evaluate(config, str(tmp_path))
    losses = [m["loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.1, losses
    last = read_metrics(tmp_path)[-1]
    assert last["images_per_second"] > 0 and 0 < last["bits_one"] < 1
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


def test_init_from_copies_the_pretrained_cnn_into_both_streams(data_dir, tmp_path):
    pretrain = demo_config.get_config("tiny,pretrain")
    pretrain.data_dir, pretrain.total_steps = data_dir, 2
    train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))
    _, _, pretrained = restore_inference(str(tmp_path / "pretrain"))
    config = tiny_config(data_dir, init_from=str(tmp_path / "pretrain"))
    iterator, batch = train.create_data(config, str(tmp_path / "main"))
    variables = train.initial_variables(config, create_model(config, axis_name=train.AXIS),
                                        batch)
    for collection in ("params", "batch_stats"):
        for stream in ("global_cnn", "object_cnn"):
            jax.tree.map(np.testing.assert_array_equal, variables[collection][stream],
                         pretrained[collection]["global_cnn"])


@pytest.mark.heavy
def test_sigterm_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    steps = ["--config.total_steps=60", "--config.checkpoint_every=100", "--config.log_every=1"]
    straight = run_cli(tmp_path / "straight", data_dir, *steps)
    assert straight.returncode == 0, straight.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    process = run_cli(interrupted, data_dir, *steps, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = interrupted / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "SIGTERM: saved step" in out
    stopped_at = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert 4 <= stopped_at < 60, out

    resumed = run_cli(interrupted, data_dir, *steps)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped_at}" in resumed.stdout
    jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "straight"),
                 final_params(interrupted))
    logged = [m["step"] for m in read_metrics(interrupted)]
    assert logged == list(range(1, 61))


def test_ablation_configs_switch_the_right_parts():
    from configs.ablations import table2, table3

    a, e, f, j = (table3.get_config(x).model for x in "AEFJ")
    assert (a.use_global, a.use_visual, a.use_geometry, a.use_shape, a.use_edges) == (
        False, True, False, False, False)
    assert (e.use_global, e.use_geometry, e.use_shape, e.use_edges) == (False, True, True, True)
    assert not f.use_objects and f.use_global
    assert j.to_dict() == full_config.get_config().model.to_dict()
    assert table3.get_config("G").model.pooling == "first"
    assert table3.get_config("H").model.encoder == "mlp"
    assert table3.get_config("I").model.graph == "thresholded"
    assert table3.get_config("C,runlocal").synthetic_data
    simclr = table2.get_config("loss=simclr")
    assert simclr.loss_kwargs.manipulated_negatives is False
    assert table2.get_config("bits=128").model.code_bits == 128
    assert table2.get_config("hash=tanh_bit_balance").hash_method == "tanh_bit_balance"
    with pytest.raises(ValueError, match="choose one of"):
        table2.get_config("bits=48")
    with pytest.raises(ValueError, match="choose one of"):
        table3.get_config("K")
    with pytest.raises(ValueError, match="unknown config argument"):
        full_config.get_config("fast")


def test_bfloat16_compute_keeps_float32_parameters_and_codes():
    config = demo_config.get_config("tiny")
    config.compute_dtype = "bfloat16"
    model = create_model(config)
    batch = input_pipeline.synthetic_batch(input_pipeline.Composition(1, 2, 1), max_objects=2,
                                           crop_size=16, global_size=32, seed=0)
    variables = train.init_variables(model, batch, seed=0)
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {np.dtype("float32")}
    inputs = {k: v for k, v in batch.items() if k in input_pipeline.MODEL_FIELDS}
    z = model.apply(variables, inputs, train=False)
    assert z.dtype == np.float32 and z.shape == (2, 16) and np.isfinite(np.asarray(z)).all()


@pytest.mark.parametrize("hash_method,code_space_weight,not_first_weight",
                         [("sign", 0.0, 0.0), ("sign_bit_balance", 0.0, 0.0),
                          ("sign", 0.23, 0.0), ("sign", 0.0, 0.41)])
def test_the_training_loss_is_content_plus_weighted_hashing_terms(hash_method,
                                                                   code_space_weight,
                                                                   not_first_weight):
    """loss = content + alpha x quantisation (+ beta x bit balance) (+ gamma x the content
    loss on u) (+ delta x original_not_first on u), term for term: a trainer that dropped a
    weight, or weighted the wrong term, fails here."""
    config = demo_config.get_config("tiny")
    config.hash_method = hash_method
    config.quantization_weight, config.bit_balance_weight = 0.37, 0.11
    config.code_space_weight = code_space_weight
    config.original_not_first_weight = not_first_weight
    # Its own temperature and weight of the other rows, which the trainer must pass on.
    config.original_not_first_temperature, config.original_not_first_others_weight = 0.3, 2.0
    model = create_model(config, axis_name=train.AXIS)
    batch = input_pipeline.synthetic_batch(input_pipeline.Composition(2, 2, 2), max_objects=2,
                                           crop_size=16, global_size=32, seed=0)
    variables = train.init_variables(model, batch, seed=0)
    rng = jax.random.PRNGKey(3)

    def parts(params, batch_stats, batch):
        total, (_, metrics) = train.loss_fn(params, batch_stats, batch, rng, model=model,
                                            config=config)
        # The same quantities computed here from their definitions.
        z, _ = model.apply({"params": params, "batch_stats": batch_stats}, batch, train=True,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
        u, aux = hashing.hash_codes(z, hash_method, batch["valid"], axis_name=train.AXIS)
        embeddings = model.apply({"params": params}, u, method=model.project)
        content = losses.simclr_plus(embeddings, batch["identity"], batch["variant"],
                                     batch["valid"], axis_name=train.AXIS,
                                     **config.loss_kwargs.to_dict())
        aux["code_space"] = losses.simclr_plus(u, batch["identity"], batch["variant"],
                                               batch["valid"], axis_name=train.AXIS,
                                               **config.loss_kwargs.to_dict())
        aux["original_not_first"] = losses.original_not_first(
            u, batch["identity"], batch["variant"], batch["valid"], axis_name=train.AXIS,
            temperature=0.3, others_weight=2.0)
        return total, metrics, content, aux

    one_device = jax.pmap(parts, axis_name=train.AXIS, devices=jax.devices()[:1])
    total, metrics, content, aux = jax.device_get(one_device(
        *[jax.tree.map(lambda x: np.asarray(x)[None], tree)
          for tree in (variables["params"], variables["batch_stats"], batch)]))
    expected = content[0] + 0.37 * aux["quantization"][0]
    if hash_method == "sign_bit_balance":
        expected += 0.11 * aux["bit_balance"][0]
    if code_space_weight:
        expected += code_space_weight * aux["code_space"][0]
        np.testing.assert_allclose(metrics["code_space"][0], aux["code_space"][0], rtol=1e-6)
        assert aux["code_space"][0] > 0.1  # a term that would matter if it were dropped
    else:
        assert "code_space" not in metrics
    if not_first_weight:
        expected += not_first_weight * aux["original_not_first"][0]
        np.testing.assert_allclose(metrics["original_not_first"][0],
                                   aux["original_not_first"][0], rtol=1e-6)
        assert aux["original_not_first"][0] > 0.1  # a term that would matter if it were dropped
    else:
        assert "original_not_first" not in metrics
    assert aux["quantization"][0] > 0
    np.testing.assert_allclose(total[0], expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["content_loss"][0], content[0], rtol=1e-6)


def synthetic_tiny(**changes):
    config = tiny_config("unused", synthetic_data=True, log_every=1, **changes)
    config.synthetic.max_objects, config.synthetic.crop_size = 2, 16
    config.synthetic.global_size = 32
    return config


def test_resume_refuses_a_changed_shape_and_records_a_harmless_change(tmp_path):
    train.train_and_evaluate(synthetic_tiny(total_steps=2, report_at_end=False), str(tmp_path))
    written = (tmp_path / "config.json").read_bytes()

    changed = synthetic_tiny(total_steps=3, report_at_end=False)
    changed.model.code_bits, changed.learning_rate = 32, 0.123
    with pytest.raises(ConfigConflictError) as error:
        train.train_and_evaluate(changed, str(tmp_path))
    message = str(error.value)
    assert "model.code_bits 16 -> 32" in message and "learning_rate" in message
    assert "total_steps" not in message and "new --workdir" in message
    assert (tmp_path / "config.json").read_bytes() == written, "nothing written on refusal"
    assert not (tmp_path / "config_changes.jsonl").exists()

    train.train_and_evaluate(synthetic_tiny(total_steps=3, report_at_end=False), str(tmp_path))
    [entry] = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
    assert entry["resumed_after_step"] == 2
    assert entry["changes"] == {"total_steps": {"old": 2, "new": 3}}
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 3


def test_a_resume_logs_each_step_once(tmp_path):
    config = synthetic_tiny(total_steps=4, checkpoint_every=2, report_at_end=False)
    train.train_and_evaluate(config, str(tmp_path))
    # As after a crash between the metrics of steps 3-4 and the checkpoint of step 4.
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    train.train_and_evaluate(config, str(tmp_path))
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_train_command_errors_are_one_line(tmp_path):
    typo = run_cli(tmp_path / "w", "unused", "--config.total_step=5")
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines() == [
        "train: error: 'total_step' Did you mean \"total_steps\" instead of \"total_step\"? "
        "(see `oscar train -h`)"]
    missing = subprocess.run([sys.executable, "-m", "oscar_jax.train", "--config",
                              "configs/nope.py", "--workdir", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no config file configs/nope.py" in missing.stderr


def chunking_setup(hash_method="sign", *, freeze_cnn=True, dropout_rate=0.0):
    """Tiny model and a synthetic batch of 4 originals x 2 variants x 2 views = 16 images."""
    config = demo_config.get_config("tiny")
    config.hash_method = hash_method
    config.model.freeze_cnn, config.model.dropout_rate = freeze_cnn, dropout_rate
    model = create_model(config, axis_name=train.AXIS)
    batch = input_pipeline.synthetic_batch(input_pipeline.Composition(4, 2, 2), max_objects=2,
                                           crop_size=16, global_size=32, seed=0)
    return config, model, batch, train.init_variables(model, batch, seed=0)


def one_device_gradients(config, model, variables, batch, chunks):
    """train.gradients with `contrastive_chunks=chunks` under jax.pmap on one device, grads and
    metrics averaged over the axis as train_step does -> (grads, batch_stats, metrics)."""
    config = config.copy_and_resolve_references()
    config.contrastive_chunks = chunks

    def run(params, batch_stats, batch):
        grads, batch_stats, metrics = train.gradients(
            params, batch_stats, batch, jax.random.PRNGKey(3), model=model, config=config)
        return (jax.lax.pmean(grads, train.AXIS), batch_stats,
                jax.lax.pmean(metrics, train.AXIS))

    one_device = jax.pmap(run, axis_name=train.AXIS, devices=jax.devices()[:1])
    inputs = [jax.tree.map(lambda x: np.asarray(x)[None], tree)
              for tree in (variables["params"], variables["batch_stats"], batch)]
    return jax.device_get(jax.tree.map(lambda x: x[0], one_device(*inputs)))


@pytest.mark.parametrize("hash_method", ["sign", "sign_bit_balance"])
def test_gradient_caching_equals_the_whole_batch_gradient(hash_method):
    """Without batch-statistic BatchNorm and dropout, chunks change nothing: the same loss,
    metrics and gradient (Eb's from phase 2, the rest from phase 3's vector-Jacobian
    products) as one value_and_grad over the device's batch."""
    config, model, batch, variables = chunking_setup(hash_method)
    grads, batch_stats, metrics = one_device_gradients(config, model, variables, batch, 1)
    assert grads["code_projection"]["kernel"].any() and grads["fusion"]["kernel"].any()
    assert sorted(metrics) == sorted(["loss", "content_loss", "bits_one", "quantization"]
                                     + (["bit_balance"] if "balance" in hash_method else []))
    for chunks in (2, 4):
        chunked = one_device_gradients(config, model, variables, batch, chunks)
        close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
        jax.tree.map(close, chunked[0], grads)
        jax.tree.map(close, chunked[1], batch_stats)
        jax.tree.map(close, chunked[2], metrics)


def test_gradient_caching_with_batchnorm_statistics_per_chunk():
    """With BatchNorm in training mode each chunk is normalised by its own statistics, so the
    step differs from the unchunked one; the running statistics are updated once per chunk,
    in order, as if the chunks had been separate batches."""
    config, model, batch, variables = chunking_setup(freeze_cnn=False, dropout_rate=0.1)
    _, whole_stats, _ = one_device_gradients(config, model, variables, batch, 1)
    grads, stats, metrics = one_device_gradients(config, model, variables, batch, 2)
    assert np.isfinite(metrics["loss"])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(grads))

    def in_turn(params, batch_stats, batch):
        for half in (slice(0, 8), slice(8, 16)):
            _, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                {k: v[half] for k, v in batch.items()}, train=True,
                rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
            batch_stats = updates["batch_stats"]
        return batch_stats

    inputs = [jax.tree.map(lambda x: np.asarray(x)[None], tree)
              for tree in (variables["params"], variables["batch_stats"], batch)]
    expected = jax.pmap(in_turn, axis_name=train.AXIS, devices=jax.devices()[:1])(*inputs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6),
                 stats, jax.device_get(expected))
    differs = jax.tree.map(lambda a, b: not np.allclose(a, b), stats, whole_stats)
    assert any(jax.tree.leaves(differs)), "per-chunk statistics should differ"


def test_contrastive_chunks_must_split_a_devices_batch(tmp_path):
    assert jax.local_device_count() == 2
    config = synthetic_tiny(contrastive_chunks=3)  # 8 images a step, 4 a device
    with pytest.raises(ValueError) as error:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    assert "batch of 4 images" in message and "contrastive_chunks=3" in message
    assert "[1, 2, 4]" in message and "originals_per_batch" in message
    with pytest.raises(ValueError, match="contrastive_chunks=0"):
        train.batch_composition(synthetic_tiny(contrastive_chunks=0))


def test_training_with_gradient_caching_runs(tmp_path):
    config = synthetic_tiny(total_steps=2, report_at_end=False, contrastive_chunks=2)
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step[0]) == 2
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(np.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in metrics)


def test_a_field_added_since_a_run_counts_as_its_default_on_resume(tmp_path):
    train.train_and_evaluate(synthetic_tiny(total_steps=1, report_at_end=False), str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    del written["contrastive_chunks"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert check_resume(synthetic_tiny(total_steps=1, report_at_end=False), str(tmp_path)) == {}
    changed = synthetic_tiny(total_steps=1, report_at_end=False, contrastive_chunks=2)
    with pytest.raises(ConfigConflictError, match="contrastive_chunks 1 -> 2"):
        check_resume(changed, str(tmp_path))


def test_matched_views_on_records_made_without_them_warn(data_dir, tmp_path, capsys):
    # The tiny records draw their train views per variant; the default demo records match.
    assert demo_config.get_config().matched_views and not tiny_config(data_dir).matched_views
    train.create_data(tiny_config(data_dir), str(tmp_path / "off"))
    assert "matched_views" not in capsys.readouterr().err
    train.create_data(tiny_config(data_dir, matched_views=True), str(tmp_path / "unmatched"))
    assert "rebuild the records" in capsys.readouterr().err
    matched = tmp_path / "records"
    shutil.copytree(data_dir, matched)
    (path,) = glob.glob(str(matched / "oscar_demo" / "tiny" / "*" / "metadata.json"))
    with open(path) as f:
        metadata = json.load(f)
    metadata["config"]["matched_train_views"] = True
    with open(path, "w") as f:
        json.dump(metadata, f)
    train.create_data(tiny_config(str(matched), matched_views=True), str(tmp_path / "matched"))
    assert "matched_views" not in capsys.readouterr().err


def test_photometric_jitter_reaches_the_trainer_s_batches(data_dir, tmp_path):
    plain_iterator, plain = train.create_data(tiny_config(data_dir), str(tmp_path / "plain"))
    jitter_iterator, jittered = train.create_data(tiny_config(data_dir, photometric_jitter=1.0),
                                                  str(tmp_path / "jitter"))
    for name in plain:
        same = np.array_equal(plain[name], jittered[name])
        assert same != (name in ("image", "crops")), name
    assert not np.array_equal(next(plain_iterator)["image"], next(jitter_iterator)["image"])


def test_online_edits_reach_the_trainer_s_batches(data_dir, tmp_path, capsys):
    _, plain = train.create_data(tiny_config(data_dir), str(tmp_path / "plain"))
    assert "online_edits" not in capsys.readouterr().err
    _, edited = train.create_data(tiny_config(data_dir, online_edits=1.0),
                                  str(tmp_path / "edited"))
    # The tiny records keep their views as drawn: the trainer says the edit may land elsewhere
    # in a flipped or rotated view.
    assert "not in their canonical layout" in capsys.readouterr().err
    c = tiny_config(data_dir)
    slots = (c.originals_per_batch, c.variants_per_original, c.views_per_variant)
    image = edited["image"].reshape(*slots, *edited["image"].shape[1:])
    source = plain["image"].reshape(image.shape)
    np.testing.assert_array_equal(image[:, 0], source[:, 0])
    changed = (image[:, 1] != source[:, 0]).any(axis=-1).mean(axis=(-1, -2))
    assert (changed > 0.005).all() and (changed < 0.2).all(), changed
