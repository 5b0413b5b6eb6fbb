"""OSCAR-Net (paper section 3): three streams fused into a D-dimensional embedding.

    zg = FG(image)                               global ResNet
    n_i = [Ev(fv(crop_i)), Es(shape_i), Eg(geometry_i)]      node tokens
    zo = PO(HO({n_i}))                           object encoder FO
    e_ij = [n_i, Er(r_ij), n_j]                  edge tokens, all ordered pairs
    zr = PE(HE({e_ij}))                          relation encoder FR
    z = Ed([zg, zo, zr])                         D = code_bits

Hashing is not part of the module: the training step turns `z` into codes with
`oscar_jax.hashing.hash_codes` and maps them back through `Eb` with `method=OscarNet.project`.

Every ablation of Table 3 is a field: A (visual features only, FO only, no pretraining),
B (+ pretrained fv: a training choice), C (+ geometry), D (+ shape), E (+ FR with edges),
F (single CNN: `use_objects=False`), G (`pooling='first'`), H (`encoder='mlp'`, the GNN),
I (`graph='thresholded'`), J (everything, the paper's model).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from oscar_jax.models import efficientnet, frequency, resnet
from oscar_jax.models import encoder as encoders

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A CNN for fv and FG: its Linen module, its input normalisation and its weights reader
    (a path, or None for weights that come with a package)."""

    module: Callable[..., nn.Module]
    normalize: Callable[..., Array]
    load_pretrained: Callable[..., dict]


BACKBONES = {
    **{name: Backbone(module, resnet.normalize_images, resnet.load_pretrained)
       for name, module in resnet.VARIANTS.items()},
    "efficientnet_lite0": Backbone(efficientnet.EfficientNetLite0,
                                   efficientnet.normalize_images, efficientnet.load_pretrained),
}
# Relation channels (see preprocessing.scene_graph): 2 is distance / diagonal, 6 is mask IoU.
_DISTANCE, _IOU = 2, 6


