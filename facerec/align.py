"""Five-point face alignment: the one function every path uses.

The offline tools (``align_data.py``, enrollment, evaluation) and the live loop all call
:func:`align`; two copies of alignment drift apart and then gallery and probe vectors no
longer come from the same distribution.
"""

from __future__ import annotations

import cv2
import numpy as np

from facerec.types import ALIGNED_SIZE, AlignedFaces

#: The ArcFace 112x112 template (left eye, right eye, nose, left mouth, right mouth),
#: in pixels of the aligned crop. Every embedder in facerec was trained on crops made
#: with this template.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation).

    Umeyama's closed form: the rotation comes from the SVD of the cross-covariance of
    the centred point sets, so no iteration and no outlier rejection are involved (five
    points are too few for RANSAC to help).

    Args:
        src: ``(k, 2)`` points to move (landmarks in the image).
        dst: ``(k, 2)`` target points (the template).

    Returns:
        ``(2, 3)`` float64 affine matrix ``M`` with ``dst ~= M @ [src; 1]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # avoid a reflection
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align(image: np.ndarray, landmarks: np.ndarray) -> AlignedFaces:
    """Warp each face onto the ArcFace template.

    Args:
        image: ``(H, W, 3)`` uint8 BGR image the landmarks refer to.
        landmarks: ``(n, 5, 2)`` (or ``(5, 2)`` for one face) pixel coordinates in the
            order of :mod:`facerec.types`.

    Returns:
        ``n`` crops of 112 x 112 pixels; empty when ``landmarks`` is empty. Pixels outside
        the image are black, as in the crops the embedders were trained on.
    """
    lms = np.asarray(landmarks, np.float64)
    if lms.size == 0:
        return AlignedFaces.empty()
    lms = lms.reshape(-1, 5, 2)
    size = ALIGNED_SIZE
    crops = np.empty((len(lms), size, size, 3), np.uint8)
    for i, pts in enumerate(lms):
        m = similarity_transform(pts, ARCFACE_TEMPLATE)
        crops[i] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return AlignedFaces(crops)
