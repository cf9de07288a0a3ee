"""The live recognition loop: capture -> detect -> track -> align + embed -> match -> vote
-> draw -> sinks.

Each stage is a plain callable timed on its own (:class:`StageTimer`); the per-stage
milliseconds are drawn on the frame, logged periodically and written to ``--stats``.

What makes it real-time on a CPU:

* the detector runs every ``live.detect_every`` frames at ``live.input_size`` (and
  on the next frame when a new face still waits for its track to be confirmed); with
  ``live.adapt`` a :class:`~facerec.pace.Pacer` widens that interval and lowers the input
  when frames take longer than the frame interval, and goes back when the CPU frees up;
* faces are tracked (:class:`~facerec.track.FaceTracker`, ByteTrack) and a face is
  embedded only when its track is new, when its quality (box area x score) improved by
  ``tracking.quality_gain``, or every ``tracking.reembed_every`` frames;
* a track's name is a vote over its recent matches (:class:`~facerec.track.NameVote`);
* capture runs on its own thread and a live camera's newest frame always wins.

The gallery is polled for changes (:class:`GalleryWatcher`), so people enrolled, renamed or
deleted while the daemon runs are picked up within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facerec.align import align
from facerec.capture import CameraLog, Capture, Frame, StateChange
from facerec.config import GalleryConfig, TrackingConfig
from facerec.draw import annotate
from facerec.errors import FacerecError
from facerec.events import TrackEvents
from facerec.pace import Pacer, PaceSetting, detector_input_size, set_input_size
from facerec.redact import redact, source_slug
from facerec.sinks import FrameSink, events_sink
from facerec.track import (FaceTracker, IdentityTemplate, NameVote, SceneCutDetector, box_jumped, face_quality,
                           touching)
from facerec.types import Detections, Match, Matches, TrackedFace, TrackRecord

log = logging.getLogger(__name__)

#: Stage names, in pipeline order.
STAGES = ("capture", "detect", "track", "embed", "match", "draw", "sinks")


class StageTimer:
    """Milliseconds per stage: running mean over all frames, p95 over a recent window.

    Memory is fixed (a ring buffer per stage), so a daemon running for days does not
    grow. A stage that did not run in a frame can be recorded as 0 ms so that the means
    add up to the time per frame.

    Args:
        stages: names of the stages.
        window: samples kept per stage for the percentile.
    """

    def __init__(self, stages: Sequence[str] = STAGES, window: int = 4096) -> None:
        self.stages = tuple(stages)
        self._ring = {s: np.zeros(window, np.float32) for s in self.stages}
        self._count = dict.fromkeys(self.stages, 0)
        self._sum = dict.fromkeys(self.stages, 0.0)
        self._last = dict.fromkeys(self.stages, 0.0)

    def add(self, stage: str, ms: float) -> None:
        ring = self._ring[stage]
        ring[self._count[stage] % len(ring)] = ms
        self._count[stage] += 1
        self._sum[stage] += ms
        self._last[stage] = ms

    @contextmanager
    def time(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - t0) * 1000.0)

    def last(self, stage: str) -> float:
        """The latest sample of ``stage``, ms."""
        return self._last[stage]

    def mean(self, stage: str) -> float:
        n = self._count[stage]
        return self._sum[stage] / n if n else 0.0

    def p95(self, stage: str) -> float:
        n = min(self._count[stage], len(self._ring[stage]))
        return float(np.percentile(self._ring[stage][:n], 95)) if n else 0.0

    def recent(self, stage: str, n: int = 30) -> float:
        """Mean of the last ``n`` samples (what the overlay shows)."""
        ring, count = self._ring[stage], self._count[stage]
        n = min(n, count, len(ring))
        if n == 0:
            return 0.0
        idx = (np.arange(count - n, count) % len(ring))
        return float(ring[idx].mean())

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"mean_ms": ..., "p95_ms": ...}}`` for every stage that was timed."""
        return {
            s: {"mean_ms": round(self.mean(s), 3), "p95_ms": round(self.p95(s), 3)}
            for s in self.stages if self._count[s]
        }


