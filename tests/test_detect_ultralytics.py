"""The optional ultralytics face backend, tested without ultralytics installed.

The package pulls about 6 GB of wheels, so these tests cover the missing-dependency
error, the conversion of ultralytics-shaped arrays to Detections, and the wrapper with a
stand-in model object.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from facerec.detect import create_detector, detector_registry
from facerec.detect import ultralytics_face as uf
from facerec.errors import CheckpointError, ConfigError, FacerecError
from facerec.types import Detections

BOXES = np.array([[10, 20, 110, 140], [200, 50, 260, 130]], np.float32)
SCORES = np.array([0.6, 0.9], np.float32)


def _keypoints(conf: float = 0.9) -> np.ndarray:
    pts = uf.landmarks_from_boxes(BOXES) + 2.0  # distinct from the template
    return np.concatenate([pts, np.full((2, 5, 1), conf, np.float32)], axis=2)


class FakeYOLO:
    """Answers ``predict`` like ultralytics does, from fixed arrays (torch tensors)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, keypoints: np.ndarray | None) -> None:
        self.result = SimpleNamespace(
            boxes=SimpleNamespace(xyxy=torch.from_numpy(xyxy), conf=torch.from_numpy(conf)),
            keypoints=None if keypoints is None else SimpleNamespace(data=torch.from_numpy(keypoints)),
        )
        self.calls: list[dict] = []

    def predict(self, image, **kwargs):
        self.calls.append({"shape": image.shape, **kwargs})
        return [self.result]


# ---- edge cases ----------------------------------------------------------------------


def test_no_boxes_gives_empty():
    det = uf.results_to_detections(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 3)), image_shape=(100, 100))
    assert isinstance(det, Detections) and len(det) == 0


def test_inconsistent_arrays_are_rejected():
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        uf.results_to_detections(BOXES, SCORES[:1], image_shape=(300, 300))
    with pytest.raises(ValueError, match="keypoints"):
        uf.results_to_detections(BOXES, SCORES, np.zeros((2, 17, 3)), image_shape=(300, 300))


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_missing_ultralytics_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # makes the import fail even if installed later
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    with pytest.raises(FacerecError, match=r"pip install 'facerec\[ultralytics\]'") as err:
        create_detector("ultralytics-face", weights="face.pt")
    assert "6 GB" in str(err.value)
    assert os.environ["YOLO_OFFLINE"] == "true" and os.environ["YOLO_AUTOINSTALL"] == "false"


def test_invalid_settings():
    for bad in ({"input_size": 100}, {"conf_thres": 0}, {"backend": "tf"}, {"max_faces": 0}):
        with pytest.raises(ConfigError):
            create_detector("ultralytics-face", model=FakeYOLO(BOXES, SCORES, None), **bad)


# ---- conversion --------------------------------------------------------------------


def test_pose_model_keypoints_become_landmarks_sorted_by_score():
    kp = _keypoints()
    det = uf.results_to_detections(BOXES, SCORES, kp, image_shape=(300, 300))
    assert len(det) == 2
    assert det.score.tolist() == pytest.approx([0.9, 0.6])
    assert np.allclose(det.xyxy, BOXES[[1, 0]])
    assert np.allclose(det.landmarks, kp[[1, 0], :, :2])


def test_invisible_keypoints_fall_back_to_the_box_template():
    kp = _keypoints()
    kp[0, 2, 2] = 0.1  # nose of face 0 barely visible
    kp[1, 4, :2] = 0.0  # ultralytics zeroes invisible points
    det = uf.results_to_detections(BOXES, SCORES, kp, image_shape=(300, 300))
    template = uf.landmarks_from_boxes(BOXES)
    by_input = det.landmarks[[1, 0]]
    assert np.allclose(by_input[0, 2], template[0, 2]) and np.allclose(by_input[1, 4], template[1, 4])
    assert np.allclose(by_input[0, :2], kp[0, :2, :2])


def test_detect_model_landmarks_are_a_plausible_template():
    det = uf.results_to_detections(BOXES, SCORES, None, image_shape=(300, 300))
    for (x1, y1, x2, y2), lm in zip(det.xyxy, det.landmarks):
        assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() and (lm[:, 1] < y2).all()
        left_eye, right_eye, nose, left_mouth, right_mouth = lm
        assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert left_eye[1] == right_eye[1] < nose[1] < left_mouth[1] == right_mouth[1]


def test_min_face_max_faces_and_clipping():
    boxes = np.array([[-5, -5, 50, 60], [100, 100, 400, 300], [10, 10, 20, 20]], np.float32)
    scores = np.array([0.7, 0.8, 0.95], np.float32)
    det = uf.results_to_detections(boxes, scores, None, image_shape=(200, 250), min_face=15, max_faces=2)
    assert len(det) == 2 and det.score.tolist() == pytest.approx([0.8, 0.7])
    assert det.xyxy.min() >= 0 and (det.xyxy[:, [0, 2]] <= 250).all() and (det.xyxy[:, [1, 3]] <= 200).all()
    assert (det.landmarks[..., 0] <= 250).all() and (det.landmarks[..., 1] <= 200).all()


# ---- the wrapper with a stand-in model ---------------------------------------------


def test_wrapper_calls_predict_and_converts():
    fake = FakeYOLO(BOXES, SCORES, _keypoints())
    detector = create_detector("ultralytics-face", model=fake, conf_thres=0.4, input_size=320)
    det = detector(np.zeros((300, 300, 3), np.uint8))
    assert len(det) == 2 and detector.name == "ultralytics-face"
    call = fake.calls[-1]
    assert call["imgsz"] == 320 and call["conf"] == 0.4 and call["verbose"] is False and call["device"] == "cpu"
    grey = detector(np.zeros((300, 300), np.uint8))
    assert len(grey) == 2 and fake.calls[-1]["shape"] == (300, 300, 3)
    assert len(detector(np.zeros((300, 300, 4), np.uint8))) == 2 and fake.calls[-1]["shape"] == (300, 300, 3)
    assert len(detector(np.zeros((0, 0, 3), np.uint8))) == 0
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((8, 8, 3), np.float32))
    assert [len(d) for d in detector.detect_batch([np.zeros((50, 50, 3), np.uint8)] * 2)] == [2, 2]


def test_wrapper_refuses_non_face_keypoints():
    fake = FakeYOLO(BOXES, SCORES, np.zeros((2, 17, 3), np.float32))  # a COCO person-pose model
    with pytest.raises(CheckpointError, match="17 keypoints"):
        create_detector("ultralytics-face", model=fake)(np.zeros((64, 64, 3), np.uint8))


def test_registry_entry():
    entry = detector_registry().get("ultralytics-face")
    assert entry.weights.sha256 is None
    assert "ultralytics" in entry.info["requires"]
