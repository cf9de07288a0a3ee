"""The recognition daemon: every camera of the config in one process, sharing the models.

``facerec run`` and ``facerec serve`` both start a :class:`Daemon`; nothing else wires
capture, models, gallery and sinks together. One daemon holds:

* one detector and one embedder for every camera, with as many model calls at once as
  the cores allow, each camera's settings in a thin view of the shared detector
  (:mod:`facerec.shared_models`: :class:`~facerec.shared_models.SharedModels`,
  :func:`~facerec.shared_models.inference_slots`,
  :class:`~facerec.shared_models.CameraDetector`; importable from here too);
* one gallery watcher (:class:`~facerec.gallery.watch.GalleryWatcher`) whose index every
  camera searches;
* one :class:`~facerec.events.EventBus` in front of every sink (JSON lines, webhook,
  MQTT, the web page), so a slow sink never stalls a camera;
* per camera: a capture thread (a live source's newest frame wins), a
  :class:`~facerec.live.LivePipeline` (:func:`~facerec.camera.build_camera`, the one
  builder the tests and bench/live.py use too) with its own tracker and its own
  :class:`~facerec.events.TrackEvents`, and a loop thread running
  :func:`~facerec.live.run_live`.

Cameras come from ``cameras:`` in config.yaml (:meth:`CameraSpec.from_config` applies the
per-camera overrides) or, for ``--source``, from one synthesized camera
(:meth:`CameraSpec.single`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from facerec.camera import build_camera
from facerec.capture import Capture, SourceKind, open_source
from facerec.config import CameraConfig, Config
from facerec.errors import ConfigError, FacerecError
from facerec.events import EventBus, EventSink, JsonLinesSink, TrackEvents, WebhookSink
from facerec.live import FrameOutput, LivePipeline, RunOptions, make_stats, run_live
from facerec.shared_models import (CameraDetector as CameraDetector, ModelUse as ModelUse,
                                   SharedEmbedder as SharedEmbedder, SharedModels as SharedModels,
                                   build_models as build_models, inference_slots as inference_slots)
from facerec.sinks import FrameSink, SinkContext, camera_sinks

if TYPE_CHECKING:
    from facerec.gallery.watch import GalleryWatcher
    from facerec.mqtt import MqttSink

log = logging.getLogger(__name__)

#: Longest wait at start for the MQTT broker's first answer, s (the cameras never wait later).
MQTT_START_WAIT_S = 2.0


@dataclass(frozen=True)
class CameraSpec:
    """One camera with every override resolved against the global sections.

    Attributes:
        name: the camera's name in events, topics and stats.
        source: webcam index, video file, image folder or stream URL.
        realtime: play a file at its own frame rate, dropping frames like a live camera.
        loop: restart a file or folder at its end.
        detect_every: run the detector on every Nth frame.
        input_size: detector input long side, px.
        min_face: faces whose shorter box side is below this are ignored, px.
        roi: ``(x1, y1, x2, y2)`` frame pixels; only this part of the frame is searched
            for faces. ``None`` = the whole frame.
    """

    name: str
    source: str
    realtime: bool
    loop: bool
    detect_every: int
    input_size: int
    min_face: int
    roi: tuple[int, int, int, int] | None = None

    @classmethod
    def from_config(cls, cam: CameraConfig, cfg: Config) -> CameraSpec:
        """A ``cameras:`` entry (its ROI already checked by the config model); unset
        overrides take ``live.*`` / ``detection.*``."""
        return cls(
            name=cam.name, source=cam.source, realtime=cam.realtime, loop=cam.loop,
            detect_every=cam.detect_every or cfg.live.detect_every,
            input_size=cam.input_size or cfg.live.live_input_size(cfg.detection),
            min_face=cfg.detection.min_face if cam.min_face is None else cam.min_face,
            roi=cam.roi,
        )

    @classmethod
    def single(cls, source: str, cfg: Config, *, realtime: bool = False, loop: bool = False) -> CameraSpec:
        """The one camera of ``--source``: named ``live.camera_name`` or a slug of the source
        (:func:`~facerec.redact.source_slug`: never a stream's user or password)."""
        from facerec.redact import source_slug

        return cls(name=cfg.live.camera_name or source_slug(source), source=str(source), realtime=realtime, loop=loop,
                   detect_every=cfg.live.detect_every, input_size=cfg.live.live_input_size(cfg.detection),
                   min_face=cfg.detection.min_face)


def cameras_from_config(cfg: Config) -> list[CameraSpec]:
    """The enabled cameras of ``cameras:``.

    Raises:
        ConfigError: no camera is enabled (unique names are a rule of the config model).
    """
    specs = [CameraSpec.from_config(c, cfg) for c in cfg.cameras if c.enabled]
    if not specs:
        raise ConfigError("cameras: no camera is enabled; set enabled: true on one, or pass --source")
    return specs


def with_file_flags(specs: Sequence[CameraSpec], *, realtime: bool | None = None,
                    loop: bool | None = None) -> list[CameraSpec]:
    """``--realtime`` / ``--loop`` given on the command line, applied to every camera that
    reads files (a video, an image, a folder); webcams and streams keep their settings.
    ``None`` keeps each camera's own setting.

    Raises:
        ConfigError: a flag was given but no camera reads files (it would do nothing).
    """
    from facerec.capture import classify_source
    from facerec.errors import SourceError

    def reads_files(spec: CameraSpec) -> bool:
        try:
            return not classify_source(spec.source)[0].is_live
        except SourceError:  # a missing file: opening it reports that
            return True

    changes = {k: v for k, v in (("realtime", realtime), ("loop", loop)) if v is not None}
    if not changes:
        return list(specs)
    files = [s.name for s in specs if reads_files(s)]
    if not files:
        flags = " and ".join(f"--{k}" if v else f"no --{k}" for k, v in changes.items())
        raise ConfigError(f"{flags}: no camera reads a file (these apply to video files and image folders; "
                          f"set realtime / loop per camera in cameras:)")
    return [dataclasses.replace(s, realtime=s.realtime if realtime is None else realtime,
                                loop=s.loop if loop is None else loop) if s.name in files else s for s in specs]


#: ``outputs(camera, capture) -> frame outputs`` for one camera (video file, window, JPEG).
OutputFactory = Callable[[CameraSpec, Capture], Sequence[FrameOutput]]


@dataclass
class CameraRun:
    """One camera while the daemon runs.

    Attributes:
        spec: the camera.
        capture: its source, read on its own thread.
        pipeline: detection, tracking and recognition for this camera.
        events: turns its tracks into events on the daemon's bus.
        sinks: where its results go, built from :data:`facerec.sinks.CAMERA_SINKS`
            (the events among them).
        stats: the final stats of :func:`~facerec.live.run_live`, once it returned.
        started: ``time.perf_counter()`` when its loop started.
    """

    spec: CameraSpec
    capture: Capture
    pipeline: LivePipeline
    events: TrackEvents
    sinks: list[FrameSink] = field(default_factory=list)
    stats: dict | None = None
    started: float | None = None
    thread: threading.Thread | None = None
    failed: str | None = None

    def current_stats(self) -> dict:
        """The final stats after the loop ended, else a snapshot of the running one."""
        if self.stats is not None:
            return self.stats
        return make_stats(self.pipeline, self.capture, self.started, self.events)


class Daemon:
    """Every camera in one process: shared models, one gallery watcher, one event bus.

    Args:
        cfg: the configuration (models, detection, tracking, live, events, mqtt, gallery).
        cameras: the cameras to run (:func:`cameras_from_config` or
            :meth:`CameraSpec.single`).
        sinks: extra event sinks behind the bus (the web page's recent events, tests).
        events_path: also append events as JSON lines here (``"-"`` = stdout).
        outputs: frame outputs per camera (``None``: headless).
        max_frames: stop each camera after this many processed frames.
        sequence: image folders hold consecutive frames (tracked) rather than unrelated
            photos (each face recognised on its own).
        models: already built models to share (``None``: built from ``cfg``).

    Call :meth:`start` (opens every source and builds everything; failures raise there,
    before any thread runs), then :meth:`wait` and :meth:`close`.
    """

    def __init__(self, cfg: Config, cameras: Sequence[CameraSpec], *, sinks: Iterable[EventSink] = (),
                 events_path: str | None = None, outputs: OutputFactory | None = None,
                 max_frames: int | None = None, sequence: bool = False, models: SharedModels | None = None,
                 tracks_path: str | None = None) -> None:
        if not cameras:
            raise ConfigError("no camera to run: pass --source or list cameras: in the config")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ConfigError(f"two cameras share a name in {names}; every camera needs its own name")
        self.cfg = cfg
        self.specs = list(cameras)
        self._extra_sinks = list(sinks)
        self._events_path = events_path
        self._tracks_path = tracks_path
        self._outputs = outputs
        self.max_frames = max_frames
        self.sequence = sequence
        self.models = models
        self.stop_event = threading.Event()
        self.cameras: dict[str, CameraRun] = {}
        self.bus: EventBus | None = None
        self.mqtt: MqttSink | None = None
        self.gallery: GalleryWatcher | None = None
        self._closers: list[Callable[[], Any]] = []
        self._monitor: threading.Thread | None = None
        self._people_version: int | None = None

    # ------------------------------------------------------------------ start

    def prepare(self) -> Daemon:
        """Open every source, build the models, the gallery watcher and the sinks, and
        warm the models up; no camera runs yet (:meth:`start` does both).

        Raises:
            SourceError: a source cannot be opened (nothing is left running).
            FacerecError: missing weights, an unwritable events file, a bad config.
        """
        if self.cameras:
            return self
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        if self.mqtt is not None:
            # the broker is usually up by now; a short wait keeps the first events of a
            # healthy start from being dropped, and a broker that is away costs only this
            deadline = time.monotonic() + MQTT_START_WAIT_S
            while not self.mqtt.stats.connected and time.monotonic() < deadline:
                time.sleep(0.02)
        return self

    def start(self) -> Daemon:
        """:meth:`prepare` if not done yet, then start one loop thread per camera.

        Raises:
            SourceError: a source cannot be opened (nothing is left running).
            FacerecError: missing weights, an unwritable events file, a bad config.
        """
        self.prepare()
        for run in self.cameras.values():
            run.thread = threading.Thread(target=self._run_camera, args=(run,), name=f"camera-{run.spec.name}",
                                          daemon=True)
            run.started = time.perf_counter()
            run.thread.start()
        if self.mqtt is not None and self.gallery is not None:
            self._monitor = threading.Thread(target=self._watch_people, name="daemon-people", daemon=True)
            self._monitor.start()
        return self

    def _build(self) -> None:
        cfg, live = self.cfg, self.cfg.live
        captures: dict[str, Capture] = {}
        for spec in self.specs:
            cap = open_source(spec.source, realtime=spec.realtime, loop=spec.loop, camera=spec.name,
                              reconnect_max_s=live.reconnect_max_s, read_timeout_s=live.read_timeout_s,
                              jitter=live.reconnect_jitter, wait_for_stream=True)
            self._closers.append(cap.close)
            captures[spec.name] = cap
        if self.models is None:
            self.models = build_models(cfg)
        models = self.models
        from facerec.gallery.watch import GalleryWatcher

        self.gallery = GalleryWatcher(cfg.gallery.data_dir, models.embedder.key, cfg.gallery, live.gallery_poll_s)
        self._closers.append(self.gallery.close)
        warning = self.gallery.warning()
        if warning:  # the cameras still run, and pick people up when they are enrolled
            log.warning("%s", warning)
        sinks: list[EventSink] = list(self._extra_sinks)
        if self._events_path:
            try:
                sinks.append(JsonLinesSink(self._events_path))
            except OSError as e:
                raise FacerecError(f"cannot open the events file {self._events_path}: {e.strerror or e}") from None
        if cfg.events.webhook_url:
            sinks.append(WebhookSink(cfg.events.webhook_url, cfg.events.queue_size, cfg.events.webhook_timeout_s))
        if cfg.mqtt.enabled:
            self.mqtt = _mqtt_sink(cfg, [s.name for s in self.specs])
            sinks.append(self.mqtt)
        self.bus = EventBus(sinks, queue_size=max(cfg.events.queue_size, 64))
        self._closers.append(self.bus.close)
        sightings_store = None
        if cfg.unknowns.enabled:  # unknown tracks become sightings, grouped into candidate people
            from facerec.gallery.backend import open_backend

            sightings_store = open_backend(cfg.gallery)
            self._closers.append(sightings_store.close)
        tracklog = None
        if self._tracks_path:
            from facerec.tracklog import TrackLog

            tracklog = TrackLog(self._tracks_path, with_camera=len(self.specs) > 1)
            self._closers.append(tracklog.close)
        for spec in self.specs:
            cap = captures[spec.name]
            stills = cap.kind in (SourceKind.FOLDER, SourceKind.IMAGE) and not self.sequence
            pipeline = build_camera(spec, models, cfg, gallery=self.gallery, stills=stills)
            events = TrackEvents([self.bus], spec.name, cfg.events.cooldown_s)
            outputs = list(self._outputs(spec, cap)) if self._outputs is not None else []
            frame_sinks = camera_sinks(SinkContext(cfg, spec.name, cap, events, str(models.embedder.key), tracklog,
                                                   sightings_store, outputs, self._closers))
            w, h = cap.size
            pipeline.warmup((h, w, 3) if w and h else (480, 640, 3))
            self.cameras[spec.name] = CameraRun(spec, cap, pipeline, events, frame_sinks)

    def _run_camera(self, run: CameraRun) -> None:
        opts = RunOptions(max_frames=self.max_frames, stats_every_s=self.cfg.live.stats_every_s,
                          overlay_stats=self.cfg.live.overlay_stats)
        try:
            run.stats = run_live(run.capture, run.pipeline, sinks=run.sinks, stop=self.stop_event, options=opts,
                                 camera=run.spec.name)
        except Exception as e:  # one broken camera must not take the others down
            run.failed = f"{type(e).__name__}: {e}"
            log.exception("camera %s stopped", run.spec.name)
        finally:
            run.capture.close()
            log.info("camera %s ended%s", run.spec.name, f": {run.capture.error}" if run.capture.error else "")

    def _watch_people(self) -> None:
        """Keeps the MQTT entities in step with the gallery (enrolment creates a person's
        entities, deletion removes them, a rename does both)."""
        poll = self.cfg.live.gallery_poll_s
        gallery, mqtt = self.gallery, self.mqtt
        if gallery is None or mqtt is None:
            return
        self._people_version = gallery.version
        while not self.stop_event.wait(poll):
            index = gallery.index
            version = gallery.version
            if version != self._people_version and index is not None:
                self._people_version = version
                mqtt.set_people(index.people)

    # ------------------------------------------------------------------ run and stop

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every camera's loop ended (file sources at their end, or after
        :meth:`stop`); True when they all did within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for run in self.cameras.values():
            while run.thread is not None and run.thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                run.thread.join(0.1 if left is None else min(0.1, left))
        return True

    @property
    def running(self) -> bool:
        return any(r.thread is not None and r.thread.is_alive() for r in self.cameras.values())

    def stop(self) -> None:
        """Ask every camera to stop (returns at once; :meth:`wait` for them)."""
        self.stop_event.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the cameras, then release sources, the gallery watcher and the sinks
        (queued events are delivered first, for a few seconds at most)."""
        self.stop_event.set()
        self.wait(timeout)
        if self._monitor is not None:
            self._monitor.join(2.0)
            self._monitor = None
        for close in reversed(self._closers):
            try:
                close()
            except Exception as e:  # shutting down: report, keep closing the rest
                log.warning("shutdown: %s", e)
        self._closers.clear()

    # ------------------------------------------------------------------ stats

    @property
    def errors(self) -> dict[str, str]:
        """``{camera: message}`` for every camera whose source or loop failed."""
        out = {}
        for name, run in self.cameras.items():
            msg = run.failed or run.capture.error
            if msg:
                out[name] = msg
        return out

    def stats(self) -> dict:
        """The ``--stats`` JSON.

        ``cameras`` holds each camera's own stats (:func:`~facerec.live.make_stats`);
        ``fps`` is the sum over cameras (frames processed per second by the daemon) and
        the counters are totals. With one camera its stats are at the top level as well,
        as a single-camera run always wrote them; with several, ``offline_cameras`` names
        those whose stream is away now. ``models`` counts the shared model
        calls and the time cameras waited for each other; ``mqtt`` the broker messages
        sent and dropped.
        """
        per = {name: run.current_stats() for name, run in self.cameras.items()}
        out: dict[str, Any] = {}
        if len(per) == 1:
            out.update(next(iter(per.values())))
        else:
            for key in ("frames", "dropped", "skipped", "reconnects", "reconnect_attempts", "outages", "faces_seen",
                        "faces_embedded", "tracks"):
                out[key] = sum(int(s.get(key, 0)) for s in per.values())
            out["offline_cameras"] = [name for name, s in per.items() if s.get("online") is False]
            out["fps"] = round(sum(float(s.get("fps", 0.0)) for s in per.values()), 2)
            out["seconds"] = max((float(s.get("seconds", 0.0)) for s in per.values()), default=0.0)
            if self.gallery is not None:
                out["gallery"] = self.gallery.status()
        out["cameras"] = per
        if self.bus is not None:
            out["events"] = self.bus.published
            out["events_dropped"] = self.bus.dropped
        if self.models is not None:
            out["models"] = self.models.use.to_json()
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.stats.to_json()
        return out


def stats_lines(stats: dict) -> list[str]:
    """One log line per camera (frames, FPS, drops, ms per stage), then the MQTT counters."""
    from facerec.live import stats_line

    cams = stats.get("cameras") or {}
    lines = [stats_line(s) if len(cams) == 1 else f"[{name}] {stats_line(s)}" for name, s in cams.items()]
    if len(cams) > 1:
        lines.append(f"all cameras: frames={stats['frames']} fps={stats['fps']:.1f}")
    warning = (stats.get("gallery") or {}).get("warning")
    if warning:
        lines.append(f"gallery: {warning}")
    if "mqtt" in stats:
        m = stats["mqtt"]
        lines.append(f"mqtt: sent={m['sent']} dropped={m['dropped']} reconnects={m['reconnects']}")
    return lines


def _mqtt_sink(cfg: Config, cameras: Sequence[str]) -> MqttSink:
    """The MQTT sink for every camera, with a Home Assistant entity for everyone enrolled
    now (people enrolled later get theirs when the gallery watcher sees them)."""
    from facerec import __version__
    from facerec.errors import GalleryError
    from facerec.gallery.backend import open_backend
    from facerec.mqtt import MqttSink, page_url

    people: list[str] = []
    try:
        backend = open_backend(cfg.gallery, readonly=True)
        try:
            people = [p.name for p in backend.people()]
        finally:
            backend.close()
    except GalleryError as e:  # no gallery yet, or the database is away: entities come with sightings
        log.info("mqtt: no enrolled people to announce yet (%s)", e)
    return MqttSink(cfg.mqtt, cameras=list(cameras), people=people, version=__version__,
                    configuration_url=page_url(cfg.serve))