# The daemon's in-memory gallery index (incremental updates, LISTEN/NOTIFY, outages).
from facerec.gallery.watch import GalleryWatcher  # noqa: E402


@dataclass
class TrackState:
    """What the pipeline remembers about one track (its own; sinks get :meth:`record`)."""

    track_id: int
    vote: NameVote
    xyxy: np.ndarray
    score: float
    first_t: float
    last_t: float
    last_embed: int = -(10**9)
    embedded_quality: float = 0.0
    embeds: int = 0
    best_crop: np.ndarray | None = None
    best_crop_quality: float = -1.0
    best_faces: list[tuple[float, np.ndarray, np.ndarray]] = field(default_factory=list)
    template: IdentityTemplate | None = None
    last_run: int = -1

    def record(self) -> TrackRecord:
        """The track as the sinks see it, frozen (crops are shared, never changed)."""
        return TrackRecord(self.track_id, self.vote.name, self.vote.decided, float(self.vote.similarity),
                           self.xyxy.copy(), self.first_t, self.last_t, self.best_crop, tuple(self.best_faces))


@dataclass
class FrameResult:
    """The output of :meth:`LivePipeline.step` for one frame.

    Attributes:
        frame: the frame.
        faces: its faces.
        left: the tracks that ended with it.
        detected: the detector ran on it.
        embedded: faces embedded in it.
        in_view: the tracks still in view after it.
    """

    frame: Frame
    faces: list[TrackedFace]
    left: list[TrackRecord] = field(default_factory=list)
    detected: bool = False
    embedded: int = 0
    in_view: list[TrackRecord] = field(default_factory=list)


@dataclass(frozen=True)
class PipelineSettings:
    """What a :class:`LivePipeline` runs with, fixed for its life (the pacer changes only
    the detect interval and the input size it starts from).

    Attributes:
        threshold: cosine similarity for a match.
        tracking: the ``tracking:`` section.
        detect_every: run the detector on every Nth frame (the starting interval).
        flip: flip test-time augmentation for embeddings.
        keep_crops: remember each track's best aligned crop (for unknown crops).
        keep_best: with ``keep_crops``, also remember each track's ``keep_best`` best
            ``(quality, crop, vector)`` (unknown sightings, :mod:`facerec.unknowns`).
        stills: the frames are unrelated photos (an image folder): every face of every
            frame is embedded and named on its own, without tracking or voting; each face
            gets a new id and "leaves" with the next frame.
    """

    threshold: float
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    detect_every: int = 1
    flip: bool = False
    keep_crops: bool = False
    keep_best: int = 1
    stills: bool = False


