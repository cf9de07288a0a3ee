"""Finding the faces of one still image: the one path that enrollment, alignment,
identification and :class:`facerec.analyze.FaceAnalyzer` share.

:func:`detect_faces` retries once on a padded copy when nothing is found (tightly cropped
faces); :func:`pick_face` chooses the one face of an enrollment or alignment photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from facerec.align import align
from facerec.gallery.quality import face_size
from facerec.types import AlignedFaces, Detections, Embeddings

if TYPE_CHECKING:
    from facerec.detect import Detector
    from facerec.gallery.reports import ReasonCode


def detect_faces(detector: Detector, image: np.ndarray, pad: float = 0.0) -> Detections:
    """Detect faces; when none is found and ``pad > 0``, retry once on a padded copy.

    Tightly cropped faces (a face filling the whole photo) are often missed because the
    detector never saw a face without context; a black border of ``pad`` times the long
    side restores it. Boxes and landmarks are returned in the original image's pixels
    (boxes clipped to it).
    """
    det = detector(image)
    if len(det) or pad <= 0:
        return det
    h, w = image.shape[:2]
    b = int(round(pad * max(h, w)))
    padded = cv2.copyMakeBorder(image, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    det = detector(padded)
    if not len(det):
        return det
    xyxy = det.xyxy - b
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
    keep = (xyxy[:, 2] - xyxy[:, 0] > 1) & (xyxy[:, 3] - xyxy[:, 1] > 1)
    return Detections(xyxy[keep], det.score[keep], (det.landmarks - b)[keep])


def choose_face(det: Detections, multiple: str, name: str,
                min_size: int) -> tuple[Detections | None, ReasonCode | None, str, list[str]]:
    """Choose the one face of an enrollment/alignment photo.

    Returns:
        ``(one face or None, reason code when None, reason when None, warnings)``.
    """
    warnings: list[str] = []
    if len(det) == 0:
        return None, "no_face", "no face found", warnings
    if len(det) > 1:
        if multiple == "skip":
            return None, "multiple_faces", f"{len(det)} faces (gallery.multiple_faces is skip)", warnings
        warnings.append(f"{name}: {len(det)} faces, took the largest")
        det = det.largest()
    size = face_size(det.xyxy[0])
    if size < min_size:
        return None, "face_too_small", f"face too small: {size:.0f} px < gallery.min_face_size {min_size} px", warnings
    return det, None, "", warnings


def pick_face(det: Detections, multiple: str, name: str, min_size: int) -> tuple[Detections | None, str, list[str]]:
    """:func:`choose_face` without the code: ``(one face or None, reason when None, warnings)``."""
    face, _, reason, warnings = choose_face(det, multiple, name, min_size)
    return face, reason, warnings


def analyze_image(detector: Detector, embed: Callable[[AlignedFaces], Embeddings], image: np.ndarray,
                  pad: float = 0.0) -> tuple[Detections, AlignedFaces, Embeddings | None]:
    """Detect (with the padding retry), align and embed every face of one BGR image.

    Returns:
        ``(detections, aligned crops, their vectors)``; the vectors are ``None`` when no
        face was found (nothing is embedded).
    """
    det = detect_faces(detector, image, pad)
    faces = align(image, det.landmarks)
    return det, faces, embed(faces) if len(det) else None


def faces_of(detector: Detector, embed: Callable[[AlignedFaces], Embeddings], image: np.ndarray,
             pad: float = 0.0) -> tuple[Detections, Embeddings | None]:
    """Detect, align and embed every face of one BGR image (``None``: no face); the
    first half of :meth:`GalleryService.identify_image`, which a cluster worker runs."""
    det, _, emb = analyze_image(detector, embed, image, pad)
    return det, emb
