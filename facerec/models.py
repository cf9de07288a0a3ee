"""Building the configured detector and embedder, including the ``auto`` choice.

``auto`` prefers the mission's pair (YOLOv5s-face + MagFace iResNet-50) and falls back,
model by model, to the first whose weights are present. Landing on the default pair (what
``facerec weights fetch`` installs) is one ``-v`` line; landing on any other model is a
warning with how to pin one. Which vector space a gallery lives in is recorded with its
vectors (the embedder key) either way.
"""

from __future__ import annotations

import logging
from typing import Any

from face_embedding import Embedder, FaceEmbedder, create_embedder, embedder_registry
from facerec.config import Config, RuntimeConfig
from facerec.detect import Detector, create_detector, detector_registry
from facerec.registry import Registry
from facerec.runtime.base import warn_once
from facerec.weights import find_weights

log = logging.getLogger(__name__)

#: ``auto`` tries these in order and takes the first whose weights are found.
DETECTOR_PREFERENCE = ("yolov5s-face", "yolov5m-face", "yolov5l-face", "yolov5n-face", "yolov5n-0.5-face")
EMBEDDER_PREFERENCE = ("magface-iresnet50", "magface-iresnet100", "magface-iresnet18", "mobilefacenet")

#: The default pair: the models whose files carry a published sha256 and direct download
#: addresses, so ``facerec weights fetch`` (without names) gets them. ``auto`` uses them
#: without a warning when no preferred model is present, and names them when nothing is.
DEFAULT_PAIR = ("yolov5n-0.5-face", "mobilefacenet")

_noted_default: list[bool] = []


def _auto(kind: str, preference: tuple[str, ...], registry: Registry[Any], explicit: str | None, cfg: Config,
          default: str) -> str:
    """The first model of ``preference`` whose weights are found; ``default`` when none is.

    Falling back to the default pair is the normal state of a fresh install, so it is one
    ``-v`` line per process, not a warning; falling back to another model still warns,
    since it is neither what was preferred nor what ``weights fetch`` installs.
    """
    if explicit:  # an explicit file without a name: use the mission's model of that kind
        return preference[0]
    for name in preference:
        if name not in registry:
            continue
        spec = registry.get(name).weights
        if any(find_weights(spec, None, cfg.models.weights_dir, b) is not None for b in ("torch", "onnx")):
            if name == default and name != preference[0]:
                if not _noted_default:
                    _noted_default.append(True)
                    log.info("models: auto uses the default pair %s + %s where the preferred %s / %s weights "
                             "are absent (`facerec weights` lists them)", *DEFAULT_PAIR,
                             DETECTOR_PREFERENCE[0], EMBEDDER_PREFERENCE[0])
            elif name != preference[0]:
                warn_once("%s: %s weights not found, using %s (set models.%s in config.yaml or pass --%s to choose)",
                          kind, preference[0], name, kind, kind)
            else:
                log.debug("%s: %s", kind, name)
            return name
    return default  # nothing found: building it raises the not-found error naming `facerec weights fetch`


def detector_name(cfg: Config) -> str:
    """The detector ``cfg`` asks for, with ``auto`` resolved (the embedder is not looked at)."""
    det = cfg.models.detector
    if det == "auto":
        det = _auto("detector", DETECTOR_PREFERENCE, detector_registry(), cfg.models.detector_weights, cfg,
                    DEFAULT_PAIR[0])
    return det


def embedder_name(cfg: Config) -> str:
    """The embedder ``cfg`` asks for, with ``auto`` resolved (the detector is not looked at)."""
    emb = cfg.models.embedder
    if emb == "auto":
        emb = _auto("embedder", EMBEDDER_PREFERENCE, embedder_registry(), cfg.models.embedder_weights, cfg,
                    DEFAULT_PAIR[1])
    return emb


def resolve_names(cfg: Config) -> tuple[str, str]:
    """The detector and embedder names ``cfg`` asks for, with ``auto`` resolved."""
    return detector_name(cfg), embedder_name(cfg)


def live_threads(cfg: Config) -> int:
    """Threads of one model call in the live loop: ``runtime.threads``, or 1 when unset.

    One thread per call is the fast path on a shared CPU (bench/live.py --contention):
    a frame is one small batch, and the daemon runs as many calls at once as there are
    cores (:func:`facerec.daemon.inference_slots`), so every core is still used.
    """
    return cfg.runtime.threads or 1


def _runtime(cfg: Config, live: bool, kind: str) -> RuntimeConfig:
    """``cfg.runtime`` with ``hint: auto`` resolved (latency for the live loop and for the
    detector, one image per call; throughput for batch embedding) and, in the live loop,
    the threads of :func:`live_threads`."""
    update: dict = {}
    if cfg.runtime.hint == "auto":
        update["hint"] = "latency" if live or kind == "detector" else "throughput"
    if live:
        update["threads"] = live_threads(cfg)
    return cfg.runtime.model_copy(update=update) if update else cfg.runtime


def build_detector(cfg: Config, name: str | None = None, *, live: bool = False) -> Detector:
    """The configured detector (weights found and verified), on the configured engine."""
    name = name or detector_name(cfg)
    return create_detector(name, weights=cfg.models.detector_weights, weights_dir=cfg.models.weights_dir,
                           detection=cfg.detection, runtime=_runtime(cfg, live, "detector"),
                           verify=cfg.models.verify_sha256)


def build_embedder(cfg: Config, name: str | None = None, *, live: bool = False) -> Embedder:
    """The configured embedder (weights found and verified), on the configured engine."""
    name = name or embedder_name(cfg)
    return create_embedder(name, weights=cfg.models.embedder_weights, weights_dir=cfg.models.weights_dir,
                           runtime=_runtime(cfg, live, "embedder"), recognition=cfg.recognition,
                           verify=cfg.models.verify_sha256)


def threshold_for(cfg: Config, embedder: FaceEmbedder) -> float:
    """``recognition.threshold`` or, when unset, the embedder's default."""
    t = cfg.recognition.threshold
    return float(embedder.default_threshold if t is None else t)
