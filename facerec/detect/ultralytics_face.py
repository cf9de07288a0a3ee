"""Face detectors in the ultralytics format (YOLOv8/YOLO11 face models), optional.

The ``ultralytics`` package is not a core dependency: it pulls torch with CUDA wheels and
torchvision (about 6 GB). It is imported only when an ``ultralytics-face`` detector is
built, with ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` set first so it neither reaches the
network nor pip-installs anything while the daemon runs.

Two kinds of model work:

* a **pose** model with five keypoints per face (e.g. the YOLOv8-face models trained on
  WIDER FACE with landmarks) gives real landmarks;
* a plain **detect** model gives boxes only; the five landmarks are then placed at fixed
  proportions of the box (:data:`BOX_LANDMARK_TEMPLATE`). Those points are coarse: good
  enough to crop and roughly align a frontal face, not for recognition on turned heads.

Ultralytics reads ``.pt`` files with full pickle loading, which can run code stored in
the file: use only weights from a source you trust. The conversion from ultralytics'
arrays to :class:`~facerec.types.Detections` is the plain function
:func:`results_to_detections`, testable without ultralytics.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Sequence

import numpy as np

from facerec.config import DetectionConfig, RuntimeConfig
from facerec.detect import DETECTORS, SettingsView
from facerec.errors import CheckpointError, ConfigError, FacerecError
from facerec.types import Detections
from facerec.weights import WeightsSpec, resolve_weights

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'facerec[ultralytics]' (about 6 GB: it pulls torch 2.14.1 with CUDA and torchvision)"
)

#: Five landmarks as fractions of the face box ``(x, y)``, order left eye, right eye,
#: nose, left mouth corner, right mouth corner (image-left first). Median positions of
#: YOLOv5n-0.5-face landmarks inside its own boxes on 24 single-face photos of the test
#: data, averaged with their mirror image so the template is symmetric. The spread
#: between photos was 6-10 % of the box width and 2-3 % of its height, and another
#: detector frames its boxes differently: expect errors of that size or more.
BOX_LANDMARK_TEMPLATE = np.array(
    [[0.28, 0.40], [0.72, 0.40], [0.50, 0.58], [0.29, 0.71], [0.71, 0.71]], dtype=np.float32
)

#: Keypoints with a visibility score below this are replaced by the box template
#: (ultralytics itself zeroes keypoints it deems invisible below 0.5).
MIN_KEYPOINT_CONF = 0.5


def import_ultralytics() -> Any:
    """Import ``ultralytics`` offline and without auto-install.

    ``YOLO_OFFLINE`` is compared with ``"true"`` by ultralytics (``"1"`` is not
    recognised); ``YOLO_AUTOINSTALL`` is true only when it reads ``"true"``. Both are
    set before the import because ultralytics reads them once, at import time.

    Raises:
        FacerecError: ultralytics is not installed (the message says how to install it).
    """
    os.environ["YOLO_OFFLINE"] = "true"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    try:
        return importlib.import_module("ultralytics")
    except ImportError as e:
        raise FacerecError(f"the ultralytics-face detector needs the ultralytics package: {INSTALL_HINT}. "
                           f"({e})") from None


def landmarks_from_boxes(xyxy: np.ndarray) -> np.ndarray:
    """Coarse five-point landmarks placed at fixed proportions of each box.

    Args:
        xyxy: ``(n, 4)`` boxes in pixels.

    Returns:
        ``(n, 5, 2)`` float32 points in pixels (see :data:`BOX_LANDMARK_TEMPLATE`).
    """
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    origin, size = xyxy[:, None, :2], (xyxy[:, 2:] - xyxy[:, :2])[:, None, :]
    return origin + BOX_LANDMARK_TEMPLATE[None] * size


def results_to_detections(xyxy: np.ndarray, score: np.ndarray, keypoints: np.ndarray | None = None, *,
                          image_shape: tuple[int, int], min_face: float = 0,
                          max_faces: int = 1000) -> Detections:
    """Turn one image's ultralytics arrays into :class:`~facerec.types.Detections`.

    Args:
        xyxy: ``(n, 4)`` boxes in original image pixels (``result.boxes.xyxy``).
        score: ``(n,)`` confidences (``result.boxes.conf``).
        keypoints: ``(n, 5, 2)`` or ``(n, 5, 3)`` (x, y, visibility) from a pose model
            (``result.keypoints.data``), or ``None`` for a detect model. Points with
            visibility below :data:`MIN_KEYPOINT_CONF`, or at exactly (0, 0) (how
            ultralytics marks invisible ones), are replaced by the box template.
        image_shape: ``(height, width)`` of the image, for clipping.
        min_face: drop faces whose box is narrower or shorter than this (pixels).
        max_faces: keep at most this many faces, highest scores first.

    Raises:
        ValueError: arrays of inconsistent lengths, or keypoints that are not five per face.
    """
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    score = np.asarray(score, np.float32).reshape(-1)
    n = len(xyxy)
    if len(score) != n:
        raise ValueError(f"{n} boxes but {len(score)} scores")
    if n == 0:
        return Detections.empty()
    marks = landmarks_from_boxes(xyxy)
    if keypoints is not None:
        kp = np.asarray(keypoints, np.float32)
        if kp.ndim != 3 or kp.shape[0] != n or kp.shape[1] != 5 or kp.shape[2] not in (2, 3):
            raise ValueError(f"keypoints must have shape ({n}, 5, 2) or ({n}, 5, 3), got {kp.shape}")
        ok = np.any(kp[..., :2] != 0, axis=-1)
        if kp.shape[2] == 3:
            ok &= kp[..., 2] >= MIN_KEYPOINT_CONF
        marks = np.where(ok[..., None], kp[..., :2], marks)
    order = np.argsort(-score, kind="stable")
    xyxy, score, marks = xyxy[order], score[order], marks[order]
    if min_face > 0:
        keep = (xyxy[:, 2:] - xyxy[:, :2]).min(1) >= min_face
        xyxy, score, marks = xyxy[keep], score[keep], marks[keep]
    xyxy, score, marks = xyxy[:max_faces], score[:max_faces], marks[:max_faces]
    h, w = image_shape
    limit = np.array([w, h], np.float32)
    xyxy = np.clip(xyxy.reshape(-1, 2, 2), 0, limit).reshape(-1, 4)
    return Detections(xyxy, score, np.clip(marks, 0, limit))


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class UltralyticsFaceDetector(SettingsView):
    """Wraps an ultralytics ``YOLO`` face model as a :class:`~facerec.detect.Detector`.

    Args:
        model: an ``ultralytics.YOLO`` (or anything with the same ``predict``).
        name: registry name.
        input_size: inference size in pixels (long side), a multiple of 32.
        conf_thres: minimum confidence in (0, 1].
        iou_thres: NMS IoU threshold in (0, 1].
        min_face: drop faces smaller than this many pixels (either side).
        max_faces: keep at most this many faces per image.
        device: ultralytics device string, ``"cpu"`` by default.
    """

    def __init__(self, model: Any, *, name: str = "ultralytics-face", input_size: int = 640,
                 conf_thres: float = 0.5, iou_thres: float = 0.45, min_face: float = 0, max_faces: int = 1000,
                 device: str = "cpu") -> None:
        self.model = model
        self.name = name
        self.input_size = input_size
        self.conf_thres = conf_thres
        self.iou_thres = iou_thres
        self.min_face = min_face
        self.max_faces = max_faces
        self.device = device

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """Always ``None``: ultralytics letterboxes to ``input_size`` on every call."""
        return None

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in several ``(H, W, 3)`` uint8 BGR images (one ``predict`` call each)."""
        out: list[Detections] = []
        for image in images:
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[..., None]
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4):
                raise ValueError(f"detector input must be a uint8 (H, W, 3) BGR image (grey and BGRA are "
                                 f"accepted), got {image.dtype} {image.shape}")
            if image.shape[2] == 1:
                image = np.repeat(image, 3, axis=2)
            elif image.shape[2] == 4:
                image = np.ascontiguousarray(image[..., :3])
            if image.shape[0] == 0 or image.shape[1] == 0:
                out.append(Detections.empty())
                continue
            result = self.model.predict(image, imgsz=self.input_size, conf=self.conf_thres, iou=self.iou_thres,
                                        max_det=self.max_faces, device=self.device, verbose=False)[0]
            boxes = result.boxes
            kps = getattr(result, "keypoints", None)
            data = _numpy(kps.data) if kps is not None else None
            if data is not None and data.ndim == 3 and data.shape[1] != 5:
                raise CheckpointError(f"{self.name}: the model gives {data.shape[1]} keypoints per object; a face "
                                      "model with 5 landmarks (or a plain detect model) is needed")
            out.append(results_to_detections(_numpy(boxes.xyxy), _numpy(boxes.conf), data,
                                             image_shape=image.shape[:2], min_face=self.min_face,
                                             max_faces=self.max_faces))
        return out

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def __repr__(self) -> str:
        return f"UltralyticsFaceDetector({self.name!r}, input_size={self.input_size}, conf_thres={self.conf_thres})"


