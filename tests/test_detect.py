"""Detector backends: classical, coco_json, detectron2 (through a fake package), oracle."""

from __future__ import annotations

import json
import pickle
import sys
import types

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from preprocessing import detect
from preprocessing.detect import Detections

# --------------------------------------------------------------------------- fixtures


def two_shape_scene(height: int = 192, width: int = 256, seed: int = 0):
    """A red disc and a green rectangle on dark, noisy texture, with their true masks."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    disc = (xx - 0.3 * width) ** 2 + (yy - 0.35 * height) ** 2 < (0.16 * height) ** 2
    rect = (xx > 0.55 * width) & (xx < 0.85 * width) & (yy > 0.5 * height) & (yy < 0.85 * height)
    image[disc] = (230, 40, 40)
    image[rect] = (40, 220, 60)
    return image, np.stack([disc, rect])


@pytest.fixture(scope="module")
def scene():
    return two_shape_scene()


@pytest.fixture(scope="module")
def classical():
    return detect.make_detector("classical")


@pytest.fixture(scope="module")
def scene_detections(classical, scene):
    return classical(scene[0])


def assert_well_formed(dets: Detections, height: int, width: int) -> None:
    assert dets.masks.shape[1:] == (height, width)
    assert dets.masks.dtype == bool
    assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32
    assert dets.classes.dtype == np.int32
    assert np.all(np.diff(dets.scores) <= 0), "not sorted by descending score"
    assert np.all((dets.scores >= 0) & (dets.scores <= 1))
    assert np.all(dets.boxes[:, 0::2] >= 0) and np.all(dets.boxes[:, 0::2] <= width)
    assert np.all(dets.boxes[:, 1::2] >= 0) and np.all(dets.boxes[:, 1::2] <= height)


def assert_same(a: Detections, b: Detections) -> None:
    for field in ("boxes", "scores", "classes", "masks"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


# --------------------------------------------------------------------------- helpers


def test_boxes_from_masks_are_tight_with_exclusive_far_edges():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 4, 7] = True
    masks[1, 2:5, 3:9] = True
    boxes = detect.boxes_from_masks(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    np.testing.assert_array_equal(boxes, [[7, 4, 8, 5], [3, 2, 9, 5], [0, 0, 0, 0]])


def test_boxes_from_masks_rejects_a_single_mask():
    with pytest.raises(ValueError, match=r"\[K, H, W\]"):
        detect.boxes_from_masks(np.ones((4, 4), bool))


def test_mask_iou_of_a_pair_and_pairwise_by_broadcasting():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True
    b[2:6, 2:6] = True  # overlap 4 of union 28
    assert detect.mask_iou(a, b) == pytest.approx(4 / 28)
    assert isinstance(detect.mask_iou(a, b), float)
    empty = np.zeros((8, 8), bool)
    assert detect.mask_iou(empty, empty) == 0.0
    pairwise = detect.mask_iou(np.stack([a, b])[:, None], np.stack([a, b, empty])[None])
    np.testing.assert_allclose(pairwise, [[1, 4 / 28, 0], [4 / 28, 1, 0]])


# --------------------------------------------------------------------------- registry


def test_make_detector_builds_each_backend_by_name(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{}")
    assert set(detect.DETECTORS) == {"classical", "coco_json", "detectron2", "oracle"}
    assert isinstance(detect.make_detector("classical", max_objects=3), detect.ClassicalDetector)
    assert isinstance(detect.make_detector("coco_json", path=str(path)), detect.CocoJsonDetector)
    assert isinstance(detect.make_detector("detectron2"), detect.Detectron2Detector)
    assert isinstance(detect.make_detector("oracle"), detect.OracleDetector)


def test_make_detector_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown detector 'mask_rcnn'") as error:
        detect.make_detector("mask_rcnn")
    for name in ("classical", "coco_json", "detectron2", "oracle"):
        assert name in str(error.value)


def test_make_detector_unknown_option_lists_accepted_ones():
    with pytest.raises(ValueError, match="no option threshold") as error:
        detect.make_detector("classical", threshold=0.3)
    assert "min_score" in str(error.value) and "work_size" in str(error.value)


def test_out_of_range_options_are_refused():
    with pytest.raises(ValueError, match="min_score"):
        detect.make_detector("classical", min_score=1.5)
    with pytest.raises(ValueError, match="work_size"):
        detect.make_detector("classical", work_size=8)
    with pytest.raises(ValueError, match="proposals must be one of segments, mser"):
        detect.make_detector("classical", proposals="selective_search")


# --------------------------------------------------------------------------- classical


def test_saliency_map_is_high_on_a_distinct_object(scene):
    image, truth = scene
    saliency = detect.saliency_map(image)
    assert saliency.shape == image.shape[:2] and saliency.dtype == np.float32
    assert saliency.min() >= 0 and saliency.max() <= 1
    background = ~truth.any(axis=0)
    for mask in truth:
        assert saliency[mask].mean() > 3 * saliency[background].mean()


def test_classical_finds_both_shapes(scene, scene_detections):
    image, truth = scene
    dets = scene_detections
    assert_well_formed(dets, *image.shape[:2])
    assert np.all(dets.scores >= 0.5)
    iou = detect.mask_iou(truth[:, None], dets.masks[None])
    assert iou.max(axis=1).min() > 0.5, iou
    # Each true shape is found by a different detection, and nothing else is reported (the
    # thin rims that smoothing leaves around the shapes are not objects).
    assert len(set(iou.argmax(axis=1).tolist())) == 2
    assert len(dets) == 2
    np.testing.assert_array_equal(dets.boxes, detect.boxes_from_masks(dets.masks))
    assert np.all(dets.classes == detect.CLASSICAL_CLASSES.index("region"))


def test_classical_masks_have_the_full_image_size_when_working_smaller():
    image, truth = two_shape_scene(height=300, width=480, seed=1)
    dets = detect.make_detector("classical", work_size=128)(image)
    assert_well_formed(dets, 300, 480)
    assert len(dets) == 2
    assert detect.mask_iou(truth[:, None], dets.masks[None]).max(axis=1).min() > 0.5


def test_classical_reports_nothing_on_texture_without_objects(classical):
    noise = np.random.default_rng(3).normal(90, 20, (128, 160, 3)).clip(0, 255)
    assert len(classical(noise.astype(np.uint8))) == 0
    assert len(classical(np.full((64, 64, 3), 128, np.uint8))) == 0


def test_classical_respects_max_objects_and_min_score(scene, scene_detections):
    one = detect.make_detector("classical", max_objects=1)(scene[0])
    assert len(one) == 1
    assert_same(one, scene_detections.top(1))
    strict = detect.make_detector("classical", min_score=0.999)(scene[0])
    assert len(strict) < len(scene_detections)


def test_classical_is_deterministic(scene, scene_detections):
    import cv2
    from skimage import data

    again = detect.make_detector("classical")(scene[0])
    assert_same(scene_detections, again)
    # GrabCut (run for the face) draws from OpenCV's global RNG, whatever its state.
    detector = detect.make_detector("classical")
    first = detector(data.astronaut())
    cv2.setRNGSeed(12345)
    cv2.randu(np.zeros((4, 4)), 0, 1)
    assert_same(first, detector(data.astronaut()))


def test_classical_pickles_before_and_after_use(classical, scene, scene_detections):
    fresh = pickle.loads(pickle.dumps(detect.make_detector("classical")))
    used = pickle.loads(pickle.dumps(classical))  # its cascades are loaded by now
    assert used == classical
    assert_same(fresh(scene[0]), scene_detections)
    assert_same(used(scene[0]), scene_detections)


def test_classical_accepts_grey_and_rgba(scene, scene_detections):
    image = scene[0]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    assert_same(detect.make_detector("classical")(rgba), scene_detections)
    grey = detect.make_detector("classical")(image.mean(axis=2).astype(np.uint8))
    assert_well_formed(grey, *image.shape[:2])


def test_classical_refuses_float_images():
    with pytest.raises(ValueError, match="uint8"):
        detect.make_detector("classical")(np.zeros((32, 32, 3), np.float32))


def test_mser_proposals_find_both_shapes_and_nothing_on_texture(scene):
    image, truth = scene
    mser = detect.make_detector("classical", proposals="mser")
    dets = mser(image)
    assert_well_formed(dets, *image.shape[:2])
    iou = detect.mask_iou(truth[:, None], dets.masks[None])
    assert iou.max(axis=1).min() > 0.7, iou
    assert len(set(iou.argmax(axis=1).tolist())) == 2
    assert_same(dets, detect.make_detector("classical", proposals="mser")(image))
    noise = np.random.default_rng(3).normal(90, 20, (128, 160, 3)).clip(0, 255)
    assert len(mser(noise.astype(np.uint8))) == 0
    assert len(mser(np.full((64, 64, 3), 128, np.uint8))) == 0


def benign_copy(image: np.ndarray, seed: int) -> np.ndarray:
    """JPEG at quality 60, 15 % brighter, Gaussian noise of sigma 6: a redistributed copy."""
    import cv2

    _, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 6, decoded.shape)
    return (decoded * 1.15 + noise).clip(0, 255).astype(np.uint8)


def mask_agreement(a: Detections, b: Detections) -> float:
    """Mean over both sides of each instance's best mask IoU on the other side."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    iou = detect.mask_iou(a.masks[:, None], b.masks[None])
    return float(iou.max(axis=1).mean() + iou.max(axis=0).mean()) / 2


