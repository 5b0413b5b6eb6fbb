"""benchmarks/detector_stability.py: agreement of a detector with itself after benign views,
and how much of each edit its boxes cover, on a micro build of generated scenes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from oscar_jax.evaluation.table6 import builder_items
from preprocessing import build, detect
from tests import benchmark_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = benchmark_scripts.path("detector_stability")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """4 generated scenes with ground-truth masks, 2 edits each, 4 views of every variant."""
    config = build.make_config("oscar_demo", "scenes", config_name="micro_scenes", overrides=dict(
        num_scenes="4", test_fraction="0.5", single_views="0", image_size="128",
        global_size="64", crop_size="32", max_objects="4"))
    data_dir = str(tmp_path_factory.mktemp("scenes"))
    result = build.build("oscar_demo", data_dir=data_dir, config=config, verbose=False)
    return str(result.builder.data_dir)


def test_box_iou_and_flips_by_hand():
    script = benchmark_scripts.load("detector_stability")
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0]])
    np.testing.assert_allclose(script.box_iou(a, b), [[1.0, 0.0625 / 0.4375, 0.0]])
    dets = detect.Detections(np.array([[10, 20, 30, 60]], np.float32), np.ones(1, np.float32),
                             np.zeros(1, np.int32), np.zeros((1, 100, 200), bool))
    np.testing.assert_allclose(script.normalised_boxes(dets), [[0.05, 0.2, 0.15, 0.6]])
    np.testing.assert_allclose(script.normalised_boxes(dets, "compress(q=1); flip(axis=1)"),
                               [[0.85, 0.2, 0.95, 0.6]])
    np.testing.assert_allclose(script.normalised_boxes(dets, "flip(axis=0)"),
                               [[0.05, 0.4, 0.15, 0.8]])


def test_the_ground_truth_agrees_with_itself_and_a_lossy_detector_does_not(scenes):
    script = benchmark_scripts.load("detector_stability")
    items, maker = builder_items(scenes)
    exact = script.stability(items["train"], maker, maker.detector)
    assert exact["views"] > 0 and exact["same_count"] == 1.0
    assert exact["recall"] > 0.9 and exact["precision"] > 0.9

    calls = []

    def forgetful(image, *, name=None, gt_masks=None):
        """Loses the last object on every other call: unstable by design."""
        calls.append(name)
        found = maker.detector(image, name=name, gt_masks=gt_masks)
        return found.top(len(found) - 1, 0.0) if len(calls) % 2 else found

    lossy = script.stability(items["train"], maker, forgetful)
    assert lossy["same_count"] < 1.0 and lossy["recall"] < exact["recall"]

    covered = script.coverage(items["train"], maker, maker.detector)
    assert covered and all(0.0 <= value <= 1.0 for value in covered.values())
    # An edit inside an object's box is covered wholly by the ground truth's boxes.
    assert max(covered.values()) == 1.0


def test_the_command_prints_one_row_and_refuses_options_its_detector_lacks(scenes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, SCRIPT, "--records", scenes], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| OracleDetector")]
    assert len(rows) == 1 and "| 1.00 |" in rows[0]
    refused = subprocess.run([sys.executable, SCRIPT, "--records", scenes, "--detector_option",
                              "proposals=mser"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: detector 'oracle' has no option proposals; its options: none")