class LivePipeline:
    """Per-frame recognition with tracking, selective embedding and voting.

    The daemon builds it for a camera with :func:`facerec.camera.build_camera`.

    Args:
        detector: any callable image -> :class:`~facerec.types.Detections`.
        embedder: an :class:`~face_embedding.Embedder`.
        settings: threshold, tracking and the per-camera choices (:class:`PipelineSettings`).
        gallery: a :class:`GalleryWatcher`, a fixed index (anything with ``search``), or
            ``None`` (everyone unknown).
        timer: where stage times go.
        pacer: adapts ``detect_every`` and the detector input to hold the frame rate
            (:func:`run_live` feeds it); ``None`` = fixed settings.
    """

    def __init__(self, detector: Callable[[np.ndarray], Detections], embedder, settings: PipelineSettings, *,
                 gallery=None, timer: StageTimer | None = None, pacer: Pacer | None = None) -> None:
        self.settings = settings
        self.detector = detector
        self.stills = settings.stills
        self._next_still_id = 0
        self.embedder = embedder
        self.threshold = float(settings.threshold)
        self.tracking = settings.tracking
        self.detect_every = max(1, int(settings.detect_every))
        self.gallery = gallery
        self.flip = settings.flip
        self.keep_crops = settings.keep_crops
        self.keep_best = max(1, int(settings.keep_best))
        self.timer = timer or StageTimer()
        self.pacer = None if self.stills else pacer
        self.tracker = FaceTracker(self.tracking, self.detect_every)
        self.tracks: dict[int, TrackState] = {}
        self.frames = 0
        self.faces_seen = 0
        self.faces_embedded = 0
        self.tracks_started = 0
        self._visible: list[int] = []
        self._last_detect = -(10**9)
        self._new_faces = False
        self._next_id = 1
        self._runs = 0
        self.splits = 0
        self.cuts = 0
        self._cut = SceneCutDetector(self.tracking.cut_threshold) if self.tracking.identity_check else None

    def _index(self):
        g = self.gallery
        return g.index if isinstance(g, GalleryWatcher) else g

    def _match(self, emb) -> Matches:
        index = self._index()
        if index is None:
            return Matches([Match(None, -1.0, []) for _ in range(len(emb))])
        return index.search(emb, self.threshold, top_k=1)

    def _new_track(self, frame: Frame, xyxy: np.ndarray, score: float) -> TrackState:
        """A fresh track state (new id, empty vote and template)."""
        tc = self.tracking
        if tc.identity_check:
            vote = NameVote(self.threshold, tc.vote_window, tc.switch_margin, tc.min_agree,
                            self.threshold + tc.strong_margin)
            template: IdentityTemplate | None = IdentityTemplate(tc.template_alpha)
        else:
            vote, template = NameVote(self.threshold, tc.vote_window, tc.switch_margin), None
        tid, self._next_id = self._next_id, self._next_id + 1
        self.tracks_started += 1
        return TrackState(tid, vote, xyxy.copy(), score, frame.t, frame.t, template=template)

    def _wants_embedding(self, st: TrackState, quality: float) -> bool:
        if st.embeds == 0:
            return True
        if st.template is not None and not st.vote.decided:
            return True  # gathering the agreeing matches a name needs: every detection counts
        if self.frames - st.last_embed >= self.tracking.reembed_every:
            return True
        return quality >= st.embedded_quality * self.tracking.quality_gain

    def step(self, frame: Frame) -> FrameResult:
        """Process one frame.

        The detector runs when ``detect_every`` frames have passed since its last run, or
        on the frame right after a new face appeared (so its track is confirmed and the
        face named at once); in between, tracks keep their last boxes.
        """
        result = self._step_still(frame) if self.stills else self._step_tracked(frame)
        result.in_view = [st.record() for st in self.tracks.values()]
        return result

    def _step_tracked(self, frame: Frame) -> FrameResult:
        t = self.timer
        left: list[TrackState] = []
        embedded = 0
        check = self.tracking.identity_check
        cut = self._cut is not None and self._cut(frame.image)
        if cut:
            self.cuts += 1
        detect_now = cut or self._new_faces or self.frames - self._last_detect >= self.detect_every
        if detect_now:
            self._last_detect = self.frames
            with t.time("detect"):
                det = self.detector(frame.image)
            with t.time("track"):
                asg = self.tracker.update(det)
                for key in [k for k in self.tracks if k not in asg.alive]:
                    left.append(self.tracks.pop(key))
                quality = face_quality(det.xyxy, det.score)
                crowded = touching(det.xyxy) if check else np.zeros(len(det), bool)
                todo: list[tuple[int, TrackState, int]] = []
                self._visible = []
                for key, row in zip(asg.track_ids.tolist(), asg.det_index.tolist()):
                    st = self.tracks.get(key)
                    box = det.xyxy[row]
                    if st is None:
                        st = self.tracks[key] = self._new_track(frame, box, float(det.score[row]))
                    # the box tracker may have handed this track to another person: a cut,
                    # a jump, a face crossing another, or a track found again after a gap
                    # is checked against the track's template on this very frame
                    recheck = check and st.embeds > 0 and (
                        cut or bool(crowded[row]) or st.last_run != self._runs - 1
                        or box_jumped(st.xyxy, box, self.tracking.jump_threshold))
                    st.xyxy, st.score, st.last_t, st.last_run = box.copy(), float(det.score[row]), frame.t, self._runs
                    self._visible.append(key)
                    if recheck or self._wants_embedding(st, float(quality[row])):
                        todo.append((key, st, row))
                self._runs += 1
                # a face not yet confirmed as a track is confirmed on the very next frame,
                # not after another ``detect_every`` frames
                tracked = np.zeros(len(det), bool)
                tracked[asg.det_index] = True
                self._new_faces = bool(np.any(~tracked & (det.score >= self.tracking.track_thresh)))
            if todo:
                rows = [r for _, _, r in todo]
                with t.time("embed"):
                    crops = align(frame.image, det.landmarks[rows])
                    emb = self.embedder.embed(crops, flip=self.flip)
                with t.time("match"):
                    matches = self._match(emb)
                for (key, st, row), m, crop, vec in zip(todo, matches, crops.images, emb.vectors):
                    q = float(quality[row])
                    if st.template is not None:
                        if st.template.similarity(vec) < self.tracking.identity_drop:
                            # a different person: the old track ends here ("left"), and
                            # this face starts a new one with no name and no votes
                            left.append(st)
                            st = self.tracks[key] = self._new_track(frame, det.xyxy[row], float(det.score[row]))
                            st.last_run = self._runs - 1
                            self.splits += 1
                        if st.template is not None:  # the new track has one too
                            st.template.update(vec)
                    st.vote.add(m.name, m.similarity, q)
                    st.last_embed, st.embeds = self.frames, st.embeds + 1
                    st.embedded_quality = max(st.embedded_quality, q)
                    if self.keep_crops and q > st.best_crop_quality:
                        st.best_crop, st.best_crop_quality = crop.copy(), q
                    if self.keep_crops:
                        keep_best_face(st, q, crop, vec, self.keep_best)
                embedded = len(todo)
                self.faces_embedded += embedded
            else:
                t.add("embed", 0.0)
                t.add("match", 0.0)
        else:
            for stage in ("detect", "track", "embed", "match"):
                t.add(stage, 0.0)
        faces = []
        for key in self._visible:
            st = self.tracks.get(key)
            if st is None:
                continue
            faces.append(TrackedFace(st.track_id, st.xyxy, st.vote.name, st.vote.similarity, score=st.score,
                                     decided=st.vote.decided, detected=detect_now))
        self.frames += 1
        self.faces_seen += len(faces)
        return FrameResult(frame, faces, [st.record() for st in left], detect_now, embedded)

    def _step_still(self, frame: Frame) -> FrameResult:
        t = self.timer
        with t.time("detect"):
            det = self.detector(frame.image)
        t.add("track", 0.0)
        left = list(self.tracks.values())
        self.tracks.clear()
        faces: list[TrackedFace] = []
        if len(det):
            with t.time("embed"):
                crops = align(frame.image, det.landmarks)
                emb = self.embedder.embed(crops, flip=self.flip)
            with t.time("match"):
                matches = self._match(emb)
            quality = face_quality(det.xyxy, det.score)
            for i, (m, crop) in enumerate(zip(matches, crops.images)):
                tid, self._next_still_id = self._next_still_id, self._next_still_id + 1
                st = self.tracks[tid] = TrackState(
                    tid, NameVote(self.threshold, 1, 0.0), det.xyxy[i].copy(), float(det.score[i]), frame.t, frame.t,
                    last_embed=self.frames, embeds=1,
                )
                st.vote.add(m.name, m.similarity, float(quality[i]))
                if self.keep_crops:
                    st.best_crop = crop.copy()
                    keep_best_face(st, float(quality[i]), crop, emb.vectors[i], self.keep_best)
                faces.append(TrackedFace(tid, st.xyxy, m.name, m.similarity, score=st.score))
            self.faces_embedded += len(faces)
            self.tracks_started += len(faces)
        else:
            t.add("embed", 0.0)
            t.add("match", 0.0)
        self.frames += 1
        self.faces_seen += len(faces)
        return FrameResult(frame, faces, [st.record() for st in left], True, len(faces))

    def apply(self, setting: PaceSetting) -> None:
        """Run with a new detect interval and detector input size (chosen by the pacer)."""
        self.detect_every = max(1, int(setting.detect_every))
        set_input_size(self.detector, setting.input_size)

    @property
    def input_size(self) -> int | None:
        """The detector input in use, px (``None`` for a detector without one)."""
        return detector_input_size(self.detector)

    def warmup(self, shape: tuple[int, int, int] = (480, 640, 3)) -> None:
        """Run each model once on a blank input so the first real frame is not slow
        (PyTorch and ONNX Runtime prepare their kernels on the first call)."""
        self.detector(np.zeros(shape, np.uint8))
        self.embedder.embed(np.zeros((1, 112, 112, 3), np.uint8), flip=self.flip)

    def finish(self) -> list[TrackRecord]:
        """End every track (the source is over); returns them for ``left`` events."""
        ended = [st.record() for st in self.tracks.values()]
        self.tracks.clear()
        self._visible = []
        return ended

    def lose_source(self) -> list[TrackRecord]:
        """End every track because the camera is away (:meth:`finish`), and forget the
        tracker's boxes, so faces seen when it is back start new tracks."""
        ended = self.finish()
        if not self.stills:
            self.tracker = FaceTracker(self.tracking, self.detect_every)
        self._new_faces = False
        return ended


