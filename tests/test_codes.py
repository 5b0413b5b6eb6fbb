"""Packed codes on the host: packing order, popcount and Hamming distances by hand."""

import numpy as np
import pytest

from oscar_jax.inference import codes


def test_pack_unpack_round_trip_and_packbits_order():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(5, 64)).astype(np.uint8)
    signs = 2.0 * bits - 1.0
    packed = codes.pack_bits(signs)
    assert packed.dtype == np.uint8 and packed.shape == (5, 8)
    np.testing.assert_array_equal(packed, np.packbits(bits, axis=-1))
    np.testing.assert_array_equal(codes.pack_bits(bits), packed)
    np.testing.assert_array_equal(codes.pack_bits(bits.astype(bool)), packed)
    np.testing.assert_array_equal(codes.unpack_bits(packed, 64), bits)
    # Big-endian within a byte: the first bit is the most significant.
    np.testing.assert_array_equal(codes.pack_bits(np.array([1, 0, 0, 0, 0, 0, 0, 1])), [129])
    with pytest.raises(ValueError):
        codes.unpack_bits(packed, 72)


def test_hamming_distance_by_hand():
    a = codes.pack_bits(np.array([[1, 1, 1, 1, 0, 0, 0, 0] * 2, [0] * 16]))
    b = codes.pack_bits(np.array([[1, 1, 1, 1, 0, 0, 0, 0] * 2, [1] * 16, [1, 0] * 8]))
    # 11110000 xor 10101010 = 01011010: four bits a byte.
    expected = np.array([[0, 8, 8], [8, 16, 8]])
    np.testing.assert_array_equal(codes.hamming_distance(a, b), expected)
    np.testing.assert_array_equal(codes.hamming_distance(a, b, max_elements=1), expected)
    assert codes.hamming_distance(a, b).dtype == np.int64
    np.testing.assert_array_equal(codes.paired_distance(a[:, None], b[None]), expected)


@pytest.mark.parametrize("fallback", [False, True])
def test_popcount_by_hand_with_and_without_bitwise_count(fallback, monkeypatch):
    if fallback:
        monkeypatch.setattr(codes, "_BITWISE_COUNT", None)
    assert not codes.counts_words() if fallback else codes.counts_words()
    values = np.array([0, 1, 3, 128, 255, 170], np.uint8)
    np.testing.assert_array_equal(codes.popcount(values), [0, 1, 2, 1, 8, 4])
    if fallback:
        with pytest.raises(TypeError, match="uint8"):
            codes.popcount(np.array([3], np.uint64))
    else:
        assert codes.popcount(np.array([2**64 - 1], np.uint64))[0] == 64


def test_hamming_distance_refuses_what_is_not_packed_codes():
    with pytest.raises(TypeError, match="uint8"):
        codes.hamming_distance(np.zeros((2, 8), np.int64), np.zeros((2, 8), np.uint8))
    with pytest.raises(ValueError, match="bytes per code"):
        codes.hamming_distance(np.zeros((2, 8), np.uint8), np.zeros((2, 4), np.uint8))