def test_mser_regions_keep_their_extent_under_benign_changes():
    from skimage import data

    agreement = {}
    for proposals in detect.PROPOSALS:
        detector = detect.make_detector("classical", max_objects=8, proposals=proposals)
        agreement[proposals] = [
            mask_agreement(detector(image), detector(benign_copy(image, seed)))
            for image in (data.chelsea(), data.coffee(), data.rocket())
            for seed in range(2)
        ]
    # What the hash needs of its nodes: the same objects after a benign copy. Graph segments
    # split and merge under compression and noise (0.4 to 0.6 here); stable regions do not.
    assert min(agreement["mser"]) > 0.7, agreement
    assert np.mean(agreement["mser"]) > np.mean(agreement["segments"]) + 0.2, agreement


def test_classical_finds_the_astronauts_face(classical):
    from skimage import data

    image = data.astronaut()  # 512 x 512; her face spans about x 180-280, y 70-175
    dets = classical(image)
    assert_well_formed(dets, 512, 512)
    faces = dets.classes == detect.CLASSICAL_CLASSES.index("face")
    assert faces.sum() == 1
    face = int(np.flatnonzero(faces)[0])
    assert dets.scores[face] > 0.9
    assert box_iou(dets.boxes[face], (180, 70, 280, 175)) > 0.5
    assert dets.masks[face, 120, 230]  # between eyes and mouth


