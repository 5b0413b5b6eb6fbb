"""A corpus of awkward and broken image files, written from PIL, OpenCV, numpy and raw bytes.

`write_corpus(directory)` writes every file and returns, per file name, what
`preprocessing.images.decode_image` must make of it: either an `ok` image of a known shape
whose pixels pass a check, or an `error` whose reason contains a given word. One entry,
`missing.jpg`, is listed but deliberately not written.

Each writer also re-reads the header of what it wrote and fails loudly if the file is not
the case it claims to be (a JPEG without its orientation tag, a PNG that came out 8-bit),
so that a corpus file cannot silently stop exercising its code path.

Pixel checks assume the default background, white.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

WHITE = (255, 255, 255)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
ORIENTATION = 0x0112  # the EXIF tag that phones set instead of rotating the pixels


@dataclasses.dataclass(frozen=True)
class Expected:
    """What decoding one corpus file must give.

    Attributes:
      ok: True when the file must decode, False when it must raise ImageDecodeError.
      what: the case, in words, for failure messages.
      shape: the decoded `[H, W, 3]` shape when `ok`.
      check: when `ok`, raises AssertionError if the decoded pixels are wrong.
      reason: when not `ok`, a word or phrase the error's reason must contain.
    """

    ok: bool
    what: str
    shape: tuple[int, int, int] | None = None
    check: Callable[[np.ndarray], None] | None = None
    reason: str | None = None


def _ok(what: str, shape: tuple[int, int, int], check: Callable[[np.ndarray], None]) -> Expected:
    return Expected(ok=True, what=what, shape=shape, check=check)


def _error(what: str, reason: str) -> Expected:
    return Expected(ok=False, what=what, reason=reason)


# ---- pixel checks ---------------------------------------------------------------------------


def equals(expected: np.ndarray) -> Callable[[np.ndarray], None]:
    """Lossless formats: every pixel exactly."""
    expected = np.asarray(expected, np.uint8)

    def check(image: np.ndarray) -> None:
        np.testing.assert_array_equal(image, expected)

    return check


def close_to(expected: np.ndarray, mean: float, worst: int) -> Callable[[np.ndarray], None]:
    """JPEG: the mean and the worst absolute error per sample stay small."""
    expected = np.asarray(expected, np.int16)

    def check(image: np.ndarray) -> None:
        error = np.abs(image.astype(np.int16) - expected)
        if error.mean() > mean or error.max() > worst:
            raise AssertionError(
                f"pixels differ from the expected image: mean error {error.mean():.2f} "
                f"(allowed {mean}), worst {error.max()} (allowed {worst})"
            )

    return check


def both(*checks: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
    def check(image: np.ndarray) -> None:
        for one in checks:
            one(image)

    return check


def near(points: dict[tuple[int, int], tuple[int, int, int]], tolerance: int):
    """Named pixels (y, x) have roughly the given colours: readable evidence of where a
    corner went, on top of a whole-image comparison."""

    def check(image: np.ndarray) -> None:
        for (y, x), colour in points.items():
            got = image[y, x].astype(int)
            if np.abs(got - np.asarray(colour)).max() > tolerance:
                raise AssertionError(f"pixel (y={y}, x={x}) is {got.tolist()}, want ~{colour}")

    return check


# ---- helpers --------------------------------------------------------------------------------


def _blocks(height: int, width: int, block: int = 16, seed: int = 0) -> np.ndarray:
    """Flat colour blocks aligned to JPEG's 16-pixel MCUs, so JPEG error stays tiny and a
    whole-image comparison is meaningful."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (height // block + 1, width // block + 1, 3), np.uint8)
    return np.repeat(np.repeat(colours, block, 0), block, 1)[:height, :width].copy()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    # 4:4:4 so colour edges between blocks are not smeared by chroma subsampling.
    image.save(buffer, "JPEG", quality=95, subsampling=0, **kwargs)
    return buffer.getvalue()


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise RuntimeError("not a PNG with a leading IHDR")
    return struct.unpack(">IIBB", data[16:26])


def _claim(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"corpus file is not what it claims: {message}")


