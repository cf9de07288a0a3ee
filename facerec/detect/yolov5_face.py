"""YOLOv5-face detectors: boxes, scores and five landmarks per face.

Upstream is deepcam-cn/yolov5-face (GPL-3.0, derived from ultralytics/yolov5); its
pretrained weights are GPL-3.0 and trained on WIDER FACE. Nothing of upstream's code is
used or imported here. The family is split by idea:

* :mod:`facerec.detect.yolov5_net`: the network, a PyTorch re-implementation built from
  the layer table that upstream stores in its checkpoints;
* :mod:`facerec.detect.yolov5_checkpoint`: reading upstream's ``.pt`` files through the
  restricted unpickler of :mod:`facerec.safe_unpickle` (no code from the file runs);
* :mod:`facerec.detect.yolov5_process`: letterboxing, head decoding, NMS and the mapping
  back to image pixels, shared by the engines of :mod:`facerec.runtime`;
* this module: the detector, its constructor and the registered models
  ``yolov5n-0.5-face``, ``yolov5n-face``, ``yolov5s-face``, ``yolov5m-face`` and
  ``yolov5l-face``. The names of the other three modules are importable from here too.

Only the ``yolov5n-0.5`` weights (``.pt`` and ``.onnx``) are known to be obtainable; the
larger models are built from the same layer tables and load upstream checkpoints when a
user supplies them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facerec.config import DetectionConfig, RuntimeConfig
from facerec.detect import DETECTORS, SettingsView
from facerec.detect.yolov5_checkpoint import (INERT_ALLOWLIST, UpstreamCheckpoint, load_state_strict,  # noqa: F401
                                              load_yolov5_face, read_checkpoint)
from facerec.detect.yolov5_net import (BN_EPS, C3, DEFAULT_ANCHORS, MODEL_TABLES, SPP, SPPF, Bottleneck,  # noqa: F401
                                       Concat, Conv, Detect, Focus, ShuffleV2Block, StemBlock, YoloV5Face,
                                       fuse_conv_bn)
from facerec.detect.yolov5_process import (MAX_CANDIDATES, PAD_VALUE, Letterbox, as_bgr,  # noqa: F401
                                           decode_heads, letterbox, nms, postprocess)
from facerec.errors import CheckpointError
from facerec.runtime import Session
from facerec.runtime.settings import InvalidSettingError, engine_overrides, merge_section
from facerec.safe_unpickle import InertObject, read_torch_pickle  # noqa: F401
from facerec.types import Detections
from facerec.weights import WeightsSpec, sha256_file

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------


class SessionRunner:
    """Runs a YOLOv5-face network in a :class:`~facerec.runtime.Session`; returns the raw
    per-level head outputs ``(n, na, h, w, 15 + nc)``, strides ascending.

    Args:
        session: the network on its engine.
        anchors_px: ``(nl, na, 2)`` anchors in input pixels (exports do not hold them).
        model: the PyTorch network where one was loaded (kept as given).
    """

    def __init__(self, session: Session, anchors_px: np.ndarray, model: YoloV5Face | None = None) -> None:
        self.session = session
        self.model = model
        self.anchors_px = anchors_px
        self.fixed_size = session.info.fixed_size
        self.strides: tuple[int, ...] = tuple(int(s) for s in model.stride) if model is not None else ()
        if model is None and self.fixed_size is not None:
            shapes = getattr(session, "output_shapes", None)
            grids = sorted((sh[2] for sh in shapes or () if len(sh) == 5 and sh[2]), reverse=True)
            if len(grids) == len(anchors_px):
                self.strides = tuple(self.fixed_size[0] // g for g in grids)

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        out = sorted(self.session.run(blob), key=lambda h: -h.shape[2])
        if not self.strides or self.fixed_size is None:
            self.strides = tuple(blob.shape[2] // h.shape[2] for h in out)
        return out


def _check_heads(session: Session, anchors_px: np.ndarray, path: Path) -> None:
    shapes = getattr(session, "output_shapes", None)
    if shapes is not None and (len(shapes) != len(anchors_px) or any(len(sh) != 5 for sh in shapes)):
        raise CheckpointError(
            f"{path}: expected {len(anchors_px)} raw head outputs of rank 5 [b, na, h, w, 15 + nc], got "
            + ", ".join(f"{n} {sh}" for n, sh in zip(session.info.output_names, shapes))
        )


class YoloV5FaceDetector(SettingsView):
    """A YOLOv5-face detector implementing :class:`~facerec.detect.Detector`.

    Call it with one ``(H, W, 3)`` uint8 BGR image; get :class:`~facerec.types.Detections`
    in that image's pixels (empty when there is no face). Grey ``(H, W)`` and BGRA
    images are accepted too.

    Attributes:
        name: registry name.
        engine: the engine it runs on (``torch``, ``onnx`` or ``openvino``).
        precision: the arithmetic it runs in (``fp32`` or ``bf16``).
        input_size: long side of the network input in pixels (a fixed-size ONNX model
            uses its own size instead).
        conf_thres: minimum score ``objectness * class`` in [0, 1].
        iou_thres: NMS overlap above which the lower-scored box is dropped.
        min_face: smallest face side kept, original pixels (0 keeps all).
        max_faces: most faces returned per image (highest scores).
    """

    def __init__(self, name: str, runner: SessionRunner, settings: DetectionConfig,
                 weights: Path | None = None) -> None:
        self.name = name
        self.runner = runner
        self.input_size = settings.input_size
        self.conf_thres = settings.conf_thres
        self.iou_thres = settings.iou_thres
        self.min_face: float = settings.min_face
        self.max_faces = settings.max_faces
        self.weights = weights

    @property
    def engine(self) -> str:
        return self.runner.session.engine

    @property
    def precision(self) -> str:
        return self.runner.session.precision

    @property
    def backend(self) -> str:
        """The old name of :attr:`engine`."""
        return self.engine

    @property
    def model(self) -> YoloV5Face | None:
        """The PyTorch network (``None`` when only an ONNX file was loaded)."""
        return self.runner.model

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """``(h, w)`` the network requires (a fixed-size ONNX export), else ``None``."""
        return self.runner.fixed_size

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox one BGR image into this detector's input blob."""
        size = self.runner.fixed_size or self.input_size
        return letterbox(image, size, max(self.runner.strides or (32,)))

    def raw(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw head outputs for a ``(n, 3, h, w)`` blob, strides ascending."""
        return self.runner(blob)

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in several images; images whose inputs share a shape run as one batch."""
        results: list[Detections] = [Detections.empty()] * len(images)
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray, Letterbox]]] = {}
        for i, image in enumerate(images):
            bgr = as_bgr(image)
            if bgr.shape[0] == 0 or bgr.shape[1] == 0:
                continue
            blob, box = self.preprocess(bgr)
            groups.setdefault(blob.shape, []).append((i, blob, box))
        for members in groups.values():
            heads = self.runner(np.concatenate([m[1] for m in members]))
            for k, (i, _, box) in enumerate(members):
                results[i] = postprocess(
                    [h[k] for h in heads], box, self.runner.anchors_px, self.runner.strides,
                    conf_thres=self.conf_thres, iou_thres=self.iou_thres, min_face=self.min_face,
                    max_faces=self.max_faces,
                )
        return results

    def __repr__(self) -> str:
        return (f"YoloV5FaceDetector({self.name!r}, engine={self.engine!r}, precision={self.precision!r}, "
                f"input_size={self.input_size}, "
                f"conf_thres={self.conf_thres}, iou_thres={self.iou_thres})")