# --------------------------------------------------------------------------- coco_json


def square(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's list-of-counts RLE: run lengths of the column-major pixels, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


H, W = 40, 60
MASK_A = square(H, W, 5, 20, 10, 30)
MASK_B = square(H, W, 22, 38, 35, 55)
MASK_C = square(H, W, 10, 20, 40, 50)


def results_for_one_image() -> list[dict]:
    return [
        {"bbox": [35, 22, 20, 16], "score": 0.7, "category_id": 3,
         "segmentation": uncompressed_rle(MASK_B)},
        {"bbox": [10, 5, 20, 15], "score": 0.9, "category_id": 1,
         "segmentation": compressed_rle(MASK_A)},
        {"bbox": [40, 10, 10, 10], "score": 0.6, "category_id": 18,
         "segmentation": [[40, 10, 50, 10, 50, 20, 40, 20]]},
        {"bbox": [0, 0, 5, 5], "score": 0.2, "category_id": 44,
         "segmentation": compressed_rle(square(H, W, 0, 5, 0, 5))},
    ]


@pytest.fixture
def coco_file(tmp_path):
    data = {
        "images": [
            {"id": 7, "file_name": "scenes/a.png", "height": H, "width": W},
            {"id": 8, "file_name": "scenes/empty.png", "height": H, "width": W},
            {"id": 9, "file_name": "scenes/small.png", "height": 20, "width": 30},
        ],
        "annotations": [{"image_id": 7, **r} for r in results_for_one_image()],
        "categories": [],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def mapping_file(tmp_path):
    path = tmp_path / "by_name.json"
    path.write_text(json.dumps({"photos/a.jpg": results_for_one_image(), "b.jpg": []}))
    return str(path)


def assert_decoded_one_image(dets: Detections) -> None:
    assert_well_formed(dets, H, W)
    np.testing.assert_array_equal(dets.scores, np.float32([0.9, 0.7, 0.6]))
    np.testing.assert_array_equal(dets.classes, [1, 3, 18])
    np.testing.assert_array_equal(dets.masks[0], MASK_A)  # compressed RLE
    np.testing.assert_array_equal(dets.masks[1], MASK_B)  # uncompressed RLE
    assert detect.mask_iou(dets.masks[2], MASK_C) > 0.7  # polygon, rasterised by pycocotools
    np.testing.assert_allclose(dets.boxes[:2], [[10, 5, 30, 20], [35, 22, 55, 38]])


@pytest.mark.parametrize("which", ["coco_file", "mapping_file"])
def test_coco_json_decodes_rle_and_polygons(which, request):
    path = request.getfixturevalue(which)
    name = "scenes/a.png" if which == "coco_file" else "photos/a.jpg"
    dets = detect.make_detector("coco_json", path=path)(np.zeros((H, W, 3), np.uint8), name=name)
    assert_decoded_one_image(dets)


def test_coco_json_matches_on_basename_after_exact_name(coco_file, tmp_path):
    detector = detect.make_detector("coco_json", path=coco_file, max_objects=2)
    dets = detector(np.zeros((H, W, 3), np.uint8), name="/elsewhere/a.png")
    assert len(dets) == 2 and dets.scores[0] == np.float32(0.9)

    # With two entries sharing a basename, the exact one wins and a bare basename is refused.
    path = tmp_path / "twins.json"
    path.write_text(json.dumps({"x/a.jpg": results_for_one_image()[:1], "y/a.jpg": []}))
    twins = detect.make_detector("coco_json", path=str(path))
    assert len(twins(np.zeros((H, W, 3), np.uint8), name="x/a.jpg")) == 1
    assert len(twins(np.zeros((H, W, 3), np.uint8), name="y/a.jpg")) == 0
    with pytest.raises(KeyError, match="several entries"):
        twins(np.zeros((H, W, 3), np.uint8), name="a.jpg")


def test_coco_json_image_without_annotations_is_empty(coco_file, mapping_file):
    empty = detect.make_detector("coco_json", path=coco_file)(
        np.zeros((H, W, 3), np.uint8), name="scenes/empty.png")
    assert len(empty) == 0 and empty.image_size == (H, W)
    also_empty = detect.make_detector("coco_json", path=mapping_file)(
        np.zeros((H, W, 3), np.uint8), name="b.jpg")
    assert len(also_empty) == 0


def test_coco_json_missing_name_says_which_file_and_json(coco_file):
    detector = detect.make_detector("coco_json", path=coco_file)
    with pytest.raises(KeyError) as error:
        detector(np.zeros((H, W, 3), np.uint8), name="scenes/nowhere.png")
    assert isinstance(error.value, detect.DetectionsNotFoundError)
    assert "scenes/nowhere.png" in str(error.value) and coco_file in str(error.value)


def test_coco_json_size_mismatch_is_an_error(coco_file, mapping_file):
    wrong = np.zeros((H + 1, W, 3), np.uint8)
    with pytest.raises(ValueError, match="40x60 image but this one is 41x60"):
        detect.make_detector("coco_json", path=coco_file)(wrong, name="scenes/a.png")
    # Without an images list, the RLE's own size is checked.
    with pytest.raises(ValueError, match="exact image"):
        detect.make_detector("coco_json", path=mapping_file)(wrong, name="photos/a.jpg")


def test_coco_json_needs_a_name_and_an_existing_file(coco_file, tmp_path):
    with pytest.raises(ValueError, match="name="):
        detect.make_detector("coco_json", path=coco_file)(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        detect.make_detector("coco_json", path=str(tmp_path / "missing.json"))


def test_coco_json_refuses_a_bare_results_list(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    with pytest.raises(ValueError, match="no file names"):
        detect.make_detector("coco_json", path=str(path))(np.zeros((4, 4, 3), np.uint8),
                                                          name="a.png")


def test_coco_json_pickles_without_its_index(coco_file):
    detector = detect.make_detector("coco_json", path=coco_file)
    image = np.zeros((H, W, 3), np.uint8)
    first = detector(image, name="scenes/a.png")
    state = detector.__getstate__()
    assert state["_index"] is None
    assert_same(pickle.loads(pickle.dumps(detector))(image, name="scenes/a.png"), first)


# --------------------------------------------------------------------------- detectron2


class FakeTensor:
    """What detectron2 returns: torch tensors that need .cpu() before .numpy()."""

    def __init__(self, value):
        self._value = np.asarray(value)
        self.on_cpu = False

    def cpu(self):
        moved = FakeTensor(self._value)
        moved.on_cpu = True
        return moved

    def numpy(self):
        if not self.on_cpu:
            raise TypeError("can't convert cuda tensor to numpy; use .cpu() first")
        return self._value


class FakeNode(types.SimpleNamespace):
    """Attribute bag standing in for detectron2's CfgNode."""


def install_fake_detectron2(monkeypatch, instances) -> types.SimpleNamespace:
    """Puts a minimal `detectron2` in sys.modules; returns a record of how it was used."""
    record = types.SimpleNamespace(config_files=[], predictors=[], inputs=[])

    def get_config_file(name):
        return f"/zoo/configs/{name}"

    def get_cfg():
        cfg = FakeNode(MODEL=FakeNode(ROI_HEADS=FakeNode(), WEIGHTS=""), TEST=FakeNode(),
                       INPUT=FakeNode(FORMAT="BGR"))
        cfg.merge_from_file = record.config_files.append
        return cfg

    class DefaultPredictor:
        def __init__(self, cfg):
            self.cfg = cfg
            record.predictors.append(self)

        def __call__(self, image):
            record.inputs.append(image)
            return {"instances": instances}

    package = types.ModuleType("detectron2")
    model_zoo = types.ModuleType("detectron2.model_zoo")
    model_zoo.get_config_file = get_config_file
    config = types.ModuleType("detectron2.config")
    config.get_cfg = get_cfg
    engine = types.ModuleType("detectron2.engine")
    engine.DefaultPredictor = DefaultPredictor
    package.model_zoo, package.config, package.engine = model_zoo, config, engine
    for name, module in [("detectron2", package), ("detectron2.model_zoo", model_zoo),
                         ("detectron2.config", config), ("detectron2.engine", engine)]:
        monkeypatch.setitem(sys.modules, name, module)
    return record


def fake_instances(height: int, width: int) -> types.SimpleNamespace:
    masks = np.stack([square(height, width, 1, 5, 2, 8), square(height, width, 6, 10, 1, 4),
                      square(height, width, 0, 2, 0, 2)])
    return types.SimpleNamespace(
        pred_boxes=types.SimpleNamespace(tensor=FakeTensor([[2, 1, 8, 5], [1, 6, 4, 10],
                                                            [0, 0, 2, 2]])),
        scores=FakeTensor(np.float32([0.6, 0.95, 0.3])),
        pred_classes=FakeTensor(np.int64([0, 79, 11])),
        pred_masks=FakeTensor(masks),
    )


def test_detectron2_adapter_configures_predicts_and_converts(monkeypatch, tmp_path):
    weights = tmp_path / "model_final_f10217.pkl"
    weights.write_bytes(b"weights")
    record = install_fake_detectron2(monkeypatch, fake_instances(12, 10))
    detector = detect.make_detector("detectron2", weights=str(weights), min_score=0.5,
                                    max_objects=5, device="cuda")
    image = np.zeros((12, 10, 3), np.uint8)
    image[..., 0] = 200  # red in RGB: the predictor must see it in the last channel
    dets = detector(image)

    assert record.config_files == [
        "/zoo/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"]
    cfg = record.predictors[0].cfg
    assert cfg.MODEL.WEIGHTS == str(weights)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.5
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 5
    assert cfg.MODEL.DEVICE == "cuda"
    assert record.inputs[0][0, 0].tolist() == [0, 0, 200]

    assert_well_formed(dets, 12, 10)
    np.testing.assert_array_equal(dets.scores, np.float32([0.95, 0.6]))
    np.testing.assert_array_equal(dets.classes, [90, 1])  # contiguous 79, 0 -> COCO ids
    np.testing.assert_array_equal(dets.boxes, [[1, 6, 4, 10], [2, 1, 8, 5]])
    np.testing.assert_array_equal(dets.masks[0], square(12, 10, 6, 10, 1, 4))

    detector(image)
    assert len(record.predictors) == 1, "the predictor is built once"
    clone = pickle.loads(pickle.dumps(detector))
    assert clone._predictor is None and clone == detector


def test_detectron2_missing_package_explains_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # makes the import fail
    detector = detect.make_detector("detectron2", weights="/nowhere.pkl")
    with pytest.raises(detect.DetectorUnavailableError) as error:
        detector(np.zeros((8, 8, 3), np.uint8))
    message = str(error.value)
    assert isinstance(error.value, RuntimeError)
    for needle in ("optional backend", "PyPI", "source repository", "install guide",
                   "classical", "coco_json"):
        assert needle in message, needle


@pytest.mark.parametrize("weights", [None, "/no/such/model_final_f10217.pkl"])
def test_detectron2_missing_weights_explains_where_to_get_them(monkeypatch, weights):
    install_fake_detectron2(monkeypatch, fake_instances(8, 8))
    detector = detect.make_detector("detectron2", weights=weights)
    with pytest.raises(detect.DetectorUnavailableError) as error:
        detector(np.zeros((8, 8, 3), np.uint8))
    message = str(error.value)
    for needle in ("model_final_f10217.pkl", "model zoo", "weights=PATH"):
        assert needle in message, needle


# --------------------------------------------------------------------------- oracle


def test_oracle_returns_the_ground_truth_minus_empty_masks():
    gt = np.stack([square(16, 20, 2, 6, 3, 9), np.zeros((16, 20), bool),
                   square(16, 20, 10, 16, 12, 20)])
    dets = detect.make_detector("oracle")(np.zeros((16, 20, 3), np.uint8), gt_masks=gt)
    assert_well_formed(dets, 16, 20)
    np.testing.assert_array_equal(dets.masks, gt[[0, 2]])
    np.testing.assert_array_equal(dets.boxes, [[3, 2, 9, 6], [12, 10, 20, 16]])
    np.testing.assert_array_equal(dets.scores, [1, 1])
    np.testing.assert_array_equal(dets.classes, [0, 0])


def test_oracle_needs_ground_truth_of_the_image_size():
    oracle = detect.make_detector("oracle")
    with pytest.raises(ValueError, match="only works for generated scenes"):
        oracle(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[K, 8, 8\]"):
        oracle(np.zeros((8, 8, 3), np.uint8), gt_masks=np.ones((1, 8, 9), bool))
    empty = oracle(np.zeros((8, 8, 3), np.uint8), gt_masks=np.zeros((0, 8, 8), bool))
    assert len(empty) == 0 and empty.image_size == (8, 8)


def test_every_backend_pickles(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{}")
    for name, options in [("classical", {}), ("coco_json", {"path": str(path)}),
                          ("detectron2", {"weights": "w.pkl"}), ("oracle", {})]:
        detector = detect.make_detector(name, **options)
        assert pickle.loads(pickle.dumps(detector)) == detector