def _forged_png(width: int, height: int) -> bytes:
    """A PNG whose signature and IHDR (CRC included) are valid but whose IDAT holds a few
    bytes: a decoder that allocates from the header alone asks for width * height * 3."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(
        b"IEND", b""
    )


def _rounded_16_to_8(values: np.ndarray) -> np.ndarray:
    # v / 257 is never exactly k + 0.5 for integer v, so rounding has no ties to break.
    return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)


# ---- the corpus -----------------------------------------------------------------------------
# Each writer takes the path to write (or not) and returns its Expected.


def _control_png(path: str) -> Expected:
    pixels = np.random.default_rng(1).integers(0, 256, (40, 56, 3), np.uint8)
    _write(path, _png(Image.fromarray(pixels)))
    return _ok("8-bit RGB PNG (control)", (40, 56, 3), equals(pixels))


def _control_jpeg(path: str) -> Expected:
    pixels = _blocks(48, 64, seed=2)
    _write(path, _jpeg(Image.fromarray(pixels)))
    return _ok("baseline RGB JPEG (control)", (48, 64, 3), close_to(pixels, 1.0, 12))


def _truncated_jpeg(path: str) -> Expected:
    # Noise makes the entropy-coded scan most of the file, so a 60 % cut lands inside it
    # (the header stays readable and only decoding can find the damage).
    pixels = np.random.default_rng(3).integers(0, 256, (96, 128, 3), np.uint8)
    data = _jpeg(Image.fromarray(pixels))
    _write(path, data[: int(len(data) * 0.6)])
    return _error("JPEG cut to 60 % of its length", "truncated")


def _empty(path: str) -> Expected:
    _write(path, b"")
    return _error("zero-byte file", "empty")


def _text_as_jpeg(path: str) -> Expected:
    _write(path, b"This is a text file, saved with an image's name.\n" * 4)
    return _error("text file named .jpg", "not a recognised image")


def _cmyk_jpeg(path: str) -> Expected:
    # Left half pure red ink (M + Y), right half pure black ink (K).
    cmyk = np.zeros((32, 48, 4), np.uint8)
    cmyk[:, :24] = (0, 255, 255, 0)
    cmyk[:, 24:] = (0, 0, 0, 255)
    data = _jpeg(Image.fromarray(cmyk, "CMYK"))
    _claim(Image.open(io.BytesIO(data)).mode == "CMYK", "CMYK JPEG reads back as CMYK")
    _write(path, data)
    expected = np.zeros((32, 48, 3), np.uint8)
    expected[:, :24] = RED
    return _ok("CMYK JPEG", (32, 48, 3), close_to(expected, 1.0, 12))


def _grey16_png(path: str) -> Expected:
    # A full-range ramp plus noise: truncating to the top byte (v >> 8) instead of rounding
    # v / 257 is wrong for about half of these values.
    rng = np.random.default_rng(4)
    ramp = np.linspace(0, 65535, 24 * 32).reshape(24, 32)
    values = np.clip(ramp + rng.integers(-300, 300, ramp.shape), 0, 65535).astype(np.uint16)
    _imwrite(path, values)
    _claim(_png_header(_read(path))[2:] == (16, 0), "16-bit greyscale PNG")
    grey = _rounded_16_to_8(values)
    return _ok("16-bit greyscale PNG", (24, 32, 3), equals(np.repeat(grey[..., None], 3, -1)))


def _grey16_dark_png(path: str) -> Expected:
    # Every sample <= 255: still 16-bit, so this is a nearly black image, not an 8-bit one.
    values = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16)
    _imwrite(path, values)
    _claim(_png_header(_read(path))[2:] == (16, 0), "16-bit greyscale PNG")
    grey = _rounded_16_to_8(values)
    _claim(grey.max() == 1, "a dark 16-bit image maps to 0 and 1")
    return _ok("dark 16-bit greyscale PNG", (16, 16, 3), equals(np.repeat(grey[..., None], 3, -1)))


def _rgb48_values() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 65536, (20, 28, 3)).astype(np.uint16)


def _rgb48_png(path: str) -> Expected:
    rgb = _rgb48_values()
    _imwrite(path, rgb[..., ::-1])  # OpenCV writes BGR
    _claim(_png_header(_read(path))[2:] == (16, 2), "16-bit RGB PNG")
    return _ok("48-bit RGB PNG", (20, 28, 3), equals(_rounded_16_to_8(rgb)))


def _rgb48_exif_png(path: str) -> Expected:
    # The exact 16-bit path must still honour the eXIf orientation chunk.
    rgb = _rgb48_values()
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    _claim(ok, "OpenCV encoded the 48-bit PNG")
    encoded = encoded.tobytes()
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    body = exif.tobytes()
    body = body[6:] if body.startswith(b"Exif\x00\x00") else body  # eXIf holds bare TIFF
    after_ihdr = 8 + 25  # signature, then IHDR: length, type, 13 bytes of data, CRC
    data = encoded[:after_ihdr] + _chunk(b"eXIf", body) + encoded[after_ihdr:]
    _claim(Image.open(io.BytesIO(data)).getexif().get(ORIENTATION) == 6, "eXIf orientation 6")
    _write(path, data)
    # Orientation 6: the stored image is shown turned 90 degrees clockwise.
    expected = np.rot90(_rounded_16_to_8(rgb), k=-1)
    return _ok("48-bit RGB PNG with eXIf orientation 6", (28, 20, 3), equals(expected))


def _palette_transparent_png(path: str) -> Expected:
    # Index 2 is blue in the palette but marked fully transparent by tRNS.
    index = np.zeros((24, 30), np.uint8)
    index[:, 10:20] = 1
    index[:, 20:] = 2
    image = Image.fromarray(index, "P")
    image.putpalette(list(RED + GREEN + BLUE) + [0] * (256 - 3) * 3)
    data = _png(image, transparency=2)
    opened = Image.open(io.BytesIO(data))
    _claim(opened.mode == "P" and "transparency" in opened.info, "palette PNG with tRNS")
    _write(path, data)
    expected = np.zeros((24, 30, 3), np.uint8)
    expected[:, :10], expected[:, 10:20], expected[:, 20:] = RED, GREEN, WHITE
    return _ok("palette PNG, index 2 transparent", (24, 30, 3), equals(expected))


def _grey_colour_key_png(path: str) -> Expected:
    # A greyscale PNG whose tRNS marks grey level 40 transparent: no alpha channel at all.
    grey = np.full((16, 20), 200, np.uint8)
    grey[:, :8] = 40
    data = _png(Image.fromarray(grey, "L"), transparency=40)
    opened = Image.open(io.BytesIO(data))
    _claim(opened.mode == "L" and opened.info.get("transparency") == 40, "grey tRNS PNG")
    _write(path, data)
    expected = np.full((16, 20, 3), 200, np.uint8)
    expected[:, :8] = WHITE
    return _ok("greyscale PNG, level 40 transparent", (16, 20, 3), equals(expected))


def _rgba_png(path: str) -> Expected:
    # Left third opaque green, middle third red at alpha 128, right third fully transparent.
    rgba = np.zeros((18, 30, 4), np.uint8)
    rgba[:, :10] = GREEN + (255,)
    rgba[:, 10:20] = RED + (128,)
    rgba[:, 20:] = (12, 34, 56, 0)
    _write(path, _png(Image.fromarray(rgba, "RGBA")))
    expected = np.zeros((18, 30, 3), np.uint8)
    expected[:, :10] = GREEN
    # red * a + white * (1 - a), a = 128/255: 255 for red, 255 * 127/255 = 127 for the rest.
    expected[:, 10:20] = (255, 127, 127)
    expected[:, 20:] = WHITE
    return _ok("RGBA PNG, half-transparent and transparent areas", (18, 30, 3),
               close_to(expected, 0.5, 1))


def _exif_jpeg(orientation: int) -> Callable[[str], Expected]:
    def write(path: str) -> Expected:
        # A landscape 48 x 32 image, blue with a red 16 x 16 top-left corner, stored with an
        # orientation tag; the decoded image must be portrait with the corner moved.
        pixels = np.zeros((32, 48, 3), np.uint8)
        pixels[:] = BLUE
        pixels[:16, :16] = RED
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        data = _jpeg(Image.fromarray(pixels), exif=exif)
        stored = Image.open(io.BytesIO(data))
        _claim(stored.getexif().get(ORIENTATION) == orientation, f"orientation {orientation}")
        _claim(stored.size == (48, 32), "stored landscape")
        _write(path, data)
        # Decoded portrait is 48 high, 32 wide; (y, x) probes sit 4 pixels inside corners.
        if orientation == 6:  # shown turned 90 degrees clockwise: red corner at top right
            expected = np.rot90(pixels, k=-1)
            probes = {(4, 27): RED, (4, 4): BLUE, (43, 4): BLUE, (43, 27): BLUE}
        else:  # 8: turned 90 degrees anticlockwise: red corner at bottom left
            expected = np.rot90(pixels, k=1)
            probes = {(43, 4): RED, (4, 4): BLUE, (4, 27): BLUE, (43, 27): BLUE}
        check = both(near(probes, 40), close_to(expected, 1.0, 12))
        return _ok(f"JPEG with EXIF orientation {orientation}", (48, 32, 3), check)

    return write


def _animated_gif(path: str) -> Expected:
    frames = [Image.new("RGB", (32, 24), colour) for colour in (RED, GREEN, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buffer.getvalue()
    _claim(Image.open(io.BytesIO(data)).n_frames == 3, "three GIF frames")
    _write(path, data)
    return _ok("animated GIF, red then green then blue", (24, 32, 3),
               equals(np.full((24, 32, 3), RED, np.uint8)))


def _huge_header_png(path: str) -> Expected:
    data = _forged_png(30000, 30000)
    _claim(_png_header(data)[:2] == (30000, 30000), "IHDR claims 30000 x 30000")
    _write(path, data)
    return _error("PNG header claiming 30000 x 30000, a few bytes of IDAT", "exceeds the limit")


def _large_header_png(path: str) -> Expected:
    # 100 M pixels: over the default limit of 64 M but under Pillow's own refusal
    # (~179 M), so this one is caught by decode_image's check rather than Pillow's.
    _write(path, _forged_png(10000, 10000))
    return _error("PNG header claiming 10000 x 10000, a few bytes of IDAT", "exceeds the limit")


def _grey_jpeg(path: str) -> Expected:
    grey = _blocks(32, 48, seed=6)[..., 0]
    data = _jpeg(Image.fromarray(grey, "L"))
    _claim(Image.open(io.BytesIO(data)).mode == "L", "one-channel JPEG")
    _write(path, data)
    return _ok("greyscale JPEG", (32, 48, 3),
               both(_grey_channels, close_to(np.repeat(grey[..., None], 3, -1), 1.0, 12)))


def _grey_channels(image: np.ndarray) -> None:
    if not (np.array_equal(image[..., 0], image[..., 1])
            and np.array_equal(image[..., 0], image[..., 2])):
        raise AssertionError("a greyscale image must decode with three equal channels")


def _bilevel_png(path: str) -> Expected:
    # A 4-pixel checkerboard at 1 bit per pixel.
    bits = (np.indices((16, 24)).sum(0) // 4 % 2).astype(bool)
    data = _png(Image.fromarray(bits))
    _claim(_png_header(data)[2:] == (1, 0), "1-bit greyscale PNG")
    _write(path, data)
    return _ok("1-bit PNG", (16, 24, 3), equals(np.repeat(bits[..., None], 3, -1) * 255))


def _tiff_bad_second_page(path: str) -> Expected:
    # A good first page whose next-IFD pointer leads to a page with no dimensions: only the
    # first page is wanted, so the file must decode.
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 120, 230)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    _claim(data[:4] == b"II*\x00", "little-endian TIFF")
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first:first + 2])[0]
    next_pointer = first + 2 + 12 * entries
    data[next_pointer:next_pointer + 4] = struct.pack("<I", len(data))
    # One IFD entry, an unknown tag (SHORT, count 1, value 7); then no further page.
    data += struct.pack("<H", 1) + struct.pack("<HHII", 0x9999, 3, 1, 7) + struct.pack("<I", 0)
    _write(path, bytes(data))
    return _ok("TIFF whose second page is damaged", (6, 8, 3),
               equals(np.full((6, 8, 3), (10, 120, 230), np.uint8)))


def _missing(path: str) -> Expected:
    del path  # listed on purpose, never written
    return _error("path of a file that does not exist", "not found")


WRITERS: dict[str, Callable[[str], Expected]] = {
    "control_rgb.png": _control_png,
    "control_rgb.jpg": _control_jpeg,
    "truncated.jpg": _truncated_jpeg,
    "empty.jpg": _empty,
    "text.jpg": _text_as_jpeg,
    "cmyk.jpg": _cmyk_jpeg,
    "grey16.png": _grey16_png,
    "grey16_dark.png": _grey16_dark_png,
    "rgb48.png": _rgb48_png,
    "rgb48_exif6.png": _rgb48_exif_png,
    "palette_transparent.png": _palette_transparent_png,
    "grey_colour_key.png": _grey_colour_key_png,
    "rgba_half_transparent.png": _rgba_png,
    "exif_orientation6.jpg": _exif_jpeg(6),
    "exif_orientation8.jpg": _exif_jpeg(8),
    "animated.gif": _animated_gif,
    "huge_header.png": _huge_header_png,
    "large_header.png": _large_header_png,
    "grey.jpg": _grey_jpeg,
    "bilevel.png": _bilevel_png,
    "tiff_bad_second_page.tif": _tiff_bad_second_page,
    "missing.jpg": _missing,
}
NAMES = tuple(WRITERS)


def write_corpus(directory: str | os.PathLike) -> dict[str, Expected]:
    """Writes the corpus into `directory` (which must exist); returns file name -> Expected.

    Every name is a plain file name in `directory`; `missing.jpg` is the one not written.
    """
    directory = os.fspath(directory)
    return {name: write(os.path.join(directory, name)) for name, write in WRITERS.items()}


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _imwrite(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise RuntimeError(f"OpenCV could not write {path}")
