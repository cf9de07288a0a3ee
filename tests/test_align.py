from __future__ import annotations

import numpy as np

from facerec.align import ARCFACE_TEMPLATE, align, similarity_transform
from facerec.imageio import read_image


def test_empty_landmarks_give_empty_faces():
    img = np.zeros((50, 50, 3), np.uint8)
    assert len(align(img, np.zeros((0, 5, 2)))) == 0


def test_similarity_transform_recovers_known_motion():
    angle, scale, t = np.deg2rad(17), 2.5, np.array([40.0, -12.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE @ r.T + t
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    mapped = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-9)


def test_similarity_transform_never_mirrors():
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    m = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_landmarks_are_identity():
    img = (np.arange(112 * 112 * 3) % 251).astype(np.uint8).reshape(112, 112, 3)
    out = align(img, ARCFACE_TEMPLATE[None])
    assert out.images.shape == (1, 112, 112, 3)
    np.testing.assert_array_equal(out.images[0], img)


def test_real_face_lands_on_template(detector, photo):
    """Detect, align, detect again on a padded crop: each landmark sits where the transform
    sent it, and near the template (five real points never fit a similarity exactly, so
    the template itself is only met to within the fit's residual)."""
    img = read_image(photo("face_recognition_examples/biden/biden.jpg"))
    det = detector(img)
    assert len(det) == 1
    m = similarity_transform(det.landmarks[0], ARCFACE_TEMPLATE)
    expected = det.landmarks[0] @ m[:, :2].T + m[:, 2]
    crop = align(img, det.landmarks).images[0]
    padded = np.zeros((336, 336, 3), np.uint8)  # the detector wants context around a face
    padded[112:224, 112:224] = crop
    again = detector(padded)
    assert len(again) >= 1
    lm = again.largest().landmarks[0] - 112
    moved = np.linalg.norm(lm - expected, axis=1)
    assert moved.max() < 3.0, moved  # pixels of the 112x112 crop: re-detection noise only
    residual = np.linalg.norm(expected - ARCFACE_TEMPLATE, axis=1)
    assert residual.max() < 6.0, residual
