"""ResNets in Linen (He et al. 2016), with names that map one to one onto torchvision's.

OSCAR-Net uses two ResNet50s that share no weights: `fv` on node crops (ending in a 256-D
layer) and `FG` on the whole image. Small variants (ResNet18, and the tiny ResNet used by
the demo and the tests) keep the same code path.

Pretrained weights load from a local file through one function, `merge_pretrained`, which
fails loudly on any name or shape it did not expect: a checkpoint that silently loads half
its weights is worse than one that does not load.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oscar_jax.models.torch_files import read_state_dict

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Where `ResNet.expose` puts each stage's output (`stage1`..`stage4`) and its perturbation.
STAGE_COLLECTION = "intermediates"
PERTURBATIONS = "perturbations"


def normalize_images(images: Any, dtype: Any = jnp.float32) -> jnp.ndarray:
    """uint8 [..., H, W, 3] -> ImageNet-normalised floats, as torchvision models expect."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(dtype)


def masked_norm(norm: Any, mask: jnp.ndarray | None):
    """`norm(name=..., ...)` as a layer whose training statistics count only the rows where
    `mask` [B] is True (padding slots of a batch of node crops must not shift them)."""
    rows = None if mask is None else mask[:, None, None, None]

    def layer(**kwargs):
        return lambda x: norm(**kwargs)(x, mask=rows)

    return layer


