"""Events: appeared/left with cooldown, JSON lines, a webhook on loopback, unknown crops."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facerec.events import (EVENT_SCHEMA, CallbackSink, Event, EventBus, JsonLinesSink, TrackEvents, UnknownCrops,
                            WebhookSink, iso_time)
from facerec.types import TrackedFace

BOX = np.array([10, 20, 50, 70], np.float32)


def _collect(cooldown: float = 10.0) -> tuple[TrackEvents, list[Event]]:
    got: list[Event] = []
    return TrackEvents([CallbackSink(got.append)], "door", cooldown), got


# ----------------------------------------------------------------------------- TrackEvents


def test_no_tracks_no_events() -> None:
    ev, got = _collect()
    assert ev.update(0.0, [], []) == [] and got == []


def test_undecided_tracks_are_not_announced() -> None:
    ev, got = _collect()
    ev.update(0.0, [TrackedFace(1, BOX, None, 0.0, decided=False)])
    ev.update(0.1, [], [1])
    assert got == []


def test_appeared_recognized_then_left_with_the_last_name_and_box() -> None:
    ev, got = _collect()
    before = time.time()
    for k in range(5):
        ev.update(k * 0.1, [TrackedFace(3, BOX + k, "alice", 0.6 + k * 0.01)])
    ev.update(1.0, [], left=[3])
    after = time.time()
    assert [(e.event, e.name, e.track_id) for e in got] == [
        ("appeared", "alice", 3), ("recognized", "alice", 3), ("left", "alice", 3)]
    assert got[-1].score == pytest.approx(0.64) and got[-1].box == (14.0, 24.0, 54.0, 74.0)
    assert got[0].camera == "door" and got[0].t == 0.0 and got[-1].t == 1.0
    assert got[0].box == (10.0, 20.0, 50.0, 70.0)
    assert all(before <= e.ts <= after for e in got), "every event carries the wall clock when it happened"


def test_cooldown_per_person_on_recognized_only() -> None:
    ev, got = _collect(cooldown=10.0)
    ev.update(0.0, [TrackedFace(1, BOX, "alice", 0.6)])
    ev.update(2.0, [], left=[1])
    ev.update(5.0, [TrackedFace(2, BOX, "alice", 0.6), TrackedFace(3, BOX, "bob", 0.6)])  # alice again within 10 s
    ev.update(6.0, [], left=[2])
    ev.update(12.0, [TrackedFace(4, BOX, "alice", 0.6)])  # after the cooldown
    kinds = [(e.event, e.name, e.track_id) for e in got if e.event != "appeared"]
    assert kinds == [("recognized", "alice", 1), ("left", "alice", 1), ("recognized", "bob", 3),
                     ("left", "alice", 2), ("recognized", "alice", 4)]
    assert [e.track_id for e in got if e.event == "appeared"] == [1, 2, 3, 4]
    assert ev.suppressed == 1


def test_unknown_tracks_are_each_announced() -> None:
    ev, got = _collect(cooldown=60.0)
    ev.update(0.0, [TrackedFace(1, BOX, None, 0.1), TrackedFace(2, BOX, None, 0.2)])
    assert [(e.event, e.name, e.track_id) for e in got] == [
        ("appeared", None, 1), ("unknown", None, 1), ("appeared", None, 2), ("unknown", None, 2)]


def test_unknown_turning_into_a_name_announces_the_name() -> None:
    ev, got = _collect()
    ev.update(0.0, [TrackedFace(1, BOX, None, 0.2)])
    ev.update(0.5, [TrackedFace(1, BOX, "alice", 0.5)])
    ev.update(0.6, [TrackedFace(1, BOX, None, 0.3)])  # a named track turning unknown is no new arrival
    ev.update(0.7, [], left=[1])
    assert [(e.event, e.name) for e in got] == [("appeared", None), ("unknown", None), ("recognized", "alice"),
                                               ("left", None)]


def test_event_record_v1_fields_and_iso_time() -> None:
    e = Event("recognized", "Zoë", 0.61234, 7, 1.23456, "cam0", ts=1764667800.125, box=(1, 2, 3.04, 4))
    d = e.to_json()
    assert d == {"v": EVENT_SCHEMA, "event": "recognized", "name": "Zoë", "score": 0.6123, "track_id": 7,
                 "camera": "cam0", "time": "2025-12-02T09:30:00.125Z", "ts": 1764667800.125, "t": 1.235,
                 "box": [1.0, 2.0, 3.0, 4.0], "crop": None}
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert e.similarity == e.score


def test_event_bus_never_blocks_counts_drops_and_survives_a_broken_sink() -> None:
    gate = threading.Event()
    got: list[Event] = []

    def slow(e: Event) -> None:
        gate.wait(5)
        got.append(e)

    def boom(e: Event) -> None:
        raise RuntimeError("down")

    bus = EventBus([CallbackSink(boom), CallbackSink(slow)], queue_size=3)
    for i in range(20):
        bus.publish(Event("appeared", None, 0.1, i, float(i), "cam"))
    # every publish returned while the slow sink still held the first event: nothing was
    # delivered yet and the queue overflowed (a waiting publish would have seen neither)
    assert got == [] and bus.dropped >= 20 - 3 - 1
    gate.set()
    assert bus.flush(5)
    bus.close()
    assert bus.published == 20 and bus.dropped >= 20 - 3 - 1
    assert len(got) == 20 - bus.dropped and got[-1].track_id == 19
    assert bus.failed == len(got)


def test_broken_sink_does_not_stop_the_others() -> None:
    got: list[Event] = []

    def boom(e: Event) -> None:
        raise RuntimeError("sink down")

    ev = TrackEvents([CallbackSink(boom), CallbackSink(got.append)], "cam")
    ev.update(0.0, [TrackedFace(1, BOX, "alice", 0.6)])
    assert [e.event for e in got] == ["appeared", "recognized"]


# ----------------------------------------------------------------------------- sinks


def test_json_lines_sink(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.jsonl"
    sink = JsonLinesSink(path)
    sink.publish(Event("appeared", "Zoë", 0.61234, 7, 1.23456, "cam0"))
    sink.publish(Event("left", None, -1.0, 8, 2.0, "cam0"))
    sink.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert {k: rows[0][k] for k in ("v", "event", "name", "score", "track_id", "t", "camera")} == {
        "v": EVENT_SCHEMA, "event": "appeared", "name": "Zoë", "score": 0.6123, "track_id": 7, "t": 1.235,
        "camera": "cam0"}
    assert rows[1]["name"] is None and set(rows[1]) == set(rows[0]) == {
        "v", "event", "name", "score", "track_id", "camera", "time", "ts", "t", "box", "crop"}


class _Hook:
    """A loopback HTTP server that records POSTed JSON, optionally slowly."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.bodies: list[dict] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                time.sleep(delay)
                hook.bodies.append({"json": json.loads(body), "type": self.headers.get("Content-Type")})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_webhook_receives_json() -> None:
    hook = _Hook()
    try:
        sink = WebhookSink(hook.url, queue_size=8)
        sink.publish(Event("appeared", "alice", 0.7, 1, 0.5, "cam"))
        sink.publish(Event("left", "alice", 0.7, 1, 3.0, "cam"))
        sink.close(timeout=5)
        assert [b["json"]["event"] for b in hook.bodies] == ["appeared", "left"]
        assert hook.bodies[0]["json"]["name"] == "alice"
        assert hook.bodies[0]["type"] == "application/json"
        assert sink.sent == 2 and sink.failed == 0 and sink.dropped == 0
    finally:
        hook.close()


