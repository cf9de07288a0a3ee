"""The pacer: fed per-frame costs from a fixed table (the detector at each input size, the
embedder, the rest of a frame) scaled by a load, it slows down under load, comes back when
the load goes, stays inside its bounds and does not oscillate; and short runs on the real
models through the daemon's own camera builder report what it chose."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from facerec.config import Config, LiveConfig, load_config
from facerec.pace import PaceBounds, Pacer, PaceSetting, can_resize, detector_input_size, set_input_size

CLIP = "video/lp_driving_d3.mp4"
SIZES = (320, 288, 256, 224, 192)


@pytest.fixture(scope="module")
def frame(data_dir: Path) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(data_dir / CLIP))
    ok, img = cap.read()
    cap.release()
    assert ok, f"cannot read {data_dir / CLIP}"
    return img


#: Milliseconds per frame part: the detector at each input size (about the area ratio of a
#: small CPU detector), the embedder on one face, and the rest of a frame without a detector
#: run. A fixed table, not measured: the pacer's decisions below depend only on it, never on
#: what else the machine was doing (the real models are run by the tests at the end).
COSTS: dict = {"detect": {320: 24.0, 288: 19.5, 256: 15.5, 224: 12.0, 192: 9.0}, "embed": 6.0, "plain": 1.0}


@pytest.fixture
def costs() -> dict:
    return {"detect": dict(COSTS["detect"]), "embed": COSTS["embed"], "plain": COSTS["plain"]}


class Loop:
    """Replays the live loop's timing: the detector runs every ``detect_every`` frames, a
    frame costs the measured times x ``load``, and a camera frame comes every interval (the
    loop waits when it is faster)."""

    def __init__(self, pacer: Pacer, costs: dict, interval_s: float) -> None:
        self.pacer, self.costs, self.interval_s = pacer, costs, interval_s
        self.now = 0.0
        self.since = 10**9
        self.settings: list[PaceSetting] = []
        self.work: list[float] = []
        self.periods: list[float] = []
        self.changes: list[tuple[float, PaceSetting]] = []

    def run(self, seconds: float, load: float, jitter: float = 0.0, seed: int = 0,
            detect_cost=None) -> None:
        rng = random.Random(seed)
        end = self.now + seconds
        while self.now < end:
            s = self.pacer.setting
            detect = self.since >= s.detect_every
            self.since = 1 if detect else self.since + 1
            noise = 1.0 + rng.uniform(-jitter, jitter)
            det_ms = None
            work = self.costs["plain"] * load * noise
            if detect:
                raw = detect_cost(s.input_size) if detect_cost else self.costs["detect"][s.input_size]
                det_ms = raw * load * noise
                work += det_ms + self.costs["embed"] * load * noise
            period = max(work / 1000.0, self.interval_s)
            self.now += period
            self.settings.append(s)
            self.work.append(work)
            self.periods.append(period)
            new = self.pacer.update(work, det_ms, self.now)
            if new is not None:
                self.changes.append((self.now, new))

    def mean_work(self, last_s: float) -> float:
        """Mean ms per frame over the last ``last_s`` seconds."""
        t, total, n = 0.0, 0.0, 0
        for w, p in zip(reversed(self.work), reversed(self.periods)):
            if t >= last_s:
                break
            t, total, n = t + p, total + w, n + 1
        return total / n


def cost_at(costs: dict, s: PaceSetting, load: float) -> float:
    return load * (costs["plain"] + (costs["detect"][s.input_size] + costs["embed"]) / s.detect_every)


def bounds_for(costs: dict, **kw) -> PaceBounds:
    """A frame interval that the best setting meets idle with room to spare, and that the
    cheapest one still meets at 4x the load (so the pacer has to move, and can)."""
    cheapest = PaceSetting(6, 192)
    budget = 1.25 * cost_at(costs, cheapest, 4.0)
    args = dict(target_fps=1000.0 / budget, min_every=3, max_every=6, max_interval_s=10.0, max_size=320,
                min_size=192)
    args.update(kw)
    return PaceBounds(**args)


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("kw, match", [
    (dict(target_fps=0), "target_fps"),
    (dict(min_every=0), "min_every"),
    (dict(min_every=5, max_every=4), "min_every"),
    (dict(min_size=200), "multiples of 32"),
    (dict(min_size=352), "min <= max"),
])
def test_bad_bounds_are_refused(kw: dict, match: str) -> None:
    args = dict(target_fps=25.0, min_every=3, max_every=6, max_interval_s=0.2, max_size=320, min_size=192)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        PaceBounds(**args)


def test_bounds_from_config_keep_the_configured_setting_as_the_best() -> None:
    live = LiveConfig(detect_every=10, max_detect_every=8, min_input_size=416)
    b = PaceBounds.from_config(live, 320, source_fps=0)
    assert (b.min_every, b.max_every, b.min_size, b.max_size, b.target_fps) == (10, 10, 320, 320, 25.0)
    b = PaceBounds.from_config(LiveConfig(target_fps=12), 320, source_fps=30)
    assert b.target_fps == 12 and (b.min_every, b.max_every, b.min_size) == (3, 8, 192)
    p = Pacer.from_config(LiveConfig(), 320)
    p.start(30.0)
    assert p.bounds.target_fps == 30.0 and p.setting == PaceSetting(3, 320)


def test_shipped_live_defaults_are_the_fast_path() -> None:
    from facerec.models import live_threads

    live, cfg = LiveConfig(), Config()
    assert (live.detect_every, live.live_input_size(cfg.detection), live_threads(cfg), live.adapt) == (3, 320, 1, True)
    assert live_threads(load_config(None, {"runtime.threads": 2})) == 2
    assert not live.overlay_stats


def test_levels_widen_the_interval_first_and_bound_it_in_seconds() -> None:
    p = Pacer(PaceBounds(target_fps=25, min_every=2, max_every=8, max_interval_s=0.2, max_size=320, min_size=256))
    assert [s.label for s in p.levels()] == ["1/2@320", "1/3@320", "1/4@320", "1/5@320", "1/5@288", "1/5@256"]
    p = Pacer(PaceBounds(target_fps=10, min_every=3, max_every=8, max_interval_s=0.2, max_size=320, min_size=256))
    assert [s.label for s in p.levels()] == ["1/3@320", "1/3@288", "1/3@256"]  # min_every wins over 0.2 s


# ----------------------------------------------------------------------------- control


def test_idle_keeps_the_configured_setting(costs: dict) -> None:
    b = bounds_for(costs)
    assert cost_at(costs, PaceSetting(3, 320), 1.0) < 0.75 * 1000 / b.target_fps, costs
    loop = Loop(Pacer(b), costs, 1 / b.target_fps)
    loop.run(30, load=1.0, jitter=0.2)
    assert loop.changes == [] and set(loop.settings) == {PaceSetting(3, 320)}


def test_slows_down_under_load_then_recovers(costs: dict) -> None:
    b = bounds_for(costs)
    budget = 1000 / b.target_fps
    assert cost_at(costs, PaceSetting(3, 320), 4.0) > budget, costs  # the pacer must act
    pacer = Pacer(b)
    loop = Loop(pacer, costs, 1 / b.target_fps)
    loop.run(5, load=1.0)
    loop.run(20, load=4.0, jitter=0.1, seed=1)
    under_load = pacer.setting
    assert under_load != PaceSetting(3, 320)
    assert loop.changes[0][0] < 5 + 3, "reacts within a few seconds"
    assert loop.mean_work(10) <= budget * 1.05, "holds the frame rate once settled"
    loop.run(60, load=1.0, jitter=0.1, seed=2)
    assert pacer.setting == PaceSetting(3, 320), pacer.history
    assert loop.mean_work(10) <= budget
    s = pacer.summary()
    assert s["changes"] == len(loop.changes) and sum(s["frames_at"].values()) == len(loop.settings)
    assert s["setting"] == "1/3@320" and s["history"][-1]["setting"] == "1/3@320"


def test_bounds_are_respected_whatever_the_load(costs: dict) -> None:
    b = bounds_for(costs, max_every=5, min_size=224, max_interval_s=0.2)
    loop = Loop(Pacer(b), costs, 1 / b.target_fps)
    for load in (1, 3, 50, 2, 8, 1):  # 50x: nothing fits, it runs at the cheapest setting
        loop.run(15, load=load, jitter=0.2, seed=load)
        # settled (the last 5 s of each load): the detect interval fits 0.2 s at the frame
        # period measured then, or is the configured minimum
        n = 0
        while sum(loop.periods[-n - 1:]) < 5:
            n += 1
        period = sum(loop.periods[-n:]) / n
        widest = max(s.detect_every for s in loop.settings[-n:])
        assert widest == b.min_every or widest * period <= 0.2 * 1.1, (load, widest, period)
    sizes = {s.input_size for s in loop.settings}
    assert sizes <= {320, 288, 256, 224} and 224 in sizes
    assert all(b.min_every <= s.detect_every <= b.max_every for s in loop.settings)
    assert all(s.input_size % 32 == 0 for s in loop.settings)


def test_overloaded_loop_keeps_the_interval_short_in_seconds(costs: dict) -> None:
    b = bounds_for(costs, max_every=8, max_interval_s=0.2)
    pacer = Pacer(b)
    loop = Loop(pacer, costs, 1 / b.target_fps)
    loop.run(30, load=60.0)  # frames take far longer than the interval
    period = sum(loop.periods[-20:]) / 20
    assert period > 0.2 / b.min_every, "widening the interval would break the 0.2 s bound"
    assert pacer.setting == PaceSetting(b.min_every, 192), pacer.history


def test_no_oscillation_at_the_edge(costs: dict) -> None:
    """A load where the best setting just misses and the next one just fits: one change,
    then it stays, noise or not."""
    b = bounds_for(costs)
    budget = 1000 / b.target_fps
    best, second = PaceSetting(3, 320), PaceSetting(4, 320)
    load = 1.02 * budget / cost_at(costs, best, 1.0)
    assert cost_at(costs, second, load) < budget
    loop = Loop(Pacer(b), costs, 1 / b.target_fps)
    loop.run(120, load=load, jitter=0.05, seed=3)
    assert len(loop.changes) <= 2, loop.pacer.history


def test_a_setting_that_keeps_failing_is_tried_less_and_less_often(costs: dict) -> None:
    """The detector at 320 costs 3x what scaling from 288 predicts: each try to go back
    fails, and the waits between tries double."""
    b = bounds_for(costs)
    d = costs["detect"]
    budget = 1000 / b.target_fps

    def detect_cost(size: int) -> float:
        return d[size] * (3.0 if size == 320 else 1.0)

    load = 0.9 * budget / (costs["plain"] + (detect_cost(320) + costs["embed"]) / 6)
    pacer = Pacer(b, hold_s=2.0, max_hold_s=60.0)
    loop = Loop(pacer, costs, 1 / b.target_fps)
    loop.run(180, load=load, detect_cost=detect_cost)
    tries = [t for t, s in loop.changes if s.input_size == 320]
    gaps = np.diff(tries)
    assert len(tries) <= 8, pacer.history
    assert all(g2 >= g1 * 1.5 for g1, g2 in zip(gaps[:3], gaps[1:4])), gaps


def test_a_fixed_size_detector_moves_only_the_interval(costs: dict) -> None:
    b = bounds_for(costs)
    loop = Loop(Pacer(b, resizable=False), costs, 1 / b.target_fps)
    loop.run(20, load=4.0)
    assert {s.input_size for s in loop.settings} == {320}
    assert loop.pacer.setting.detect_every > 3


# ----------------------------------------------------------------------------- real run


def test_detector_input_size_changes_at_run_time(detector, frame) -> None:
    import copy

    det = copy.copy(detector)
    assert can_resize(det) and detector_input_size(det) == 640
    assert set_input_size(det, 224) and det.preprocess(frame)[0].shape[-1] == 224
    with pytest.raises(ValueError, match="multiples of 32"):
        set_input_size(det, 300)


@pytest.mark.parametrize("target_fps", [None, 1000.0])
def test_a_real_run_reports_what_the_pacer_chose(tmp_path: Path, data_dir: Path, detector, embedder,
                                                target_fps) -> None:
    """Real models on a real clip. At the clip's own rate the shipped setting holds; asked for
    1000 FPS the pacer must give up quality, and the stats say what it chose."""
    from facerec.camera import build_camera
    from facerec.capture import open_source
    from facerec.daemon import CameraSpec, SharedModels
    from facerec.live import RunOptions, run_live

    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path / "gallery")
    cfg.live.target_fps = target_fps
    pipe = build_camera(CameraSpec.single(str(data_dir / CLIP), cfg), SharedModels(detector, embedder, slots=1), cfg)
    assert detector.input_size == 640, "the shared detector is left as it was"
    pipe.warmup()
    # the pacer decides on about 1 s of frames: give the fast case (OpenVINO runs a frame in
    # a few ms) enough of them, looping the clip
    n = 90 if target_fps is None else 400
    with open_source(data_dir / CLIP, loop=True) as cap:
        stats = run_live(cap, pipe, options=RunOptions(max_frames=n, stats_every_s=0))
    pace = stats["pace"]
    assert stats["fps"] > 0 and stats["frames"] == n
    assert pace["enabled"] and sum(pace["frames_at"].values()) == n
    assert (stats["detect_every"], stats["input_size"]) == (pace["detect_every"], pace["input_size"])
    if target_fps is None:
        assert pace["target_fps"] == pytest.approx(cap.fps)
    else:
        assert pace["target_fps"] == 1000.0 and pace["changes"] >= 1
        assert stats["input_size"] < 320 or stats["detect_every"] > 3
        assert pace["history"][0]["frame_ms"] > pace["history"][0]["budget_ms"]


class Recorder:
    """A frame output keeping the annotated images."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.raw: list[np.ndarray] = []

    def write(self, frame, image: np.ndarray) -> bool:
        self.raw.append(frame.image)
        self.images.append(image)
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("overlay", [False, True])
def test_timing_overlay_only_when_asked(tmp_path: Path, data_dir: Path, detector, embedder, overlay: bool) -> None:
    """Saved and served frames carry no timing figures unless ``live.overlay_stats``; with it,
    the first frame (no FPS measured yet) already shows the title line."""
    from facerec.camera import build_camera
    from facerec.capture import open_source
    from facerec.daemon import CameraSpec, SharedModels
    from facerec.live import RunOptions, run_live
    from facerec.sinks import OutputSink

    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path / "gallery")
    pipe = build_camera(CameraSpec.single(str(data_dir / CLIP), cfg), SharedModels(detector, embedder, slots=1), cfg)
    rec = Recorder()
    with open_source(data_dir / CLIP) as cap:
        run_live(cap, pipe, sinks=[OutputSink(rec)],
                 options=RunOptions(max_frames=3, stats_every_s=0, overlay_stats=overlay))
    corner = (slice(0, 40), slice(0, 120))
    changed = [bool((img[corner] != raw[corner]).any()) for img, raw in zip(rec.images, rec.raw)]
    assert len(changed) == 3 and changed == [overlay] * 3


