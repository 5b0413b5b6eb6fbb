"""Weights and inputs of the backbone reference tests, rebuilt the same way on every machine.

The state dicts use PyTorch names and layouts (OIHW kernels, [out, in] linear weights) and
are drawn from seeded numpy generators, so `tests/make_torch_references.py` (with PyTorch)
and the tests (without it) see the same numbers.
"""

from __future__ import annotations

import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
RESNET_INPUT = (2, 40, 40, 3)
LITE0_INPUT = (2, 64, 64, 3)
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def reference_images(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


class _Writer:
    """Adds conv, BatchNorm and linear entries with seeded values."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.state: dict[str, np.ndarray] = {}

    def conv(self, name: str, cout: int, cin: int, k: int) -> None:
        scale = np.sqrt(2.0 / (cin * k * k))
        self.state[f"{name}.weight"] = (self.rng.normal(size=(cout, cin, k, k)) * scale
                                        ).astype(np.float32)

    def bn(self, name: str, channels: int) -> None:
        for field, (low, high) in (("weight", (0.5, 1.5)), ("bias", (-0.2, 0.2)),
                                   ("running_mean", (-0.1, 0.1)),
                                   ("running_var", (0.5, 1.5))):
            self.state[f"{name}.{field}"] = self.rng.uniform(low, high, channels).astype(
                np.float32)
        self.state[f"{name}.num_batches_tracked"] = np.zeros((), np.int64)

    def linear(self, name: str, cout: int, cin: int) -> None:
        self.state[f"{name}.weight"] = (self.rng.normal(size=(cout, cin)) / np.sqrt(cin)
                                        ).astype(np.float32)
        self.state[f"{name}.bias"] = self.rng.uniform(-0.1, 0.1, cout).astype(np.float32)


def resnet_state() -> dict[str, np.ndarray]:
    """A small torchvision-style network: stem of 8 filters, one bottleneck of 8 filters,
    two of 16 (the first with stride 2 and a downsample), and an fc layer."""
    w = _Writer(0)
    w.conv("conv1", 8, 3, 7)
    w.bn("bn1", 8)
    cin = 8
    for layer, blocks, filters in (("layer1", 1, 8), ("layer2", 2, 16)):
        for index in range(blocks):
            prefix = f"{layer}.{index}"
            w.conv(f"{prefix}.conv1", filters, cin, 1)
            w.bn(f"{prefix}.bn1", filters)
            w.conv(f"{prefix}.conv2", filters, filters, 3)
            w.bn(f"{prefix}.bn2", filters)
            w.conv(f"{prefix}.conv3", filters * 4, filters, 1)
            w.bn(f"{prefix}.bn3", filters * 4)
            if cin != filters * 4:
                w.conv(f"{prefix}.downsample.0", filters * 4, cin, 1)
                w.bn(f"{prefix}.downsample.1", filters * 4)
            cin = filters * 4
    w.linear("fc", 10, 64)
    return w.state


def lite0_state() -> dict[str, np.ndarray]:
    """EfficientNet-Lite0's names and shapes (efficientnet_pytorch layout), seeded values."""
    w = _Writer(1)
    w.conv("_conv_stem", 32, 3, 3)
    w.bn("_bn0", 32)
    cin, index = 32, 0
    for repeats, kernel, _, expansion, cout in LITE0_STAGES:
        for _ in range(repeats):
            prefix, mid = f"_blocks.{index}", cin * expansion
            if expansion != 1:
                w.conv(f"{prefix}._expand_conv", mid, cin, 1)
                w.bn(f"{prefix}._bn0", mid)
            w.conv(f"{prefix}._depthwise_conv", mid, 1, kernel)
            w.bn(f"{prefix}._bn1", mid)
            w.conv(f"{prefix}._project_conv", cout, mid, 1)
            w.bn(f"{prefix}._bn2", cout)
            cin, index = cout, index + 1
    w.conv("_conv_head", 1280, 320, 1)
    w.bn("_bn1", 1280)
    w.linear("_fc", 1000, 1280)
    return w.state