class FrameOutput(Protocol):
    """Where annotated frames go (a window, a video file, an image folder)."""

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        """Consume one annotated frame; False asks the loop to stop (e.g. 'q' pressed)."""
        ...

    def close(self) -> None: ...


class VideoFileOutput:
    """Writes annotated frames to a video file with the ``mp4v`` codec.

    H.264 cannot be written by the pip OpenCV wheels; mp4v plays in every common player.
    The writer opens on the first frame (its size is the video's size).
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 25.0
        self._writer: Any = None  # a cv2.VideoWriter once the first frame gives the size
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise FacerecError(f"cannot write video {self.path} (is the folder writable? use a .mp4 or .avi name)")
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageFolderOutput:
    """Writes each annotated frame as a JPEG into a folder (for image-folder sources)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        stem = Path(frame.name).stem if frame.name else f"{frame.index:06d}"
        cv2.imwrite(str(self.folder / f"{stem}.jpg"), image)
        self.frames += 1
        return True

    def close(self) -> None:
        pass


class WindowOutput:
    """Shows annotated frames in an OpenCV window; ``q`` or Esc stops the loop."""

    def __init__(self, title: str = "facerec") -> None:
        self.title = title

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


@dataclass
class RunOptions:
    """How long and how loudly :func:`run_live` runs."""

    max_frames: int | None = None
    stats_every_s: float = 10.0
    #: draw FPS, the pacer's setting and ms per stage on the frames (``live.overlay_stats``)
    overlay_stats: bool = False


