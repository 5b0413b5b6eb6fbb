"""preprocessing.images: the one decode path, over a corpus of awkward and broken files."""

from __future__ import annotations

import io
import os
import pathlib
import time

import numpy as np
import pytest
from PIL import Image

from preprocessing.images import (
    ImageDecodeError,
    decode_image,
    decode_jpeg,
    encode_jpeg,
    encode_png,
    image_files,
)
from tests.bad_images import NAMES, write_corpus

WRITTEN = tuple(name for name in NAMES if name != "missing.jpg")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    return str(directory), write_corpus(directory)


def _assert_rgb(image: np.ndarray) -> None:
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.flags["C_CONTIGUOUS"]


def _smooth(height: int, width: int) -> np.ndarray:
    """Gradients survive JPEG (4:2:0 included) with small error, so bounds can be tight."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
        axis=-1,
    ).astype(np.uint8)


def test_corpus_writes_every_listed_file_but_the_missing_one(corpus):
    directory, expected = corpus
    assert tuple(expected) == NAMES
    assert sorted(os.listdir(directory)) == sorted(WRITTEN)
    for name, want in expected.items():
        assert want.ok == (want.shape is not None and want.check is not None), name
        assert want.ok != bool(want.reason), name


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_decodes_or_names_file_and_reason(corpus, name):
    directory, expected = corpus
    want = expected[name]
    path = os.path.join(directory, name)
    if want.ok:
        image = decode_image(path)
        _assert_rgb(image)
        assert image.shape == want.shape, want.what
        want.check(image)
    else:
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(path)
        assert caught.value.path == path
        assert path in str(caught.value)
        assert want.reason in caught.value.reason, (want.what, caught.value.reason)


@pytest.mark.parametrize("name", WRITTEN)
def test_bytes_input_matches_path_input_and_errors_use_name(corpus, name):
    directory, expected = corpus
    want = expected[name]
    path = os.path.join(directory, name)
    with open(path, "rb") as f:
        data = f.read()
    label = f"upload/{name}"
    if want.ok:
        from_bytes = decode_image(data, name=label)
        _assert_rgb(from_bytes)
        np.testing.assert_array_equal(from_bytes, decode_image(path))
    else:
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(data, name=label)
        assert caught.value.path == label
        assert label in str(caught.value) and path not in str(caught.value)
        assert want.reason in caught.value.reason


def test_bytes_without_name_are_described_by_length():
    with pytest.raises(ImageDecodeError, match=r"<5 bytes>") as caught:
        decode_image(b"hello")
    assert "not a recognised image" in caught.value.reason


@pytest.mark.parametrize("wrap", [bytearray, memoryview, pathlib.Path])
def test_other_source_types(corpus, wrap):
    directory, _ = corpus
    path = os.path.join(directory, "control_rgb.png")
    reference = decode_image(path)
    with open(path, "rb") as f:
        source = wrap(f.read()) if wrap is not pathlib.Path else pathlib.Path(path)
    np.testing.assert_array_equal(decode_image(source), reference)


def test_forged_huge_header_is_refused_from_the_header_alone(corpus):
    directory, _ = corpus
    path = os.path.join(directory, "huge_header.png")
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(path)
    # Allocating (and zero-filling) 30000 x 30000 x 3 bytes would take far longer than this.
    assert time.perf_counter() - start < 1.0
    assert "900000000 pixels exceeds the limit of 64000000" in caught.value.reason


def test_limit_above_pillows_own_says_which_limit_refused(corpus):
    # Pillow refuses 900 M pixels inside Image.open whatever max_pixels says; the reason must
    # say so instead of suggesting that raising max_pixels would help.
    directory, _ = corpus
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(os.path.join(directory, "huge_header.png"), max_pixels=10**10)
    assert "exceeds the limit" in caught.value.reason
    assert "MAX_IMAGE_PIXELS" in caught.value.reason


def test_max_pixels_boundary(corpus):
    directory, _ = corpus
    path = os.path.join(directory, "control_rgb.png")  # 40 x 56 = 2240 pixels
    assert decode_image(path, max_pixels=2240).shape == (40, 56, 3)
    with pytest.raises(ImageDecodeError, match="56x40 = 2240 pixels exceeds the limit of 2239"):
        decode_image(path, max_pixels=2239)


@pytest.mark.parametrize(
    "name, transparent",
    [
        ("palette_transparent.png", (slice(None), slice(20, None))),
        ("grey_colour_key.png", (slice(None), slice(None, 8))),
        ("rgba_half_transparent.png", (slice(None), slice(20, None))),
    ],
)
def test_background_colour_is_honoured(corpus, name, transparent):
    directory, _ = corpus
    path = os.path.join(directory, name)
    background = (10, 20, 30)
    on_white = decode_image(path)
    on_colour = decode_image(path, background=background)
    assert (on_colour[transparent] == background).all()
    assert (on_white[transparent] == 255).all()
    opaque = np.ones(on_white.shape[:2], bool)
    opaque[transparent] = False
    if name == "rgba_half_transparent.png":
        opaque[:, 10:20] = False  # half-transparent: checked below
        mixed = on_colour[:, 10:20].astype(int)
        # red at alpha 128/255 over (10, 20, 30): (255 a + 10 (1 - a), 20 (1 - a), 30 (1 - a))
        np.testing.assert_allclose(mixed, np.broadcast_to([133, 10, 15], mixed.shape), atol=1)
    np.testing.assert_array_equal(on_colour[opaque], on_white[opaque])


def test_bad_background_is_an_argument_error_not_an_image_error(corpus):
    directory, _ = corpus
    with pytest.raises(ValueError, match="background") as caught:
        decode_image(os.path.join(directory, "control_rgb.png"), background=(0, 0))
    assert not isinstance(caught.value, ImageDecodeError)


def test_directory_gives_a_clear_error(tmp_path):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(tmp_path)
    assert caught.value.path == str(tmp_path)
    assert "directory" in caught.value.reason


def test_a_fifo_and_a_device_are_refused_without_reading(tmp_path):
    """A FIFO would block open() and /dev/zero would be read until memory runs out."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ImageDecodeError, match="FIFO"):
        decode_image(fifo)
    with pytest.raises(ImageDecodeError, match="character device"):
        decode_image("/dev/zero")
    assert time.monotonic() - started < 5


