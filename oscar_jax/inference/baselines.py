"""Classical perceptual hashes, the baselines of paper section 4.3 ("Classical Methods").

Every method maps one decoded image, uint8 RGB [H, W, 3] as `preprocessing.images.decode_image`
returns it, to a {0, 1} uint8 bit vector [D]. `hash_images` packs a batch of them into uint8
[N, ceil(D / 8)] (`oscar_jax.inference.codes.pack_bits`), so the baselines go through the
same Hamming-distance evaluation as the learned model.

Methods and code lengths (the paper uses 64 bits for all of its classical methods):

* ``ahash``, ``phash``, ``dhash``, ``whash``: imagehash with ``hash_size=8``, 64 bits each.
* ``chash``: imagehash's colour hash gives ``14 * binbits`` bits, so 64 is not possible.
  ``binbits=4`` gives 56 bits, the longest code that stays within the 64-bit budget of the
  other methods (``binbits=5`` would give 70).
* ``iscc``: the ISCC Content-Code Image (ISO 24138) of iscc-core, 64 bits: the body of the
  generated ISCC unit, without its header.
* ``pdq``: Facebook's PDQ via pdqhash, all 256 of its native bits. The paper does not evaluate
  PDQ; it is included as a stronger classical reference, not as a 64-bit method.

ISCC normalisation. iscc-core hashes 1024 grey values of a normalised 32x32 image; the steps
are those of the ISCC reference SDK (iscc-sdk ``image_normalize``):

1. transpose by the EXIF orientation and 2. composite transparency on white: both already
   done by `decode_image` (with its default white background), so they are not repeated here;
3. trim a uniform border: crop to the bounding box of the pixels that differ in any channel
   from the top-left pixel (no crop when the image is uniform);
4. convert to grey with Pillow's ``convert("L")`` (ITU-R 601-2 luma);
5. resize to 32x32 with Pillow's bicubic filter and flatten row by row.

The one deviation: an image decoded with a non-white ``background`` has its transparency
filled with that colour, not with white.

At 64 bits the ISCC code is the top-left 8x8 block of the 32x32 DCT against its median, which
is what ``phash`` computes too; the two differ only through the thumbnail (border trim, bicubic
instead of Lanczos) and give identical bits on most photos without a uniform border. The paper's
Table 1 scores for pHash and ISCC are correspondingly close.

All methods are deterministic. Each one decodes nothing itself: paths and encoded bytes go
through `decode_image` first.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import imagehash
import iscc_core
import numpy as np
import pdqhash
from PIL import Image, ImageChops

from oscar_jax.inference.codes import pack_bits

HASH_SIZE = 8  # imagehash's grid size: 8 x 8 = 64 bits.
CHASH_BINBITS = 4  # 14 bins x 4 bits = 56 bits (see the module docstring).
ISCC_BITS = 64
ISCC_SIDE = 32  # iscc-core hashes a 32 x 32 grey image.
PDQ_BITS = 256


def check_image(image: np.ndarray) -> np.ndarray:
    """Returns ``image`` as an ndarray after checking that it is uint8 RGB [H, W, 3], H, W >= 1.

    Raises:
      ValueError: anything else (grey [H, W], RGBA, float, empty); the message says to decode
        the image with `preprocessing.images.decode_image`, which yields uint8 RGB.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(
            "classical baselines expect a decoded image, uint8 RGB [H, W, 3] with H, W >= 1; "
            f"got {array.dtype} {tuple(array.shape)}. Decode files and grey or RGBA images "
            "with preprocessing.images.decode_image, which returns uint8 RGB."
        )
    return array


def _to_pil(image: np.ndarray) -> Image.Image:
    """uint8 RGB [H, W, 3] -> RGB Pillow image, after `check_image`."""
    return Image.fromarray(np.ascontiguousarray(check_image(image)))


def _imagehash_bits(code: imagehash.ImageHash) -> np.ndarray:
    """An imagehash result -> {0, 1} uint8 [D], its ``.hash`` flattened row by row."""
    return np.asarray(code.hash, dtype=bool).reshape(-1).astype(np.uint8)


