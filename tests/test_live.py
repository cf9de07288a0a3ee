"""The live loop: stage timing, selective embedding, gallery hot reload, the command line
(signals, stats, events, bad sources) and the acceptance run on real clips."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facerec.capture import Frame, open_source
from facerec.config import Config, TrackingConfig
from facerec.events import CallbackSink, TrackEvents
from facerec.live import GalleryWatcher, LivePipeline, PipelineSettings, RunOptions, StageTimer, run_live
from facerec.sinks import EventsSink
from facerec.types import Detections, EmbedderKey, Embeddings, Match, Matches, TrackRecord
from conftest import MODEL_FLAGS

REPO = Path(__file__).resolve().parents[1]
KEY = EmbedderKey("stub", "0" * 64)


# ----------------------------------------------------------------------------- stubs


class MovingFace:
    """A detector stub: one face drifting right and growing by ``grow`` px per call."""

    def __init__(self, grow: float = 0.0) -> None:
        self.calls = 0
        self.grow = grow

    def __call__(self, image: np.ndarray) -> Detections:
        k = self.calls
        self.calls += 1
        s = 60 + self.grow * k
        x = 40 + 2 * k
        box = np.array([[x, 40, x + s, 40 + s * 1.2]], np.float32)
        cx, cy = x + s / 2, 40 + s * 0.6
        lm = np.array([[[cx - s / 5, cy - s / 6], [cx + s / 5, cy - s / 6], [cx, cy], [cx - s / 6, cy + s / 5],
                        [cx + s / 6, cy + s / 5]]], np.float32)
        return Detections(box, [0.9], lm)


class StubEmbedder:
    key = KEY
    dim = 4

    def __init__(self) -> None:
        self.faces = 0

    def embed(self, faces, flip: bool = False) -> Embeddings:
        n = len(faces)
        self.faces += n
        return Embeddings.from_raw(np.tile([1.0, 0, 0, 0], (n, 1)), KEY)


class StubGallery:
    def __init__(self, name: str | None = "alice", sim: float = 0.8) -> None:
        self.name, self.sim = name, sim

    def search(self, emb, threshold: float, top_k: int = 1) -> Matches:
        return Matches([Match(self.name if self.sim >= threshold else None, self.sim, []) for _ in range(len(emb))])


def _frames(n: int):
    img = np.zeros((360, 480, 3), np.uint8)
    return [Frame(img, i, i / 25.0) for i in range(n)]


# ----------------------------------------------------------------------------- timer


def test_stage_timer_mean_p95_and_bounded_memory() -> None:
    t = StageTimer(("a", "b"), window=64)
    for i in range(1000):
        t.add("a", float(i % 100))
    assert t.mean("a") == pytest.approx(49.5)
    assert 90 <= t.p95("a") <= 99
    assert t._ring["a"].shape == (64,)
    assert set(t.summary()) == {"a"}  # untimed stages are left out
    with t.time("b"):
        time.sleep(0.01)
    assert t.summary()["b"]["mean_ms"] >= 9


# ----------------------------------------------------------------------------- pipeline policies


def test_no_face_frames() -> None:
    p = LivePipeline(lambda img: Detections.empty(), StubEmbedder(), PipelineSettings(threshold=0.3),
                     gallery=StubGallery())
    for f in _frames(5):
        r = p.step(f)
        assert r.faces == [] and r.left == []
    assert p.faces_seen == 0 and p.faces_embedded == 0


def test_embeds_new_tracks_then_only_every_k_frames() -> None:
    emb = StubEmbedder()
    p = LivePipeline(MovingFace(), emb,
                     PipelineSettings(threshold=0.3, tracking=TrackingConfig(reembed_every=10, min_hits=2)),
                     gallery=StubGallery("alice", 0.8))
    names = [[(f.track_id, f.name) for f in p.step(fr).faces] for fr in _frames(41)]
    assert names[0] == []  # min_hits: no id on the first sighting
    assert all(n == [(names[1][0][0], "alice")] for n in names[1:])
    # embedded at frames 1, 11, 21 and 31: 4 embeddings for 40 face-frames
    assert emb.faces == 4 == p.faces_embedded
    assert p.faces_seen == 40


def test_growing_face_is_re_embedded_on_quality_gain() -> None:
    emb = StubEmbedder()
    tracking = TrackingConfig(reembed_every=1000, quality_gain=1.5, min_hits=2)
    p = LivePipeline(MovingFace(grow=3.0), emb, PipelineSettings(threshold=0.3, tracking=tracking),
                     gallery=StubGallery())
    for fr in _frames(40):
        p.step(fr)
    assert 2 <= emb.faces <= 6  # area grows ~4x over the run: about log(4)/log(1.5) re-embeddings


def test_detect_every_n_frames_boxes_coast_between() -> None:
    det = MovingFace()

    def slow_detector(img: np.ndarray) -> Detections:
        time.sleep(0.01)  # at least 10 ms per run, so the timer has a floor to show
        return det(img)

    p = LivePipeline(slow_detector, StubEmbedder(),
                     PipelineSettings(threshold=0.3, detect_every=3, tracking=TrackingConfig(min_hits=2)),
                     gallery=StubGallery())
    results = [p.step(fr) for fr in _frames(30)]
    # frame 0 sees a new face, frame 1 confirms its track, then every third frame
    assert [r.detected for r in results[:8]] == [True, True, False, False, True, False, False, True]
    assert det.calls == 11
    assert all(len(r.faces) == 1 for r in results[1:])
    # every frame is timed (0 ms without a detector run), so the mean is per frame: 11 runs
    # of at least 10 ms over 30 frames; the stages that never ran are left out
    summary = p.timer.summary()
    assert summary["detect"]["mean_ms"] >= 11 * 10 / 30 and p.timer._count["detect"] == 30
    assert set(summary) == {"detect", "track", "embed", "match"}


def test_unknown_below_threshold_and_no_gallery() -> None:
    p = LivePipeline(MovingFace(), StubEmbedder(),
                     PipelineSettings(threshold=0.5, tracking=TrackingConfig(min_hits=2)),
                     gallery=StubGallery("alice", 0.4))
    faces = [p.step(fr).faces for fr in _frames(5)][-1]
    assert faces[0].name is None and faces[0].decided and faces[0].similarity == pytest.approx(0.4)
    p = LivePipeline(MovingFace(), StubEmbedder(),
                     PipelineSettings(threshold=0.5, tracking=TrackingConfig(min_hits=2)), gallery=None)
    assert [p.step(fr).faces for fr in _frames(3)][-1][0].name is None


def test_track_end_gives_left_events() -> None:
    class Blink(MovingFace):
        def __call__(self, image):
            d = super().__call__(image)
            return d if self.calls <= 5 else Detections.empty()

    got = []
    events = TrackEvents([CallbackSink(got.append)], "cam", cooldown_s=0)
    p = LivePipeline(Blink(), StubEmbedder(),
                     PipelineSettings(threshold=0.3, tracking=TrackingConfig(track_buffer=3, min_hits=2)),
                     gallery=StubGallery())
    for fr in _frames(20):
        r = p.step(fr)
        events.update(fr.t, r.faces, [s.track_id for s in r.left])
    assert [(e.event, e.name) for e in got] == [("appeared", "alice"), ("recognized", "alice"), ("left", "alice")]
    assert got[-1].box is not None, "the pipeline's own faces carry their boxes into events"


def test_stills_mode_names_every_face_of_every_photo() -> None:
    det = MovingFace()
    p = LivePipeline(det, StubEmbedder(), PipelineSettings(threshold=0.3, stills=True),
                     gallery=StubGallery("alice", 0.8))
    results = [p.step(fr) for fr in _frames(3)]
    assert [len(r.faces) for r in results] == [1, 1, 1]
    assert [r.faces[0].track_id for r in results] == [0, 1, 2]
    assert all(r.faces[0].name == "alice" and r.faces[0].decided for r in results)
    assert [[s.track_id for s in r.left] for r in results] == [[], [0], [1]]
    assert p.faces_embedded == 3 and [s.track_id for s in p.finish()] == [2]


def test_tracks_leave_the_pipeline_as_frozen_records() -> None:
    p = LivePipeline(MovingFace(), StubEmbedder(), PipelineSettings(threshold=0.3, stills=True, keep_crops=True),
                     gallery=StubGallery("alice", 0.8))
    first, second, third = _frames(3)
    (seen,) = p.step(first).in_view
    (gone,) = p.step(second).left
    assert isinstance(gone, TrackRecord) and gone is not seen
    assert (gone.track_id, gone.name, gone.decided, gone.unknown) == (seen.track_id, "alice", True, False)
    assert gone.best_crop is not None and gone.best_crop.shape == (112, 112, 3) and len(gone.best_faces) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        gone.name = "bob"  # type: ignore[misc]
    p.step(third)
    assert gone.name == "alice" and len(gone.best_faces) == 1, "later frames do not reach a record handed out"


def test_run_live_on_a_file_keeps_unknown_crops_and_publishes_events(tmp_path: Path, caplog) -> None:
    import logging

    import cv2

    from facerec.events import UnknownCrops

    avi = tmp_path / "blank.avi"
    w = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 25, (480, 360))
    for _ in range(20):
        w.write(np.full((360, 480, 3), 90, np.uint8))
    w.release()
    got = []
    events = TrackEvents([CallbackSink(got.append)], "cam")
    keeper = UnknownCrops(tmp_path / "unknown", retention_s=3600, max_files=10)
    p = LivePipeline(MovingFace(), StubEmbedder(), PipelineSettings(threshold=0.5, keep_crops=True),
                     gallery=StubGallery(None, 0.1))
    with open_source(avi) as cap:
        with caplog.at_level(logging.INFO, logger="facerec.live"):
            stats = run_live(cap, p, sinks=[EventsSink(events), keeper], options=RunOptions(stats_every_s=0.001))
    assert stats["frames"] == 20 and stats["faces_seen"] == 19 and stats["events"] == 3
    assert any(r.getMessage().startswith("camera cam: frames=") for r in caplog.records), "named as in its events"
    assert [(e.event, e.name) for e in got] == [("appeared", None), ("unknown", None), ("left", None)]
    assert got[-1].t == pytest.approx(19 / 25)
    assert len(list((tmp_path / "unknown").glob("*.jpg"))) == 1


# ----------------------------------------------------------------------------- gallery reload


def _wait_for(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_gallery_changes_are_picked_up_without_restart(tmp_path: Path) -> None:
    from facerec.gallery.store import GalleryStore

    data = tmp_path / "gallery"
    watcher = GalleryWatcher(data, KEY, poll_s=0.05)
    assert watcher.index is None  # no gallery yet: everyone unknown, and no error

    tracking = TrackingConfig(min_hits=2, reembed_every=2, vote_window=1)
    p = LivePipeline(MovingFace(), StubEmbedder(), PipelineSettings(threshold=0.5, tracking=tracking), gallery=watcher)
    frames = _frames(40)
    assert p.step(frames[0]).faces == []  # a track is confirmed on its second sighting
    assert p.step(frames[1]).faces[0].name is None

    with GalleryStore(data) as store:
        vec = Embeddings.from_raw(np.array([[1.0, 0.1, 0, 0]]), KEY)
        store.add_sample("carol", np.zeros((112, 112, 3), np.uint8), source_path=None, source_sha256="x" * 64,
                         quality=1.0, embeddings=vec)
        v = store.version()
    _wait_for(lambda: watcher.version == v)  # the watcher's own thread applies it
    names = [p.step(f).faces[0].name for f in frames[2:10]]
    assert names[-1] == "carol"

    with GalleryStore(data) as store:
        store.rename_person("carol", "caroline")
        v = store.version()
    _wait_for(lambda: watcher.version == v)
    names = [p.step(f).faces[0].name for f in frames[10:20]]
    assert names[-1] == "caroline" and watcher.reloads >= 1
    watcher.close()


# ----------------------------------------------------------------------------- command line


def _rec_cam(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("FACEREC_WEIGHTS", str(REPO.parent / "shared" / "models"))
    return subprocess.Popen([sys.executable, str(REPO / "rec_cam.py"), *args], cwd=kw.get("cwd", REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


MODELS = (*MODEL_FLAGS, "--input-size", "320")


def test_cli_nonexistent_source_is_one_clear_line(tmp_path: Path) -> None:
    proc = _rec_cam("--source", str(tmp_path / "nope.mp4"), *MODELS)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no such file or directory" in err and "Traceback" not in err


def test_cli_text_file_as_source_is_an_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    proc = _rec_cam("--source", str(notes), *MODELS)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "cannot be opened" in err and "Traceback" not in err


def test_cli_corrupt_video(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes((data_dir / "video" / "lp_driving_d0.mp4").read_bytes()[:30000])
    proc = _rec_cam("--source", str(bad), *MODELS)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "broken.mp4" in err and "Traceback" not in err


def test_cli_view_img_without_display(tmp_path: Path, data_dir: Path) -> None:
    env_display = os.environ.pop("DISPLAY", None), os.environ.pop("WAYLAND_DISPLAY", None)
    try:
        proc = _rec_cam("--source", str(data_dir / "video" / "lp_driving_d0.mp4"), "--view-img", *MODELS)
        out, err = proc.communicate(timeout=60)
    finally:
        for k, v in zip(("DISPLAY", "WAYLAND_DISPLAY"), env_display):
            if v is not None:
                os.environ[k] = v
    assert proc.returncode == 2 and "--view-img" in err and "Traceback" not in err


def test_cli_file_run_writes_video_events_and_stats(tmp_path: Path, data_dir: Path) -> None:
    stats, events, video = tmp_path / "stats.json", tmp_path / "events.jsonl", tmp_path / "out.mp4"
    proc = _rec_cam("--source", str(data_dir / "video" / "lp_driving_d0.mp4"), *MODELS, "--max-frames", "20",
                    "--data-dir", str(tmp_path / "gallery"), "--events", str(events), "--stats", str(stats),
                    "--save-img", str(video), "--camera", "lab")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    s = json.loads(stats.read_text())
    assert s["frames"] == 20 and s["fps"] > 0 and s["dropped"] == 0
    assert s["faces_seen"] >= 15 and 1 <= s["faces_embedded"] <= s["faces_seen"]
    for stage in ("capture", "detect", "track", "embed", "match", "draw", "sinks"):
        assert set(s["stages"][stage]) == {"mean_ms", "p95_ms"}
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["event"] for r in rows] == ["appeared", "unknown", "left"]
    assert rows[0]["name"] is None and rows[0]["camera"] == "lab"
    # wall-clock time in every record, as serve's events have it
    assert all(abs(r["ts"] - time.time()) < 600 and r["time"].endswith("Z") for r in rows), rows[0]
    import cv2

    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    cap.release()


def test_cli_image_folder_writes_annotated_images(tmp_path: Path, photo) -> None:
    import shutil

    src = tmp_path / "photos"
    src.mkdir()
    multi = Path(photo("face_recognition_examples/_multi"))
    for p in sorted(multi.glob("*.jpg"))[:2]:
        shutil.copy(p, src / p.name)
    (src / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    stats, out_dir = tmp_path / "stats.json", tmp_path / "annotated"
    proc = _rec_cam("--source", str(src), *MODELS, "--data-dir", str(tmp_path / "gallery"), "--stats", str(stats),
                    "--save-img", str(out_dir))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "zz_broken.jpg" in err and "Traceback" not in err
    s = json.loads(stats.read_text())
    assert s["frames"] == 2 and s["skipped"] == 1 and s["faces_seen"] >= 4  # two people per photo
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in src.glob("*.jpg") if "broken" not in p.name)


def test_cli_sigint_on_a_looped_file_stops_promptly_and_writes_stats(tmp_path: Path, data_dir: Path) -> None:
    stats = tmp_path / "stats.json"
    proc = _rec_cam("--source", str(data_dir / "video" / "lp_driving_d0.mp4"), *MODELS, "--loop",
                    "--detect-every", "3", "--data-dir", str(tmp_path / "gallery"), "--stats", str(stats),
                    "--stats-every", "0.2")
    try:
        t0 = time.monotonic()
        line = ""
        while "frames=" not in line:  # wait until frames are being processed
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "rec_cam.py exited early"
            assert time.monotonic() - t0 < 120, "no stats line within 120 s"
        proc.send_signal(signal.SIGINT)
        try:  # a hang guard, not a speed bound (the machine is shared)
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("rec_cam.py was still running 120 s after SIGINT on a looped file")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    # the loop left and the files were closed: the summary is the last line, after every
    # periodic stats line, and the stats file holds the frames it counts
    lines = [r for r in err.splitlines() if r.strip()]
    summary = [i for i, r in enumerate(lines) if r.startswith("facerec run:")]
    assert summary and all(r.startswith("facerec run:") for r in lines[summary[0]:] if "frames=" in r), err
    s = json.loads(stats.read_text())
    assert s["frames"] > 0


def test_run_live_stops_on_a_dead_stream_when_asked(tmp_path: Path) -> None:
    """A camera that disappears: the loop keeps waiting (reconnecting) and stops on request."""
    import threading

    from test_capture import MjpegServer

    srv = MjpegServer(fps=30)
    cap = open_source(srv.url, reconnect_max_s=0.3, read_timeout_s=1.0)
    p = LivePipeline(lambda img: Detections.empty(), StubEmbedder(), PipelineSettings(threshold=0.3), gallery=None)
    stop = threading.Event()
    result = {}
    th = threading.Thread(target=lambda: result.update(run_live(cap, p, stop=stop, options=RunOptions(stats_every_s=0))))
    th.start()
    try:
        t0 = time.monotonic()
        while p.frames < 5 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        srv.kill()
        while cap.stats.attempts < 2 and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        stop.set()
        th.join(60.0)  # a hang guard: the loop must notice the stop while the camera is away
        assert not th.is_alive(), "run_live did not return after stop was set"
    finally:
        stop.set()
        cap.close()
    assert result["frames"] >= 5 and result["reconnect_attempts"] >= 2 and result["online"] is False


# ----------------------------------------------------------------------------- acceptance


OWN = "lp_driving_d3.mp4"
OTHERS = ("lp_driving_d0.mp4", "lp_driving_d11.mp4", "lp_driving_d12.mp4", "lp_source_s13.mp4")
PERSON = "driver_d3"


@pytest.mark.slow
def test_acceptance_person_named_in_own_clip_only(tmp_path: Path, data_dir: Path, analyzer, progress) -> None:
    """Enroll the person of one clip from frames of its first seconds; run the daemon's own
    camera pipeline (:func:`~facerec.camera.build_camera`) over up to 150 frames of several
    clips (detector input 320): the person is named in their own clip, nobody is named in
    the others."""
    import cv2

    from facerec.camera import build_camera
    from facerec.daemon import CameraSpec, SharedModels
    from facerec.detect import create_detector
    from facerec.gallery.service import GalleryService

    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path / "gallery")
    video = data_dir / "video"
    cap = cv2.VideoCapture(str(video / OWN))
    enrolled = 0
    with GalleryService(cfg, analyzer) as service:
        for i in range(100):
            ok, img = cap.read()
            assert ok
            if i % 12 == 0:
                enrolled += service.enroll_image(PERSON, img).ok
    cap.release()
    assert enrolled >= 5

    cfg.detection.input_size = 320
    models = SharedModels(create_detector("yolov5n-0.5-face", input_size=320), analyzer.embedder, slots=1)
    counts: dict[str, dict] = {}
    frames: dict[str, int] = {}
    for clip in (OWN, *OTHERS):
        progress(f"live acceptance: {clip}")
        watcher = GalleryWatcher(cfg.gallery.data_dir, analyzer.embedder.key, cfg.gallery)
        pipe = build_camera(CameraSpec.single(str(video / clip), cfg), models, cfg, gallery=watcher)
        source = open_source(video / clip)
        named: dict[str | None, int] = {}
        try:
            for frame in source:
                if clip == OWN and frame.index < 100:
                    continue  # frames used for enrollment are not scored
                for face in pipe.step(frame).faces:
                    if face.decided:
                        named[face.name] = named.get(face.name, 0) + 1
                if pipe.frames >= 150:
                    break
        finally:
            source.close()
            watcher.close()
        counts[clip] = named
        frames[clip] = pipe.frames
    print("\nacceptance face-frames per name:", json.dumps({k: {str(n): c for n, c in v.items()} for k, v in counts.items()}))
    own = counts[OWN]
    assert own.get(PERSON, 0) >= 0.95 * sum(own.values()) and own.get(PERSON, 0) >= 100
    for clip in OTHERS:
        assert sum(counts[clip].values()) >= 0.9 * frames[clip], f"{clip}: the face was not tracked"
        assert set(counts[clip]) == {None}, f"{clip}: somebody was named: {counts[clip]}"