def run_live(
    capture: Capture,
    pipeline: LivePipeline,
    *,
    sinks: Iterable[FrameSink] = (),
    stop: threading.Event | None = None,
    options: RunOptions | None = None,
    camera: str | None = None,
) -> dict:
    """Run the loop until the source ends, ``max_frames`` were processed, an output asks
    to stop, or ``stop`` is set; returns the stats (see :func:`make_stats`).

    With a pacer on the pipeline, each frame's cost (everything but the wait for the frame)
    is fed to it and the setting it chooses is applied before the next frame.

    ``sinks`` get every frame's result, in order (:class:`~facerec.sinks.FrameSink`: the
    track events, the track log, the unknown crops and sightings, the frame outputs); the
    annotated frame is drawn only when one of them wants it, and each is closed when the
    loop ends. The stats count the events of an :class:`~facerec.sinks.EventsSink` among them.

    ``camera`` names the camera in this loop's log lines (``camera door: frames=...``), so
    the lines of several cameras in one daemon tell apart; ``None``: the events' camera,
    else a slug of the source.

    Nothing here raises for a source that drops or stalls: the capture thread reconnects,
    and this loop keeps waiting (in short steps, so ``stop`` is honoured quickly). A live
    source's changes of state become ``camera`` events (``online`` at start too); when it
    stays away longer than a lost track is kept (``tracking.track_buffer`` in 30 fps
    frames), its tracks end with ``left`` events, even if it never comes back.
    """
    opts = options or RunOptions()
    sinks = list(sinks)
    events = events_sink(sinks)
    if camera is None:
        camera = events.camera if events is not None else source_slug(capture.spec)
    clog = CameraLog(log, camera)
    lost_after_s = pipeline.tracking.track_buffer / 30.0
    last_frame_at = time.monotonic()
    live_source = bool(getattr(getattr(capture, "kind", None), "is_live", False))
    if live_source and getattr(capture, "online", True):
        opened = StateChange("online", 0.0, "opened")  # one that starts away says so through its changes
        for sink in sinks:
            sink.on_camera(opened)

    def end_tracks(ended: list[TrackRecord], t: float) -> None:
        for sink in sinks:
            sink.on_ended(ended, t)

    stop = stop or threading.Event()
    draw = any(sink.wants_image for sink in sinks)
    timer = pipeline.timer
    started: float | None = None
    last_log = time.monotonic()
    last_t = 0.0
    # FPS over the last frames, however long they took (a time window reads 0 on slow runs)
    fps_window: deque[float] = deque(maxlen=30)
    pacer = pipeline.pacer
    if pacer is not None:
        pacer.start(getattr(capture, "fps", None))
        pipeline.apply(pacer.setting)
    try:
        while not stop.is_set():
            if opts.max_frames is not None and pipeline.frames >= opts.max_frames:
                break
            t0 = time.perf_counter()
            frame = capture.read(timeout=0.1)
            if live_source:
                changes: list[StateChange] = capture.state_changes()
                for change in changes:
                    for sink in sinks:
                        sink.on_camera(change)
                    fps_window.clear()  # the rate on the overlay never spans an outage
                if frame is None and not capture.online and pipeline.tracks \
                        and time.monotonic() - last_frame_at >= lost_after_s:
                    # the camera is away: its faces leave as they would have in view
                    end_tracks(pipeline.lose_source(), last_t + time.monotonic() - last_frame_at)
            if frame is None:
                if capture.ended:
                    break
                continue
            last_frame_at = time.monotonic()
            if started is None:
                started = time.perf_counter()
            else:
                timer.add("capture", (time.perf_counter() - t0) * 1000.0)
            t_work = time.perf_counter()
            result = pipeline.step(frame)
            last_t = frame.t

            with timer.time("draw"):
                image = None
                if draw:
                    if opts.overlay_stats:
                        now = time.perf_counter()
                        fps_window.append(now)
                        span = now - fps_window[0]
                        fps = (len(fps_window) - 1) / span if len(fps_window) > 1 and span > 0 else None
                        stage_ms = {s: timer.recent(s) for s in STAGES}
                        image = annotate(frame.image, result.faces, stage_ms, fps, info=setting_label(pipeline))
                    else:
                        image = annotate(frame.image, result.faces)
            with timer.time("sinks"):
                for sink in sinks:
                    if not sink.on_frame(result, image):
                        stop.set()
            if pacer is not None:
                done = time.perf_counter()
                detect_ms = timer.last("detect") if result.detected else None
                setting = pacer.update((done - t_work) * 1000.0, detect_ms, done)
                if setting is not None:
                    pipeline.apply(setting)
                    clog.info("pace: %s (frames took %.1f ms, %.1f ms allowed)", setting.label,
                              pacer.history[-1]["frame_ms"], pacer.budget_ms)
            if opts.stats_every_s and time.monotonic() - last_log >= opts.stats_every_s:
                last_log = time.monotonic()
                clog.info("%s", stats_line(make_stats(pipeline, capture, started, events)))
    finally:
        end_tracks(pipeline.finish(), last_t)
        for sink in sinks:
            try:
                sink.close()
            except Exception as e:
                clog.warning("closing %s failed: %s", type(sink).__name__, e)
    return make_stats(pipeline, capture, started, events)


