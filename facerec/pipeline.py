"""The recognition of one camera, frame by frame: detect -> track -> align + embed -> match -> vote.

:class:`LivePipeline` turns each frame into a :class:`FrameResult`; the loop that feeds it
frames and hands its results to the sinks is :func:`facerec.live.run_live`. Each stage is
a plain callable timed on its own (:class:`StageTimer`); the per-stage milliseconds are
drawn on the frame, logged periodically and written to ``--stats``.

What makes it real-time on a CPU:

* the detector runs every ``live.detect_every`` frames at ``live.input_size`` (and
  on the next frame when a new face still waits for its track to be confirmed); with
  ``live.adapt`` a :class:`~facerec.pace.Pacer` widens that interval and lowers the input
  when frames take longer than the frame interval, and goes back when the CPU frees up;
* faces are tracked (:class:`~facerec.track.FaceTracker`, ByteTrack) and a face is
  embedded only when its track is new, when its quality (box area x score) improved by
  ``tracking.quality_gain``, or every ``tracking.reembed_every`` frames;
* a track's name is a vote over its recent matches (:class:`~facerec.track.NameVote`).

The gallery it searches may be a :class:`~facerec.gallery.watch.GalleryWatcher`, so people
enrolled, renamed or deleted while the daemon runs are picked up within about a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from facerec.align import align
from facerec.capture import Frame
from facerec.config import TrackingConfig
from facerec.gallery.watch import GalleryWatcher
from facerec.pace import Pacer, PaceSetting, detector_input_size, set_input_size
from facerec.track import (FaceTracker, IdentityTemplate, NameVote, SceneCutDetector, box_jumped, face_quality,
                           touching)
from facerec.types import Detections, Match, Matches, TrackedFace, TrackRecord

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


def keep_best_face(st: TrackState, quality: float, crop: np.ndarray, vector: np.ndarray, n: int) -> None:
    """Remember ``(quality, crop, vector)`` among the track's ``n`` best faces."""
    faces = st.best_faces
    if len(faces) >= n and quality <= faces[-1][0]:
        return
    faces.append((float(quality), crop.copy(), np.asarray(vector, np.float32).copy()))
    faces.sort(key=lambda f: -f[0])
    del faces[n:]
