"""YOLOv5-face detectors: edge cases, checkpoint safety, ONNX parity, golden counts.

Real weights and photos are read in place from ``../shared`` (or the folders named in
``FACEREC_WEIGHTS``). Tests that need them fail when they are absent, so a green run
means the real model was exercised.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import types
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerec.detect import create_detector, detector_registry
from facerec.detect import yolov5_face as y5
from facerec.errors import CheckpointError, ConfigError, WeightsChecksumError, WeightsNotFoundError
from facerec.imageio import read_image
from facerec.types import Detections
from facerec.weights import PROJECT_ROOT

# ---- fixtures and helpers (simple on purpose; shared ones may move to conftest.py) ----

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
PT_NAME = "yolov5n-0.5-face.pt"


def _models_dir() -> Path:
    """The first folder holding the real checkpoint (``../shared/models`` when none does)."""
    candidates = [Path(p) for p in os.environ.get("FACEREC_WEIGHTS", "").split(os.pathsep) if p.strip()]
    candidates.append(SHARED / "models")
    return next((d for d in candidates if (d / PT_NAME).is_file()), SHARED / "models")


MODELS = _models_dir()


def photo(rel: str) -> np.ndarray:
    return read_image(DATA / rel)


SINGLE_FACE = [
    "identities/face_recognition_examples/obama/obama.jpg",
    "identities/face_recognition_examples/biden/biden.jpg",
    "identities/face_recognition_examples/kit_harington/john1.jpeg",
    "identities/facenet_pytorch_test_images/angelina_jolie/1.jpg",
    "detection/skimage_data/astronaut.png",
]
PARITY_PHOTOS = [
    "detection/compreface_samples/015_6.jpg",
    "identities/face_recognition_examples/_multi/obama_and_biden.jpg",
    "detection/skimage_data/astronaut.png",
    "detection/compreface_samples/016_8.jpg",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def torch_det() -> y5.YoloV5FaceDetector:
    # fp32: this compares against the reference export (precision auto is bf16 on AVX512-BF16/AMX)
    return create_detector("yolov5n-0.5-face", weights_dir=MODELS, precision="fp32")


@pytest.fixture(scope="module")
def onnx_det() -> y5.YoloV5FaceDetector:
    return create_detector("yolov5n-0.5-face", weights_dir=MODELS, backend="onnx")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


# Upstream pickles the whole model with classes from its own ``models`` package. To write
# such a file without upstream's code, our modules are re-labelled with those class paths
# (fake modules in sys.modules for the duration of one test) and saved with torch.save.
_UPSTREAM_NAMES = {
    y5.YoloV5Face: ("models.yolo", "Model"), y5.Detect: ("models.yolo", "Detect"),
    **{cls: ("models.common", cls.__name__) for cls in
       (y5.Conv, y5.StemBlock, y5.ShuffleV2Block, y5.C3, y5.Bottleneck, y5.SPP, y5.SPPF, y5.Focus, y5.Concat)},
}


def save_upstream_layout(model: y5.YoloV5Face, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write ``model`` like upstream's checkpoints: fp16, the whole module pickled."""
    fake: dict[str, types.ModuleType] = {"models": types.ModuleType("models")}
    relabelled: dict[type, type] = {}
    for ours, (mod, name) in _UPSTREAM_NAMES.items():
        fake.setdefault(mod, types.ModuleType(mod))
        cls = type(name, (ours,), {"__module__": mod, "__qualname__": name})
        setattr(fake[mod], name, cls)
        relabelled[ours] = cls
    for name, mod in fake.items():
        monkeypatch.setitem(sys.modules, name, mod)
    for module in model.modules():
        if type(module) in relabelled:
            module.__class__ = relabelled[type(module)]
    torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "optimizer": None}, path)


# ---- edge cases ----------------------------------------------------------------------


@pytest.mark.parametrize("fill", [0, 114, 255])
def test_blank_image_gives_empty_detections(torch_det, fill):
    det = torch_det(np.full((480, 640, 3), fill, np.uint8))
    assert isinstance(det, Detections) and len(det) == 0
    assert det.xyxy.shape == (0, 4) and det.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 50, 3), (1, 1, 3), (10, 10, 3), (3, 500, 3)])