def ahash(image: np.ndarray) -> np.ndarray:
    """Average hash: uint8 RGB [H, W, 3] -> {0, 1} uint8 [64].

    Grey 8x8 thumbnail (Lanczos), one bit per pixel: brighter than the mean.
    """
    return _imagehash_bits(imagehash.average_hash(_to_pil(image), hash_size=HASH_SIZE))


def phash(image: np.ndarray) -> np.ndarray:
    """Perceptual hash: uint8 RGB [H, W, 3] -> {0, 1} uint8 [64].

    DCT of a grey 32x32 thumbnail; one bit per low-frequency 8x8 coefficient: above the median.
    """
    return _imagehash_bits(imagehash.phash(_to_pil(image), hash_size=HASH_SIZE))


def dhash(image: np.ndarray) -> np.ndarray:
    """Difference hash: uint8 RGB [H, W, 3] -> {0, 1} uint8 [64].

    Grey 9x8 thumbnail; one bit per horizontal neighbour pair: the right pixel is brighter.
    """
    return _imagehash_bits(imagehash.dhash(_to_pil(image), hash_size=HASH_SIZE))


def whash(image: np.ndarray) -> np.ndarray:
    """Wavelet hash: uint8 RGB [H, W, 3] -> {0, 1} uint8 [64].

    Haar wavelet of a grey power-of-two thumbnail (imagehash defaults, lowest-frequency band
    removed); one bit per 8x8 low-frequency coefficient: above the median.
    """
    return _imagehash_bits(imagehash.whash(_to_pil(image), hash_size=HASH_SIZE))


def chash(image: np.ndarray) -> np.ndarray:
    """Colour hash: uint8 RGB [H, W, 3] -> {0, 1} uint8 [14 * CHASH_BINBITS] = [56].

    Fractions of the image in 14 HSV bins (black, grey, 6 hues x 2 saturations), each
    quantised to ``CHASH_BINBITS`` bits. Computed on the full-resolution image.
    """
    return _imagehash_bits(imagehash.colorhash(_to_pil(image), binbits=CHASH_BINBITS))


def iscc_pixels(image: np.ndarray) -> np.ndarray:
    """ISCC image normalisation: uint8 RGB [H, W, 3] -> grey uint8 [1024] (32x32, row-major).

    Trims a uniform border, converts to grey and resizes to 32x32 with the bicubic filter, as
    the ISCC reference SDK does; see the module docstring for the steps and the one deviation.
    """
    pil = _to_pil(image)
    background = Image.new(pil.mode, pil.size, pil.getpixel((0, 0)))
    # Doubling the difference (saturating) keeps every non-zero difference non-zero.
    diff = ImageChops.difference(pil, background)
    box = ImageChops.add(diff, diff).getbbox()
    if box is not None and box != (0, 0) + pil.size:
        pil = pil.crop(box)
    grey = pil.convert("L").resize((ISCC_SIDE, ISCC_SIDE), Image.Resampling.BICUBIC)
    return np.asarray(grey, dtype=np.uint8).reshape(-1)


def iscc_code(image: np.ndarray) -> str:
    """The 64-bit ISCC Content-Code Image of an image, e.g. ``'ISCC:EEA...'``."""
    pixels = iscc_pixels(image).tolist()
    return iscc_core.gen_image_code_v0(pixels, bits=ISCC_BITS)["iscc"]


def iscc_code_bits(code: str) -> np.ndarray:
    """An ISCC Content-Code Image -> the {0, 1} uint8 [64] bits of its body, header removed.

    Raises:
      ValueError: ``code`` is not a 64-bit image content code (another ISCC type, or length).
    """
    main_type, sub_type, _, length, body = iscc_core.iscc_decode(code)
    is_image = main_type == iscc_core.MT.CONTENT and sub_type == iscc_core.ST_CC.IMAGE
    num_bits = iscc_core.decode_length(main_type, length) if is_image else 0
    if not is_image or num_bits != ISCC_BITS or len(body) * 8 < ISCC_BITS:
        raise ValueError(
            f"{code!r} is not a {ISCC_BITS}-bit ISCC Content-Code Image "
            f"(it reads as {iscc_core.iscc_type_id(code)}); make it with iscc_code(image)."
        )
    return np.unpackbits(np.frombuffer(body, np.uint8), count=ISCC_BITS)


