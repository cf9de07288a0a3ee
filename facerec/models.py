"""Building the configured detector and embedder, including the ``auto`` choice.

``auto`` prefers the mission's pair (YOLOv5s-face + MagFace iResNet-50) and falls back,
model by model, to the first whose weights are present; the choice is logged with how to
pin another model, so a user always knows which vector space their gallery lives in.
"""

from __future__ import annotations

import logging

from face_embedding import Embedder, create_embedder, embedder_registry
from facerec.config import Config
from facerec.detect import Detector, create_detector, detector_registry
from facerec.weights import find_weights

log = logging.getLogger(__name__)

#: ``auto`` tries these in order and takes the first whose weights are found.
DETECTOR_PREFERENCE = ("yolov5s-face", "yolov5m-face", "yolov5l-face", "yolov5n-face", "yolov5n-0.5-face")
EMBEDDER_PREFERENCE = ("magface-iresnet50", "magface-iresnet100", "magface-iresnet18", "mobilefacenet")


def _auto(kind: str, preference: tuple[str, ...], registry, explicit: str | None, cfg: Config) -> str:
    if explicit:  # an explicit file without a name: use the mission's model of that kind
        return preference[0]
    for name in preference:
        if name in registry and find_weights(registry.get(name).weights, None, cfg.models.weights_dir,
                                             cfg.models.backend) is not None:
            if name != preference[0]:
                log.warning(
                    "%s: %s weights not found, using %s (set models.%s in config.yaml or pass --%s to choose)",
                    kind, preference[0], name, kind, kind,
                )
            else:
                log.info("%s: %s", kind, name)
            return name
    return preference[0]  # nothing found: building it raises the not-found error with the search path


def resolve_names(cfg: Config) -> tuple[str, str]:
    """The detector and embedder names ``cfg`` asks for, with ``auto`` resolved."""
    det = cfg.models.detector
    if det == "auto":
        det = _auto("detector", DETECTOR_PREFERENCE, detector_registry(), cfg.models.detector_weights, cfg)
    emb = cfg.models.embedder
    if emb == "auto":
        emb = _auto("embedder", EMBEDDER_PREFERENCE, embedder_registry(), cfg.models.embedder_weights, cfg)
    return det, emb


def build_detector(cfg: Config, name: str | None = None) -> Detector:
    """The configured detector (weights found and verified)."""
    name = name or resolve_names(cfg)[0]
    d = cfg.detection
    return create_detector(
        name, weights=cfg.models.detector_weights, weights_dir=cfg.models.weights_dir,
        backend=cfg.models.backend, input_size=d.input_size, conf_thres=d.conf_thres,
        iou_thres=d.iou_thres, min_face=d.min_face, max_faces=d.max_faces, verify=cfg.models.verify_sha256,
    )


def build_embedder(cfg: Config, name: str | None = None) -> Embedder:
    """The configured embedder (weights found and verified)."""
    name = name or resolve_names(cfg)[1]
    return create_embedder(
        name, weights=cfg.models.embedder_weights, weights_dir=cfg.models.weights_dir,
        backend=cfg.models.backend, verify=cfg.models.verify_sha256, batch_size=cfg.recognition.batch_size,
        threads=cfg.live.threads,
    )


def threshold_for(cfg: Config, embedder: Embedder) -> float:
    """``recognition.threshold`` or, when unset, the embedder's default."""
    t = cfg.recognition.threshold
    return float(embedder.default_threshold if t is None else t)