def test_tiny_and_degenerate_images(torch_det, onnx_det, shape):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    for det in (torch_det(img), onnx_det(img)):
        assert isinstance(det, Detections)
        if len(det):
            assert (det.xyxy[:, 2] <= shape[1]).all() and (det.xyxy[:, 3] <= shape[0]).all()


def test_grey_and_bgra_inputs(torch_det):
    img = photo(SINGLE_FACE[0])
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert len(torch_det(grey)) == 1
    assert len(torch_det(grey[..., None])) == 1
    assert len(torch_det(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))) == 1
    rgba = cv2.imread(str(DATA / "identities/face_recognition_examples/obama/obama_32bit_rgba.png"),
                      cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4 and len(torch_det(rgba)) == 1


def test_very_wide_image(torch_det):
    face = photo("identities/face_recognition_examples/biden/biden.jpg")  # 970 x 2204, portrait
    wide = cv2.copyMakeBorder(face, 0, 0, 3000, 3000, cv2.BORDER_CONSTANT, value=(200, 200, 200))
    blob, _ = torch_det.preprocess(wide)
    assert blob.shape == (1, 3, 224, 640)  # long side 640, short side padded to a multiple of 32
    det = torch_det(wide)
    assert len(det) == 1
    x1, y1, x2, y2 = det.xyxy[0]
    assert 3000 <= x1 < x2 <= 3970 and 0 <= y1 < y2 <= wide.shape[0]
    repeated = np.hstack([face] * 4)
    assert len(torch_det(repeated)) == 4


def test_bad_inputs_and_settings(torch_det):
    with pytest.raises(ValueError, match="uint8"):
        torch_det(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        torch_det(np.zeros((32, 32, 2), np.uint8))
    for bad in ({"input_size": 300}, {"conf_thres": 0}, {"iou_thres": 1.5}, {"backend": "tf"},
                {"max_faces": 0}, {"min_face": -1}):
        with pytest.raises(ConfigError):
            create_detector("yolov5n-0.5-face", weights_dir=MODELS, **bad)


# ---- checkpoints: safety and strict loading ---------------------------------------


def test_foreign_class_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"(posix|nt|os)\.system"):
        y5.load_yolov5_face(path)
    assert not marker.exists()


def test_unlisted_class_in_upstream_package_is_refused(tmp_path, monkeypatch):
    mod = types.ModuleType("models.common")

    class Evil:
        pass

    Evil.__module__, Evil.__qualname__ = "models.common", "Evil"
    mod.Evil = Evil
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.common", mod)
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"models\.common\.Evil"):
        y5.read_checkpoint(path)


def test_not_a_torch_zip_is_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    plain.write_bytes(b"\x80\x02}q\x00.")  # a plain pickle, as torch < 1.6 would start
    with pytest.raises(CheckpointError, match="not a PyTorch zip checkpoint"):
        y5.read_checkpoint(plain)
    truncated = tmp_path / PT_NAME
    truncated.write_bytes((MODELS / PT_NAME).read_bytes()[:200_000])
    with pytest.raises(CheckpointError):
        y5.read_checkpoint(truncated)


def test_wrong_key_set_names_the_keys_and_file(tmp_path):
    ckpt = y5.read_checkpoint(MODELS / PT_NAME)
    state = dict(ckpt.state_dict)
    state.pop("model.21.m.0.bias")
    state["model.99.extra.weight"] = torch.zeros(3)
    path = tmp_path / "wrong_keys.pt"
    torch.save({"model": state, "yaml": ckpt.table}, path)
    with pytest.raises(CheckpointError) as err:
        y5.load_yolov5_face(path)
    msg = str(err.value)
    assert "model.21.m.0.bias" in msg and "model.99.extra.weight" in msg and "wrong_keys.pt" in msg


def test_wrong_shape_is_reported(tmp_path):
    ckpt = y5.read_checkpoint(MODELS / PT_NAME)
    state = dict(ckpt.state_dict)
    state["model.21.m.0.bias"] = torch.zeros(47)
    path = tmp_path / "wrong_shape.pt"
    torch.save({"model": state, "yaml": ckpt.table}, path)
    with pytest.raises(CheckpointError, match=r"model\.21\.m\.0\.bias \(47,\) vs \(48,\)"):
        y5.load_yolov5_face(path)