def iscc(image: np.ndarray) -> np.ndarray:
    """ISCC Content-Code Image (ISO 24138): uint8 RGB [H, W, 3] -> {0, 1} uint8 [64].

    Normalised 32x32 grey image (`iscc_pixels`), DCT, one bit per low-frequency coefficient
    against the median of its 8x8 block; the bits are read back from the ISCC code's body.
    """
    return iscc_code_bits(iscc_code(image))


def pdq(image: np.ndarray) -> np.ndarray:
    """PDQ (Facebook): uint8 RGB [H, W, 3] -> {0, 1} uint8 [256], in pdqhash's bit order.

    Luma, Jarosz-filtered 64x64 thumbnail, 16x16 DCT coefficients against their median. The
    quality score pdqhash also returns is dropped.
    """
    bits, _quality = pdqhash.compute(np.ascontiguousarray(check_image(image)))
    return np.asarray(bits, dtype=np.uint8)


@dataclass(frozen=True)
class Baseline:
    """A classical hash: its name, code length, a one-line description and the function.

    ``fn`` maps uint8 RGB [H, W, 3] to {0, 1} uint8 [bits].
    """

    name: str
    bits: int
    description: str
    fn: Callable[[np.ndarray], np.ndarray]


METHODS: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("ahash", HASH_SIZE**2, "average hash (imagehash, 8x8)", ahash),
        Baseline("phash", HASH_SIZE**2, "DCT perceptual hash (imagehash, 8x8)", phash),
        Baseline("dhash", HASH_SIZE**2, "difference hash (imagehash, 8x8)", dhash),
        Baseline("whash", HASH_SIZE**2, "Haar wavelet hash (imagehash, 8x8)", whash),
        Baseline(
            "chash", 14 * CHASH_BINBITS, f"colour hash (imagehash, binbits={CHASH_BINBITS})", chash
        ),
        Baseline("iscc", ISCC_BITS, "ISCC Content-Code Image, ISO 24138 (iscc-core)", iscc),
        Baseline("pdq", PDQ_BITS, "PDQ (Facebook, pdqhash), all 256 bits", pdq),
    )
}


def get(name: str) -> Baseline:
    """The baseline called ``name``.

    Raises:
      ValueError: an unknown name; the message lists the known ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown classical baseline {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def parse_names(text: str) -> list[str]:
    """Baseline names from a comma-separated list ('' for none), as the commands take them.

    Raises:
      ValueError: unknown names; the message lists them and the known ones.
    """
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown baseline {', '.join(unknown)}; choose from "
                         f"{', '.join(METHODS)}")
    return names


# The package whose version decides each baseline's codes.
_PACKAGES = {"ahash": "imagehash", "phash": "imagehash", "dhash": "imagehash",
             "whash": "imagehash", "chash": "imagehash", "iscc": "iscc-core", "pdq": "pdqhash"}


def fingerprint(name: str) -> str:
    """The baseline and the version of the library computing it, e.g. 'phash:imagehash=4.3.2'.
    """
    get(name)
    package = _PACKAGES[name]
    return f"{name}:{package}={importlib.metadata.version(package)}"


def bits(name: str) -> int:
    """Code length in bits of the baseline ``name`` (ValueError if unknown)."""
    return get(name).bits


def hash_image(name: str, image: np.ndarray) -> np.ndarray:
    """One image uint8 RGB [H, W, 3] -> {0, 1} uint8 [bits(name)] with the baseline ``name``."""
    method = get(name)
    code = method.fn(image)
    if code.shape != (method.bits,):
        raise RuntimeError(f"{name} returned bits of shape {code.shape}, not ({method.bits},)")
    return code


def hash_images(name: str, images: Sequence[np.ndarray]) -> np.ndarray:
    """Images, each uint8 RGB [H, W, 3] (sizes may differ) -> packed codes uint8 [N, B].

    ``B = ceil(bits(name) / 8)``, packed by `oscar_jax.inference.codes.pack_bits`.

    Raises:
      ValueError: an unknown name, or an image that is not uint8 RGB [H, W, 3].
    """
    method = get(name)
    num_bytes = math.ceil(method.bits / 8)
    if len(images) == 0:
        return np.zeros((0, num_bytes), np.uint8)
    codes = np.stack([hash_image(name, image) for image in images])
    return pack_bits(codes)