def detector_settings(detection: DetectionConfig | None, runtime: RuntimeConfig | None, overrides: dict[str, Any],
                      name: str) -> tuple[DetectionConfig, RuntimeConfig]:
    """The validated ``detection:`` and ``runtime:`` sections with keyword overrides applied
    (``backend`` is the old name of ``engine``).

    Raises:
        InvalidSettingError: a value out of bounds or an unknown setting (named).
    """
    overrides = engine_overrides(overrides)
    det_keys = {k: overrides.pop(k) for k in list(overrides) if k in DetectionConfig.model_fields}
    unknown = [k for k in overrides if k not in RuntimeConfig.model_fields]
    if unknown:
        raise InvalidSettingError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: "
                                  + ", ".join([*DetectionConfig.model_fields, *RuntimeConfig.model_fields]))
    return (merge_section(DetectionConfig, detection, det_keys, name),
            merge_section(RuntimeConfig, runtime, overrides, name))


def create(name: str, spec: WeightsSpec, *, weights: str | os.PathLike | None = None,
           weights_dir: str | os.PathLike | None = None, detection: DetectionConfig | None = None,
           runtime: RuntimeConfig | None = None, verify: bool = True, model: YoloV5Face | None = None,
           **overrides: Any) -> YoloV5FaceDetector:
    """Build a registered YOLOv5-face detector (the registered constructors call this).

    Args:
        name: registry name (its layer table is the fallback for files without one).
        spec: the model's weights spec.
        weights: explicit weights file (``.pt``, or ``.onnx`` to run that export).
        weights_dir: configured weights directory, searched first.
        detection: the ``detection:`` section (input size, thresholds, face limits).
        runtime: the ``runtime:`` section (engine, precision, threads, cache).
        verify: check the file's sha256 where one is published.
        model: an already built :class:`YoloV5Face` (e.g. random weights for tests and
            benchmarks); no file is read.
        **overrides: single settings of those two sections (``input_size``,
            ``conf_thres``, ``iou_thres``, ``min_face``, ``max_faces``, ``engine``,
            ``precision``, ``threads``, ...), validated by the sections' own models, so
            the defaults are the daemon's.

    With ``engine: onnx`` and a published export (yolov5n-0.5-face), that file is run
    (fixed 640x640: ``input_size`` is then not used). Otherwise the PyTorch network is
    run, or exported once (BatchNorm folded, dynamic batch and size) for ONNX Runtime
    and OpenVINO and cached under ``runtime.cache_dir``.

    Raises:
        InvalidSettingError: invalid settings (a :class:`ConfigError`).
        WeightsNotFoundError: no weights file found.
        WeightsChecksumError: the file's sha256 differs from the published one.
        CheckpointError: the file does not fit the network.
    """
    from facerec.runtime import ModelSource, build_session
    from facerec.runtime.base import state_sha256
    from facerec.runtime.build import resolve_model_file

    settings, rt = detector_settings(detection, runtime, overrides, name)
    table = MODEL_TABLES[name]()
    anchors = np.asarray(table["anchors"], np.float32).reshape(len(table["anchors"]), -1, 2)
    file = resolve_model_file(spec, "yolov5", rt.engine, weights=weights, weights_dir=weights_dir, verify=verify,
                              in_memory=model is not None)
    engine, path = file.engine, file.path
    onnx_path = path if file.onnx else None
    if path is None:  # the network was passed in memory
        sha = state_sha256(model)
    else:
        if not file.onnx:
            model = load_yolov5_face(path, table)
        sha = sha256_file(path)
    if model is not None:
        model = model.float().eval()
        anchors = model.anchors_px()
    fused = {}

    def network() -> YoloV5Face:
        if "net" not in fused:
            fused["net"] = fuse_conv_bn(model)  # type: ignore[arg-type]
        return fused["net"]

    source = ModelSource(name=name, sha256=sha, input_shape=(None, 3, None, None),
                         output_names=tuple(f"head{i}" for i in range(len(anchors))),
                         module=network if model is not None else None, onnx_path=onnx_path,
                         example_hw=(settings.input_size, settings.input_size), persistent=path is not None,
                         channels_last=True)
    session = build_session(source, engine=engine, precision=rt.precision, threads=rt.threads,
                            hint="latency" if rt.hint == "auto" else rt.hint, cache_dir=rt.cache_dir)
    if onnx_path is not None:
        _check_heads(session, anchors, onnx_path)
    runner = SessionRunner(session, anchors, model)
    if runner.fixed_size is not None and max(runner.fixed_size) != settings.input_size:
        logger.info("%s: the ONNX model has a fixed %dx%d input; input_size=%d is not used",
                    onnx_path.name if onnx_path else name, runner.fixed_size[1], runner.fixed_size[0],
                    settings.input_size)
    logger.debug("%s: %s on %s", name, path or "in-memory model", session)
    return YoloV5FaceDetector(name, runner, settings, weights=path)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

