"""Scene-graph construction and the record codec, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from preprocessing import scene_graph as sg
from preprocessing.detect import Detections

H, W = 100, 200
# Two axis-aligned rectangles in a 100 x 200 image (xyxy pixels):
# A is 40 x 40 centred at (40, 30); B is 60 x 20 centred at (70, 40). They overlap in a
# 20 x 20 square, so IoU = 400 / (1600 + 1200 - 400) = 1/6.
BOX_A = (20, 10, 60, 50)
BOX_B = (40, 30, 100, 50)


def _rect_mask(box, height=H, width=W) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _detections(boxes, scores, height=H, width=W) -> Detections:
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        classes=np.arange(len(boxes), dtype=np.int32),
        masks=np.stack([_rect_mask(b, height, width) for b in boxes])
        if boxes
        else np.zeros((0, height, width), bool),
    )


def _image(height=H, width=W, seed=0) -> np.ndarray:
    # Values 1..255 so that no image pixel is mistaken for black padding.
    return np.random.default_rng(seed).integers(1, 256, (height, width, 3), dtype=np.uint8)


def _two_rectangles(max_objects=4, crop_size=32, global_size=64, image=None) -> sg.SceneGraph:
    return sg.build_scene_graph(
        _image() if image is None else image,
        _detections([BOX_A, BOX_B], [0.9, 0.8]),
        max_objects=max_objects,
        crop_size=crop_size,
        global_size=global_size,
    )


# ----------------------------------------------------------------------------- geometry


def test_geometry_rows_by_hand():
    graph = _two_rectangles()
    expected = np.array(
        [
            [40 / 200, 30 / 100, 40 / 200, 40 / 100, 1600 / 20000],  # A
            [70 / 200, 40 / 100, 60 / 200, 20 / 100, 1200 / 20000],  # B
            [0.5, 0.5, 1.0, 1.0, 1.0],  # background: A and B leave the corners uncovered
        ],
        np.float32,
    )
    np.testing.assert_allclose(graph.geometry[:3], expected, rtol=1e-6)
    np.testing.assert_array_equal(graph.boxes[:3], [BOX_A, BOX_B, (0, 0, 200, 100)])


def test_geometry_features_uses_box_area_not_centre_product():
    # Centre (150, 75), size 100 x 50 in a 100 x 200 image: area ratio 5000 / 20000.
    geometry = sg.geometry_features(np.array([[100, 50, 200, 100]]), height=100, width=200)
    np.testing.assert_allclose(geometry, [[0.75, 0.75, 0.5, 0.5, 0.25]], rtol=1e-6)
    assert geometry.dtype == np.float32


# ----------------------------------------------------------------------------- relations


def test_relations_between_the_two_rectangles_by_hand():
    r = _two_rectangles().relations
    # i = A, j = B: dx = 30, dy = 10, sqrt(A_A) = 40, diagonal = sqrt(50000).
    np.testing.assert_allclose(
        r[0, 1],
        [0.75, 0.25, 0.14142136, 1.5, 0.5, 0.32175055, 1 / 6, 0.8660254],
        rtol=1e-6,
    )
    # i = B, j = A: dx = -30, dy = -10, sqrt(A_B) = sqrt(1200).
    np.testing.assert_allclose(
        r[1, 0],
        [-0.8660254, -0.28867513, 0.14142136, 0.6666667, 2.0, -2.8198421, 1 / 6, 1.1547005],
        rtol=1e-6,
    )


def test_relations_with_the_background_by_hand():
    r = _two_rectangles().relations
    # i = A, j = background (box = whole image, centre (100, 50)): dx = 60, dy = 20.
    np.testing.assert_allclose(
        r[0, 2], [1.5, 0.5, 0.28284271, 5.0, 2.5, 0.32175055, 0.0, 3.5355339], rtol=1e-6
    )
    # i = background, j = A: sqrt(A_bg) = sqrt(20000).
    np.testing.assert_allclose(
        r[2, 0],
        [-0.42426407, -0.14142136, 0.28284271, 0.2, 0.4, -2.8198421, 0.0, 0.28284271],
        rtol=1e-6,
    )


def test_relation_diagonal_is_identity_relation():
    r = _two_rectangles().relations
    for i in range(3):
        np.testing.assert_allclose(r[i, i], [0, 0, 0, 1, 1, 0, 1, 1], atol=1e-7)


def test_mask_iou_of_offset_squares_is_one_seventh():
    boxes = np.array([[0, 0, 40, 40], [20, 20, 60, 60], [70, 70, 90, 90]], np.float32)
    masks = np.stack([_rect_mask(b, 100, 100) for b in boxes.astype(int)])
    r = sg.relation_features(boxes, masks, 100, 100)
    assert r.shape == (3, 3, 8) and r.dtype == np.float32
    assert r[0, 1, 6] == pytest.approx(1 / 7, rel=1e-6)
    assert r[1, 0, 6] == pytest.approx(1 / 7, rel=1e-6)
    assert r[0, 2, 6] == 0.0 and r[2, 1, 6] == 0.0


def test_mask_iou_is_exact_across_pixel_blocks(monkeypatch):
    # Blocks of 7 pixels split every mask row; the counts must still add up exactly.
    monkeypatch.setattr(sg, "_IOU_BLOCK_PIXELS", 7)
    masks = np.stack([_rect_mask((0, 0, 40, 40), 100, 100), _rect_mask((20, 20, 60, 60), 100, 100)])
    assert sg.mask_iou(masks)[0, 1] == pytest.approx(1 / 7, rel=1e-6)


def test_angle_is_defined_where_dx_is_zero():
    boxes = np.array([[0, 0, 10, 10], [0, 20, 10, 30]], np.float32)
    masks = np.stack([_rect_mask(b, 40, 40) for b in boxes.astype(int)])
    r = sg.relation_features(boxes, masks, 40, 40)
    assert r[0, 1, 5] == pytest.approx(math.pi / 2)
    assert r[1, 0, 5] == pytest.approx(-math.pi / 2)
    assert r[0, 1, 1] == pytest.approx(2.0)  # dy = 20 over sqrt(100)


def test_degenerate_boxes_are_clipped_to_one_pixel():
    boxes = np.array([[10, 10, 10, 10], [0, 0, 4, 2]], np.float32)
    masks = np.zeros((2, 20, 20), bool)
    r = sg.relation_features(boxes, masks, 20, 20)
    assert np.isfinite(r).all()
    # i = the zero-size box (treated as 1 x 1, centre (10, 10)), j = the 4 x 2 box at (2, 1).
    np.testing.assert_allclose(r[0, 1, [0, 1, 3, 4, 7]], [-8, -9, 4, 2, math.sqrt(8)], rtol=1e-6)
    assert r[0, 0, 6] == 0.0  # IoU of an empty mask with itself


# ----------------------------------------------------------------------------- shape


def test_hu_moments_of_a_filled_square():
    square = _rect_mask((50, 20, 150, 120), 200, 300)
    hu = sg.hu_features(square)
    # phi1 = 1/6 for a square -> -log10(1/6); every other invariant vanishes by symmetry.
    np.testing.assert_allclose(hu, [0.7782, 0, 0, 0, 0, 0, 0], atol=1e-3)
    assert (hu[1:] == 0).all()
    assert hu.shape == (7,) and hu.dtype == np.float32


def test_hu_moments_of_a_two_to_one_rectangle():
    # phi1 = (a^2 + b^2) / (12 a b) = 5/24, phi2 = ((a^2 - b^2) / (12 a b))^2 = 1/64.
    hu = sg.hu_features(_rect_mask((0, 0, 200, 100), 100, 200))
    np.testing.assert_allclose(hu[:2], [0.6812, 1.8062], atol=1e-3)


def test_hu_moments_of_a_disc():
    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 <= 150**2
    # phi1 = 1 / (2 pi) for a disc.
    assert sg.hu_features(disc)[0] == pytest.approx(0.7982, abs=1e-3)


def test_hu_log_scaling_keeps_the_sign_of_the_skew_invariant():
    # A mirror image flips the sign of phi7 and leaves phi1..phi6 unchanged.
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:20] = True
    mask[10:20, 20:45] = True
    mask[30:35, 20:30] = True
    hu, mirrored = sg.hu_features(mask), sg.hu_features(mask[:, ::-1])
    assert hu[6] != 0
    assert mirrored[6] == pytest.approx(-hu[6], rel=1e-4)
    np.testing.assert_allclose(mirrored[:6], hu[:6], rtol=1e-4)


def test_hu_moments_of_an_empty_mask_are_zero():
    np.testing.assert_array_equal(sg.hu_features(np.zeros((10, 10), bool)), np.zeros(7))


def test_node_shape_is_hu_of_the_node_mask():
    graph = _two_rectangles()
    union = _rect_mask(BOX_A) | _rect_mask(BOX_B)
    np.testing.assert_array_equal(graph.shape[0], sg.hu_features(_rect_mask(BOX_A)))
    np.testing.assert_array_equal(graph.shape[2], sg.hu_features(~union))
    assert not np.array_equal(graph.shape[0], graph.shape[2])


# ----------------------------------------------------------------------------- nodes


def test_background_node_is_the_image_minus_the_objects():
    image = _image()
    # Crop size 200 = the image's longer side: the background crop is the image unscaled,
    # letterboxed into rows 50..150.
    graph = _two_rectangles(crop_size=200, image=image)
    crop = graph.crops[2]
    union = _rect_mask(BOX_A) | _rect_mask(BOX_B)
    content = crop[50:150]
    np.testing.assert_array_equal(content[union], 0)
    np.testing.assert_array_equal(content[~union], image[~union])
    assert (crop[:50] == 0).all() and (crop[150:] == 0).all()


def test_background_box_is_the_bounding_box_of_what_objects_leave():
    left_half = (0, 0, 100, 100)
    graph = sg.build_scene_graph(
        _image(), _detections([left_half], [0.9]), max_objects=2, crop_size=16, global_size=16
    )
    np.testing.assert_array_equal(graph.boxes[1], [100, 0, 200, 100])
    np.testing.assert_allclose(graph.geometry[1], [0.75, 0.5, 0.5, 1.0, 0.5], rtol=1e-6)
    # Object and background are disjoint and side by side: IoU 0, angle 0.
    assert graph.relations[0, 1, 6] == 0.0 and graph.relations[0, 1, 5] == 0.0


def test_background_fully_covered_falls_back_to_the_whole_image():
    everything = (0, 0, 200, 100)
    graph = sg.build_scene_graph(
        _image(), _detections([everything], [0.9]), max_objects=2, crop_size=16, global_size=16
    )
    assert graph.node_mask.tolist() == [True, True, False]
    np.testing.assert_array_equal(graph.boxes[1], [0, 0, 200, 100])
    np.testing.assert_array_equal(graph.shape[1], np.zeros(7))
    assert (graph.crops[1] == 0).all()
    assert graph.relations[1, 1, 6] == 0.0  # empty mask: no overlap even with itself
    assert graph.relations[0, 0, 6] == 1.0


def test_padding_is_zero_and_masked():
    graph = _two_rectangles(max_objects=4)
    assert graph.num_objects == 2 and graph.num_nodes == 3
    assert graph.node_mask.tolist() == [True, True, True, False, False]
    assert graph.crops.shape == (5, 32, 32, 3) and graph.crops.dtype == np.uint8
    assert graph.geometry.shape == (5, 5) and graph.shape.shape == (5, 7)
    assert graph.relations.shape == (5, 5, 8) and graph.boxes.shape == (5, 4)
    for field in (graph.crops, graph.geometry, graph.shape, graph.boxes):
        assert not field[3:].any()
    assert not graph.relations[3:].any() and not graph.relations[:, 3:].any()
    # Every real node has a non-zero crop and non-zero relations to itself.
    assert all(graph.crops[i].any() for i in range(3))
    assert all(graph.relations[i, i].any() for i in range(3))


def test_no_detection_gives_only_the_background_node():
    image = _image()
    graph = sg.build_scene_graph(
        image, Detections.empty(H, W), max_objects=3, crop_size=24, global_size=40
    )
    assert graph.num_objects == 0
    assert graph.node_mask.tolist() == [True, False, False, False]
    np.testing.assert_array_equal(graph.boxes[0], [0, 0, 200, 100])
    np.testing.assert_allclose(graph.geometry[0], [0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(graph.relations[0, 0], [0, 0, 0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(graph.crops[0], sg.letterbox(image, 24))
    assert not graph.relations[1:].any() and not graph.geometry[1:].any()


def test_more_detections_than_slots_keeps_the_top_scoring_ones():
    boxes = [(0, 0, 20, 20), (30, 0, 50, 20), (60, 0, 80, 20), (90, 0, 110, 20)]
    graph = sg.build_scene_graph(
        _image(),
        _detections(boxes, [0.2, 0.9, 0.5, 0.7]),
        max_objects=2,
        crop_size=16,
        global_size=16,
    )
    assert graph.num_objects == 2 and graph.node_mask.all()
    np.testing.assert_array_equal(graph.boxes[:2], [boxes[1], boxes[3]])
    # Dropped detections belong to the background: its box starts at x = 0, not x = 30.
    np.testing.assert_array_equal(graph.boxes[2], [0, 0, 200, 100])
    assert graph.shape[2].tolist() == sg.hu_features(
        ~(_rect_mask(boxes[1]) | _rect_mask(boxes[3]))
    ).tolist()


def test_min_score_drops_weak_detections():
    graph = sg.build_scene_graph(
        _image(),
        _detections([BOX_A, BOX_B], [0.9, 0.4]),
        max_objects=3,
        crop_size=16,
        global_size=16,
        min_score=0.5,
    )
    assert graph.num_objects == 1
    assert graph.node_mask.tolist() == [True, True, False, False]


def test_mismatched_mask_size_is_refused():
    with pytest.raises(ValueError, match="run the detector on this exact image"):
        sg.build_scene_graph(
            _image(50, 50),
            _detections([BOX_A], [0.9]),
            max_objects=2,
            crop_size=16,
            global_size=16,
        )


# ----------------------------------------------------------------------------- crops


def test_pixel_box_rounds_outward_and_clips():
    assert sg.pixel_box(np.array([10.6, 5.6, 29.4, 64.2]), 100, 200) == (10, 5, 30, 65)
    assert sg.pixel_box(np.array([-3, -2, 250, 120]), 100, 200) == (0, 0, 200, 100)
    assert sg.pixel_box(np.array([50, 50, 50, 50]), 100, 200) == (50, 50, 51, 51)
    assert sg.pixel_box(np.array([200, 100, 200, 100]), 100, 200) == (199, 99, 200, 100)


def test_tall_crop_keeps_aspect_with_bars_left_and_right():
    image = np.zeros((100, 200, 3), np.uint8)
    image[5:65, 10:30] = 200  # a 20 x 60 box, fractional edges rounded outward below
    crop = sg.crop_box(image, np.array([10.6, 5.6, 29.4, 64.2]), 30)
    # 20 x 60 -> 10 x 30, centred: columns 10..20 hold the box, the rest is black.
    assert (crop[:, 10:20] == 200).all()
    assert (crop[:, :10] == 0).all() and (crop[:, 20:] == 0).all()


def test_wide_crop_keeps_aspect_with_bars_top_and_bottom():
    image = np.full((100, 200, 3), 7, np.uint8)
    image[20:40, 0:60] = (10, 20, 30)
    crop = sg.crop_box(image, np.array([0, 20, 60, 40]), 30)
    assert (crop[10:20] == (10, 20, 30)).all()
    assert (crop[:10] == 0).all() and (crop[20:] == 0).all()


def test_object_crop_shows_the_box_region_of_the_image():
    image = _image()
    graph = _two_rectangles(crop_size=60, image=image)
    # Box B is 60 x 20: unscaled at crop size 60, centred in rows 20..40.
    np.testing.assert_array_equal(graph.crops[1][20:40], image[30:50, 40:100])


# ----------------------------------------------------------------------------- letterbox


def test_letterbox_centres_the_scaled_image():
    image = np.full((100, 200, 3), 90, np.uint8)
    out = sg.letterbox(image, 50)
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    # 100 x 200 -> 25 x 50 placed at rows 12..37.
    assert (out[12:37] == 90).all()
    assert (out[:12] == 0).all() and (out[37:] == 0).all()


def test_letterbox_shrinks_by_area_averaging():
    stripes = np.zeros((8, 16, 3), np.uint8)
    stripes[:, ::4] = 255  # one bright column in four: area mean 63.75, point samples 0
    out = sg.letterbox(stripes, 4)
    assert (out[1:3] == 64).all()
    assert (out[0] == 0).all() and (out[3] == 0).all()


def test_letterbox_grows_bilinearly():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 255
    row = sg.letterbox(image, 8)[4, :, 0]
    assert ((row > 0) & (row < 255)).any()  # nearest-style growth would show only 0 and 255
    assert row[0] == 0 and row[-1] == 255


def test_global_view_is_the_letterboxed_image():
    image = _image()
    graph = _two_rectangles(global_size=64, image=image)
    np.testing.assert_array_equal(graph.image, sg.letterbox(image, 64))
    assert (graph.image[:16] == 0).all() and graph.image[16:48].all()


# ----------------------------------------------------------------------------- records


class _TinyRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Two scene-graph records, written as array_record for the round trip."""

    VERSION = tfds.core.Version("1.0.0")
    ENCODING = "raw"
    GRAPHS: tuple[sg.SceneGraph, ...] = ()

    def _info(self) -> tfds.core.DatasetInfo:
        features = sg.record_features(
            max_objects=4, crop_size=32, global_size=64, encoding=self.ENCODING
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, graph in enumerate(self.GRAPHS):
            key = f"{7 + i}/{i}/3"
            yield key, sg.encode_record(
                graph, key=key, identity=7 + i, variant=i, view=3,
                transforms=f"jpeg(quality={60 + i})", encoding=self.ENCODING,
            )


def _smooth_image() -> np.ndarray:
    """Gradients with sharp rectangle edges: what JPEG handles well, so decoding is close."""
    yy, xx = np.mgrid[:H, :W]
    image = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (H + W)], axis=-1)
    image[10:50, 20:60] = (250, 40, 40)
    return image.astype(np.uint8)


