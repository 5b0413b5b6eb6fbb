"""benchmarks/benchmark_two_gap.py: distances to the own original and to the nearest other."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import manipulations
from tests import benchmark_scripts


@pytest.fixture(scope="module")
def script():
    return benchmark_scripts.load("benchmark_two_gap")


def test_gap_rows_by_hand(script):
    # Database rows: two originals (0, 1) and a distractor (2), 8-bit codes.
    database = np.array([[0b00000000], [0b11110000], [0b00000111]], np.uint8)
    # Both queries belong to original 0. Query 0: 1 bit from it, 5 from original 1, 2 from
    # the distractor. Query 1: 8 bits from it, 4 from original 1, 5 from the distractor.
    queries = np.array([[0b00000001], [0b11111111]], np.uint8)
    row = script.gap_rows(queries, np.array([0, 0]), database)
    assert row["own"] == pytest.approx(4.5) and row["other"] == pytest.approx(3.0)
    assert row["nearer"] == pytest.approx(0.5)


def test_command_prints_both_sides_per_method(script, tiny_trained, capsys):
    workdir, _, _ = tiny_trained
    assert script.main(["--workdir", workdir, "--baselines", "pdq"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:3] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert [(m.strip(), s.strip()) for m, s in rows] == [
        ("oscar", "benign"), ("oscar", "manipulated"), ("pdq", "benign"),
        ("pdq", "manipulated")]
    assert "distractors)" in out and "(0 distractors)" not in out


def test_command_refuses_bad_arguments(script, tiny_trained, capsys):
    workdir, _, _ = tiny_trained
    with pytest.raises(SystemExit):
        script.main(["--workdir", workdir, "--baselines", "nohash"])
    assert "unknown baseline nohash" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--workdir", workdir, "--distractors", "test"])
    assert "another split" in capsys.readouterr().err


def test_by_edit_splits_the_manipulated_versions_by_kind(script, tiny_trained, capsys):
    workdir, _, _ = tiny_trained
    assert script.main(["--workdir", workdir, "--baselines", "", "--by_edit"]) == 0
    out = capsys.readouterr().out
    manipulated = int(out.split(" manipulated queries")[0].split()[-1])
    shares = {c[2]: float(c[-2]) for c in
              (line.split("|") for line in out.splitlines() if "| oscar | manipulated" in line)}
    overall = shares.pop(" manipulated ")
    counts = {label.split(": ")[1].split(" (")[0]: int(label.split("(")[1].rstrip(") "))
              for label in shares}
    assert set(counts) <= set(manipulations.MANIPULATIONS) and counts
    assert sum(counts.values()) == manipulated
    # Each kind's share nearer its original, weighted by its count, is the overall share.
    weighted = sum(shares[label] * counts[label.split(": ")[1].split(" (")[0]]
                   for label in shares) / manipulated
    assert weighted == pytest.approx(overall, abs=2e-3)
