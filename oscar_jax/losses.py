"""Content losses: SimCLR+ (paper eq. 11) and the Table 2 (top half) ablations; and
``original_not_first``, Benchmark II's R@1-bar as an extra term on the codes.

Every loss has the signature ``fn(embeddings, identity, variant, valid, *, axis_name=None,
**hyperparameters) -> scalar`` with

  embeddings  float [B, E]  ``Eb(u)``; compared by cosine similarity (normalised here)
  identity    int [B]       the original an image derives from (psi in eq. 11)
  variant     int [B]       0 = original, k >= 1 = k-th manipulated version
  valid       bool [B]      False for padding rows, which are neither anchors nor candidates

Rows with the same (identity, variant) are benign views of one image: they are positives.
Rows with the same identity and another variant are its manipulated (or original)
counterparts, "i-" in eq. 11; rows of another identity are ordinary negatives.

The code is per-device. With ``axis_name`` (inside ``pmap`` or ``shard_map``) the rows and
labels of every device are gathered with ``lax.all_gather(tiled=True)``: the local rows are
anchors, the columns are the global batch, so negatives come from every device. Each loss is a
mean over anchors (or pairs, or triplets) of the global batch, returned on each device as
``local_sum * n_devices / global_count``: a ``pmean`` of the per-device values equals the
single-device loss on the concatenated batch, and so does the ``pmean`` of the gradients,
because the transpose of ``all_gather`` sends each device the gradients of the other devices'
anchors with respect to its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Stands in for -inf in masked logsumexp: finite, so rows with nothing selected give finite
# values (and gradients) that are then masked away, instead of NaN from (-inf) - (-inf).
_NEG = -1e9


class _Pairs(NamedTuple):
    """Cosine similarities and relation masks, local rows [B] x global columns [G]."""

    sim: Array  # float [B, G]
    positive: Array  # bool [B, G]: same identity and variant (benign views), not self
    same_identity_other_variant: Array  # bool [B, G]: i- in eq. 11
    other_identity: Array  # bool [B, G]
    candidate: Array  # bool [B, G]: every valid column but the anchor itself
    anchor_variant: Array  # int [B]
    column_variant: Array  # int [G]


def _gather(x: Array, axis_name: str | None) -> Array:
    return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)


def _pairs(
    embeddings: Array, identity: Array, variant: Array, valid: Array, axis_name: str | None,
    fixed_columns: bool = False,
) -> _Pairs:
    """Similarities and masks between the local rows and the (gathered) global batch; with
    ``fixed_columns`` the gradient reaches the rows as anchors only, not as columns."""
    valid = valid.astype(bool)
    # Padding may hold anything; zeroed rows keep even NaN out of the gradients of real rows.
    x = jnp.where(valid[:, None], embeddings.astype(jnp.float32), 0.0)
    x = x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
    cols = _gather(x, axis_name)
    if fixed_columns:
        cols = lax.stop_gradient(cols)
    col_identity = _gather(identity, axis_name)
    col_variant = _gather(variant, axis_name)
    col_valid = _gather(valid, axis_name)

    b, g = x.shape[0], cols.shape[0]
    offset = 0 if axis_name is None else lax.axis_index(axis_name) * b
    not_self = (offset + jnp.arange(b))[:, None] != jnp.arange(g)[None, :]
    candidate = valid[:, None] & col_valid[None, :] & not_self
    same_identity = identity[:, None] == col_identity[None, :]
    same_variant = variant[:, None] == col_variant[None, :]
    # Full precision: on accelerators the default matmul may round inputs to bfloat16.
    sim = jnp.matmul(x, cols.T, precision=lax.Precision.HIGHEST)
    return _Pairs(
        sim=sim,
        positive=candidate & same_identity & same_variant,
        same_identity_other_variant=candidate & same_identity & ~same_variant,
        other_identity=candidate & ~same_identity,
        candidate=candidate,
        anchor_variant=variant,
        column_variant=col_variant,
    )


def global_mean(values: Array, mask: Array, axis_name: str | None) -> Array:
    """Mean of ``values`` where ``mask``, over the global batch when ``axis_name`` is set.

    Each device returns ``local_sum * n_devices / global_count`` (see the module docstring),
    so a ``pmean`` of the per-device results is the mean over the whole batch. Every loss of
    the project, here and in ``hashing``, reduces through this one function.
    """
    total = jnp.sum(jnp.where(mask, values, 0.0))
    count = jnp.sum(mask).astype(jnp.float32)
    if axis_name is None:
        return total / jnp.maximum(count, 1.0)
    n_devices = lax.psum(1, axis_name)
    return total * n_devices / jnp.maximum(lax.psum(count, axis_name), 1.0)


def _masked_logsumexp(logits: Array, mask: Array) -> Array:
    """logsumexp over the last axis of the entries where ``mask``: [..., G] -> [...]."""
    return jax.nn.logsumexp(jnp.where(mask, logits, _NEG), axis=-1)


def simclr_plus(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    temperature: float = 0.8,
    manipulated_weight: float = 1.0,
    positives_in_denominator: bool = True,
    axis_name: str | None = None,
) -> Array:
    """SimCLR+ (eq. 11), the proposed supervised NT-Xent; scalar.

    For anchor i with positives P(i) (other benign views of the same image), manipulated
    counterparts M(i) (same identity, other variant) and other identities O(i), and
    ``s_ij = cos(e_i, e_j) / temperature``::

        L_i = -log( sum_{p in P(i)} exp s_ip / (sum_{p in P(i)} exp s_ip
                                                + w sum_{m in M(i)} exp s_im
                                                + sum_{n in O(i)} exp s_in) )

    averaged over valid anchors with at least one positive. Eq. 11 has w = 1. With a batch
    of a few originals, a manipulated counterpart is a handful of terms among many, and at
    the release's temperature a code identical to its original's costs little more than an
    orthogonal one; ``manipulated_weight`` w > 1 counts each such term as w negatives.
    Eq. 11 as printed leaves the positives out of the denominator. We keep them in by
    default, as in NT-Xent, which the paper says this loss reduces to without the i- terms:
    the loss is then a bounded -log-probability (>= 0) and cannot be lowered by positives
    alone. ``False`` gives the printed form (anchors then also need a negative).

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      temperature: tau (0.8 in the official code).
      manipulated_weight: w, the weight of the same identity's other variants.
      positives_in_denominator: see above.
      axis_name: pmap axis to gather negatives over, or None on one device.
    """
    p = _pairs(embeddings, identity, variant, valid, axis_name)
    logits = p.sim / temperature
    negatives = p.same_identity_other_variant | p.other_identity
    denominator = (negatives | p.positive) if positives_in_denominator else negatives
    weighted = logits + jnp.where(p.same_identity_other_variant,
                                  jnp.log(jnp.asarray(manipulated_weight, logits.dtype)), 0.0)
    per_anchor = (_masked_logsumexp(weighted, denominator)
                  - _masked_logsumexp(logits, p.positive))
    anchors = jnp.any(p.positive, axis=-1) & jnp.any(denominator, axis=-1)
    return global_mean(per_anchor, anchors, axis_name)


def simclr(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    temperature: float = 0.8,
    manipulated_negatives: bool = True,
    axis_name: str | None = None,
) -> Array:
    """Plain NT-Xent (SimCLR [9]), the self-supervised ablation; scalar.

    Each image is its own class: positives are the other views of the same (identity,
    variant), and every other row, manipulated counterparts included, is just another image.
    As in SimCLR every ordered positive pair (i, p) is a term::

        L_ip = -log( exp s_ip / sum_{k != i} exp s_ik ),   s_ik = cos(e_i, e_k) / temperature

    averaged over all valid positive pairs. Unlike SimCLR+ there is one positive per term and
    no sum over positives inside the log; with exactly two views per image the two losses
    therefore coincide, and they differ once an image has three or more views in the batch.

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      temperature: tau.
      manipulated_negatives: False drops the same identity's other variants from the
        denominator altogether, the literal reading of "without u_i-" in section 3.4 (the
        self-supervised loss never sees manipulated pairs).
      axis_name: pmap axis to gather negatives over, or None on one device.
    """
    p = _pairs(embeddings, identity, variant, valid, axis_name)
    logits = p.sim / temperature
    denominator = p.candidate if manipulated_negatives else p.positive | p.other_identity
    per_pair = _masked_logsumexp(logits, denominator)[:, None] - logits
    return global_mean(per_pair, p.positive, axis_name)


def triplet(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    margin: float = 0.2,
    mining: str = "all",
    negatives: str = "any",
    axis_name: str | None = None,
) -> Array:
    """Triplet loss [46] on cosine distance ``d = 1 - cos``; scalar.

    Each term is ``max(0, margin + d(a, p) - d(a, n))`` with p a benign view of the anchor's
    image.

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      margin: hinge margin in cosine distance.
      mining: ``"all"`` averages over every valid (a, p, n) triplet in the global batch;
        ``"hard"`` takes, per anchor, the farthest positive and the nearest negative (batch
        hard) and averages over anchors that have both.
      negatives: ``"any"``: every other image (other variant or other identity);
        ``"manipulated"``: only the same identity's other variants, the setting the paper
        describes for standard triplet before its Triplet+ changes.
      axis_name: pmap axis to gather negatives over, or None on one device.
    """
    p = _pairs(embeddings, identity, variant, valid, axis_name)
    dist = 1.0 - p.sim
    if negatives == "any":
        neg = p.same_identity_other_variant | p.other_identity
    elif negatives == "manipulated":
        neg = p.same_identity_other_variant
    else:
        raise ValueError(f"negatives must be 'any' or 'manipulated', got {negatives!r}.")
    if mining == "all":
        hinge = jax.nn.relu(margin + dist[:, :, None] - dist[:, None, :])  # [B, G(p), G(n)]
        mask = p.positive[:, :, None] & neg[:, None, :]
        return global_mean(hinge, mask, axis_name)
    if mining == "hard":
        hardest_pos = jnp.max(jnp.where(p.positive, dist, -jnp.inf), axis=-1)
        hardest_neg = jnp.min(jnp.where(neg, dist, jnp.inf), axis=-1)
        anchors = jnp.any(p.positive, axis=-1) & jnp.any(neg, axis=-1)
        hinge = jax.nn.relu(margin + hardest_pos - hardest_neg)
        return global_mean(jnp.where(anchors, hinge, 0.0), anchors, axis_name)
    raise ValueError(f"mining must be 'all' or 'hard', got {mining!r}.")


def triplet_plus(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    margin: float = 0.2,
    beta: float = 0.01,
    sidv_weight: float = 0.9,
    axis_name: str | None = None,
) -> Array:
    """Triplet+ (supplement eq. 10); scalar.

    ``L(i, i+, i-) = max(0, m + d(i, i-) - d(i, i+)) + beta * d(i, i-)`` with d the cosine
    *similarity*. Anchors are any image (original or manipulated); i+ is a benign view of the
    anchor's image. The negative is drawn 90:10 from two sets:

      SIDV  same identity, other variant: for an original anchor its manipulated variants,
            for a manipulated anchor the original (as the supplement specifies);
      DI    a different identity.

    Instead of sampling, each (anchor, positive) pair takes the expectation of that draw:
    ``sidv_weight`` times the mean over SIDV plus ``1 - sidv_weight`` times the mean over DI,
    with the weight moved to the other set when one set is empty in the batch. The result is
    the mean over (anchor, positive) pairs with at least one negative; it is deterministic
    and needs no random key.

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      margin: m (0.2). beta: weight of the separation term (0.01).
      sidv_weight: probability of a SIDV negative (0.9).
      axis_name: pmap axis to gather negatives over, or None on one device.
    """
    p = _pairs(embeddings, identity, variant, valid, axis_name)
    involves_original = (p.anchor_variant[:, None] == 0) | (p.column_variant[None, :] == 0)
    sidv = p.same_identity_other_variant & involves_original
    di = p.other_identity
    # [B, G(p), G(n)]: the loss of every (anchor, positive, negative) triplet.
    per_triplet = (
        jax.nn.relu(margin + p.sim[:, None, :] - p.sim[:, :, None]) + beta * p.sim[:, None, :]
    )

    def set_mean(neg: Array) -> tuple[Array, Array]:
        total = jnp.sum(jnp.where(neg[:, None, :], per_triplet, 0.0), axis=-1)  # [B, G]
        count = jnp.sum(neg, axis=-1)  # [B]
        return total / jnp.maximum(count, 1)[:, None], count > 0

    sidv_mean, has_sidv = set_mean(sidv)
    di_mean, has_di = set_mean(di)
    w_sidv = jnp.where(has_sidv, sidv_weight, 0.0)
    w_di = jnp.where(has_di, 1.0 - sidv_weight, 0.0)
    w_total = jnp.maximum(w_sidv + w_di, 1e-12)
    per_pair = (w_sidv[:, None] * sidv_mean + w_di[:, None] * di_mean) / w_total[:, None]
    pairs = p.positive & (has_sidv | has_di)[:, None]
    return global_mean(per_pair, pairs, axis_name)


def pairwise_contrastive(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    margin: float = 0.5,
    axis_name: str | None = None,
) -> Array:
    """Pairwise contrastive loss (Hadsell et al. [19]) on cosine distance ``d = 1 - cos``.

    Positive pairs (benign views of one image) cost ``d^2``; every other pair costs
    ``max(0, margin - d)^2``, pushing it beyond the margin. Mean over all valid ordered pairs
    (i, j), i != j, of the global batch; scalar.

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      margin: distance beyond which negatives cost nothing.
      axis_name: pmap axis to gather negatives over, or None on one device.
    """
    p = _pairs(embeddings, identity, variant, valid, axis_name)
    dist = 1.0 - p.sim
    per_pair = jnp.where(p.positive, dist**2, jax.nn.relu(margin - dist) ** 2)
    return global_mean(per_pair, p.candidate, axis_name)


def original_not_first(
    embeddings: Array,
    identity: Array,
    variant: Array,
    valid: Array,
    *,
    temperature: float = 0.2,
    others_weight: float = 1.0,
    anchors_only: bool = False,
    axis_name: str | None = None,
) -> Array:
    """Benchmark II's R@1-bar as a loss: a manipulated version should find another image
    before its original; scalar.

    For a manipulated anchor m (variant >= 1) with its original's rows O(m) (same identity,
    variant 0) and the rows of other identities N(m), the probability that a softmax over
    ``s = cos / temperature`` picks the original first is
    ``p = sum_O exp s / (sum_O exp s + w sum_N exp s)``, and the loss is ``-log(1 - p) =
    softplus(logsumexp_O s - logsumexp_N s - log w)``, averaged over manipulated anchors with
    both kinds of rows. SimCLR+ asks an edit to move a code away from its original; this
    asks it to move as far as other images lie, which a search by nearest code needs.

    A search database holds many more images than a batch, and its nearest entry lies
    nearer than a batch's: ``others_weight`` w > 1 counts each other row as w database
    entries, so that (at a low temperature, where the sums follow their largest terms) the
    loss asks an edit to move as far as the database's nearest image rather than as far as
    a batch's.

    The gradient moves the original and the other images as well as the manipulated code
    (lowering the loss by drawing all codes closer together too); ``anchors_only`` moves the
    manipulated codes alone.

    Args:
      embeddings: float [B, E]; identity, variant: int [B]; valid: bool [B].
      temperature: tau.
      others_weight: w, how many database entries each other row stands for.
      anchors_only: the gradient reaches only the manipulated anchors' own embeddings.
      axis_name: pmap axis to gather the other rows over, or None on one device.
    """
    if others_weight <= 0:
        raise ValueError(f"others_weight counts database entries per other row; it must be "
                         f"positive, got {others_weight}")
    p = _pairs(embeddings, identity, variant, valid, axis_name, fixed_columns=anchors_only)
    logits = p.sim / temperature
    original = p.same_identity_other_variant & (p.column_variant == 0)[None, :]
    per_anchor = jax.nn.softplus(_masked_logsumexp(logits, original)
                                 - _masked_logsumexp(logits, p.other_identity)
                                 - math.log(others_weight))
    anchors = ((p.anchor_variant > 0) & jnp.any(original, axis=-1)
               & jnp.any(p.other_identity, axis=-1))
    return global_mean(per_anchor, anchors, axis_name)


LossFn = Callable[..., Array]

# Table 2, top half: content losses by config name.
LOSSES: dict[str, LossFn] = {
    "simclr_plus": simclr_plus,
    "simclr": simclr,
    "triplet": triplet,
    "triplet_plus": triplet_plus,
    "pairwise_contrastive": pairwise_contrastive,
}