def symlog(x: Array) -> Array:
    """sign(x) log(1 + |x|): keeps ratios such as wj/wi (up to the image size) well scaled."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def grid_pool(feature_map: Array, grid: int) -> Array:
    """[B, h, w, C] -> [B, grid * grid * C]: the mean over each of grid x grid equal cells,
    flattened; h and w must be multiples of grid."""
    b, h, w, c = feature_map.shape
    if h % grid or w % grid:
        raise ValueError(f"global_grid={grid} does not divide the {h} x {w} feature map of the "
                         "global view; pick a divisor of it")
    cells = feature_map.reshape(b, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))
    return cells.reshape(b, grid * grid * c)


def split_width(width: int, parts: int) -> list[int]:
    """`width` split into `parts` near-equal integer sizes that sum to `width`."""
    base, extra = divmod(width, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class OscarNet(nn.Module):
    """The OSCAR-Net embedding model. Batch fields as in the records (README, "Record format").

    Attributes:
      cnn: backbone of fv and FG (`BACKBONES`: 'resnet50', 'resnet18', 'tiny',
        'efficientnet_lite0'); weights not shared.
      freeze_cnn: fv and FG keep their (pretrained) trunk weights and BatchNorm statistics;
        only their final linear layer and what follows them train.
      code_bits: D, the size of z and of the hash.
      visual_dim: output of fv and FG (256 in the paper).
      width: token width of FO and FR (the official release uses 512).
      num_layers, num_heads, mlp_dim, dropout_rate: the Transformer encoders (6, 8, 1024).
      projection_dim: output of Eb, where the contrastive loss is computed.
      use_global: the global stream FG.
      use_objects: the object streams FO (and FR); False with use_global is the CNN baseline.
      use_visual, use_shape, use_geometry: which node features make n_i.
      use_edges: the relation stream FR.
      use_frequency: the frequency stream FF (`frequency.FrequencyStream`: the global view's
        low DCT frequencies, as PDQ reads them); not in the paper.
      global_grid: g > 0 adds the spatial stream FS: FG's last feature map average-pooled
        to g x g cells, flattened and embedded, so that a change in one cell is not averaged
        away over the whole image; 0 leaves it out. Not in the paper.
      encoder: 'transformer' (the paper) or 'mlp' (ablation H).
      pooling: 'attention' (eq. 7) or 'first' (ablation G).
      graph: 'full' (every pair connected) or 'thresholded' (ablation I).
      edge_distance: in a thresholded graph, objects closer than this fraction of the image
        diagonal, or whose masks overlap, are connected.
      dtype: computation dtype (bfloat16 on accelerators).
      bn_axis_name: pmap axis for BatchNorm statistics.
    """

    cnn: str = "resnet50"
    freeze_cnn: bool = False
    code_bits: int = 64
    visual_dim: int = 256
    width: int = 512
    num_layers: int = 6
    num_heads: int = 8
    mlp_dim: int = 1024
    dropout_rate: float = 0.1
    projection_dim: int = 256
    use_global: bool = True
    use_objects: bool = True
    use_visual: bool = True
    use_shape: bool = True
    use_geometry: bool = True
    use_edges: bool = True
    use_frequency: bool = False
    global_grid: int = 0
    encoder: str = "transformer"
    pooling: str = "attention"
    graph: str = "full"
    edge_distance: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    def setup(self):
        if not (self.use_global or self.use_objects):
            raise ValueError("OscarNet needs use_global or use_objects (or both)")
        if self.graph not in ("full", "thresholded"):
            raise ValueError(f"graph must be 'full' or 'thresholded', not {self.graph!r}")
        if self.cnn not in BACKBONES:
            raise ValueError(f"cnn must be one of {sorted(BACKBONES)}, not {self.cnn!r}")
        cnn = functools.partial(BACKBONES[self.cnn].module, output_dim=self.visual_dim,
                                dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                                frozen_trunk=self.freeze_cnn)
        if self.use_frequency:
            self.frequency = frequency.FrequencyStream(output_dim=self.visual_dim,
                                                       dtype=self.dtype)
        if self.use_global:
            self.global_cnn = cnn()
        if self.global_grid:
            if not self.use_global or self.global_grid < 0:
                raise ValueError(f"global_grid={self.global_grid} needs use_global and a "
                                 "positive grid side (0 leaves the spatial stream out)")
            self.grid_embed = nn.Dense(self.visual_dim, dtype=self.dtype)  # FS
        if self.use_objects:
            parts = [self.use_visual, self.use_shape, self.use_geometry]
            if not any(parts):
                raise ValueError("object streams need at least one of visual, shape, geometry")
            dims = iter(split_width(self.width, sum(parts)))
            if self.use_visual:
                self.object_cnn = cnn()
                self.visual_embed = nn.Dense(next(dims), dtype=self.dtype)  # Ev
            if self.use_shape:
                self.shape_embed = nn.Dense(next(dims), dtype=self.dtype)  # Es
            if self.use_geometry:
                self.geometry_embed = nn.Dense(next(dims), dtype=self.dtype)  # Eg
            graph_encoder = dict(encoder=self.encoder, pooling=self.pooling,
                                 num_layers=self.num_layers, num_heads=self.num_heads,
                                 mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate)
            self.object_encoder = encoders.GraphEncoder(**graph_encoder)  # FO
            if self.use_edges:
                self.relation_embed = nn.Dense(self.width // 4, dtype=self.dtype)  # Er
                # [n_i, Er(r_ij), n_j] is 2.25 x width wide; the paper leaves D_E open, and one
                # linear map to `width` lets FR share FO's shape.
                self.edge_embed = nn.Dense(self.width, dtype=self.dtype)
                self.relation_encoder = encoders.GraphEncoder(**graph_encoder)  # FR
        self.fusion = nn.Dense(self.code_bits, name="fusion")  # Ed, float32 for the sign
        self.code_projection = nn.Dense(self.projection_dim, name="code_projection")  # Eb

    def adjacency(self, batch: dict[str, Array]) -> Array:
        """bool [B, N, N]: which real nodes are connected."""
        mask = batch["node_mask"]
        real = mask[:, :, None] & mask[:, None, :]
        if self.graph == "full":
            return real
        relations = batch["relations"]
        near = relations[..., _DISTANCE] < self.edge_distance
        overlapping = relations[..., _IOU] > 0
        return real & (near | overlapping)

    def node_tokens(self, batch: dict[str, Array], *, train: bool) -> Array:
        """Node features n_i: [B, N, width]."""
        parts = []
        if self.use_visual:
            crops = batch["crops"]
            b, n = crops.shape[:2]
            flat = BACKBONES[self.cnn].normalize(crops.reshape(b * n, *crops.shape[2:]),
                                                 self.dtype)
            # BatchNorm statistics over real crops only: padding slots must not shift them.
            real = batch["node_mask"].reshape(b * n)
            visual = self.object_cnn(flat, train=train, mask=real).reshape(b, n, -1)
            parts.append(self.visual_embed(visual))
        if self.use_shape:
            # Log Hu moments reach about +-30 for moments that are numerically zero.
            parts.append(self.shape_embed(jnp.asarray(batch["shape"], self.dtype) / 10.0))
        if self.use_geometry:
            parts.append(self.geometry_embed(jnp.asarray(batch["geometry"], self.dtype)))
        return jnp.concatenate(parts, axis=-1)

    def __call__(self, batch: dict[str, Array], *, train: bool) -> Array:
        """Record batch (image [B,G,G,3] uint8, crops [B,N,C,C,3] uint8, node_mask [B,N],
        geometry [B,N,5], shape [B,N,7], relations [B,N,N,8]) -> z float32 [B, code_bits]."""
        streams = []
        if self.use_global:
            image = BACKBONES[self.cnn].normalize(batch["image"], self.dtype)
            global_features, feature_map = self.global_cnn(image, train=train, return_map=True)
            streams.append(global_features)
        if self.use_frequency:
            streams.append(self.frequency(batch["image"]))
        if self.global_grid:
            streams.append(self.grid_embed(grid_pool(feature_map, self.global_grid)))
        if self.use_objects:
            mask = batch["node_mask"]
            adjacency = self.adjacency(batch)
            nodes = self.node_tokens(batch, train=train)
            object_graph = None if self.graph == "full" else adjacency
            streams.append(self.object_encoder(nodes, mask, object_graph, train=train))
            if self.use_edges:
                b, n = nodes.shape[:2]
                edges = self.edge_tokens(nodes, batch["relations"]).reshape(b, n * n, -1)
                # Edge tokens of a thresholded graph exist only where objects connect.
                edge_mask = adjacency.reshape(b, n * n)
                streams.append(self.relation_encoder(edges, edge_mask, train=train))
        z = self.fuse(streams)
        if self.is_initializing():
            self.project(z)  # so that `init` creates Eb's parameters too
        return z

    def edge_tokens(self, nodes: Array, relations: Array) -> Array:
        """Edge tokens e_ij = [n_i, Er(r_ij), n_j] (section 3.3) mapped to the token width:
        nodes [B, N, width], relations [B, N, N, 8] -> [B, N, N, width]."""
        b, n, d = nodes.shape
        embedded = self.relation_embed(symlog(jnp.asarray(relations, self.dtype)))
        pairs = jnp.concatenate([
            jnp.broadcast_to(nodes[:, :, None, :], (b, n, n, d)),
            embedded,
            jnp.broadcast_to(nodes[:, None, :, :], (b, n, n, d)),
        ], axis=-1)
        return self.edge_embed(pairs)

    def fuse(self, streams: list[Array]) -> Array:
        """Ed: the pooled streams [zg, zo, zr] (those the model has), each [B, *] ->
        z float32 [B, code_bits]."""
        return self.fusion(jnp.concatenate([jnp.asarray(s, jnp.float32) for s in streams],
                                           axis=-1))

    def project(self, codes: Array) -> Array:
        """Eb: codes u [B, code_bits] -> [B, projection_dim], where the content loss lives."""
        return self.code_projection(codes)