def test_checksum_mismatch(tmp_path):
    bad = tmp_path / PT_NAME
    shutil.copy(MODELS / PT_NAME, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256"):
        create_detector("yolov5n-0.5-face", weights=bad)


def test_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_detector("yolov5n-0.5-face", weights=tmp_path / PT_NAME)
    monkeypatch.delenv("FACEREC_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    if not (PROJECT_ROOT / "weights" / PT_NAME).exists():
        with pytest.raises(WeightsNotFoundError, match="Looked in"):
            create_detector("yolov5n-0.5-face", weights_dir=tmp_path)


def test_upstream_checkpoint_contents():
    ckpt = y5.read_checkpoint(MODELS / PT_NAME)
    assert ckpt.table == y5.MODEL_TABLES["yolov5n-0.5-face"]()  # our table equals the stored one
    assert ckpt.names == ["face"]
    assert len(ckpt.state_dict) == 500
    assert ckpt.state_dict["model.0.stem_1.conv.weight"].dtype == torch.float16
    acts = {m.upstream for m in ckpt.modules.values() if "activation" in m.upstream}
    assert acts == {"torch.nn.modules.activation.SiLU"}
    model = y5.load_yolov5_face(MODELS / PT_NAME)
    assert next(model.parameters()).dtype == torch.float32
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert sum(p.numel() for p in model.parameters()) == 447_456


# ---- parity with upstream's ONNX export ----------------------------------------------


@pytest.mark.parametrize("rel", PARITY_PHOTOS)
def test_torch_matches_onnx(torch_det, onnx_det, rel):
    img = photo(rel)
    blob, box = y5.letterbox(img, (640, 640))
    heads_t, heads_o = torch_det.raw(blob), onnx_det.raw(blob)  # torch runs BN folded into convs
    with torch.inference_mode():
        heads_plain = [h.numpy() for h in torch_det.model(torch.from_numpy(blob))]  # as loaded, unfolded
    diff = max(float(np.abs(a - b).max()) for a, b in zip(heads_t, heads_o))
    diff_plain = max(float(np.abs(a - b).max()) for a, b in zip(heads_plain, heads_o))
    print(f"{rel}: max |torch - onnx| over raw heads = {diff_plain:.2e} as loaded, {diff:.2e} folded")
    assert [h.shape for h in heads_t] == [(1, 3, 80, 80, 16), (1, 3, 40, 40, 16), (1, 3, 20, 20, 16)]
    assert diff < 1e-3 and diff_plain < 1e-3
    common = dict(conf_thres=0.5, iou_thres=0.45)
    dt = y5.postprocess([h[0] for h in heads_t], box, torch_det.runner.anchors_px, (8, 16, 32), **common)
    do = y5.postprocess([h[0] for h in heads_o], box, onnx_det.runner.anchors_px, (8, 16, 32), **common)
    assert len(dt) == len(do) > 0
    iou = iou_matrix(dt.xyxy, do.xyxy)
    match = iou.argmax(1)
    lm = float(np.abs(dt.landmarks - do.landmarks[match]).max())
    print(f"{rel}: {len(dt)} faces, min IoU {iou.max(1).min():.6f}, max landmark diff {lm:.2e} px")
    assert iou.max(1).min() > 0.999 and lm < 0.1  # measured: IoU > 0.99999, landmarks within 3e-4 px


# ---- golden results on real photos -----------------------------------------------------


@pytest.mark.parametrize("rel", SINGLE_FACE)
def test_single_face_photo(torch_det, rel):
    det = torch_det(photo(rel))
    assert len(det) == 1 and det.score[0] > 0.7
    (x1, y1, x2, y2), lm = det.xyxy[0], det.landmarks[0]
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() and (lm[:, 1] < y2).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = lm
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # image-left first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_group_photo_finds_the_annotated_faces(torch_det):
    gt = defaultdict(list)
    with open(DATA / "detection/compreface_samples/gt_faces.csv") as f:
        for row in csv.DictReader(f):
            if row["nose_x"]:
                gt[row["file"]].append((float(row["nose_x"]), float(row["nose_y"])))
    for name in ("015_6.jpg", "016_8.jpg", "012_4.jpg"):
        det = torch_det(photo(f"detection/compreface_samples/{name}"))
        noses = np.array(gt[name])
        assert len(det) == len(noses), name
        # every annotated nose tip lies in exactly one box, near that face's nose landmark
        inside = ((noses[:, None, 0] >= det.xyxy[None, :, 0]) & (noses[:, None, 0] <= det.xyxy[None, :, 2])
                  & (noses[:, None, 1] >= det.xyxy[None, :, 1]) & (noses[:, None, 1] <= det.xyxy[None, :, 3]))
        assert (inside.sum(1) == 1).all(), name
        width = det.xyxy[inside.argmax(1), 2] - det.xyxy[inside.argmax(1), 0]
        err = np.linalg.norm(det.landmarks[inside.argmax(1), 2] - noses, axis=1)
        assert (err < 0.25 * width).all(), (name, err / width)
    assert len(torch_det(photo("detection/compreface_samples/017_0.jpg"))) == 0


def test_dlib_faces_recall(torch_det):
    gt = defaultdict(list)
    with open(DATA / "detection/dlib_faces/gt_boxes.csv") as f:
        for row in csv.DictReader(f):
            x, y, w, h = (float(row[k]) for k in "xywh")
            gt[row["file"]].append([x, y, x + w, y + h])
    found = total = 0
    for name, boxes in gt.items():
        det = torch_det(photo(f"detection/dlib_faces/{name}"))
        boxes = np.array(boxes)
        total += len(boxes)
        if len(det):
            found += int((iou_matrix(boxes, det.xyxy).max(1) >= 0.5).sum())
    print(f"dlib_faces recall at IoU 0.5: {found}/{total}")
    assert total == 43 and found >= 41  # measured 42/43 at input 640, 43/43 at 320


def test_no_human_faces(torch_det):
    assert len(torch_det(photo("detection/unannotated/dlib_dogs_no_human_faces.jpg"))) <= 2


def test_min_face_max_faces_and_batch(torch_det):
    img = photo("detection/compreface_samples/015_6.jpg")
    full = torch_det(img)
    capped = create_detector("yolov5n-0.5-face", model=torch_det.model, max_faces=2, precision="fp32")(img)
    assert len(capped) == 2 and np.allclose(capped.score, np.sort(full.score)[::-1][:2])
    side = (full.xyxy[:, 2:] - full.xyxy[:, :2]).min(1)
    cut = int(np.ceil(np.median(side)))  # min_face is whole pixels (detection.min_face)
    big = create_detector("yolov5n-0.5-face", model=torch_det.model, min_face=cut, precision="fp32")(img)
    assert len(big) == int((side >= cut).sum()) and len(big) < len(full)
    other = photo(SINGLE_FACE[4])
    batch = torch_det.detect_batch([img, np.zeros((64, 64, 3), np.uint8), other, img])
    assert [len(b) for b in batch] == [6, 0, 1, 6]
    assert np.allclose(batch[0].xyxy, full.xyxy, atol=1e-3) and np.allclose(batch[3].xyxy, full.xyxy, atol=1e-3)


def test_input_320_and_fixed_onnx_size(onnx_det):
    img = photo(SINGLE_FACE[0])
    small = create_detector("yolov5n-0.5-face", weights_dir=MODELS, input_size=320)
    assert small.preprocess(img)[0].shape[2:] == (320, 256)
    assert len(small(img)) == 1
    onnx320 = create_detector("yolov5n-0.5-face", weights_dir=MODELS, backend="onnx", input_size=320)
    assert onnx320.preprocess(img)[0].shape == (1, 3, 640, 640)  # the export's fixed size wins
    assert len(onnx320(img)) == 1


# ---- pre/post-processing units -----------------------------------------------------


def test_letterbox_centres_and_maps_back():
    img = np.zeros((100, 300, 3), np.uint8)
    img[40:60, 140:160] = (0, 0, 255)  # a red square, BGR
    blob, box = y5.letterbox(img, 640)
    assert blob.shape == (1, 3, 224, 640) and blob.dtype == np.float32
    assert box.pad_x == 0 and box.pad_y == (224 - 213) // 2
    assert blob[0, :, 0, 0] == pytest.approx([114 / 255] * 3)  # grey padding
    cy, cx = 50 * box.scale_y + box.pad_y, 150 * box.scale_x + box.pad_x
    assert blob[0, :, int(cy), int(cx)] == pytest.approx([1.0, 0.0, 0.0])  # RGB order
    blob, box = y5.letterbox(img, (640, 640))
    assert blob.shape == (1, 3, 640, 640) and box.pad_y == (640 - 213) // 2


def test_decode_formula_on_one_anchor():
    anchors = np.array(y5.DEFAULT_ANCHORS, np.float32).reshape(3, 3, 2)
    heads = [np.full((3, 640 // s, 640 // s, 16), -20.0, np.float32) for s in (8, 16, 32)]
    t = heads[1][2, 5, 7]  # level stride 16, anchor 2 (73 x 105 px), row gy=5, column gx=7
    t[:4] = [0.0, 0.0, 0.0, 0.0]
    t[4], t[15] = 4.0, 4.0
    t[5:15] = np.arange(10) / 10
    boxes, scores, marks = y5.decode_heads(heads, anchors, (8, 16, 32), 0.5)
    assert len(boxes) == 1
    cx, cy = (0.5 * 2 - 0.5 + 7) * 16, (0.5 * 2 - 0.5 + 5) * 16
    w, h = (0.5 * 2) ** 2 * 73, (0.5 * 2) ** 2 * 105
    assert boxes[0] == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert scores[0] == pytest.approx((1 / (1 + np.exp(-4.0))) ** 2)
    expect = np.arange(10).reshape(5, 2) / 10 * [73, 105] + [7 * 16, 5 * 16]
    assert marks[0] == pytest.approx(expect, abs=1e-5)


def test_nms_keeps_best_of_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = y5.nms(boxes, np.array([0.8, 0.9, 0.7], np.float32), 0.45)
    assert keep.tolist() == [1, 2]


# ---- the other sizes: built from their tables, saved like upstream, loaded strictly ----

SIZES = {"yolov5n-face": 1_725_744, "yolov5s-face": 7_074_640, "yolov5m-face": 21_063_024,
         "yolov5l-face": 46_626_832}


@pytest.mark.parametrize("name", list(SIZES))
def test_other_sizes_roundtrip_through_upstream_layout(name, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = y5.YoloV5Face(y5.MODEL_TABLES[name]())
    assert sum(p.numel() for p in model.parameters()) == SIZES[name]  # equals deepcam's README
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN statistics so a mix-up would show
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.half().float()  # the file stores fp16; round first so outputs can be compared
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        ref = model(x)
    path = tmp_path / f"{name}.pt"
    save_upstream_layout(model, path, monkeypatch)
    loaded = y5.load_yolov5_face(path)
    assert loaded.yaml == y5.MODEL_TABLES[name]()
    with torch.inference_mode():
        out = loaded(x)
    assert [tuple(o.shape) for o in out] == [(1, 3, 8, 12, 16), (1, 3, 4, 6, 16), (1, 3, 2, 3, 16)]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(out, ref))
    if SIZES[name] < 10_000_000:  # the detector copies the network to fold BatchNorm; skip for m and l
        det = create_detector(name, model=loaded, conf_thres=0.01, input_size=64)
        assert isinstance(det(np.full((120, 200, 3), 90, np.uint8)), Detections)


def test_bare_state_dict_is_matched_to_a_registered_table(tmp_path):
    model = y5.YoloV5Face(y5.MODEL_TABLES["yolov5s-face"]())
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    assert y5.load_yolov5_face(path).yaml == y5.MODEL_TABLES["yolov5s-face"]()


def test_other_activation_is_refused(tmp_path, monkeypatch):
    model = y5.YoloV5Face(y5.MODEL_TABLES["yolov5n-0.5-face"]())
    model.model[7].act = torch.nn.LeakyReLU(0.1)  # an upstream variant this code does not run
    path = tmp_path / "leaky.pt"
    save_upstream_layout(model, path, monkeypatch)
    with pytest.raises(CheckpointError, match=r"model\.7\.act uses LeakyReLU"):
        y5.load_yolov5_face(path)


def test_implausible_table_is_refused_before_allocating(tmp_path):
    table = y5.MODEL_TABLES["yolov5n-0.5-face"]()
    table["head"][0][3] = [10_000_000, 1, 1]  # would be a 10M-channel conv
    path = tmp_path / "huge.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "yaml": table}, path)
    with pytest.raises(CheckpointError, match="channels"):
        y5.load_yolov5_face(path)


def test_unsupported_layer_in_table_is_refused():
    table = y5.MODEL_TABLES["yolov5n-0.5-face"]()
    table["backbone"][1][2] = "__import__('os').system"
    with pytest.raises(ConfigError, match="unsupported layer type"):
        y5.YoloV5Face(table)


def test_registry_entries():
    reg = detector_registry()
    for name in ("yolov5n-0.5-face", *SIZES):
        entry = reg.get(name)
        assert entry.weights.license == "GPL-3.0" and entry.weights.channel_order == "RGB"
        assert set(entry.info["wider_face_val"]) == {"easy", "medium", "hard"}
    small = reg.get("yolov5n-0.5-face").weights
    assert small.sha256 and small.onnx_file == "yolov5n-0.5-face.onnx" and "yolov5n-0.5.pt" in small.aliases
    assert reg.get("yolov5s-face").weights.sha256 is None
    assert reg.get("yolov5n-0.5-face").info["wider_face_val"] == {"easy": 90.76, "medium": 88.12, "hard": 73.82}


# ---- large inputs: a crowd and a huge photo --------------------------------------------


def test_crowd_of_more_than_50_faces_goes_through_the_whole_pipeline(torch_det, onnx_det, analyzer):
    """deepcam's dense crowd test image: every face is detected, aligned and embedded.

    SOURCES.md reports 172 faces with the upstream ONNX at 640; both backends must agree."""
    img = photo("detection/unannotated/yolov5face_test.jpg")
    det = torch_det(img)
    print(f"crowd: torch {len(det)} faces, onnx {len(onnx_det(img))}")
    assert len(det) >= 150
    assert abs(len(det) - len(onnx_det(img))) <= 0.03 * len(det)
    res = analyzer.analyze(img)
    assert len(res.faces) == len(res.embeddings) == len(res.detections) >= 150
    np.testing.assert_allclose(np.linalg.norm(res.embeddings.vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(res.embeddings.vectors).all()


def test_8000_square_photo_is_detected_with_bounded_memory(torch_det, tmp_path):
    """An 8000 x 8000 JPEG (a real face scaled up) decodes, detects at the network's size
    and maps the box back to full resolution; decoding and detecting allocate only a few
    copies of the image (192 MB as BGR), never an unbounded amount."""
    import tracemalloc

    small = photo(SINGLE_FACE[1])
    ref = torch_det(small)
    scale = 8000 / max(small.shape[:2])
    h, w = (round(small.shape[0] * scale), round(small.shape[1] * scale))
    big = np.zeros((8000, 8000, 3), np.uint8)
    big[:h, :w] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "huge.jpg"
    assert cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del big
    tracemalloc.start()
    try:
        img = read_image(path)
        det = torch_det(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.shape == (8000, 8000, 3)
    assert len(det) == 1
    sx, sy = w / small.shape[1], h / small.shape[0]
    expected = ref.xyxy[0] * np.array([sx, sy, sx, sy])
    x1, y1 = np.maximum(det.xyxy[0, :2], expected[:2])
    x2, y2 = np.minimum(det.xyxy[0, 2:], expected[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    iou = inter / (area(det.xyxy[0]) + area(expected) - inter)
    print(f"8000x8000 (scale {scale:.1f}): IoU with the scaled-up small-image box {iou:.3f}, "
          f"peak traced memory {peak / 2**20:.0f} MiB")
    assert iou > 0.9
    assert peak < 4 * 8000 * 8000 * 3
