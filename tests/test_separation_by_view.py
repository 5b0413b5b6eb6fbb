"""benchmarks/separation_by_view.py: separation over the views with and without layout changes."""

from __future__ import annotations

import numpy as np
import pytest

from tests import benchmark_scripts


@pytest.fixture(scope="module")
def script():
    return benchmark_scripts.load("separation_by_view")


def test_layout_transforms_are_the_geometric_secondaries(script):
    assert script.LAYOUT == ("flip", "rotate", "padding")


def test_subsets_by_hand(script):
    descriptions = np.array([
        "",
        "compress(quality=0.5); flip(axis=1)",
        "compress(quality=0.5); resize(scale=0.8); color(factor=1.5)",
        "rotate(angle=4); padding(fraction=0.05)",
    ])
    subsets = script.view_subsets(descriptions)
    assert list(subsets) == ["all", "no flip", "no rotate", "no padding", "no layout change"]
    np.testing.assert_array_equal(subsets["all"], [True, True, True, True])
    np.testing.assert_array_equal(subsets["no flip"], [True, False, True, True])
    np.testing.assert_array_equal(subsets["no rotate"], [True, True, True, False])
    np.testing.assert_array_equal(subsets["no layout change"], [True, False, True, False])


def test_separation_by_view_by_hand(script):
    # One original: its reference, a flipped benign view far from it (10), a JPEG view near
    # it (1); one manipulated version, untransformed (3) and flipped (12).
    identity = np.zeros(5, int)
    variant = np.array([0, 0, 0, 1, 1])
    view = np.array([0, 1, 2, 0, 1])
    descriptions = np.array(["", "flip(axis=1)", "compress(quality=0.5)", "", "flip(axis=0)"])
    distance = np.zeros((5, 5))
    distance[0] = distance[:, 0] = [0, 10, 1, 3, 12]
    scores = script.separation_by_view(distance, identity, variant, view,
                                       script.view_subsets(descriptions))
    # All: (10 < 3, 10 < 12, 1 < 3, 1 < 12) -> 3 / 4; without flips only 1 < 3 is left.
    assert scores["all"] == pytest.approx(0.75)
    assert scores["no rotate"] == pytest.approx(0.75)
    assert scores["no flip"] == pytest.approx(1.0)
    assert scores["no layout change"] == pytest.approx(1.0)


def test_a_subset_without_benign_views_is_nan(script):
    identity, variant, view = np.zeros(3, int), np.array([0, 0, 1]), np.array([0, 1, 0])
    descriptions = np.array(["", "flip(axis=1)", ""])
    scores = script.separation_by_view(np.ones((3, 3)), identity, variant, view,
                                       script.view_subsets(descriptions))
    assert np.isnan(scores["no flip"]) and scores["all"] == pytest.approx(0.5)


def test_command_prints_the_model_and_baselines(script, tiny_trained, capsys):
    workdir, records, _ = tiny_trained
    assert script.main(["--workdir", workdir, "--baselines", "pdq", "--split", "test"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert "no layout change (" in header
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"oscar", "pdq"}
    assert len(rows["pdq"].split("|")) == len(header.split("|"))


def test_command_refuses_bad_arguments(script, capsys):
    with pytest.raises(SystemExit):
        script.main([])
    assert "give --workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--records", "somewhere", "--baselines", "pdq,nohash"])
    assert "unknown baseline nohash" in capsys.readouterr().err
