"""Scene graph encoders (paper section 3.3) and the Table 3 ablations G, H and I.

A graph arrives as a padded token set: ``tokens`` float [B, T, D] and ``mask`` bool [B, T]
(True for real tokens). The object stream FO sees one token per node; the relation stream FR
one token per edge. Tokens are an unordered set, so nothing here uses positional encodings,
and every module is equivariant (encoders) or invariant (pooling) to permutations of the real
tokens. Padded tokens never influence real ones, whatever values they hold.

``attention_mask`` (optional bool [B, T, T], True where query i may use key j) removes edges
for ablation I, the thresholded, non fully connected graph. A token always keeps its edge to
itself, so no real query is ever left with nothing to attend to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

# Xavier initialisation for the MLP kernels, as in the Transformer and ViT reference code.
_dense_init = nn.initializers.xavier_uniform()


def _zero_padding(x: Array, mask: Array) -> Array:
    """Sets padded tokens [B, T, D] to zero.

    Attention and averaging multiply padded values by exact zeros, but 0 * inf is NaN, so
    arbitrary (even non-finite) padding must be removed before it enters any sum.
    """
    return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))


def graph_mask(mask: Array, attention_mask: Array | None = None) -> Array:
    """Boolean adjacency [B, T, T]: which key j query i may use.

    Args:
      mask: bool [B, T], real tokens.
      attention_mask: optional bool [B, T, T], edges to keep (ablation I).

    Returns:
      bool [B, T, T]: real-to-real edges allowed by ``attention_mask``, plus the diagonal.
      Self edges are always kept: a padded query then attends only to itself (a finite
      softmax instead of a row with every key masked), and a real node whose every edge was
      thresholded away still sees its own features.
    """
    pairs = mask[:, :, None] & mask[:, None, :]
    if attention_mask is not None:
        if attention_mask.shape != pairs.shape:
            raise ValueError(
                f"attention_mask must have shape [B, T, T] = {pairs.shape}, "
                f"got {attention_mask.shape}"
            )
        pairs = pairs & attention_mask.astype(bool)
    eye = jnp.eye(mask.shape[-1], dtype=bool)
    return pairs | eye[None]


class MlpBlock(nn.Module):
    """Position-wise feed-forward block: [B, T, D] -> [B, T, out_dim or D]."""

    mlp_dim: int
    dropout_rate: float = 0.1
    out_dim: int | None = None  # None keeps the input width.

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        width = self.out_dim or x.shape[-1]
        y = nn.Dense(self.mlp_dim, kernel_init=_dense_init, name="fc1")(x)
        y = nn.gelu(y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = nn.Dense(width, kernel_init=_dense_init, name="fc2")(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm Transformer encoder block: [B, T, D] -> [B, T, D].

    ``adjacency`` is bool [B, T, T] (see ``graph_mask``); D must be divisible by
    ``num_heads``.
    """

    num_heads: int = 8
    mlp_dim: int = 1024
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, x: Array, adjacency: Array, *, train: bool) -> Array:
        y = nn.LayerNorm(name="ln_attention")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            name="attention",
        )(y, y, mask=adjacency[:, None], deterministic=not train)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = x + y
        y = nn.LayerNorm(name="ln_mlp")(x)
        y = MlpBlock(self.mlp_dim, self.dropout_rate, name="mlp")(y, train=train)
        return x + y


class TransformerEncoder(nn.Module):
    """HO / HR: a stack of ``EncoderBlock``s without positional encoding.

    Call: tokens float [B, T, D], mask bool [B, T], optional attention_mask bool [B, T, T]
    -> float [B, T, D]. Outputs at padded positions are finite and set to zero.
    """

    num_layers: int = 6
    num_heads: int = 8
    mlp_dim: int = 1024
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        mask: Array,
        attention_mask: Array | None = None,
        *,
        train: bool,
    ) -> Array:
        mask = mask.astype(bool)
        adjacency = graph_mask(mask, attention_mask)
        x = _zero_padding(tokens, mask)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = EncoderBlock(
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate,
                name=f"block_{i}",
            )(x, adjacency, train=train)
        # Pre-LN stacks leave the residual stream unnormalised; normalise once at the end.
        x = nn.LayerNorm(name="encoder_norm")(x)
        return _zero_padding(x, mask)


