"""FF: a stream of the global view's low spatial frequencies, as PDQ and pHash read them.

A small CNN trained on a few hundred images learns to ignore what benign copies change and,
with it, most of what a small local edit changes; the low-frequency DCT coefficients of an
image's luminance are a fixed description that JPEG, noise, sharpening and colour shifts
barely move while an edit of a few percent of the area does (the reason PDQ and pHash
separate edits from such copies). This stream hands them to the fusion, which learns what to
trust; the frame must already be comparable (`preprocessing.layout` for padded, mirrored or
rotated copies), since the coefficients are not invariant to moving the content.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# Rec. 601 luma weights.
LUMA = (0.299, 0.587, 0.114)


def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix [size, size]: row k is the k-th cosine basis."""
    n = np.arange(size)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
    basis[0] /= np.sqrt(2.0)
    return (basis * np.sqrt(2.0 / size)).astype(np.float32)


class FrequencyStream(nn.Module):
    """Low-frequency DCT of the global view's luminance -> an embedding.

    Attributes:
      output_dim: size of the embedding.
      resolution: the luminance is averaged down to resolution x resolution pixels first (or
        kept at the global view's side where that is smaller; the side must be a multiple).
      keep: the keep x keep lowest frequencies after the first (DC) row and column are used
        (at most resolution - 1).
      dtype: computation dtype of the dense layer.
    """

    output_dim: int
    resolution: int = 64
    keep: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """uint8 images [B, G, G, 3] -> [B, output_dim] float32."""
        b, height, width = images.shape[:3]
        side = min(self.resolution, height)
        if height != width or height % side:
            raise ValueError(f"the global view ({height}x{width}) must be square and a "
                             f"multiple of the frequency stream's resolution {side}")
        luminance = jnp.asarray(images, jnp.float32) @ jnp.asarray(LUMA) / 255.0
        factor = height // side
        small = luminance.reshape(b, side, factor, side, factor).mean((2, 4))
        basis = jnp.asarray(dct_matrix(side)[1 : min(self.keep, side - 1) + 1])
        coefficients = jnp.einsum("ki,bij,lj->bkl", basis, small, basis).reshape(b, -1)
        # As PDQ thresholds at the median, only each coefficient's place relative to the
        # image's other coefficients counts; dividing by their spread removes contrast.
        centred = coefficients - jnp.median(coefficients, axis=-1, keepdims=True)
        # The floor keeps a flat image's rounding noise from being scaled up to features.
        scaled = centred / (jnp.mean(jnp.abs(centred), axis=-1, keepdims=True) + 1e-3)
        return jnp.asarray(nn.Dense(self.output_dim, dtype=self.dtype, name="embed")(
            jnp.asarray(scaled, self.dtype)), jnp.float32)
