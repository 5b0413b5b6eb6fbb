"""Tests for oscar_jax.hashing: sign with straight-through gradient, losses, bit packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oscar_jax import hashing


def test_sign_forward_maps_zero_to_plus_one():
    z = jnp.array([[-2.0, -0.0, 0.0, 1e-8, 3.0]], jnp.float32)
    u = hashing.sign_ste(z)
    np.testing.assert_array_equal(np.asarray(u), [[-1.0, 1.0, 1.0, 1.0, 1.0]])
    assert u.dtype == z.dtype
    assert hashing.sign_ste(z.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_sign_gradient_is_straight_through():
    z = jnp.array([[-2.0, 0.0, 0.5], [1.0, -0.1, 3.0]])
    w = jnp.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.5]])
    grad = jax.grad(lambda z: jnp.sum(w * hashing.sign_ste(z)))(z)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(w))


def test_quantization_loss_by_hand():
    z = jnp.array([[0.5, -2.0], [1.0, 0.0]])
    u = hashing.sign_ste(z)  # [[1, -1], [1, 1]]
    # |z - u|^3 = [[0.125, 1], [0, 1]]: the mean over all four elements is 2.125 / 4.
    assert float(hashing.quantization_loss(z, u)) == pytest.approx(0.53125)
    # Padding rows are ignored: row 0 alone, (0.125 + 1) / 2.
    valid = jnp.array([True, False])
    assert float(hashing.quantization_loss(z, u, valid)) == pytest.approx(0.5625)
    # u is a target: the gradient is 3 (z - u) |z - u| / (B D), with no straight-through part.
    grad = jax.jit(jax.grad(lambda z: hashing.quantization_loss(z, hashing.sign_ste(z))))(z)
    diff = np.asarray(z - u)
    np.testing.assert_allclose(np.asarray(grad), 3 * diff * np.abs(diff) / 4, rtol=1e-6)


def test_bit_balance_by_hand():
    u = jnp.array([[1.0, 1.0], [1.0, -1.0]])
    # Bit means (1, 0): mean of squares 0.5.
    assert float(hashing.bit_balance_loss(u)) == pytest.approx(0.5)


@pytest.mark.parametrize("method", hashing.HASH_METHODS)
def test_each_table2_method_runs(method):
    z = jnp.array([[0.3, -1.2, 0.0, 2.0], [-0.4, 0.1, 0.9, -0.7]])
    u, aux = jax.jit(hashing.hash_codes, static_argnums=1)(z, method)
    assert u.shape == z.shape
    assert ("quantization" in aux) == method.startswith("sign")
    assert ("bit_balance" in aux) == method.endswith("bit_balance")
    if method.startswith("sign"):
        assert set(np.unique(np.asarray(u))) <= {-1.0, 1.0}
    if method == "none":
        np.testing.assert_array_equal(np.asarray(u), np.asarray(z))

    def total(z):
        u, aux = hashing.hash_codes(z, method)
        return jnp.sum(u) + sum(aux.values())

    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(total))(z))))


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="Unknown hash method"):
        hashing.hash_codes(jnp.zeros((1, 8)), "pq")