_README = "https://github.com/deepcam-cn/yolov5-face#pretrained-models"
_CLAIM_SOURCE = "deepcam-cn/yolov5-face README, WIDER FACE val (multi-scale test as published)"

#: name -> (file, sha256, aliases, onnx file, onnx sha256, parameters, GFLOPs at 640, WIDER FACE val AP
#: (easy, medium, hard)). Parameter counts are those of the networks built here; they equal
#: the README's rounded figures. GFLOPs and AP are the README's claims.
_MODELS: dict[str, tuple[str, str | None, tuple[str, ...], str | None, str | None, int, float,
                         tuple[float, float, float]]] = {
    "yolov5n-0.5-face": ("yolov5n-0.5-face.pt", "9f7cdbcf5cd63f454c47b18e7400a69630b96a01efb7559367e91b6e962ad3bd",
                         ("yolov5n-0.5.pt",), "yolov5n-0.5-face.onnx",
                         "7da50650e16167e93acf24caf01f15f2922ecf168c884f2825a3c95479f8687d",
                         447_456, 0.571, (90.76, 88.12, 73.82)),
    "yolov5n-face": ("yolov5n-face.pt", None, (), None, None, 1_725_744, 2.111, (93.61, 91.52, 80.53)),
    "yolov5s-face": ("yolov5s-face.pt", None, (), None, None, 7_074_640, 5.751, (94.33, 92.61, 83.15)),
    "yolov5m-face": ("yolov5m-face.pt", None, (), None, None, 21_063_024, 18.146, (95.30, 93.76, 85.28)),
    "yolov5l-face": ("yolov5l-face.pt", None, (), None, None, 46_626_832, 41.607, (95.78, 94.30, 86.13)),
}