class MLPGraphEncoder(nn.Module):
    """Ablation H ("GNN"): per-token MLP layers with a mean message, no attention.

    Each layer updates token i from [x_i, m_i], where m_i is the mean of the other real
    tokens adjacent to i (all of them unless ``attention_mask`` removes edges). This is a
    graph convolution over the same graph the Transformer sees, with fixed uniform edge
    weights instead of learned attention.

    Call: tokens float [B, T, D], mask bool [B, T], optional attention_mask bool [B, T, T]
    -> float [B, T, D]. Outputs at padded positions are zero.
    """

    num_layers: int = 6
    mlp_dim: int = 1024
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        mask: Array,
        attention_mask: Array | None = None,
        *,
        train: bool,
    ) -> Array:
        mask = mask.astype(bool)
        eye = jnp.eye(mask.shape[-1], dtype=bool)
        # Messages come from neighbours only; the token's own features enter separately.
        adjacency = graph_mask(mask, attention_mask) & ~eye[None]
        weights = adjacency.astype(tokens.dtype)
        # A node with no neighbour (a lone background node) gets a zero message, not 0 / 0.
        weights = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1.0)
        x = _zero_padding(tokens, mask)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.num_layers):
            y = nn.LayerNorm(name=f"ln_{i}")(x)
            message = jnp.einsum("bij,bjd->bid", weights, y)
            y = jnp.concatenate([y, message], axis=-1)
            y = MlpBlock(self.mlp_dim, self.dropout_rate, out_dim=x.shape[-1], name=f"mlp_{i}")(
                y, train=train
            )
            x = _zero_padding(x + y, mask)
        x = nn.LayerNorm(name="encoder_norm")(x)
        return _zero_padding(x, mask)


class AttentionPooling(nn.Module):
    """PO / PR, eq. 7: attention-weighted sum of the real tokens, [B, T, D] -> [B, D].

    The paper writes w = sigma(tanh(N' K^T) V) with a learnable key K in R^{N x D} and value
    V in R^N, i.e. one learned key per sequence position. Read literally that ties each
    weight to a position, which breaks the permutation invariance the paper asks of the
    encoder (no positional encoding) and fixes the node count. We use the order-free reading
    of the same additive attention (as in the pooling of [50]):

        s_i = v^T tanh(W x_i),   w = softmax over the real tokens of s,   P = sum_i w_i x_i

    with learnable W [D, attention_dim] (``key``) and v [attention_dim] (``value``). It is
    invariant to permutations of the real tokens, works for any number of them, and gives
    padded tokens exactly zero weight. sigma is read as a softmax so the weights sum to one.
    """

    attention_dim: int | None = None  # Width of the scoring layer; None = the token width D.

    @nn.compact
    def __call__(self, tokens: Array, mask: Array) -> Array:
        mask = mask.astype(bool)
        x = _zero_padding(tokens, mask)
        hidden = self.attention_dim or x.shape[-1]
        scores = jnp.tanh(nn.Dense(hidden, kernel_init=_dense_init, name="key")(x))
        scores = nn.Dense(1, use_bias=False, kernel_init=_dense_init, name="value")(scores)
        scores = jnp.where(mask, scores[..., 0], jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        # A graph with no real token at all would otherwise get uniform weights; give it 0.
        weights = jnp.where(mask, weights, 0.0)
        return jnp.einsum("bt,btd->bd", weights, x)


class FirstTokenPooling(nn.Module):
    """Ablation G: the encoding of the first token, [B, T, D] -> [B, D] (as BERT's [CLS]).

    The caller must put a real token first. Node records do: real nodes come first, so token
    0 is the top-scoring object, or the background node when nothing was detected. ``mask``
    is accepted for a common signature with ``AttentionPooling``.
    """

    @nn.compact
    def __call__(self, tokens: Array, mask: Array) -> Array:
        del mask  # The first token is real by the record layout.
        return tokens[:, 0]


# Names accepted by GraphEncoder; configs choose components by these strings.
ENCODERS = ("transformer", "mlp")
POOLINGS = ("attention", "first")


class GraphEncoder(nn.Module):
    """FO / FR: an encoder over the token set followed by pooling, [B, T, D] -> [B, D].

    ``encoder`` is 'transformer' (the paper) or 'mlp' (ablation H); ``pooling`` is
    'attention' (eq. 7) or 'first' (ablation G). Ablation I passes ``attention_mask``.
    """

    encoder: str = "transformer"
    pooling: str = "attention"
    num_layers: int = 6
    num_heads: int = 8  # Ignored by the 'mlp' encoder.
    mlp_dim: int = 1024
    dropout_rate: float = 0.1
    attention_dim: int | None = None  # AttentionPooling width; None = the token width.

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        mask: Array,
        attention_mask: Array | None = None,
        *,
        train: bool,
    ) -> Array:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown graph encoder {self.encoder!r}; choose one of {ENCODERS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown graph pooling {self.pooling!r}; choose one of {POOLINGS}")
        if self.encoder == "transformer":
            body = TransformerEncoder(
                num_layers=self.num_layers,
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate,
                name="encoder",
            )
        else:
            body = MLPGraphEncoder(
                num_layers=self.num_layers,
                mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate,
                name="encoder",
            )
        x = body(tokens, mask, attention_mask, train=train)
        if self.pooling == "attention":
            return AttentionPooling(attention_dim=self.attention_dim, name="pooling")(x, mask)
        return FirstTokenPooling(name="pooling")(x, mask)
