"""The one decode path: any image file or byte string -> 8-bit RGB `uint8 [H, W, 3]`.

Every module that reads an image calls `decode_image`, so a photo looks the same to the
record builders, the hash CLI and the attribution server. What it normalises:

* EXIF orientation is applied (a phone photo stored sideways comes out upright);
* palette, grey+alpha and RGBA images are composited on a fixed background colour;
* CMYK, 16-bit, 32-bit integer, float and 1-bit images become 8-bit RGB;
* animated images (GIF, APNG, WebP) give their first frame;
* images above `max_pixels` are refused from the header alone, before decoding;
* truncated, empty or non-image input raises `ImageDecodeError` naming the file and reason.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | bytearray | memoryview

# 8000 x 8000: larger than any camera photo that matters here, small enough that a forged
# header cannot make a worker allocate gigabytes.
DEFAULT_MAX_PIXELS = 64_000_000
# Files larger than this are refused before they are read (the largest image a camera or an
# editor writes is far smaller; /dev/zero and the like are refused as non-regular files).
DEFAULT_MAX_BYTES = 256 * 2**20
# What a folder given as input is searched for (recursively, hidden entries skipped).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}
)
# Composite transparent pixels on white, as browsers and social platforms display them.
DEFAULT_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An input could not be decoded. `path` names it, `reason` says why in words."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot decode image {path!r}: {reason}")


def _describe(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return os.fspath(source)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def read_bytes(source: ImageSource, label: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a path or of bytes; ImageDecodeError naming `label` when unreadable.

    Only regular files are read, and only up to `max_bytes`: both are checked before the
    file is opened, so a FIFO cannot block and a device cannot fill the memory."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        info = os.stat(source)
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            hint = "; pass the image files inside it" if kind == "a directory" else ""
            raise ImageDecodeError(label, f"is {kind}, not an image file{hint}")
        if info.st_size > max_bytes:
            raise ImageDecodeError(label, f"{info.st_size} bytes exceeds the limit of "
                                          f"{max_bytes} bytes for one image")
        with open(source, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise ImageDecodeError(label, "file not found") from e
    except OSError as e:
        raise ImageDecodeError(label, f"cannot read file: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise ImageDecodeError(label, f"grew past the limit of {max_bytes} bytes while read")
    return data


def image_files(paths: Sequence[str]) -> list[str]:
    """`paths` with every directory replaced by the image files under it (recursively, by
    the extensions of `IMAGE_EXTENSIONS`, hidden entries skipped, sorted). Other paths are
    kept as given, so that reading them reports what is wrong with them."""
    out = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        found = []
        for directory, folders, files in os.walk(path):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            found.extend(os.path.join(directory, f) for f in files
                         if not f.startswith(".")
                         and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        out.extend(sorted(found))
    return out


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Any PIL mode -> uint8 [H, W, 3]."""
    mode = img.mode
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        # Palette transparency (tRNS indices) and 8-bit colour keys (a grey level or RGB
        # triple marked transparent) become a real alpha channel before compositing.
        img = img.convert("RGBA")
        mode = img.mode
    elif mode == "P":
        img = img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img)
        if mode == "F":
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
            grey = np.nan_to_num(scaled).round().clip(0, 255).astype(np.uint8)
        else:
            # 16-bit samples span 0..65535 whatever the content, so a dark 16-bit image must
            # stay dark: v -> round(v / 257). Only 32-bit "I" has no declared range; there,
            # values that fit in a byte are taken as 8-bit and the rest as 16-bit.
            top = 65535 if mode != "I" or values.max(initial=0) > 255 else 255
            grey = (values.astype(np.float64) * (255.0 / top)).round().clip(0, 255)
            grey = grey.astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img)


