"""Classical baselines: code lengths and layout, agreement with the libraries, robustness."""

import io

import imagehash
import iscc_core
import numpy as np
import pdqhash
import pytest
from PIL import Image
from skimage import data

from oscar_jax.inference import baselines
from oscar_jax.inference.codes import pack_bits

EXPECTED_BITS = {"ahash": 64, "phash": 64, "dhash": 64, "whash": 64, "chash": 56, "iscc": 64,
                 "pdq": 256}
# Methods expected to survive mild JPEG and resizing but to separate two different photos.
# cHash only sees colour proportions, so it is checked for robustness alone.
ROBUST = ("ahash", "phash", "dhash", "whash", "iscc", "pdq")
NEAR_FRACTION = 0.10  # measured worst case: pdq, 8 / 256 bits (astronaut/chelsea, 0.75 resize).
FAR_FRACTION = 0.25  # measured closest: dhash, 25 / 64 bits (astronaut vs chelsea).


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()


def jpeg(image: np.ndarray, quality: int = 90) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def test_table_lists_the_documented_methods():
    assert set(baselines.METHODS) == set(EXPECTED_BITS)
    for name, method in baselines.METHODS.items():
        assert method.name == name
        assert baselines.bits(name) == EXPECTED_BITS[name]
        assert method.description


@pytest.mark.parametrize("name", list(EXPECTED_BITS))
def test_bits_and_packed_layout(name, astronaut, chelsea):
    num_bits = EXPECTED_BITS[name]
    code = baselines.hash_image(name, astronaut)
    assert code.shape == (num_bits,) and code.dtype == np.uint8
    assert set(np.unique(code)) <= {0, 1}
    packed = baselines.hash_images(name, [astronaut, chelsea])
    assert packed.shape == (2, -(-num_bits // 8)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed[0], pack_bits(code))
    np.testing.assert_array_equal(np.unpackbits(packed[0], count=num_bits), code)


@pytest.mark.parametrize("name", list(EXPECTED_BITS))
def test_deterministic_and_independent_of_memory_layout(name, astronaut):
    code = baselines.hash_image(name, astronaut)
    np.testing.assert_array_equal(baselines.hash_image(name, astronaut.copy()), code)
    np.testing.assert_array_equal(baselines.hash_image(name, np.asfortranarray(astronaut)), code)


@pytest.mark.parametrize("name", ROBUST)
def test_mild_edits_stay_near_and_different_photos_are_far(name, astronaut, chelsea):
    budget = NEAR_FRACTION * EXPECTED_BITS[name]
    for photo in (astronaut, chelsea):
        code = baselines.hash_image(name, photo)
        assert distance(code, baselines.hash_image(name, jpeg(photo))) <= budget
        assert distance(code, baselines.hash_image(name, resize(photo, 0.75))) <= budget
    far = distance(baselines.hash_image(name, astronaut), baselines.hash_image(name, chelsea))
    assert far >= FAR_FRACTION * EXPECTED_BITS[name]


def test_chash_is_robust_to_mild_edits(astronaut):
    code = baselines.chash(astronaut)
    assert distance(code, baselines.chash(jpeg(astronaut))) <= NEAR_FRACTION * 56
    assert distance(code, baselines.chash(resize(astronaut, 0.75))) <= NEAR_FRACTION * 56


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("ahash", lambda im: imagehash.average_hash(im, hash_size=8)),
        ("phash", lambda im: imagehash.phash(im, hash_size=8)),
        ("dhash", lambda im: imagehash.dhash(im, hash_size=8)),
        ("whash", lambda im: imagehash.whash(im, hash_size=8)),
        ("chash", lambda im: imagehash.colorhash(im, binbits=4)),
    ],
)
def test_imagehash_methods_equal_the_library(name, reference, chelsea):
    expected = reference(Image.fromarray(chelsea)).hash.flatten().astype(np.uint8)
    np.testing.assert_array_equal(baselines.hash_image(name, chelsea), expected)


