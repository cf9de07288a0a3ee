"""Camera outages against a real RTSP server (GStreamer's, tests/rtsp_server.py): killed and
started again, stopped (SIGSTOP) and continued, and gone for good; stream credentials on
every output; the gallery warning at start.

Outages here are a few seconds with ``read_timeout_s`` of 1.5 s, so the module runs in about
a minute; ``bench/outage.py`` measures the long outages of issue 20 and prints the times.
Assertions are on frame indices, timestamps, state events and log lines, never on how long
something took.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from rtsp_server import RtspServer, write_frames

from facerec.capture import Capture, Frame, open_source
from facerec.config import load_config
from facerec.daemon import CameraSpec, Daemon, SharedModels, stats_lines
from facerec.events import CallbackSink, Event
from facerec.redact import redact, source_slug

CLIP = "lp_driving_d0.mp4"  # one person, 78 frames, looped by the server
USER, PASSWORD = "viewer", "pw-s3cr3t"
READ_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("rtsp") / "frames"
    write_frames(data_dir / "video" / CLIP, folder)
    return folder


@pytest.fixture
def server(frames: Path):
    srv = RtspServer(frames, user=USER, password=PASSWORD).start()
    yield srv
    srv.stop()


def _pump(cap: Capture, into: list[Frame], until: Callable[[], bool], limit_s: float = 30.0) -> bool:
    """Read frames into ``into`` until ``until()`` holds (or ``limit_s``, a hang guard)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        f = cap.read(timeout=0.05)
        if f is not None:
            into.append(f)
        if until():
            return True
    return until()


def _increasing(got: list[Frame]) -> bool:
    return all(b.index > a.index and b.t > a.t for a, b in zip(got, got[1:]))


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


# ----------------------------------------------------------------------------- naming


@pytest.mark.parametrize("text, shown", [
    ("", ""),
    ("no url here", "no url here"),
    ("rtsp://admin:pw@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://admin@10.0.0.5/live", "rtsp://***@10.0.0.5/live"),
    ("rtsp://u:p@ss@cam/x", "rtsp://***@cam/x"),  # an @ inside the password
    ("failed: stream http://a:b@h/m.mjpg (refused)", "failed: stream http://***@h/m.mjpg (refused)"),
    ("http://cam/snap?user=admin&password=pw", "http://cam/snap?user=***&password=***"),
    ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
])
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("source, name", [
    ("0", "webcam0"),
    ("rtsp://admin:pw@10.0.0.5:554/stream1", "10.0.0.5_554_stream1"),
    ("rtsp://admin:pw@cam.local/live/main", "cam.local_live_main"),
    ("../shared/data/video/x.mp4", "x"),
    ("/data/frames/", "frames"),
    ("file:///data/porch cam.mkv", "porch_cam"),
])
def test_default_camera_name_is_a_safe_slug(source: str, name: str) -> None:
    assert source_slug(source) == name
    cfg = load_config(None, {})
    assert CameraSpec.single(source, cfg).name == name


def test_stream_that_cannot_open_says_so_without_its_password() -> None:
    from mqtt_broker import free_port

    from facerec.errors import SourceError

    url = f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/cam"
    with pytest.raises(SourceError) as err:
        open_source(url, read_timeout_s=2.0)
    assert "rtsp://***@127.0.0.1" in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(SourceError) as err:
        open_source(f"gopher://{USER}:{PASSWORD}@host/x")
    assert PASSWORD not in str(err.value)


# ----------------------------------------------------------------------------- capture


def _outage(server: RtspServer, begin: Callable[[], None],
            end: Callable[[], None]) -> tuple[Capture, list[Frame], list[Frame]]:
    """Stream, ``begin()`` an outage, stay away 2 s after the capture noticed it, ``end()``
    it and stream again. Returns the (closed) capture, every frame, and those of the outage."""
    cap = open_source(server.url, read_timeout_s=READ_TIMEOUT_S, reconnect_max_s=0.5, camera="porch")
    got: list[Frame] = []
    try:
        assert _pump(cap, got, lambda: len(got) >= 10)
        begin()
        assert _pump(cap, got, lambda: not cap.online), "the outage was not noticed"
        away_from = len(got)
        _pump(cap, got, lambda: False, limit_s=2.0)  # away a while: several attempts
        during = got[away_from:]
        end()
        assert _pump(cap, got, lambda: cap.online and len(got) > away_from + 10), "frames did not resume"
    finally:
        cap.close()
    return cap, got, during