#: name -> (direct addresses of the .pt, of the .onnx) for ``facerec weights fetch``: the
#: GitHub copies whose sha256 matches the published one, then the README's Google Drive file.
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
_DOWNLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "yolov5n-0.5-face": (
        ("https://github.com/dominhhieu1019/yolov5-face/raw/29a8e9d80252594c623a54b1e3d492e2e9e9570d/weights/yolov5n-0.5.pt",
         "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/pretrained_model/yolov5n-0.5.pt",
         _GDRIVE + "1XJ8w55Y9Po7Y5WP4X1Kg1a77ok2tL_KY"),
        ("https://github.com/dominhhieu1019/yolov5-face/raw/4413ea44f4edb765b530ab928bd91ba60314915e/weights/yolov5n-0.5.onnx",),
    ),
    "yolov5n-face": ((_GDRIVE + "18oenL6tjFkdR1f5IgpYeQfDFqU4w3jEr",), ()),
    "yolov5s-face": ((_GDRIVE + "1zxaHeLDyID9YU4-hqK7KNepXIwbTkRIO",), ()),
    "yolov5m-face": ((_GDRIVE + "1Sx-KEGXSxvPMS35JhzQKeRBiqC98VDDI",), ()),
    "yolov5l-face": ((_GDRIVE + "16F-3AjdQBn9p3nMhStUxfDNAE_1bOF_r",), ()),
}


def _register(name: str) -> None:
    file, sha, aliases, onnx_file, onnx_sha, params, gflops, (easy, medium, hard) = _MODELS[name]
    urls, onnx_urls = _DOWNLOADS.get(name, ((), ()))
    spec = WeightsSpec(file=file, sha256=sha, url=_README, input_size=(640, 640), channel_order="RGB",
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), license="GPL-3.0", aliases=aliases,
                       onnx_file=onnx_file, onnx_sha256=onnx_sha, urls=urls, onnx_urls=onnx_urls)
    backbone = "ShuffleNetV2" if name.startswith("yolov5n") else "CSP (C3) + SPP(3,5,7)"

    def build(weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, *,
              detection: DetectionConfig | None = None, runtime: RuntimeConfig | None = None,
              verify: bool = True, model: YoloV5Face | None = None, **overrides: Any) -> YoloV5FaceDetector:
        return create(name, spec, weights=weights, weights_dir=weights_dir, detection=detection, runtime=runtime,
                      verify=verify, model=model, **overrides)

    build.__name__ = build.__qualname__ = "build_" + name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"Build ``{name}``; arguments as in :func:`create`."
    DETECTORS.register(
        name, spec,
        architecture=f"YOLOv5-face, {backbone} backbone, PAN neck, 3 levels (strides 8/16/32), 5 landmarks",
        params=params, gflops_640=gflops,
        wider_face_val={"easy": easy, "medium": medium, "hard": hard},
        claimed_by=_CLAIM_SOURCE, upstream="https://github.com/deepcam-cn/yolov5-face",
        landmarks=5, engines=("torch", "onnx", "openvino"),
    )(build)


for _name in _MODELS:
    _register(_name)
