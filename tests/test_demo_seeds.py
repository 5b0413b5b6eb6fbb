"""benchmarks/demo_seeds.py: the commands each seed runs, for the default and a variant."""

from __future__ import annotations

import json

from tests import benchmark_scripts


def fake_runs(script, monkeypatch, tmp_path):
    """Records every command instead of running it; evaluate writes a report."""
    commands = []

    def run(command):
        commands.append(command)
        if "evaluate" in command:
            workdir = command[command.index("--workdir") + 1]
            (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
            (tmp_path / workdir / "report.json").write_text(json.dumps({"seed": workdir}))

    monkeypatch.setattr(script, "run", run)
    monkeypatch.chdir(tmp_path)
    return commands


def test_a_seed_pretrains_trains_from_it_and_evaluates(monkeypatch, tmp_path):
    script = benchmark_scripts.load("demo_seeds")
    commands = fake_runs(script, monkeypatch, tmp_path)
    report = script.train_and_evaluate(3, "data", "runs", ["--config.total_steps=5"])
    assert report == {"seed": "runs/demo_seed3"}
    pretrain, main, evaluate = commands
    assert pretrain[pretrain.index("--config") + 1] == "configs/demo.py:pretrain"
    assert main[main.index("--config") + 1] == "configs/demo.py"
    assert "--config.init_from=runs/demo_seed3_pretrain" in main
    for command in (pretrain, main):
        assert {"--config.seed=3", "--config.data_dir=data", "--config.total_steps=5"} <= set(
            command)
    assert evaluate[evaluate.index("--workdir") + 1] == "runs/demo_seed3"


def test_a_variant_has_its_own_configs_and_workdirs(monkeypatch, tmp_path):
    script = benchmark_scripts.load("demo_seeds")
    commands = fake_runs(script, monkeypatch, tmp_path)
    script.train_and_evaluate(0, "data", "runs", [], variant="raw")
    pretrain, main, evaluate = commands
    assert pretrain[pretrain.index("--config") + 1] == "configs/demo.py:pretrain,raw"
    assert pretrain[pretrain.index("--workdir") + 1] == "runs/demo_raw_seed0_pretrain"
    assert main[main.index("--config") + 1] == "configs/demo.py:raw"
    assert "--config.init_from=runs/demo_raw_seed0_pretrain" in main
    assert evaluate[evaluate.index("--workdir") + 1] == "runs/demo_raw_seed0"