def test_server_killed_and_started_again_frames_resume(server: RtspServer, caplog, monkeypatch) -> None:
    """SIGKILL: one line for the drop (with the server's answer), one for the return, and
    "still away" lines meanwhile (every 60 s, here every 0.5 s); the stats count one outage,
    one reconnection and its attempts; frames resume in order."""
    import facerec.reconnect

    monkeypatch.setattr(facerec.reconnect, "STILL_AWAY_EVERY_S", 0.5)
    caplog.set_level(logging.INFO, logger="facerec")
    cap, got, during = _outage(server, server.kill, server.start)
    assert not during and _increasing(got)
    changes = cap.state_changes()
    assert [c.state for c in changes] == ["offline", "online"], changes
    assert changes[0].reason.startswith("stream dropped") and changes[1].reason.startswith("reconnected after")
    assert cap.stats.outages == 1 and cap.stats.reconnects == 1 and cap.stats.offline_s >= 2.0
    assert cap.stats.attempts >= 2
    said = _messages(caplog)
    assert len([m for m in said if "stream dropped" in m]) == 1, said
    assert len([m for m in said if "reconnected after" in m]) == 1, said
    away = [m for m in said if "still away" in m]
    assert away and all("refused the connection" in m for m in away), said
    assert all(PASSWORD not in m and USER not in m for m in said), said
    assert PASSWORD not in cap.description and "***@" in cap.description


def test_server_stopped_stall_logged_once_no_stale_frame(server: RtspServer, caplog) -> None:
    """SIGSTOP: the connection stays open and silent. The stall is one line; nothing the
    stalled connection hands out afterwards is delivered as a new frame; after SIGCONT a
    new connection starts at the newest frame."""
    caplog.set_level(logging.INFO, logger="facerec")
    cap, got, during = _outage(server, server.pause, server.resume)
    assert not during, [(f.index, f.t) for f in during]
    assert _increasing(got)
    off, on = cap.state_changes()
    assert (off.state, on.state) == ("offline", "online")
    assert off.reason == f"no frame for {READ_TIMEOUT_S:g} s (stream silent)"
    # no frame stamped inside the outage: leftovers of the stalled connection were dropped
    assert not [f for f in got if off.t < f.t < on.t]
    said = _messages(caplog)
    assert len([m for m in said if "stream silent" in m]) == 1, said
    assert len([m for m in said if "reconnected after" in m]) == 1, said


def test_stall_noticed_while_the_backend_read_still_blocks(server: RtspServer, monkeypatch) -> None:
    """A backend whose own read timeout is two minutes: the watchdog still marks the
    stream offline after ``read_timeout_s`` (the pump below gives up after 30 s), and what
    the blocked read returns after SIGCONT is dropped as stale, not delivered."""
    import facerec.capture

    real = facerec.capture.open_video
    monkeypatch.setattr(facerec.capture, "open_video",
                        lambda target, kind, open_s, read_s: real(target, kind, open_s, 120.0))
    cap, got, during = _outage(server, server.pause, server.resume)
    assert not during and _increasing(got)
    off, on = cap.state_changes()
    assert off.reason == f"no frame for {READ_TIMEOUT_S:g} s (stream silent)" and on.state == "online"
    assert not [f for f in got if off.t < f.t < on.t]


# ----------------------------------------------------------------------------- daemon


