"""Face detectors: a registry of named models that all return :class:`~facerec.types.Detections`.

Model families register themselves on import (one file per family). Use
:func:`create_detector` to build one by name; an unknown name fails with the known names.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np

from facerec.registry import Registry
from facerec.types import Detections

DETECTORS: Registry[Detector] = Registry("detector")

#: Modules that register detectors; imported lazily by :func:`create_detector`.
_FAMILIES = ("facerec.detect.yolov5_face", "facerec.detect.ultralytics_face")


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a BGR image into detections."""

    name: str

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect faces in one ``(H, W, 3)`` uint8 BGR image (original coordinates out)."""
        ...


def _load_families() -> None:
    for mod in _FAMILIES:
        importlib.import_module(mod)


def detector_registry() -> Registry[Detector]:
    """The registry with every family imported."""
    _load_families()
    return DETECTORS


def create_detector(name: str, **kwargs) -> Detector:
    """Build detector ``name`` (see ``facerec weights`` for the names).

    Keyword arguments are passed to the family's constructor: ``weights`` (explicit
    file), ``weights_dir``, ``backend`` (``"torch"`` or ``"onnx"``), ``input_size``,
    ``conf_thres``, ``iou_thres``, ``verify``.
    """
    entry = detector_registry().get(name)
    return entry.build(**kwargs)