def _layer_factories(dtype: Any, bn_axis_name: str | None, train: bool,
                     mask: jnp.ndarray | None = None):
    """The BatchNorm and bias-free Conv constructors every block uses (torchvision's)."""
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=dtype, axis_name=bn_axis_name)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype)
    return masked_norm(norm, mask), conv


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet18/34). [B,H,W,C] -> [B,H',W',F]."""

    filters: int
    strides: int = 1
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        norm, conv = _layer_factories(self.dtype, self.bn_axis_name, train, mask)
        y = conv(self.filters, (3, 3), self.strides, padding=1, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.filters, (3, 3), padding=1, name="conv2")(y)
        # Zero-initialised last scale: each block starts as the identity (Goyal et al. 2017).
        y = norm(name="bn2", scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = conv(self.filters, (1, 1), self.strides, name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions, stride on the 3x3 as torchvision does (ResNet50 v1.5).

    [B, H, W, C] -> [B, H / strides, W / strides, 4 * filters].
    """

    filters: int
    strides: int = 1
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        norm, conv = _layer_factories(self.dtype, self.bn_axis_name, train, mask)
        out = self.filters * self.expansion
        y = nn.relu(norm(name="bn1")(conv(self.filters, (1, 1), name="conv1")(x)))
        y = conv(self.filters, (3, 3), self.strides, padding=1, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(out, (1, 1), name="conv3")(y)
        y = norm(name="bn3", scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != out or self.strides != 1:
            x = conv(out, (1, 1), self.strides, name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(x + y)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
    """A ResNet trunk with global average pooling and an optional linear head.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet50.
      block: 'bottleneck' or 'basic'.
      width: filters of the first stage (64 in the paper's ResNet50).
      output_dim: size of the final linear layer (`head`), e.g. 256 for `fv`; None returns the
        pooled features [B, width * 8 * expansion].
      dtype: computation dtype (bfloat16 on accelerators); parameters stay float32.
      bn_axis_name: pmap axis over which BatchNorm statistics are averaged in training.
      frozen_trunk: the trunk runs with its BatchNorm statistics and passes no gradient;
        only `head` trains.
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    width: int = 64
    output_dim: int | None = None
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_trunk: bool = False

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool, mask: jnp.ndarray | None = None,
                 return_map: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """ImageNet-normalised images [B, H, W, 3] -> embeddings [B, output_dim]. In training,
        BatchNorm statistics count only the images where `mask` [B] is True (default all).
        With `return_map`, also the last feature map [B, h, w, channels] before pooling."""
        train = train and not self.frozen_trunk
        norm, conv = _layer_factories(self.dtype, self.bn_axis_name, train, mask)
        x = jnp.asarray(images, self.dtype)
        x = nn.relu(norm(name="bn1")(conv(self.width, (7, 7), 2, padding=3, name="conv1")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block = BLOCKS[self.block]
        for stage, num_blocks in enumerate(self.stage_sizes):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block(self.width * 2**stage, strides, dtype=self.dtype,
                          bn_axis_name=self.bn_axis_name,
                          name=f"layer{stage + 1}_{index}")(x, train=train, mask=mask)
            x = self.expose(f"stage{stage + 1}", x)
        feature_map = jax.lax.stop_gradient(x) if self.frozen_trunk else x
        x = jnp.mean(feature_map, axis=(1, 2))
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, dtype=self.dtype, name="head")(x)
        x = jnp.asarray(x, jnp.float32)
        return (x, feature_map) if return_map else x

    def expose(self, name: str, x: jnp.ndarray) -> jnp.ndarray:
        """The feature map at the end of a stage, made visible to GradCAM
        (oscar_jax.attribution.gradcam).

        It is sown into 'intermediates' (stored only when an apply makes that collection
        mutable) and, when the caller passes a 'perturbations' collection holding `name`, a
        zero of that shape is added, so `jax.grad` with respect to it is dL/dx. Perturbing only
        when asked keeps `init` from creating a 'perturbations' collection (flax's `perturb`
        would make one in every init), so train states and checkpoints are unchanged.
        """
        self.sow(STAGE_COLLECTION, name, x)
        if self.has_variable(PERTURBATIONS, name):
            x = self.perturb(name, x, collection=PERTURBATIONS)
        return x


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
# The demo and tests: one basic block per stage, 16 filters; minutes to train on a CPU.
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block="basic", width=16)
VARIANTS = {"resnet50": ResNet50, "resnet18": ResNet18, "tiny": ResNetTiny}


# ---- pretrained weights --------------------------------------------------------------------

# torchvision names that have no counterpart here: the ImageNet classifier and a BN counter.
IGNORED_TORCHVISION = re.compile(r"^fc\.|num_batches_tracked$")
_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def torchvision_to_flax(name: str) -> tuple[str, ...] | None:
    """`layer1.0.downsample.1.running_var` -> ('batch_stats', 'layer1_0', 'downsample_bn',
    'var'); None for names that are deliberately ignored."""
    if IGNORED_TORCHVISION.search(name):
        return None
    parts = name.split(".")
    field = parts[-1]
    path = parts[:-1]
    if path and path[0].startswith("layer") and len(path) >= 2:
        path = [f"{path[0]}_{path[1]}", *path[2:]]
    if len(path) >= 2 and path[-2] == "downsample":
        path = [*path[:-2], "downsample_conv" if path[-1] == "0" else "downsample_bn"]
    module = path[-1] if path else ""
    if module.startswith("conv") or module == "downsample_conv":
        if field != "weight":
            raise ValueError(f"unexpected convolution parameter {name!r}")
        return ("params", *path, "kernel")
    if module.startswith("bn") or module == "downsample_bn":
        if field not in _BN_FIELDS:
            raise ValueError(f"unexpected batch-norm parameter {name!r}")
        collection, leaf = _BN_FIELDS[field]
        return (collection, *path, leaf)
    raise ValueError(f"unexpected torchvision parameter {name!r}")


def _to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    return value


def load_pretrained(path: str | os.PathLike | None) -> dict[tuple[str, ...], np.ndarray]:
    """Reads a local weights file into flax paths -> arrays.

    Accepted: a `.npz` whose keys are torchvision names (`layer1.0.conv1.weight`) or flax
    paths joined by '/' (`params/layer1_0/conv1/kernel`); or a torchvision state dict saved
    with `torch.save` (`.pth`, `.pt`; read without PyTorch, `torch_files`).
    """
    if path is None:
        raise FileNotFoundError(
            "ResNet weights come from a local file: pass --config.pretrained_cnn=PATH of a "
            "torchvision state dict (.pth) or .npz (nothing is downloaded)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights {path!r} not found; pass the path of a local .npz or "
            "torchvision ResNet state dict (nothing is downloaded)"
        )
    if path.endswith(".npz"):
        with np.load(path) as archive:
            raw = {key: np.asarray(archive[key]) for key in archive.files}
    elif path.endswith((".pth", ".pt", ".bin")):
        raw = read_state_dict(path)
    else:
        raise ValueError(f"{path}: expected a .npz, .pth or .pt file")
    converted = {}
    for key, value in raw.items():
        if "/" in key:
            target = tuple(key.split("/"))
        else:
            target = torchvision_to_flax(key.removeprefix("module."))
            if target is None:
                continue
        converted[target] = _to_flax_layout(target, value)
    return converted


def merge_pretrained(
    variables: Mapping[str, Any],
    pretrained: Mapping[tuple[str, ...], np.ndarray],
    *,
    prefix: tuple[str, ...] = (),
    allow_missing: Sequence[str] = ("head",),
) -> dict:
    """Returns `variables` with the trunk under `prefix` replaced by `pretrained`.

    Args:
      variables: {'params': ..., 'batch_stats': ...} of a model containing a ResNet.
      pretrained: flax paths (collection, module, ..., leaf) -> arrays, as `load_pretrained`.
      prefix: path of the ResNet inside the model, e.g. ('global_cnn',).
      allow_missing: top-level ResNet modules that may keep their fresh initialisation
        (the linear head, which ImageNet weights do not have).

    Raises:
      ValueError: a pretrained name with no target, a shape mismatch, or a trunk parameter
        with no pretrained value; the message lists every offender.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    unexpected, mismatched, merged = [], [], dict(flat)
    covered = set()
    for path, value in pretrained.items():
        target = (path[0], *prefix, *path[1:])
        if target not in flat:
            unexpected.append("/".join(path))
            continue
        if tuple(flat[target].shape) != tuple(value.shape):
            mismatched.append(f"{'/'.join(path)}: file {value.shape}, model {flat[target].shape}")
            continue
        merged[target] = np.asarray(value, flat[target].dtype)
        covered.add(target)
    trunk = [p for p in flat if p[1 : 1 + len(prefix)] == prefix]
    missing = [
        "/".join(p) for p in trunk
        if p not in covered and p[1 + len(prefix)] not in allow_missing
    ]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} names with no place in the model, e.g. "
                        f"{unexpected[:5]}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches, e.g. {mismatched[:5]}")
    if missing:
        problems.append(f"{len(missing)} model parameters not in the file, e.g. {missing[:5]}")
    if problems:
        raise ValueError(
            "pretrained weights do not fit the model: " + "; ".join(problems)
            + ". Check that the file is a ResNet of the same depth and width as the config."
        )
    return flax.traverse_util.unflatten_dict(merged)