def test_a_file_over_the_byte_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2048)
    from preprocessing.images import read_bytes

    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1024 bytes"):
        read_bytes(str(big), "big.png", max_bytes=1024)


def test_folders_expand_to_their_images_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/x.JPG", "a/b/y.png", "a/notes.txt", ".hidden/z.png", "a/.w.png"):
        (tmp_path / name).write_bytes(b"")
    lone = str(tmp_path / "lone.gif")
    assert image_files([str(tmp_path), lone]) == [
        str(tmp_path / "a" / "b" / "y.png"), str(tmp_path / "a" / "x.JPG"), lone]


def test_jpeg_round_trip_within_small_error():
    image = _smooth(48, 80)
    for quality, mean, worst in ((95, 1.0, 8), (50, 3.0, 30)):
        data = encode_jpeg(image, quality)
        assert data[:2] == b"\xff\xd8"
        decoded = decode_jpeg(data)
        _assert_rgb(decoded)
        error = np.abs(decoded.astype(int) - image)
        assert error.mean() < mean and error.max() <= worst, (quality, error.mean(), error.max())
        # The general path must see the same pixels as the records' fast path.
        assert np.abs(decode_image(data).astype(int) - decoded).max() <= 2
    assert len(encode_jpeg(image, 50)) < len(encode_jpeg(image, 95))


def test_jpeg_keeps_channel_order():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    decoded = decode_jpeg(encode_jpeg(red))
    assert decoded[..., 0].min() > 240 and decoded[..., 2].max() < 15
    # An independent decoder agrees that it is red, not blue.
    assert Image.open(io.BytesIO(encode_jpeg(red))).convert("RGB").getpixel((5, 5))[0] > 240


def test_png_is_lossless():
    image = np.random.default_rng(7).integers(0, 256, (33, 47, 3), np.uint8)
    data = encode_png(image)
    np.testing.assert_array_equal(decode_image(data), image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), image)


@pytest.mark.parametrize("encode", [encode_jpeg, encode_png])
@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))]
)
def test_encoders_refuse_anything_but_uint8_rgb(encode, bad):
    # A [H, W] grey image would otherwise be mirrored by the RGB -> BGR flip.
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        encode(bad)


@pytest.mark.parametrize("data", [b"", b"not a jpeg at all"])
def test_decode_jpeg_rejects_non_images(data):
    with pytest.raises(ImageDecodeError, match="not a JPEG"):
        decode_jpeg(data)


# Pillow warns about some damaged TIFF tags before failing; the outcome is what matters.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_bytes_decode_or_raise_image_decode_error(corpus):
    """Random byte damage must never escape as another exception type: callers such as the
    record builders log one outcome per input and rely on that."""
    directory, _ = corpus
    rng = np.random.default_rng(11)
    sources = []
    for name in ("control_rgb.png", "control_rgb.jpg", "animated.gif", "exif_orientation6.jpg"):
        with open(os.path.join(directory, name), "rb") as f:
            sources.append(f.read())
    buffer = io.BytesIO()
    Image.fromarray(_smooth(12, 16)).save(buffer, "TIFF")
    sources.append(buffer.getvalue())
    outcomes = {"ok": 0, "error": 0}
    for data in sources:
        for _ in range(120):
            damaged = bytearray(data)
            for position in rng.integers(0, len(damaged), rng.integers(1, 6)):
                damaged[position] = rng.integers(0, 256)
            if rng.random() < 0.2:
                damaged = damaged[: rng.integers(1, len(damaged))]
            try:
                image = decode_image(bytes(damaged), name="damaged")
            except ImageDecodeError as e:
                assert e.path == "damaged" and e.reason
                outcomes["error"] += 1
            else:
                _assert_rgb(image)
                outcomes["ok"] += 1
    # Both outcomes occur, so the loop really exercises the error paths.
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


def test_shrink_to_fit_shrinks_the_longer_side_and_never_enlarges():
    from preprocessing.images import shrink_to_fit

    image = np.zeros((300, 451, 3), np.uint8)
    assert shrink_to_fit(image, 100).shape == (67, 100, 3)
    assert shrink_to_fit(image, 1000).shape == (300, 451, 3)
    strided = np.zeros((40, 80, 3), np.uint8)[::2, ::2]  # a slice, as crops are
    kept = shrink_to_fit(strided, 64)
    assert kept.shape == (20, 40, 3) and kept.flags.c_contiguous


def test_progress_in_a_log_is_short_separate_lines():
    import io

    from preprocessing.progress import LOG_WIDTH, progress

    log = io.StringIO()
    with progress(total=5000, desc="hashing a long name " * 3, unit="image", stream=log) as bar:
        for _ in range(5000):
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 2 <= len(lines) <= 4  # the start, the end and at most a timed line between
    assert all(len(line) <= LOG_WIDTH for line in lines)
    assert "5000/5000" in lines[-1]