def test_daemon_lost_camera_tracks_leave_then_it_comes_back(server: RtspServer, frames: Path, service, detector,
                                                            embedder, tmp_path: Path, caplog) -> None:
    """The daemon on the stream (its URL with user and password, no camera name): the
    enrolled person is named; the server is killed and stays away, and the camera's
    ``offline`` event comes, then ``left`` for every track after the track buffer while no
    frame arrives; the server starts again, ``online`` comes and the person is named
    again. The password is in no log line, event, stats file or page answer. The camera
    records reach every sink: JSON lines, the webhook, the page's recent events."""
    from fastapi.testclient import TestClient
    from test_events import _Hook

    from facerec.cli.serve_cmd import DaemonFeed
    from facerec.serve.app import create_app

    caplog.set_level(logging.INFO, logger="facerec")
    assert service.enroll_image("ann", cv2.imread(str(frames / "00060.jpg"))).status == "added"
    hook = _Hook()
    cfg = load_config(None, {"gallery.data_dir": service.cfg.gallery.data_dir, "detection.input_size": 320,
                             "live.read_timeout_s": READ_TIMEOUT_S, "live.reconnect_max_s": 0.5,
                             "live.stats_every_s": 0, "live.adapt": False, "events.webhook_url": hook.url})
    events: list[Event] = []
    feed = DaemonFeed(server.url, cfg, realtime=True)
    feed.daemon._extra_sinks.append(CallbackSink(events.append))
    feed.daemon.models = SharedModels(detector, embedder)
    feed.daemon._events_path = str(tmp_path / "events.jsonl")
    camera = feed.camera
    token = "t" * 32

    def seen(kind: str, after: int = 0, **fields: object) -> bool:
        return any(e.event == kind and all(getattr(e, k) == v for k, v in fields.items()) for e in events[after:])

    def wait(pred: Callable[[], bool], limit_s: float = 60.0) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not pred():
            time.sleep(0.05)
        return pred()

    try:
        with TestClient(create_app(cfg, service, token=token, feed=feed)) as client:
            feed.start()
            auth = {"Authorization": f"Bearer {token}"}
            assert wait(lambda: seen("recognized", name="ann")), [e.to_json() for e in events]
            assert seen("camera", state="online")
            announced = {e.track_id for e in events if e.event == "appeared"}
            server.kill()
            assert wait(lambda: seen("camera", state="offline")), "no offline event"
            lost = next(i for i, e in enumerate(events) if e.event == "camera" and e.state == "offline")
            assert wait(lambda: announced <= {e.track_id for e in events[lost:] if e.event == "left"}), \
                [e.to_json() for e in events[lost:]]
            frames_away = feed.daemon.stats()["frames"]
            cams = client.get("/api/cameras", headers=auth).json()["cameras"]
            assert cams[0]["name"] == camera and cams[0]["stats"]["online"] is False
            away_events = client.get("/api/events?n=50", headers=auth).json()["events"]
            assert any(e["event"] == "camera" and e["state"] == "offline" for e in away_events)
            offline_stats = feed.daemon.stats()
            assert offline_stats["online"] is False and offline_stats["outages"] == 1
            assert any("OFFLINE" in line for line in stats_lines(offline_stats))
            info = client.get("/api/info", headers=auth).json()
            server.start()
            assert wait(lambda: seen("camera", lost + 1, state="online")), "no online event"
            back = next(i for i, e in enumerate(events) if i > lost and e.event == "camera")
            # named again (a new track: "appeared" with the name; "recognized" waits out events.cooldown_s)
            assert wait(lambda: seen("appeared", back, name="ann")), [e.to_json() for e in events[back:]]
            assert feed.daemon.stats()["frames"] > frames_away
            assert feed.daemon.running
    finally:
        feed.close()
        hook.close()
    stats = feed.stats
    assert stats is not None and stats["reconnects"] == 1 and stats["offline_s"] > 0
    # the frame rate is over the time the camera was there, not averaged over the outage
    assert 0 < stats["offline_s"] < stats["seconds"] and stats["fps"] > stats["frames"] / stats["seconds"]
    # the camera's name, and what every output shows of the source
    assert camera == f"127.0.0.1_{server.port}_cam"
    outputs = [json.dumps(stats), json.dumps(info), json.dumps(cams), json.dumps(away_events),
               (tmp_path / "events.jsonl").read_text(encoding="utf-8"), *_messages(caplog),
               *(json.dumps(e.to_json()) for e in events)]
    for text in outputs:
        assert PASSWORD not in text and f"{USER}:" not in text, text
    assert "rtsp://***@127.0.0.1" in stats["source"]
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    states = [(r["state"], r["camera"]) for r in records if r["event"] == "camera"]
    assert states == [("online", camera), ("offline", camera), ("online", camera)], states
    posted = [b["json"] for b in hook.bodies]
    assert [(r["state"], r["camera"]) for r in posted if r["event"] == "camera"] == states
    assert all(PASSWORD not in json.dumps(r) for r in posted)
    assert len([m for m in _messages(caplog) if "stream dropped" in m]) == 1


