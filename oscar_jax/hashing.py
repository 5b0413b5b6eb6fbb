"""The hashing layer in training (paper section 3.4, eqs. 9-10) and the Table 2 variants.

``u = sign(z)`` in {-1, 1} forward with the gradient passed straight through
(``dL/dz = dL/du``, supplement section 2), plus the quantisation loss ``|z - u|^3`` that keeps
``z`` near ``u`` so that passing the gradient through is sound. Stored codes are the bits
``(u + 1) / 2``, packed on the host (``oscar_jax.inference.codes``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from oscar_jax.losses import global_mean

Array = jax.Array

# Table 2, bottom half. Each name is one way of turning the embedding z into the code u.
HASH_METHODS: tuple[str, ...] = (
    "sign",  # proposed: u = sign(z), straight-through gradient, quantisation loss (eqs. 9-10).
    "sign_bit_balance",  # as "sign", plus a bit balance penalty.
    "tanh",  # continuous relaxation u = tanh(z), as in HashNet [8]; no extra loss.
    "tanh_bit_balance",  # u = tanh(z) plus a bit balance penalty, as in DBDH [62].
    "none",  # no hashing: u = z, continuous; the upper-bound reference.
)


@jax.custom_vjp
def sign_ste(z: Array) -> Array:
    """Sign with a straight-through gradient: [...] -> [...] in {-1, 1}, dtype of ``z``.

    ``sign(0)`` is +1 so that every entry is a valid bit (``jnp.sign`` would give 0).
    """
    return jnp.where(z >= 0, jnp.ones((), z.dtype), -jnp.ones((), z.dtype))


def _sign_ste_fwd(z: Array) -> tuple[Array, None]:
    return sign_ste(z), None


def _sign_ste_bwd(_: None, g: Array) -> tuple[Array]:
    # DPLM: the true gradient of sign is zero almost everywhere; use dL/dz = dL/du instead.
    return (g,)


sign_ste.defvjp(_sign_ste_fwd, _sign_ste_bwd)


def quantization_loss(
    z: Array, u: Array, valid: Array | None = None, axis_name: str | None = None
) -> Array:
    """Eq. 10 at the official release's scale: the mean over every element of ``|z - u|^3``
    (the rows of the batch and the D bits); scalar.

    Eq. 10 prints the 3-norm, whose sum over the D bits is D times this; the release (a
    GreedyHash loss) takes the mean, and its alpha (1e-2, applied by the caller) is meant
    for the mean. ``u`` is a target: the loss moves ``z`` towards the code, never the code
    towards ``z``.

    Args:
      z: float [B, D], continuous embedding.
      u: float [B, D], its code (usually ``sign_ste(z)``).
      valid: optional bool [B], False for padded rows, which are ignored.
      axis_name: pmap axis; the mean is then over the global batch (``losses.global_mean``).
    """
    per_row = jnp.mean(jnp.abs(z - lax.stop_gradient(u)) ** 3, axis=-1)
    mask = jnp.ones(per_row.shape, bool) if valid is None else valid.astype(bool)
    return global_mean(per_row, mask, axis_name)


def bit_balance_loss(u: Array, valid: Array | None = None, axis_name: str | None = None) -> Array:
    """Bit balance penalty: mean over bits of (mean over the batch of u)^2; scalar.

    Zero when every bit is +1 for half of the batch and -1 for the other half, which
    spreads codes over the Hamming space. The batch mean is global under ``axis_name``.

    Args:
      u: float [B, D], codes in [-1, 1].
      valid: optional bool [B], False for padded rows, which are ignored.
      axis_name: pmap axis over which the batch is split.
    """
    mask = jnp.ones(u.shape[:1], bool) if valid is None else valid.astype(bool)
    total = jnp.sum(jnp.where(mask[:, None], u, 0.0), axis=0)
    count = jnp.sum(mask).astype(u.dtype)
    if axis_name is not None:
        # The penalty is not linear in the batch, so the bit means must be global first.
        total = lax.psum(total, axis_name)
        count = lax.psum(count, axis_name)
    bit_mean = total / jnp.maximum(count, 1.0)
    return jnp.mean(bit_mean**2)


def hash_codes(
    z: Array,
    method: str = "sign",
    valid: Array | None = None,
    axis_name: str | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Turns embeddings into codes with one of the Table 2 methods (``HASH_METHODS``).

    Args:
      z: float [B, D], continuous embedding.
      method: a name from ``HASH_METHODS``.
      valid: optional bool [B], False for padded rows (ignored by the auxiliary losses).
      axis_name: pmap axis; auxiliary losses then use the global batch.

    Returns:
      ``(u, aux)``: codes float [B, D] and a dict of unweighted auxiliary loss terms
      (``"quantization"`` and/or ``"bit_balance"``, each a scalar); the caller weights them.
    """
    aux: dict[str, Array] = {}
    if method in ("sign", "sign_bit_balance"):
        u = sign_ste(z)
        aux["quantization"] = quantization_loss(z, u, valid, axis_name)
    elif method in ("tanh", "tanh_bit_balance"):
        u = jnp.tanh(z)
    elif method == "none":
        u = z
    else:
        raise ValueError(f"Unknown hash method {method!r}; expected one of {HASH_METHODS}.")
    if method.endswith("_bit_balance"):
        aux["bit_balance"] = bit_balance_loss(u, valid, axis_name)
    return u, aux