def keep_best_face(st: TrackState, quality: float, crop: np.ndarray, vector: np.ndarray, n: int) -> None:
    """Remember ``(quality, crop, vector)`` among the track's ``n`` best faces."""
    faces = st.best_faces
    if len(faces) >= n and quality <= faces[-1][0]:
        return
    faces.append((float(quality), crop.copy(), np.asarray(vector, np.float32).copy()))
    faces.sort(key=lambda f: -f[0])
    del faces[n:]


def make_stats(pipeline: LivePipeline, capture: Capture | None, started: float | None,
               events: TrackEvents | None = None) -> dict:
    """The ``--stats`` JSON: counts, FPS since the first frame, per-stage times."""
    elapsed = time.perf_counter() - started if started is not None else 0.0
    cs = capture.stats if capture is not None else None
    offline = float(capture.offline_seconds()) if capture is not None and hasattr(capture, "offline_seconds") else 0.0
    running = elapsed - min(offline, elapsed)  # the frame rate is of the time the source was there
    out = {
        "source": redact(capture.spec) if capture is not None else None,
        "frames": pipeline.frames,
        "seconds": round(elapsed, 3),
        "fps": round(pipeline.frames / running, 2) if running > 0 else 0.0,
        "dropped": cs.dropped if cs else 0,
        "skipped": cs.skipped if cs else 0,
        "reconnects": cs.reconnects if cs else 0,
        "reconnect_attempts": getattr(cs, "attempts", 0),
        "stale": getattr(cs, "stale", 0),
        "outages": getattr(cs, "outages", 0),
        "offline_s": round(offline, 1),
        "online": bool(getattr(capture, "online", True)),
        "faces_seen": pipeline.faces_seen,
        "faces_embedded": pipeline.faces_embedded,
        "tracks": pipeline.tracks_started,
        "detect_every": pipeline.detect_every,
        "input_size": pipeline.input_size,
        "pace": pipeline.pacer.summary() if pipeline.pacer is not None else {"enabled": False},
        "stages": pipeline.timer.summary(),
    }
    if isinstance(pipeline.gallery, GalleryWatcher):
        out["gallery_reloads"] = pipeline.gallery.reloads
        out["gallery"] = pipeline.gallery.status()
    if events is not None:
        out["events"] = events.published
        dropped = sum(getattr(s, "dropped", 0) for s in events.sinks)
        out["events_dropped"] = dropped
    if capture is not None and capture.error:
        out["source_error"] = capture.error
    return out


