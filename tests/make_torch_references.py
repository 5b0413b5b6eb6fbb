"""Writes the PyTorch reference outputs the backbone tests compare against (run once, commit).

    .venv/bin/python tests/make_torch_references.py    # needs PyTorch (CPU build is enough)

The tests then run without PyTorch: they rebuild the same weights with numpy
(`tests/backbone_references.py`), load them through the project's readers and check the
Linen models against the outputs saved here. For the ResNet the state dict itself is small
and is saved with `torch.save` too, so the torch-free reader is checked on a real file.
The torch modules below are written out from the architectures' descriptions (torchvision's
ResNet v1.5 bottleneck; EfficientNet-Lite0: no squeeze-and-excitation, ReLU6, TF "SAME"
padding, BatchNorm epsilon 1e-3), independently of the Linen code they check.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.backbone_references import (  # noqa: E402
    DATA,
    LITE0_INPUT,
    RESNET_INPUT,
    lite0_state,
    reference_images,
    resnet_state,
)

F = nn.functional


# ---- ResNet: a small torchvision-style bottleneck network ------------------------------------


class Bottleneck(nn.Module):
    def __init__(self, cin: int, filters: int, stride: int):
        super().__init__()
        out = filters * 4
        self.conv1 = nn.Conv2d(cin, filters, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        self.conv3 = nn.Conv2d(filters, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.downsample(x) if self.downsample else x))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Bottleneck(8, 8, 1))
        self.layer2 = nn.Sequential(Bottleneck(32, 16, 2), Bottleneck(64, 16, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        return self.layer2(self.layer1(x)).mean(dim=(2, 3))


# ---- EfficientNet-Lite0 ------------------------------------------------------------------------


def same_conv(x, conv: nn.Conv2d):
    """TF 'SAME' padding: total max((ceil(n / s) - 1) s + k - n, 0), the smaller half first."""
    pads = []
    for size, k, s in zip(x.shape[:1:-1], conv.kernel_size[::-1], conv.stride[::-1],
                          strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return conv(F.pad(x, pads))


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(same_conv(y, self._depthwise_conv)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class Lite0(nn.Module):
    STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = bn(32)
        blocks, cin = [], 32
        for repeats, kernel, stride, expansion, cout in self.STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expansion))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(same_conv(x, self._conv_stem)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def load(module: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return module.eval()


def main() -> None:
    os.makedirs(DATA, exist_ok=True)
    resnet_weights = resnet_state()
    torch.save({k: torch.from_numpy(v) for k, v in resnet_weights.items()},
               os.path.join(DATA, "resnet_reference.pth"))
    resnet = load(SmallResNet(), resnet_weights)
    lite0 = load(Lite0(), lite0_state())
    with torch.no_grad():
        outputs = {
            "resnet": resnet(torch.from_numpy(reference_images(RESNET_INPUT))
                             .permute(0, 3, 1, 2)).numpy(),
            "lite0": lite0(torch.from_numpy(reference_images(LITE0_INPUT))
                           .permute(0, 3, 1, 2)).numpy(),
        }
    np.savez(os.path.join(DATA, "backbone_references.npz"), **outputs)
    for name, value in outputs.items():
        print(f"{name}: {value.shape}, |max| {np.abs(value).max():.4f}")


if __name__ == "__main__":
    main()