def test_a_new_face_is_named_within_half_a_second_at_the_widest_interval(tmp_path: Path, data_dir: Path,
                                                                          analyzer) -> None:
    """Real models, a person enrolled from the first frames of their clip. The pipeline runs
    at the cheapest setting the shipped bounds allow (the widest interval that fits 0.2 s,
    the smallest input); the person appears right after a detector run (the worst phase,
    no scene cut to trigger one early) and must be named within 0.5 s of source time."""
    import cv2

    from facerec.capture import Frame
    from facerec.camera import build_camera
    from facerec.daemon import CameraSpec, SharedModels
    from facerec.gallery.service import GalleryService
    from facerec.live import GalleryWatcher

    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path / "gallery")
    cap = cv2.VideoCapture(str(data_dir / CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    clip = []
    while len(clip) < 100 + int(fps):
        ok, img = cap.read()
        assert ok
        clip.append(img)
    cap.release()
    with GalleryService(cfg, analyzer) as service:
        assert sum(service.enroll_image("driver", img).ok for img in clip[:100:12]) >= 5
    bounds = PaceBounds.from_config(cfg.live, 320, fps)
    widest = Pacer(bounds).levels()[-1]
    assert widest.detect_every == int(cfg.live.max_detect_interval_s * fps) and widest.input_size == 192
    watcher = GalleryWatcher(cfg.gallery.data_dir, analyzer.embedder.key, cfg.gallery)
    try:
        models = SharedModels(analyzer.detector, analyzer.embedder, slots=1)
        pipe = build_camera(CameraSpec.single(str(data_dir / CLIP), cfg), models, cfg, gallery=watcher)
        pipe.apply(widest)
        pipe._cut = None  # a blank-to-face change is a scene cut, which would detect at once
        blank = np.zeros_like(clip[0])
        appear = 2 * widest.detect_every + 1  # the frame right after a detector run
        named_at = None
        for i in range(appear + int(fps)):
            img = blank if i < appear else clip[100 + i - appear]
            faces = pipe.step(Frame(img, i, i / fps)).faces
            if i < appear:
                assert not faces
            elif any(f.decided and f.name == "driver" for f in faces):
                named_at = i
                break
    finally:
        watcher.close()
    assert named_at is not None, "never named"
    latency = (named_at - appear) / fps
    print(f"\nnamed {latency:.2f} s after appearing at 1/{widest.detect_every}@{widest.input_size}, {fps:g} fps")
    assert latency <= 0.5