def setting_label(pipeline: LivePipeline) -> str:
    """``"detect 1/3 @320"``: the detect interval and input in use (overlay text)."""
    size = pipeline.input_size
    return f"detect 1/{pipeline.detect_every}" + (f" @{size}" if size else "")


def stats_line(stats: dict) -> str:
    """One log line: frames, FPS, drops, the detect interval and input in use (and whether
    the pacer chose them), and mean ms per stage."""
    stages = " ".join(f"{k}={v['mean_ms']:.1f}" for k, v in stats.get("stages", {}).items())
    pace = stats.get("pace") or {}
    detect = f"1/{stats.get('detect_every', 1)}@{stats.get('input_size') or '-'}"
    if pace.get("enabled"):
        detect += f" (adapt, target {pace['target_fps']:g} fps, {pace['changes']} changes)"
    outage = ""
    if stats.get("outages"):
        outage = (f" {'OFFLINE' if not stats.get('online', True) else 'online'}: outages={stats['outages']} "
                  f"offline={stats.get('offline_s', 0):.1f}s reconnects={stats['reconnects']} "
                  f"attempts={stats.get('reconnect_attempts', 0)}")
    return (f"frames={stats['frames']} fps={stats['fps']:.1f} dropped={stats['dropped']} "
            f"faces={stats['faces_seen']} embedded={stats['faces_embedded']} detect={detect}{outage} ms: {stages}")
