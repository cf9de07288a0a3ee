"""The models every camera of a daemon shares: one detector and one embedder, and the
inference slots that bound how many model calls run at once.

:func:`inference_slots` is the cores this process may use divided by the threads one call
uses. More calls at once would only split the same cores between them and slow each one
down; fewer would leave cores idle (a daemon whose calls were all serialised ran 0.5-0.6x
the aggregate FPS of separate processes on two cores, bench/live.py --cameras). Inference
does not change the models (eval mode, no grad), so concurrent calls on the same weights
are safe. A camera's own settings (input size, minimum face, region of interest) live in a
thin view of the shared detector (:class:`CameraDetector`), never in a second copy of the
weights; :class:`ModelUse` counts the calls and the time cameras waited for a slot.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from face_embedding import FaceEmbedder
from facerec.config import Config
from facerec.detect import Detector, ResizableDetector
from facerec.types import Detections

if TYPE_CHECKING:
    from facerec.daemon import CameraSpec


class ModelUse:
    """Counters of the shared models (read at any time).

    Attributes:
        detect_calls: detector calls, all cameras.
        embed_calls: embedder calls, all cameras.
        faces_embedded: face crops embedded, all cameras.
        wait_ms: total time callers waited for a free inference slot, ms (how much the
            cameras got in each other's way).
        busy_ms: total time spent in model calls, ms (all slots together).
    """

    def __init__(self) -> None:
        self.detect_calls = 0
        self.embed_calls = 0
        self.faces_embedded = 0
        self.wait_ms = 0.0
        self.busy_ms = 0.0

    def to_json(self) -> dict[str, float]:
        return {"detect_calls": self.detect_calls, "embed_calls": self.embed_calls,
                "faces_embedded": self.faces_embedded, "slot_wait_ms": round(self.wait_ms, 1),
                "busy_ms": round(self.busy_ms, 1)}


def inference_slots(threads: int | None = None) -> int:
    """How many model calls may run at once without oversubscribing the CPU: the cores
    this process may use divided by the threads one call uses (``threads``, default
    PyTorch's intra-op thread count), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return max(1, cores // max(1, int(threads)))


class SharedModels:
    """One detector and one embedder for every camera, at most ``slots`` calls at once.

    Args:
        detector: a detector; a :class:`~facerec.detect.ResizableDetector` gets a view
            per camera with that camera's input size and minimum face.
        embedder: an embedder (:class:`~face_embedding.FaceEmbedder`).
        slots: model calls allowed at the same time (``None``: :func:`inference_slots`).
    """

    def __init__(self, detector: Detector, embedder: FaceEmbedder, slots: int | None = None) -> None:
        self.detector = detector
        self.embedder = embedder
        self.slots = max(1, int(slots)) if slots is not None else inference_slots()
        self._slots = threading.BoundedSemaphore(self.slots)
        self._count_lock = threading.Lock()
        self.use = ModelUse()
        self.shared_embedder = SharedEmbedder(self)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a free inference slot, timing the wait and the call."""
        t0 = time.perf_counter()
        with self._slots:
            t1 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t2 = time.perf_counter()
                with self._count_lock:
                    self.use.wait_ms += (t1 - t0) * 1000.0
                    self.use.busy_ms += (t2 - t1) * 1000.0

    def count(self, **added: int) -> None:
        """Add to the :class:`ModelUse` counters (cameras call from several threads)."""
        with self._count_lock:
            for key, n in added.items():
                setattr(self.use, key, getattr(self.use, key) + n)

    def detector_for(self, spec: CameraSpec) -> CameraDetector:
        """A view of the shared detector with ``spec``'s input size, minimum face and ROI."""
        return CameraDetector(self, spec.input_size, spec.min_face, spec.roi)


def build_models(cfg: Config) -> SharedModels:
    """The configured detector and embedder (weights found and verified), built once."""
    import cv2

    from facerec.models import build_detector, build_embedder, live_threads

    # OpenCV's own pool (letterbox resize, face warps) follows the live loop's thread rule:
    # its workers wait actively for work, which on a shared CPU takes time from the loop
    # (bench/live.py --contention measures the daemon with this setting)
    threads = live_threads(cfg)
    cv2.setNumThreads(threads)
    embedder = build_embedder(cfg, live=True)
    detector = build_detector(cfg, live=True)
    return SharedModels(detector, embedder, inference_slots(threads))


class CameraDetector:
    """The shared detector as one camera uses it.

    A view of the detector (:meth:`~facerec.detect.ResizableDetector.with_settings`)
    carries this camera's ``input_size`` and ``min_face`` (the network and its weights
    are the same object). With a region of interest only
    that part of the frame is letterboxed and searched, and the boxes and landmarks are
    shifted back to frame pixels, so the tracker and the overlay never see ROI
    coordinates.
    """

    def __init__(self, models: SharedModels, input_size: int, min_face: float,
                 roi: tuple[int, int, int, int] | None = None) -> None:
        self.models = models
        det = models.detector
        self._det = det.with_settings(input_size=input_size, min_face=min_face) \
            if isinstance(det, ResizableDetector) else det
        self.roi = roi

    @property
    def input_size(self):
        """This camera's detector input, px (the pacer changes it between frames)."""
        return getattr(self._det, "input_size", None)

    @input_size.setter
    def input_size(self, size: int) -> None:
        if isinstance(self._det, ResizableDetector):
            self._det.input_size = size

    @property
    def runner(self):
        """The detector's runner (tells the pacer whether the input size can change)."""
        return getattr(self._det, "runner", None)

    @property
    def name(self) -> str:
        return str(getattr(self._det, "name", type(self._det).__name__))

    @property
    def min_face(self) -> float:
        return self._det.min_face if isinstance(self._det, ResizableDetector) else 0.0

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self._det.fixed_size if isinstance(self._det, ResizableDetector) else None

    def with_settings(self, *, input_size: int | None = None, min_face: float | None = None) -> CameraDetector:
        """Another view of the shared detector for the same region, with these settings."""
        return CameraDetector(self.models, self.input_size if input_size is None else input_size,
                              self.min_face if min_face is None else min_face, self.roi)

    def __call__(self, image: np.ndarray) -> Detections:
        self.models.count(detect_calls=1)
        if self.roi is None:
            return self.models.run(self._det, image)
        h, w = image.shape[:2]
        x1, y1 = max(0, int(self.roi[0])), max(0, int(self.roi[1]))
        x2, y2 = min(w, int(self.roi[2])), min(h, int(self.roi[3]))
        if x2 <= x1 or y2 <= y1:  # the ROI lies outside this frame: nothing to search
            return Detections.empty()
        det = self.models.run(self._det, np.ascontiguousarray(image[y1:y2, x1:x2]))
        if len(det) == 0:
            return det
        off = np.array([x1, y1], np.float32)
        return Detections(det.xyxy + np.tile(off, 2), det.score, det.landmarks + off)


class SharedEmbedder:
    """The shared embedder behind the inference slots (every other attribute is the
    embedder's own: ``key``, ``dim``, ``default_threshold``...)."""

    def __init__(self, models: SharedModels) -> None:
        self._models = models

    def embed(self, images: Any, flip: bool = False):
        self._models.count(embed_calls=1, faces_embedded=len(images))
        return self._models.run(self._models.embedder.embed, images, flip=flip)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models.embedder, name)