def _graphs() -> tuple[sg.SceneGraph, ...]:
    no_objects = sg.build_scene_graph(
        _smooth_image()[::-1], Detections.empty(H, W), max_objects=4, crop_size=32,
        global_size=64,
    )
    return (_two_rectangles(image=_smooth_image()), no_objects)


def _assert_same_graph(record: dict, graph: sg.SceneGraph, exact: bool) -> None:
    np.testing.assert_array_equal(record["node_mask"], graph.node_mask)
    np.testing.assert_array_equal(record["geometry"], graph.geometry)
    np.testing.assert_array_equal(record["shape"], graph.shape)
    np.testing.assert_array_equal(record["relations"], graph.relations)
    assert record["image"].shape == graph.image.shape and record["image"].dtype == np.uint8
    assert record["crops"].shape == graph.crops.shape and record["crops"].dtype == np.uint8
    assert not record["crops"][~graph.node_mask].any()
    if exact:
        np.testing.assert_array_equal(record["image"], graph.image)
        np.testing.assert_array_equal(record["crops"], graph.crops)
    else:
        pairs = zip(record["crops"][graph.node_mask], graph.crops[graph.node_mask], strict=True)
        for got, want in [(record["image"], graph.image), *pairs]:
            error = np.abs(got.astype(np.int16) - want.astype(np.int16))
            assert error.mean() < 5  # JPEG 4:2:0 blurs sharp edges; another crop gives > 40


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_record_round_trip_through_array_record(tmp_path, encoding):
    graphs = _graphs()
    builder_class = type(
        f"TinyRecords{encoding.title()}",
        (_TinyRecords,),
        {"ENCODING": encoding, "GRAPHS": graphs},
    )
    builder = builder_class(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    source = builder.as_data_source("train")
    assert len(source) == 2
    records = sorted((sg.decode_record(source[i]) for i in range(2)), key=lambda r: r["key"])
    for i, (record, graph) in enumerate(zip(records, graphs, strict=True)):
        assert record["key"] == f"{7 + i}/{i}/3" and isinstance(record["key"], str)
        assert record["transforms"] == f"jpeg(quality={60 + i})"
        assert (record["identity"], record["variant"], record["view"]) == (7 + i, i, 3)
        assert record["identity"].dtype == np.int64 and record["view"].dtype == np.int32
        _assert_same_graph(record, graph, exact=encoding == "raw")


def test_jpeg_record_holds_one_jpeg_per_real_node_and_empty_padding():
    graph = _two_rectangles(max_objects=4, image=_smooth_image())
    example = sg.encode_record(
        graph, key="1/0/0", identity=1, variant=0, view=0, transforms="", encoding="jpeg"
    )
    assert isinstance(example["image"], bytes) and example["image"][:2] == b"\xff\xd8"
    crops = example["crops"]
    assert crops.shape == (5,) and crops.dtype == object
    assert all(c[:2] == b"\xff\xd8" for c in crops[:3]) and list(crops[3:]) == [b"", b""]
    features = sg.record_features(max_objects=4, crop_size=32, global_size=64, encoding="jpeg")
    encoded = features.encode_example(example)  # shapes and dtypes match the features
    _assert_same_graph(sg.decode_record(encoded), graph, exact=False)


def test_raw_record_decodes_exactly_without_serialising():
    graph = _two_rectangles(max_objects=4)
    example = sg.encode_record(
        graph, key="1/0/0", identity=1, variant=0, view=0, transforms="", encoding="raw"
    )
    _assert_same_graph(sg.decode_record(example), graph, exact=True)


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="use one of"):
        sg.record_features(max_objects=1, crop_size=8, global_size=8, encoding="png")
