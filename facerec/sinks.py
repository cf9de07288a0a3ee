"""Where a camera's results go: one :class:`FrameSink` protocol, and the table the daemon
builds each camera's sinks from.

:func:`facerec.live.run_live` calls every sink the same way: :meth:`FrameSink.on_frame`
with each processed frame's result (its faces, and the tracks that ended with it as
frozen :class:`~facerec.types.TrackRecord`\\ s), :meth:`FrameSink.on_ended` when tracks
end without a frame (the camera stayed away, the source is over),
:meth:`FrameSink.on_camera` when a live source goes offline or comes back, and
:meth:`FrameSink.close` once when the loop ends. Sinks run on the camera's thread, one
after the other in the order of :data:`CAMERA_SINKS`, so none may block (those that
write to a database or the network queue the work for a thread of their own).

A new sink is one class (subclass :class:`FrameSinkBase` and override what it needs)
plus one row in :data:`CAMERA_SINKS`, keyed by the config section that turns it on.
Sinks know nothing of models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facerec.types import TrackRecord

if TYPE_CHECKING:
    from facerec.capture import Capture, StateChange
    from facerec.config import Config
    from facerec.events import TrackEvents
    from facerec.live import FrameOutput, FrameResult
    from facerec.tracklog import TrackLog

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Anything a camera's loop hands its results to."""

    #: run_live draws the annotated frame (``image`` of :meth:`on_frame`) only when a sink
    #: wants it (drawing costs a few ms a frame).
    wants_image: bool

    def on_frame(self, result: FrameResult, image: np.ndarray | None) -> bool:
        """One processed frame; ``image`` is the annotated frame when :attr:`wants_image`.
        Returns False to ask the loop to stop (e.g. 'q' pressed in a window)."""
        ...

    def on_ended(self, ended: Sequence[TrackRecord], t: float) -> None:
        """Tracks that ended without a frame (the camera is away, the source is over), at
        source time ``t``, s."""
        ...

    def on_camera(self, change: StateChange) -> None:
        """A live source went ``online`` (also once when it opens) or ``offline``."""
        ...

    def close(self) -> None:
        """The loop ended. A sink shared by several cameras leaves its own resources to
        its owner."""
        ...


class FrameSinkBase:
    """A :class:`FrameSink` that does nothing; subclasses override what they need."""

    wants_image = False

    def on_frame(self, result: FrameResult, image: np.ndarray | None) -> bool:
        return True

    def on_ended(self, ended: Sequence[TrackRecord], t: float) -> None:
        pass

    def on_camera(self, change: StateChange) -> None:
        pass

    def close(self) -> None:
        pass


class EventsSink(FrameSinkBase):
    """Feeds a camera's :class:`~facerec.events.TrackEvents` (``appeared``, ``recognized``,
    ``unknown``, ``left``, ``camera``); the bus behind it belongs to the daemon."""

    def __init__(self, events: TrackEvents) -> None:
        self.events = events

    def on_frame(self, result: FrameResult, image: np.ndarray | None) -> bool:
        self.events.update(result.frame.t, result.faces, [r.track_id for r in result.left])
        return True

    def on_ended(self, ended: Sequence[TrackRecord], t: float) -> None:
        self.events.update(t, (), [r.track_id for r in ended])

    def on_camera(self, change: StateChange) -> None:
        self.events.camera_state(change.state, change.t, change.reason)


class OutputSink(FrameSinkBase):
    """Hands annotated frames to a :class:`~facerec.live.FrameOutput` (a window, a video
    file, an image folder, the page's MJPEG view) and closes it when the loop ends."""

    wants_image = True

    def __init__(self, output: FrameOutput) -> None:
        self.output = output

    def on_frame(self, result: FrameResult, image: np.ndarray | None) -> bool:
        return image is None or self.output.write(result.frame, image)

    def close(self) -> None:
        self.output.close()


def events_sink(sinks: Iterable[FrameSink]) -> TrackEvents | None:
    """The :class:`~facerec.events.TrackEvents` among ``sinks`` (their counts go in the
    stats), if any."""
    return next((s.events for s in sinks if isinstance(s, EventsSink)), None)


# ----------------------------------------------------------------------------- the daemon's table


@dataclass
class SinkContext:
    """What a row of :data:`CAMERA_SINKS` may build one camera's sinks from.

    Attributes:
        cfg: the configuration.
        camera: the camera's name.
        capture: its source.
        events: its track events (on the daemon's bus).
        embedder: the embedder's key string (stored with sightings).
        tracklog: the daemon's ``--tracks`` file, shared by every camera, if any.
        sightings: the sightings store (``unknowns.enabled``), if any.
        outputs: the camera's frame outputs (``--save-img``, a window, the page's view).
        closers: what the daemon closes when it stops (a sink with a thread adds its close).
    """

    cfg: Config
    camera: str
    capture: Capture
    events: TrackEvents
    embedder: str
    tracklog: TrackLog | None = None
    sightings: Any = None
    outputs: Sequence[FrameOutput] = ()
    closers: list[Callable[[], Any]] = field(default_factory=list)


def _track_log(ctx: SinkContext) -> list[FrameSink]:
    return [ctx.tracklog.for_camera(ctx.camera)] if ctx.tracklog is not None else []


def _track_events(ctx: SinkContext) -> list[FrameSink]:
    return [EventsSink(ctx.events)]


def _unknown_crops(ctx: SinkContext) -> list[FrameSink]:
    from pathlib import Path

    from facerec.events import UnknownCrops

    ev = ctx.cfg.events
    if not ev.keep_unknown_crops:
        return []
    return [UnknownCrops(Path(ctx.cfg.gallery.data_dir) / "unknown", ev.unknown_retention_s, ev.unknown_max_files,
                         ctx.camera)]


def _sightings(ctx: SinkContext) -> list[FrameSink]:
    if ctx.sightings is None:
        return []
    from facerec.sighting_sink import SightingSink

    sink = SightingSink(ctx.sightings, ctx.cfg.unknowns, ctx.camera, ctx.embedder)
    ctx.closers.append(sink.close)
    return [sink]


def _outputs(ctx: SinkContext) -> list[FrameSink]:
    return [OutputSink(out) for out in ctx.outputs]


#: One camera's sinks, in the order the loop calls them: ``(what turns it on, factory)``,
#: a config section or, for the track log and the frame outputs, the daemon's options
#: (``--tracks``; ``--save-img``, a window, the page's view). A factory returns no sink
#: when that leaves it off.
CAMERA_SINKS: list[tuple[str, Callable[[SinkContext], list[FrameSink]]]] = [
    ("--tracks", _track_log),
    ("events", _track_events),
    ("events.keep_unknown_crops", _unknown_crops),
    ("unknowns", _sightings),
    ("--save-img / window / page view", _outputs),
]


def camera_sinks(ctx: SinkContext) -> list[FrameSink]:
    """Every sink of one camera, built from :data:`CAMERA_SINKS`."""
    return [sink for _, build in CAMERA_SINKS for sink in build(ctx)]
