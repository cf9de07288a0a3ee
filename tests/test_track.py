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


# ----------------------------------------------------------------------------- identity inside a track
#
# Real frames of three talking-head clips, one person each (cosine between their faces at
# most 0.24 with MobileFaceNet): A and B are enrolled, C is a stranger. Frames are resized
# to one size so that the next person's face sits where the last one's was, as behind a
# door or at a hard cut: the box tracker keeps the track, the identity check must not.

A_CLIP, B_CLIP, C_CLIP = "lp_driving_d3.mp4", "lp_driving_d19.mp4", "lp_driving_d0.mp4"
SIDE = 480


def _read(path, indices, side: int = SIDE) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    try:
        want = sorted(indices)
        while want:
            ok, img = cap.read()
            assert ok, f"{path}: frame {i} unreadable"
            if i == want[0]:
                out.append(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
                want.pop(0)
            i += 1
    finally:
        cap.release()
    return out


@pytest.fixture(scope="module")
def faces(data_dir, one_torch_thread) -> dict[str, list[np.ndarray]]:
    """The first 24 frames of each clip, plus frames 40-60 of A and B for the gallery."""
    video = data_dir / "video"
    return {
        "A": _read(video / A_CLIP, range(24)), "B": _read(video / B_CLIP, range(24)),
        "C": _read(video / C_CLIP, range(24)),
        "A_enroll": _read(video / A_CLIP, (40, 50, 60)), "B_enroll": _read(video / B_CLIP, (40, 50, 60)),
    }


def _embed_one(detector, embedder, img) -> np.ndarray:
    from facerec.align import align

    det = detector(img)
    assert len(det), "no face in a gallery frame"
    best = int(np.argmax(det.score))
    return embedder.embed(align(img, det.landmarks[[best]])).vectors[0]


@pytest.fixture(scope="module")
def gallery(faces, detector320, embedder):
    from facerec.gallery.search import GalleryIndex

    names, vecs = [], []
    for who in ("A", "B"):
        for img in faces[f"{who}_enroll"]:
            names.append(who)
            vecs.append(_embed_one(detector320, embedder, img))
    return GalleryIndex(names, np.stack(vecs), index="exact")


def _pipe(detector, embedder, gallery, **tracking):
    from facerec.live import LivePipeline, PipelineSettings

    return LivePipeline(detector, embedder,
                        PipelineSettings(threshold=embedder.default_threshold, tracking=TrackingConfig(**tracking)),
                        gallery=gallery)


def _play(pipe, images, step: int = 1) -> list:
    """Run ``images[::step]`` (``step`` > 1: the frames between were dropped, as a slow
    consumer of a live camera sees them); returns each frame's result."""
    from facerec.capture import Frame

    return [pipe.step(Frame(img, i, i / 30.0)) for i, img in enumerate(images) if i % step == 0]


def _labels(results) -> list[list[tuple[int, str | None, bool]]]:
    return [[(f.track_id, f.name, f.decided) for f in r.faces] for r in results]


@pytest.mark.parametrize("step", [1, 4], ids=["every-frame", "frames-dropped"])
def test_a_person_replaced_in_place_splits_the_track(faces, detector320, embedder, gallery, step) -> None:
    """A, then the stranger C, then B, then A again, at hard cuts: each change ends the
    track ("left"), the new face gets a new id, and no frame after a change carries the
    previous person's name."""
    pipe = _pipe(detector320, embedder, gallery)
    seq = [("A", faces["A"][:12]), ("C", faces["C"][:12]), ("B", faces["B"][:12]), ("A", faces["A"][12:24])]
    ids_by_segment: list[set[int]] = []
    left_at_start: list[set[int]] = []
    for who, images in seq:
        res = _play(pipe, images, step)
        left_at_start.append({st.track_id for st in res[0].left})
        labels = _labels(res)
        assert all(len(f) <= 1 for f in labels), labels
        shown = [f[0] for f in labels if f]
        assert len(shown) >= len(res) - 2, f"{who}: face not tracked: {labels}"
        wrong = [(tid, name) for tid, name, _ in shown if name is not None and name != who]
        assert not wrong, f"{who} shown with another person's name: {wrong}"
        named = [name for _, name, decided in shown if decided]
        assert named and named[-1] == (who if who != "C" else None), f"{who}: never named right: {labels}"
        ids_by_segment.append({tid for tid, _, _ in shown})
    for k in range(1, len(seq)):
        assert ids_by_segment[k].isdisjoint(ids_by_segment[k - 1]), ids_by_segment
        assert ids_by_segment[k - 1] & left_at_start[k], f"no 'left' for segment {k - 1} at the cut"
    assert pipe.cuts >= 3


def test_without_identity_check_the_old_name_outlives_its_face(faces, detector320, embedder, gallery) -> None:
    """The old behaviour, for contrast (and to show the clip really fools a box tracker):
    the stranger inherits A's track and name."""
    pipe = _pipe(detector320, embedder, gallery, identity_check=False)
    res_a = _play(pipe, faces["A"][:12])
    res_c = _play(pipe, faces["C"][:6])
    (tid_a, name_a, _), = res_a[-1].faces and [(f.track_id, f.name, f.decided) for f in res_a[-1].faces]
    assert name_a == "A"
    first_c = _labels(res_c)[0]
    assert first_c == [(tid_a, "A", True)], first_c


def test_scene_cut_rechecks_on_the_cut_frame_even_between_detections(faces, detector320, embedder, gallery) -> None:
    """The detector runs every 5th frame and A's name would not be re-embedded for 1000
    frames: the cut still forces a detection, an embedding and the split on its own frame."""
    from facerec.live import LivePipeline, PipelineSettings

    settings = PipelineSettings(threshold=embedder.default_threshold, tracking=TrackingConfig(reembed_every=1000),
                                detect_every=5)
    pipe = LivePipeline(detector320, embedder, settings, gallery=gallery)
    _play(pipe, faces["A"][:12])
    (res,) = _play(pipe, faces["B"][:1])
    assert res.detected and res.embedded == 1 and pipe.cuts == 1 and pipe.splits == 1
    assert [st.name for st in res.left] == ["A"]
    assert [f.name for f in res.faces] in ([None], ["B"])


def _pasted(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` shrunk to ``side`` px and centred on a 640x480 grey canvas."""
    canvas = np.full((480, 640, 3), 128, np.uint8)
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    y, x = (480 - side) // 2, (640 - side) // 2
    canvas[y:y + side, x:x + side] = small
    return canvas


@pytest.mark.parametrize("second", ["A", "B"])
def test_box_jump_rechecks_the_face(faces, detector320, embedder, gallery, second) -> None:
    """The face shrinks at once to 0.6x in the same place (no scene cut seen, no re-embed
    due): the jump alone forces a re-check on that frame; a new person is split off, the
    same person keeps track and name."""
    pipe = _pipe(detector320, embedder, gallery, cut_threshold=1.0, reembed_every=1000)
    res = _play(pipe, [_pasted(img, 400) for img in faces["A"][:10]])
    assert res[-1].faces[0].name == "A"
    tid = res[-1].faces[0].track_id
    (jump,) = _play(pipe, [_pasted(faces[second][12], 240)])
    assert pipe.cuts == 0 and jump.embedded == 1, "the jump did not force an embedding"
    (face,) = jump.faces
    if second == "A":
        assert pipe.splits == 0 and (face.track_id, face.name) == (tid, "A")
    else:
        assert pipe.splits == 1 and face.track_id != tid and face.name != "A"
        assert [st.track_id for st in jump.left] == [tid]


def test_unsure_track_shows_question_mark_until_matches_agree(faces, detector320, embedder, gallery) -> None:
    """No single match is strong enough (strong_margin 2): the first embedded frame is
    undecided ("?"), the second agreeing match names the face."""
    pipe = _pipe(detector320, embedder, gallery, strong_margin=2.0)
    labels = [f for f in _labels(_play(pipe, faces["A"][:6])) if f]
    assert labels[0][0][1:] == (None, False), labels
    assert labels[1][0][1:] == ("A", True), labels


def test_strong_match_names_at_once(faces, detector320, embedder, gallery) -> None:
    pipe = _pipe(detector320, embedder, gallery)
    labels = [f for f in _labels(_play(pipe, faces["A"][:4])) if f]
    sim = gallery.search(_embed_one(detector320, embedder, faces["A"][1])[None], 0.0, top_k=1)[0].similarity
    assert sim >= embedder.default_threshold + TrackingConfig().strong_margin, f"A's match is not strong: {sim}"
    assert labels[0][0][1:] == ("A", True), labels
