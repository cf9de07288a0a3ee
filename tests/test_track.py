"""Tracking (ByteTrack through `trackers`) and the name vote with hysteresis."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facerec.config import TrackingConfig
from facerec.track import FaceTracker, NameVote, face_quality
from facerec.types import Detections

THR = 0.35


def _det(boxes, scores=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    # landmarks encode the row so the mapping back can be checked
    lms = np.zeros((len(boxes), 5, 2), np.float32) + np.arange(len(boxes), dtype=np.float32)[:, None, None]
    return Detections(boxes, scores, lms)


# ----------------------------------------------------------------------------- tracker


def test_empty_frames() -> None:
    tr = FaceTracker(TrackingConfig())
    for _ in range(3):
        asg = tr.update(Detections.empty())
        assert len(asg) == 0 and asg.alive == frozenset()


def test_ids_are_stable_and_rows_map_back_when_order_changes() -> None:
    tr = FaceTracker(TrackingConfig(min_hits=2))
    a0, b0 = np.array([10, 10, 60, 70.0]), np.array([200, 40, 250, 100.0])
    seen: dict[int, list[str]] = {}
    for k in range(12):
        a, b = a0 + [3 * k, 0, 3 * k, 0], b0 - [2 * k, 0, 2 * k, 0]
        order = [a, b] if k % 2 else [b, a]  # the detector's order changes every frame
        asg = tr.update(_det(order))
        if k == 0:
            assert len(asg) == 0  # a new face needs min_hits detections before it has an id
            continue
        assert len(asg) == 2
        for tid, row in zip(asg.track_ids, asg.det_index):
            who = "a" if order[row][0] == a[0] else "b"
            seen.setdefault(int(tid), []).append(who)
    assert len(seen) == 2
    assert all(len(set(v)) == 1 for v in seen.values()), seen


def test_lost_track_is_kept_for_track_buffer_then_dropped() -> None:
    tr = FaceTracker(TrackingConfig(track_buffer=5, min_hits=2))
    box = [50, 50, 100, 110]
    for _ in range(3):
        asg = tr.update(_det([box]))
    (tid,) = asg.track_ids.tolist()
    alive_for = 0
    for _ in range(20):
        asg = tr.update(Detections.empty())
        if tid in asg.alive:
            alive_for += 1
    assert 3 <= alive_for <= 7
    assert tid not in asg.alive


def test_detect_every_scales_the_buffer() -> None:
    tr = FaceTracker(TrackingConfig(track_buffer=30, min_hits=2), detect_every=10)
    for _ in range(3):
        tr.update(_det([[50, 50, 100, 110]]))
    gone_after = next(i for i in range(1, 50) if not tr.update(Detections.empty()).alive)
    assert gone_after <= 4  # 30 source frames = 3 detector runs


@pytest.fixture(scope="module")
def detector320():
    from facerec.detect import create_detector

    return create_detector("yolov5n-0.5-face", input_size=320)


def test_ids_kept_across_frames_on_a_real_clip(detector320, data_dir) -> None:
    detector = detector320
    cap = cv2.VideoCapture(str(data_dir / "video" / "lp_driving_d3.mp4"))
    tr = FaceTracker(TrackingConfig())
    ids = []
    try:
        for _ in range(30):
            ok, img = cap.read()
            assert ok
            det = detector(img)
            asg = tr.update(det)
            ids.extend(asg.track_ids.tolist())
            # landmarks follow the box they belong to
            for row in asg.det_index:
                x1, y1, x2, y2 = det.xyxy[row]
                lm = det.landmarks[row]
                assert (lm[:, 0] > x1 - 5).all() and (lm[:, 0] < x2 + 5).all()
    finally:
        cap.release()
    assert len(ids) >= 27
    assert len(set(ids)) == 1, f"the one person of the clip changed id: {sorted(set(ids))}"


def test_face_quality() -> None:
    q = face_quality(np.array([[0, 0, 10, 20], [0, 0, 0, 5]]), np.array([0.5, 0.9]))
    np.testing.assert_allclose(q, [100.0, 0.0])


# ----------------------------------------------------------------------------- voting


def _run(votes, **kw) -> list[str | None]:
    v = NameVote(THR, **kw)
    return [v.add(n, s, q) for n, s, q in votes]


def test_vote_starts_undecided() -> None:
    v = NameVote(THR)
    assert not v.decided and v.name is None and v.shares() == {}


def test_unknown_when_nobody_clears_the_threshold() -> None:
    names = _run([(None, 0.1, 100.0)] * 5)
    assert names == [None] * 5


def test_single_outliers_do_not_flicker() -> None:
    seq = [("alice", 0.6, 100)] * 3 + [("bob", 0.4, 100)] + [("alice", 0.6, 100)] * 2 + [(None, 0.3, 100)] + [("alice", 0.55, 100)]
    names = _run(seq, window=10, switch_margin=0.1)
    assert names == ["alice"] * len(seq)


def test_sustained_change_switches_with_hysteresis() -> None:
    seq = [("alice", 0.6, 100)] * 5 + [("bob", 0.6, 100)] * 10
    names = _run(seq, window=6, switch_margin=0.3)
    first_bob = names.index("bob")
    # window of 6: at 3:3 alice keeps her name; at 2:4 bob leads by a third of the weight
    assert first_bob == 5 + 3
    assert names[first_bob:] == ["bob"] * (len(seq) - first_bob)


def test_low_quality_and_borderline_votes_count_less() -> None:
    v = NameVote(THR, window=10, switch_margin=0.1)
    for _ in range(3):
        v.add("alice", 0.7, 400.0)
    for _ in range(4):  # more votes, but tiny faces barely over the threshold
        v.add("bob", 0.36, 20.0)
    assert v.name == "alice"
    shares = v.shares()
    assert shares["alice"] > 0.9 and sum(shares.values()) == pytest.approx(1.0)


def test_similarity_reported_for_the_current_name() -> None:
    v = NameVote(THR)
    v.add("alice", 0.7, 100)
    v.add("alice", 0.65, 100)
    v.add("bob", 0.4, 10)
    assert v.name == "alice" and v.similarity == pytest.approx(0.65)


def test_flicker_rate_on_a_noisy_sequence(rng) -> None:
    """80% correct matches with random errors: the raw matches change name often, the vote
    almost never."""
    seq = []
    for _ in range(300):
        r = rng.random()
        seq.append(("alice", 0.55 + 0.1 * rng.random(), 100) if r < 0.8
                   else ("bob", 0.36 + 0.05 * rng.random(), 100) if r < 0.9 else (None, 0.2, 100))
    names = _run(seq)
    raw_switches = sum(a[0] != b[0] for a, b in itertools.pairwise(seq))
    voted_switches = sum(a != b for a, b in itertools.pairwise(names))
    assert raw_switches > 50
    assert voted_switches == 0 and names[-1] == "alice"