def test_daemon_starts_with_its_camera_away_and_picks_it_up(server: RtspServer, service, detector, embedder,
                                                           caplog) -> None:
    """A camera that is not up when the daemon starts (a power cut, the daemon started
    first) does not stop the start: it begins offline, says why once, and runs as soon as
    the server answers."""
    caplog.set_level(logging.INFO, logger="facerec")
    server.kill()
    cfg = load_config(None, {"gallery.data_dir": service.cfg.gallery.data_dir, "detection.input_size": 320,
                             "live.read_timeout_s": READ_TIMEOUT_S, "live.reconnect_max_s": 0.5,
                             "live.stats_every_s": 0, "live.adapt": False})
    events: list[Event] = []
    daemon = Daemon(cfg, [CameraSpec.single(server.url, cfg)], models=SharedModels(detector, embedder),
                    sinks=[CallbackSink(events.append)])
    try:
        daemon.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e.event == "camera" for e in events):
            time.sleep(0.05)
        first = next(e for e in events if e.event == "camera")
        assert first.state == "offline" and "cannot be opened at start" in (first.reason or ""), first
        assert "refused the connection" in (first.reason or "") and PASSWORD not in (first.reason or "")
        assert daemon.stats()["frames"] == 0
        server.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.stats()["frames"] < 5:
            time.sleep(0.05)
        assert daemon.stats()["frames"] >= 5
        assert [e.state for e in events if e.event == "camera"] == ["offline", "online"]
    finally:
        daemon.close()
    said = [m for m in _messages(caplog) if "cannot be opened at start" in m]
    assert len(said) == 1 and PASSWORD not in said[0], said


# ----------------------------------------------------------------------------- gallery at start


def test_gallery_naming_nobody_is_a_warning_at_start(tmp_path: Path, data_dir: Path, frames: Path, service,
                                                     detector, embedder, caplog) -> None:
    """An empty gallery, then one whose vectors are of another embedder: each is one
    warning at start naming the fix, in the stats too; the daemon runs anyway."""
    from facerec.gallery.store import GalleryStore
    from facerec.types import EmbedderKey

    clip = str(data_dir / "video" / CLIP)
    models = SharedModels(detector, embedder)
    caplog.set_level(logging.WARNING, logger="facerec")

    def start(gallery: str) -> dict:
        cfg = load_config(None, {"gallery.data_dir": gallery, "detection.input_size": 320, "live.stats_every_s": 0})
        daemon = Daemon(cfg, [CameraSpec.single(clip, cfg)], models=models, max_frames=3)
        try:
            daemon.start()
            assert daemon.wait(60)
            return daemon.stats()
        finally:
            daemon.close()

    stats = start(str(tmp_path / "nothing"))
    said = [m for m in _messages(caplog) if "gallery" in m]
    assert len(said) == 1 and "is empty" in said[0] and "facerec embed" in said[0], said
    assert stats["frames"] == 3 and "is empty" in stats["gallery"]["warning"]

    # the same gallery with its vectors moved to another embedder's key
    assert service.enroll_image("ann", cv2.imread(str(frames / "00060.jpg"))).status == "added"
    gallery = Path(service.cfg.gallery.data_dir)
    other = EmbedderKey("magface-iresnet50", "ab" * 32)
    with GalleryStore(gallery) as store, store._write(bump=True) as c:
        c.execute("UPDATE embeddings SET embedder=?", (str(other),))
    caplog.clear()
    stats = start(str(gallery))
    said = [m for m in _messages(caplog) if "gallery" in m]
    assert len(said) == 1 and f"no vectors for the running embedder {embedder.key}" in said[0], said
    assert str(other) in said[0] and "facerec embed" in said[0]
    assert "warning" in stats["gallery"]