def test_slow_webhook_never_blocks_and_drops_are_counted() -> None:
    hook = _Hook(delay=0.3)
    try:
        sink = WebhookSink(hook.url, queue_size=4, timeout_s=2)
        for i in range(50):
            sink.publish(Event("appeared", f"p{i}", 0.5, i, float(i), "cam"))
        # publish never waits for the network: the 0.3 s answers had not come, so the
        # queue overflowed while the loop ran
        assert sink.dropped >= 50 - 4 - 1
        sink.close(timeout=0.5)
        assert sink.sent + sink.dropped + sink.failed <= 50
        # what was sent is the first event (taken at once) and then the newest: the oldest are dropped
        sent_ids = [b["json"]["track_id"] for b in hook.bodies]
        assert all(i <= 2 or i >= 46 for i in sent_ids), sent_ids
    finally:
        hook.close()


def test_dead_webhook_counts_failures(tmp_path: Path) -> None:
    hook = _Hook()
    url = hook.url
    hook.close()  # nobody listens any more
    sink = WebhookSink(url, queue_size=4, timeout_s=1)
    sink.publish(Event("appeared", None, 0.1, 1, 0.0, "cam"))
    sink.close(timeout=3)
    assert sink.failed == 1 and sink.sent == 0


def test_webhook_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSink("file:///etc/passwd")


# ----------------------------------------------------------------------------- unknown crops


def test_unknown_crops_retention_and_cap(tmp_path: Path) -> None:
    folder = tmp_path / "unknown"
    folder.mkdir()
    old = folder / "cam_1_track1.jpg"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    keeper = UnknownCrops(folder, retention_s=60, max_files=3, camera="rtsp://10.0.0.1/x")
    assert not old.exists(), "files older than the retention are deleted at start"
    crop = np.zeros((112, 112, 3), np.uint8)
    paths = [keeper.save(i, crop) for i in range(5)]
    assert all(p is not None and p.name.startswith("rtsp___10_0_0_1_x_") for p in paths)
    for i, p in enumerate(paths):
        os.utime(p, (time.time() - 50 + i, time.time() - 50 + i))
    keeper.prune()
    left = sorted(folder.glob("*.jpg"))
    assert len(left) == 3
    assert {p.name for p in left} == {p.name for p in paths[2:]}


def test_unknown_crops_disabled_by_zero_cap(tmp_path: Path) -> None:
    keeper = UnknownCrops(tmp_path, retention_s=60, max_files=0)
    assert keeper.save(1, np.zeros((8, 8, 3), np.uint8)) is None
