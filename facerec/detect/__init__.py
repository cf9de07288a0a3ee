"""Face detectors: a registry of named models that all return :class:`~facerec.types.Detections`.

Model families register themselves on import (one file per family). Use
:func:`create_detector` to build one by name; an unknown name fails with the known names.
"""

from __future__ import annotations

import copy
import importlib
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from facerec.registry import Registry
from facerec.types import Detections

DETECTORS: Registry[Detector] = Registry("detector")

#: Modules that register detectors; imported lazily by :func:`create_detector`.
_FAMILIES = ("facerec.detect.yolov5_face", "facerec.detect.ultralytics_face")


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a BGR image into detections."""

    @property
    def name(self) -> str:
        """Registry name of the model."""
        ...

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect faces in one ``(H, W, 3)`` uint8 BGR image (original coordinates out)."""
        ...


R = TypeVar("R", bound="ResizableDetector")


@runtime_checkable
class ResizableDetector(Detector, Protocol):
    """A detector whose settings the live loop changes per camera and per frame.

    What the daemon and the pacer use: each camera runs a view of the one shared
    detector (:meth:`with_settings`: same network and weights, its own input size and
    minimum face), and the pacer changes ``input_size`` of that view between frames
    unless the network has a fixed input (:attr:`fixed_size`).

    Attributes:
        input_size: long side of the letterboxed network input, px (read on every call).
        min_face: faces whose shorter box side is below this are dropped, original px.
    """

    input_size: int
    min_face: float

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """``(h, w)`` the network requires (a fixed-size export), or ``None`` when
        ``input_size`` applies."""
        ...

    def with_settings(self: R, *, input_size: int | None = None, min_face: float | None = None) -> R:
        """A view of this detector sharing its network, with the given settings changed
        (``None`` keeps the current value); changing the view leaves this one as it is."""
        ...


V = TypeVar("V", bound="SettingsView")


class SettingsView:
    """:meth:`ResizableDetector.with_settings` for a detector that keeps ``input_size``
    and ``min_face`` as plain attributes: a shallow copy (network and weights shared)
    with those changed."""

    input_size: int
    min_face: float

    def with_settings(self: V, *, input_size: int | None = None, min_face: float | None = None) -> V:
        """A view sharing this detector's network with other settings (one per camera);
        ``None`` keeps the current value."""
        view = copy.copy(self)
        if input_size is not None:
            view.input_size = int(input_size)
        if min_face is not None:
            view.min_face = min_face
        return view


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
    file), ``weights_dir``, ``engine`` (``backend`` is its old name), ``precision``,
    ``threads``, ``input_size``, ``conf_thres``, ``iou_thres``, ``verify``.
    """
    entry = detector_registry().get(name)
    return entry.build(**kwargs)
