"""Face quality without a quality-aware embedder: sharpness and size.

MagFace's feature norm is a trained quality score; other embedders (MobileFaceNet) have
none, so enrollment falls back to the variance of the Laplacian of the aligned crop (a
standard focus measure: blur removes high frequencies, so the second derivative flattens)
plus a minimum face size in the source photo.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Default floor of :func:`blur_measure` for enrollment crops. Measured on the aligned crops
#: of the named photo sets in ../shared (233 faces): 90 to 3000, 5th percentile above 260;
#: the same crops after a Gaussian blur of sigma 3 measure at most 43.
DEFAULT_MIN_SHARPNESS = 50.0


def blur_measure(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a BGR or grey image (higher = sharper).

    Only the central part of an aligned crop is measured (the face, not the black
    border that alignment adds outside the photo, whose edges would look "sharp").
    """
    img = np.asarray(crop)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    h, w = grey.shape[:2]
    centre = grey[h // 8 : h - h // 8, w // 8 : w - w // 8]
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def face_size(xyxy: np.ndarray) -> float:
    """Shorter side of a face box in pixels."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(xyxy).reshape(4))
    return max(0.0, min(x2 - x1, y2 - y1))