def _decode_16bit_colour(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """PIL reads 48/64-bit PNG lossily (top byte, no rounding); OpenCV reads it exactly.

    Returns `uint8 [H, W, 3 or 4]` RGB(A) rounded from 16 bits, or None when OpenCV does
    not give the image PIL saw (then PIL's 8 bits are used).
    """
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    width, height = size
    if (
        array is None
        or array.dtype != np.uint16
        or array.ndim != 3
        or array.shape[:2] != (height, width)
        or array.shape[2] not in (3, 4)
    ):
        return None
    rgb16 = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return (rgb16.astype(np.float64) / 257.0).round().astype(np.uint8)


def _bomb_reason(error: Exception, max_pixels: int) -> str:
    """Pillow refuses, inside `Image.open`, any image over 2 * `Image.MAX_IMAGE_PIXELS`
    before our own check can run; say so in the same words as our own limit."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{found.group(1)} pixels" if found else "the image size"
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels < pillow_limit:
        return (
            f"{pixels} exceeds the limit of {max_pixels}; "
            "raise max_pixels if this image is genuine"
        )
    return (
        f"{pixels} exceeds the limit of {pillow_limit} set by Pillow's decompression-bomb "
        "check; raise PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels if this image is genuine"
    )


def _is_16bit_colour_png(data: bytes, mode: str) -> bool:
    # The IHDR bit depth is byte 24: signature (8), chunk length (4), type (4), width,
    # height (4 each).
    return mode in ("RGB", "RGBA") and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 16


def decode_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """Decodes a path or encoded bytes to `uint8 [H, W, 3]` RGB.

    Args:
      source: a file path or the encoded bytes of an image.
      name: how errors refer to the input (defaults to the path).
      max_pixels: refuse images with more pixels than this, judged from the header.
      background: RGB colour that transparent pixels are composited on.

    Raises:
      ImageDecodeError: the input is missing, empty, truncated, not an image, or too large.
    """
    # Checked before decoding so that a bad argument is not reported as a bad image.
    background = tuple(int(c) for c in background)
    if len(background) != 3 or not all(0 <= c <= 255 for c in background):
        raise ValueError(f"background must be three values in 0..255, got {background}")
    label = _describe(source, name)
    data = read_bytes(source, label)
    if not data:
        raise ImageDecodeError(label, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(label, f"header gives an empty size {width}x{height}")
            if width * height > max_pixels:
                raise ImageDecodeError(
                    label,
                    f"{width}x{height} = {width * height} pixels exceeds the limit of "
                    f"{max_pixels}; raise max_pixels if this image is genuine",
                )
            # Pillow opens every multi-frame format (GIF, APNG, WebP, TIFF) at its first
            # frame. Asking for n_frames would parse every later frame too, and one damaged
            # later page would then make a readable first page fail.
            img.load()
            if _is_16bit_colour_png(data, img.mode):
                wide = _decode_16bit_colour(data, img.size)
                if wide is not None:
                    exif = img.info.get("exif")
                    img = Image.fromarray(wide)
                    if exif is not None:
                        # Keep the eXIf orientation so the exact pixels are rotated too.
                        img.info["exif"] = exif
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img, background)
    except ImageDecodeError:
        raise
    except MemoryError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(label, "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(label, _bomb_reason(e, max_pixels)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason or isinstance(e, EOFError):
            reason = f"truncated or damaged file ({reason})"
        raise ImageDecodeError(label, reason) from e
    except Exception as e:
        # Pillow's pure-Python parsers (TIFF tags, EXIF) report some damage as TypeError,
        # struct.error, IndexError, ...; callers rely on one exception type per bad input.
        raise ImageDecodeError(
            label, f"damaged or unsupported file ({type(e).__name__}: {e})"
        ) from e
    return np.ascontiguousarray(rgb)


def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    # Reversing the last axis of a [H, W] grey image would mirror it instead of swapping
    # channels, so anything but uint8 RGB is refused rather than silently mangled.
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{what} expects uint8 [H, W, 3] RGB, got {image.dtype} {tuple(image.shape)}"
        )
    return image


def shrink_to_fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrinks `image` [H, W, C] so its longer side is at most `max_side`; never enlarges.

    Area interpolation, as for every downscale in the project; the result is C-contiguous
    (crops are slices, and OpenCV wants contiguous input).
    """
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(image)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """`uint8 [H, W, 3]` RGB -> JPEG bytes (OpenCV, 4:2:0, the same codec the transforms use)."""
    image = _check_rgb(image, "encode_jpeg")
    ok, buffer = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError(f"JPEG encoding failed for an array of shape {image.shape}")
    return buffer.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    """`uint8 [H, W, 3]` RGB -> lossless PNG bytes."""
    image = _check_rgb(image, "encode_png")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {image.shape}")
    return buffer.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Fast path for the JPEG bytes inside records (written by `encode_jpeg`): -> RGB uint8."""
    # OpenCV asserts (cv2.error) on an empty buffer instead of returning None.
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if array is None:
        raise ImageDecodeError(f"<{len(data)} bytes>", "record holds bytes that are not a JPEG")
    return array[..., ::-1].copy()
