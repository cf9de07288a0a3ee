from __future__ import annotations

import numpy as np
import pytest

from facerec.types import AlignedFaces, Detections, EmbedderKey, Embeddings, Matches


def test_empty_containers():
    d = Detections.empty()
    assert len(d) == 0 and d.xyxy.shape == (0, 4) and d.landmarks.shape == (0, 5, 2)
    assert len(d.largest()) == 0
    assert d.to_json() == []
    assert len(AlignedFaces.empty()) == 0
    e = Embeddings.empty(EmbedderKey("m", "abc"), 128)
    assert e.vectors.shape == (0, 128) and e.dim == 128
    assert len(Matches.empty()) == 0


def test_detections_shape_errors_say_expected_and_actual():
    with pytest.raises(ValueError, match=r"score must have shape \(2\), got \(3,\)"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros((2, 5, 2)))


def test_detections_subset_and_largest():
    d = Detections([[0, 0, 10, 10], [0, 0, 30, 20]], [0.9, 0.8], np.zeros((2, 5, 2)))
    assert d.xyxy.dtype == np.float32
    np.testing.assert_allclose(d.area, [100, 600])
    assert d.largest().score[0] == pytest.approx(0.8)
    assert len(d[d.score > 0.85]) == 1
    assert len(d[[1]]) == 1 and len(d[0]) == 1


def test_aligned_faces_validates():
    with pytest.raises(ValueError, match="uint8"):
        AlignedFaces(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(n, 112, 112, 3\)"):
        AlignedFaces(np.zeros((1, 100, 100, 3), np.uint8))


def test_embeddings_from_raw_keeps_norm_as_quality():
    raw = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    e = Embeddings.from_raw(raw, EmbedderKey("m", "x"))
    np.testing.assert_allclose(e.norm, [5.0, 2.0])
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1.0, rtol=1e-6)


def test_embedder_key_round_trip():
    k = EmbedderKey("mobilefacenet", "90a00ba1d8b0b688af3d")
    assert EmbedderKey.parse(str(k)).model == "mobilefacenet"