_SPEC = WeightsSpec(
    file="yolov8n-face.pt",
    sha256=None,
    url="https://github.com/derronqi/yolov8-face (or any ultralytics-format face model; pass weights=)",
    input_size=(640, 640),
    channel_order="RGB",
    license="depends on the weights; ultralytics itself is AGPL-3.0",
)


@DETECTORS.register(
    "ultralytics-face", _SPEC,
    architecture="any ultralytics YOLO face model: pose (5 keypoints) or detect (landmarks estimated from the box)",
    requires="pip install 'facerec[ultralytics]'",
    landmarks="5 from a pose model; coarse box template from a detect model",
)
def build(weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, *,
          detection: DetectionConfig | None = None, runtime: RuntimeConfig | None = None, verify: bool = True,
          model: Any = None, device: str = "cpu", **overrides: Any) -> UltralyticsFaceDetector:
    """Build the ultralytics face detector.

    Args:
        weights: the model file (``.pt``, or an export ultralytics can run such as
            ``.onnx``); the user supplies it, no hash is published.
        weights_dir: configured weights directory, searched for ``yolov8n-face.pt``.
        detection: the ``detection:`` section (input size, thresholds, face limits).
        runtime: the ``runtime:`` section. ultralytics runs its models in its own
            PyTorch code, so only ``engine: auto`` or ``torch`` are accepted (to run it
            elsewhere, export it with ultralytics and pass the exported file).
        verify: unused (no published hash); kept for the common constructor signature.
        model: a ready ``YOLO`` object (or a stand-in with ``predict``); skips the import
            and the file search.
        device: ultralytics device string.
        **overrides: single settings of the two sections, validated by them.

    Raises:
        FacerecError: ultralytics is not installed.
        ConfigError: invalid settings.
        WeightsNotFoundError: no weights file found.
    """
    from facerec.detect.yolov5_face import detector_settings

    d, rt = detector_settings(detection, runtime, overrides, "ultralytics-face")
    if rt.engine not in ("auto", "torch"):
        raise ConfigError(f"ultralytics-face runs in ultralytics' own PyTorch code; engine {rt.engine} is not "
                          f"available for it (use engine auto or torch)")
    settings: dict[str, Any] = dict(input_size=d.input_size, conf_thres=d.conf_thres, iou_thres=d.iou_thres, min_face=d.min_face,
                    max_faces=d.max_faces, device=device)
    if model is not None:
        return UltralyticsFaceDetector(model, **settings)
    ultralytics = import_ultralytics()
    path = resolve_weights(_SPEC, weights, weights_dir, verify=verify, backend="torch")
    try:
        yolo = ultralytics.YOLO(str(path))
    except Exception as e:  # ultralytics raises many types for a file it cannot use
        raise CheckpointError(f"{path}: ultralytics cannot load it ({type(e).__name__}: {e})") from None
    logger.debug("ultralytics-face: loaded %s (task %s)", path, getattr(yolo, "task", "?"))
    return UltralyticsFaceDetector(yolo, **settings)
