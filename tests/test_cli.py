"""The tools' shared command-line style and the `oscar` console script."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from oscar_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = [name for name in cli.COMMANDS if name != "train"]


def test_the_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"oscar": "oscar_jax.cli:main"}


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_has_the_same_help_layout(name, capsys):
    module = importlib.import_module(cli.COMMANDS[name])
    assert module.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {cli.COMMANDS[name]}")
    # What it does (the module docstring's first line), then the arguments, then examples.
    first_line = module.__doc__.strip().splitlines()[0]
    assert first_line in out
    assert out.index(first_line) < out.index("options:") < out.index("examples:")
    assert f"oscar {name}" in out.split("examples:")[1]


def test_the_oscar_command_lists_and_dispatches_every_tool(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n  {name} " in listing
    assert cli.main(["index", "-h"]) == 0
    assert capsys.readouterr().out.startswith("usage: oscar index")
    assert cli.main(["no-such-tool"]) == 2
    assert "unknown tool 'no-such-tool'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["hash", "photo.jpg"], "needs the --workdir"),
    (["evaluate"], "give --workdir"),
    (["separation", "--workdir", "/no/such/run"], "is not a training workdir"),
    (["attribute", "info", "--db", "/no/such.sqlite"], "no trusted database"),
    (["index", "info", "--index", "/no/such.faiss"], "not found"),
])
def test_a_mistake_is_one_line_and_exit_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"oscar {argv[0]}: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_usage_error_is_reported_by_argparse_with_status_2(capsys):
    assert cli.main(["hash", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_oscar_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("OSCAR_DEBUG", "1")
    with pytest.raises(ValueError, match="needs the --workdir"):
        cli.main(["hash", "photo.jpg"])


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "oscar_jax.hash", "-h"],
    [sys.executable, "-m", "oscar_jax.cli", "serve", "-h"],
    [sys.executable, "-m", "oscar_jax.train", "-h"],
    [sys.executable, "-m", "oscar_jax.cli", "train", "--help"],
])
def test_the_python_m_forms_run(command):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "--workdir" in done.stdout


def test_an_unknown_split_is_one_line(tiny_trained, tmp_path, capsys):
    _, records, _ = tiny_trained
    assert cli.main(["evaluate", "--records", str(records), "--split", "nosuch",
                     "--methods", "ahash", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oscar evaluate: error: ") and "nosuch" in err
    assert len(err.strip().splitlines()) == 1, err


def test_serve_on_a_busy_port_is_one_line(tmp_path, capsys):
    import socket

    from oscar_jax.attribution.database import TrustedDatabase
    from preprocessing.images import encode_png
    from tests.samples import photo

    image = tmp_path / "coffee.png"
    image.write_bytes(encode_png(photo("coffee", 96)))
    db = str(tmp_path / "db.sqlite")
    with TrustedDatabase.create(db, method="phash") as created:
        created.add([str(image)], progress=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--db", db, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oscar serve: error: ") and str(port) in err
    assert len(err.strip().splitlines()) == 1, err