def test_pdq_equals_the_library(astronaut):
    np.testing.assert_array_equal(baselines.pdq(astronaut), pdqhash.compute(astronaut)[0])


def test_iscc_code_is_a_64_bit_image_content_code(astronaut):
    code = baselines.iscc_code(astronaut)
    main_type, sub_type, version, length, body = iscc_core.iscc_decode(code)
    assert (main_type, sub_type, version) == (iscc_core.MT.CONTENT, iscc_core.ST_CC.IMAGE,
                                              iscc_core.VS.V0)
    assert iscc_core.decode_length(main_type, length) == 64 and len(body) == 8
    assert iscc_core.iscc_explain(code).startswith("CONTENT-IMAGE-V0-64-")


def test_iscc_bits_round_trip(astronaut):
    code = baselines.iscc_code(astronaut)
    bits = baselines.iscc(astronaut)
    digest = np.packbits(bits).tobytes()
    assert iscc_core.iscc_explain(code) == f"CONTENT-IMAGE-V0-64-{digest.hex()}"
    rebuilt = iscc_core.encode_component(iscc_core.MT.CONTENT, iscc_core.ST_CC.IMAGE,
                                         iscc_core.VS.V0, 64, digest)
    assert code == f"ISCC:{rebuilt}"
    pixels = baselines.iscc_pixels(astronaut).tolist()
    assert iscc_core.soft_hash_image_v0(pixels, bits=64) == digest


def test_iscc_normalisation(astronaut):
    pixels = baselines.iscc_pixels(astronaut)
    assert pixels.shape == (1024,) and pixels.dtype == np.uint8
    grey = Image.fromarray(astronaut).convert("L").resize((32, 32), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(pixels, np.asarray(grey).reshape(-1))
    # A uniform border is trimmed away before hashing; pHash has no such step.
    framed = np.pad(astronaut, ((40, 10), (25, 60), (0, 0)), constant_values=255)
    np.testing.assert_array_equal(baselines.iscc_pixels(framed), pixels)
    np.testing.assert_array_equal(baselines.iscc(framed), baselines.iscc(astronaut))
    assert distance(baselines.phash(framed), baselines.phash(astronaut)) > 0
    # A uniform image has nothing to trim and still hashes.
    assert baselines.iscc(np.full((20, 30, 3), 7, np.uint8)).shape == (64,)


def test_iscc_code_bits_refuses_other_codes():
    text_code = iscc_core.gen_text_code_v0("a text, not an image")["iscc"]
    with pytest.raises(ValueError, match="not a 64-bit ISCC Content-Code Image"):
        baselines.iscc_code_bits(text_code)


def test_unknown_name_lists_the_known_ones(astronaut):
    for call in (lambda: baselines.bits("mhash"),
                 lambda: baselines.hash_images("mhash", [astronaut])):
        with pytest.raises(ValueError, match="unknown classical baseline 'mhash'") as error:
            call()
        assert all(name in str(error.value) for name in EXPECTED_BITS)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((16, 16), np.uint8),  # grey
        np.zeros((16, 16, 4), np.uint8),  # RGBA
        np.zeros((16, 16, 3), np.float32),  # not uint8
        np.zeros((0, 16, 3), np.uint8),  # empty
    ],
    ids=["grey", "rgba", "float", "empty"],
)
@pytest.mark.parametrize("name", list(EXPECTED_BITS))
def test_bad_input_is_refused(name, image):
    with pytest.raises(ValueError, match="uint8 RGB .H, W, 3.*decode_image"):
        baselines.hash_images(name, [image])


def test_no_images_gives_an_empty_batch():
    assert baselines.hash_images("pdq", []).shape == (0, 32)
    assert baselines.hash_images("chash", []).shape == (0, 7)


def test_parse_names_keeps_order_and_refuses_unknown_names():
    assert baselines.parse_names("pdq,phash") == ["pdq", "phash"]
    assert baselines.parse_names("") == []
    with pytest.raises(ValueError, match="unknown baseline nohash, zhash; choose from ahash"):
        baselines.parse_names("zhash,pdq,nohash")
