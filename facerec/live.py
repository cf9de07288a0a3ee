"""The live recognition loop: capture -> pipeline -> draw -> sinks, and its stats.

:func:`run_live` takes each frame of a :class:`~facerec.capture.Capture` (on its own
thread; a live camera's newest frame always wins), runs it through a
:class:`~facerec.pipeline.LivePipeline` (detect -> track -> align + embed -> match -> vote),
draws it when a sink wants the image, and hands the result to the camera's sinks. With a
pacer on the pipeline it feeds each frame's cost back, so the detect interval and input size
follow the CPU. :func:`make_stats` is the ``--stats`` JSON of one camera and
:func:`stats_line` its periodic log line.

The pipeline and its containers live in :mod:`facerec.pipeline`, the frame outputs in
:mod:`facerec.outputs`; their names are also importable from here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from facerec.capture import CameraLog, Capture, StateChange
from facerec.draw import annotate
from facerec.events import TrackEvents
from facerec.gallery.watch import GalleryWatcher as GalleryWatcher
from facerec.outputs import (FrameOutput as FrameOutput, ImageFolderOutput as ImageFolderOutput,
                             VideoFileOutput as VideoFileOutput, WindowOutput as WindowOutput)
from facerec.pipeline import (STAGES as STAGES, FrameResult as FrameResult, LivePipeline as LivePipeline,
                              PipelineSettings as PipelineSettings, StageTimer as StageTimer,
                              TrackState as TrackState, keep_best_face as keep_best_face)
from facerec.redact import redact, source_slug
from facerec.sinks import FrameSink, events_sink
from facerec.types import TrackRecord

log = logging.getLogger(__name__)


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
