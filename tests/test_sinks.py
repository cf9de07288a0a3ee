"""The camera sinks table: which sinks a config gives a camera, in the loop's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facerec.config import Config
from facerec.events import CallbackSink, TrackEvents, UnknownCrops
from facerec.live import ImageFolderOutput
from facerec.sinks import CAMERA_SINKS, EventsSink, OutputSink, SinkContext, camera_sinks
from facerec.tracklog import TrackLog, TrackLogSink


def _ctx(cfg: Config, **kw) -> SinkContext:
    capture: Any = None  # the table's sinks do not read the source
    return SinkContext(cfg, "door", capture, TrackEvents([CallbackSink(lambda e: None)], "door"), "m", **kw)


def test_defaults_give_only_the_track_events(tmp_path: Path) -> None:
    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path)
    (sink,) = camera_sinks(_ctx(cfg))
    assert isinstance(sink, EventsSink) and sink.events.camera == "door"
    assert not (tmp_path / "unknown").exists(), "a sink left off creates nothing"


def test_each_section_adds_its_sink_in_table_order(tmp_path: Path) -> None:
    cfg = Config()
    cfg.gallery.data_dir = str(tmp_path)
    cfg.events.keep_unknown_crops = True
    log = TrackLog(tmp_path / "tracks.jsonl")
    try:
        sinks = camera_sinks(_ctx(cfg, tracklog=log, outputs=[ImageFolderOutput(tmp_path / "out")]))
    finally:
        log.close()
    assert [type(s) for s in sinks] == [TrackLogSink, EventsSink, UnknownCrops, OutputSink]
    assert [s.wants_image for s in sinks] == [False, False, False, True]
    assert (tmp_path / "unknown").is_dir()
    assert len({section for section, _ in CAMERA_SINKS}) == len(CAMERA_SINKS)
