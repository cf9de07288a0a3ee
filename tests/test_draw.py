"""The overlay draws what it is given and never touches a model."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.draw import KNOWN_COLOR, PENDING_COLOR, UNKNOWN_COLOR, annotate, face_label
from facerec.types import TrackedFace


@pytest.fixture
def frame() -> np.ndarray:
    return np.full((240, 320, 3), 50, np.uint8)


def test_no_faces_no_stats_is_an_unchanged_copy(frame: np.ndarray) -> None:
    out = annotate(frame, [])
    assert out is not frame
    np.testing.assert_array_equal(out, frame)


def test_labels() -> None:
    assert face_label("alice", 0.623, 3) == "alice 0.62 #3"
    assert face_label(None, 0.21, 4) == "unknown 0.21 #4"
    assert face_label(None, 0.0, 5, decided=False) == "#5"
    assert face_label("bob", 0.5) == "bob 0.50"
    assert face_label(None, -1.0, 6) == "unknown #6"  # empty gallery: no candidate


def test_boxes_in_colour_and_input_untouched(frame: np.ndarray) -> None:
    before = frame.copy()
    faces = [TrackedFace(1, [20, 60, 100, 160], "alice", 0.7), TrackedFace(2, [180, 60, 260, 160], None, 0.2),
             TrackedFace(3, [120, 180, 170, 230], None, 0.0, decided=False)]
    out = annotate(frame, faces)
    np.testing.assert_array_equal(frame, before)
    assert out.shape == frame.shape and out.dtype == np.uint8
    # the box edges carry the name's colour: green for a known face, red for unknown
    assert tuple(out[110, 20]) == KNOWN_COLOR
    assert tuple(out[110, 180]) == UNKNOWN_COLOR
    assert tuple(out[205, 120]) == PENDING_COLOR, "grey while the track is not decided"
    # the middle of a face is not painted over
    assert tuple(out[120, 60]) == (50, 50, 50)


def test_in_place_and_stats_overlay(frame: np.ndarray) -> None:
    out = annotate(frame, [], stats={"detect": 12.3, "embed": 4.0}, fps=31.5, copy=False)
    assert out is frame
    assert (frame[:40, :80] != 50).any(), "FPS and stage times are drawn in the corner"
    assert (frame[200:, 200:] == 50).all()


def test_boxes_outside_the_frame_and_tiny_frames() -> None:
    tiny = np.zeros((20, 30, 3), np.uint8)
    out = annotate(tiny, [TrackedFace(12345, [-50, -50, 500, 500], "a very long name indeed", 0.9)],
                   stats={"detect": 1.0}, fps=1.0)
    assert out.shape == tiny.shape
