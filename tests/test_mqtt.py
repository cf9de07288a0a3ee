"""The MQTT sink against a real Mosquitto broker on loopback, with a real subscriber:
topics and payloads, Home Assistant discovery, presence expiry, outages and the Last Will."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt_broker import Broker, Subscriber

from facerec.config import MqttConfig
from facerec.events import Event, TrackEvents
from facerec.mqtt import MqttSink, object_id
from facerec.types import TrackedFace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def sub(broker: Broker):
    s = Subscriber(broker.port)
    yield s
    s.close()


def _cfg(broker: Broker, **kw) -> MqttConfig:
    return MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, keepalive_s=5, reconnect_max_s=1, **kw)


def _retained_now(port: int, topic: str, timeout: float = 3.0) -> bytes | None:
    """What a new subscriber gets retained on ``topic`` (None when nothing is retained)."""
    s = Subscriber(port, topic)
    try:
        s.wait(lambda: bool(s.all(topic)), timeout)
        got = [p for t, p, r in s.all(topic) if r]
        return got[-1] if got else None
    finally:
        s.close()


def test_topics_payloads_discovery_presence_and_left(broker: Broker, sub: Subscriber) -> None:
    sink = MqttSink(_cfg(broker, presence_timeout_s=0.6), cameras=["door"], people=["alice", "bob"], version="t")
    try:
        assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
        oid = object_id("person", "alice")
        presence = f"homeassistant/binary_sensor/facerec/{oid}_presence/config"
        assert sub.wait(lambda: sub.json(presence))
        cfg = sub.json(presence)[-1]
        assert cfg["unique_id"] == f"facerec_facerec_{oid}_presence" and cfg["name"] == "Alice"
        assert cfg["availability"] == [{"topic": "facerec/available"}] and cfg["state_topic"] == "facerec/people/alice"
        assert cfg["device"]["identifiers"] == ["facerec_facerec"] and cfg["device"]["sw_version"] == "t"
        assert cfg["device"]["name"] == "facerec" and cfg["origin"] == {"name": "facerec", "sw_version": "t"}
        # per person 3 entities, per camera 4; they arrive one by one, so wait for all of them
        sub.wait(lambda: len(sub.all(prefix="homeassistant/")) >= 2 * 3 + 4)
        disc = [t for t, _, _ in sub.all(prefix="homeassistant/")]
        assert len(disc) == 2 * 3 + 4, disc
        cam_oid = object_id("camera", "door")
        event_cfg = sub.json(f"homeassistant/event/facerec/{cam_oid}_face/config")[-1]
        assert event_cfg["event_types"] == ["appeared", "recognized", "unknown", "left"]
        assert event_cfg["state_topic"] == "facerec/door/events"
        # the camera is a device of its own (an area of its own in Home Assistant), available
        # while the daemon and the camera's stream both are
        assert event_cfg["device"]["identifiers"] == [f"facerec_facerec_{cam_oid}"]
        assert event_cfg["device"]["name"] == "door" and event_cfg["device"]["via_device"] == "facerec_facerec"
        assert event_cfg["availability"] == [{"topic": "facerec/available"}, {"topic": "facerec/door/available"}]
        assert event_cfg["availability_mode"] == "all"
        assert sub.payloads("facerec/door/available") == [b"online"]
        assert json.loads(_retained_now(broker.port, presence))["unique_id"] == cfg["unique_id"], "retained"
        assert sub.json("facerec/people/alice")[-1]["present"] is False

        events = TrackEvents([sink], "door", cooldown_s=0)
        events.update(0.0, [TrackedFace(1, (10, 10, 60, 70), "alice", 0.71),
                            TrackedFace(2, (80, 10, 130, 70), None, 0.2)])
        assert sub.wait(lambda: any(d["present"] for d in sub.json("facerec/people/alice")))
        # the person's state leaves first; the per-face messages follow it
        assert sub.wait(lambda: len(sub.json("facerec/door/faces")) >= 2)
        faces = sub.json("facerec/door/faces")
        assert sorted((f["name"] or "", f["id"]) for f in faces) == [("", "door-2"), ("alice", "door-1")]
        assert all(f["type"] == "face" and f["camera"] == "door" and f["timestamp"] > 1e9 for f in faces)
        assert sub.wait(lambda: sub.json("facerec/cameras/door")[-1]["faces"] == 2)
        counts = sub.json("facerec/cameras/door")[-1]
        assert (counts["known"], counts["unknown"], counts["last_recognized"]) == (1, 1, "alice")
        seen = sub.json("facerec/people/alice")[-1]
        assert seen["camera"] == "door" and seen["score"] == pytest.approx(0.71)

        time.sleep(1.0)  # longer than the timeout, but the track is still visible
        assert sub.json("facerec/people/alice")[-1]["present"] is True

        t_left = time.monotonic()
        events.update(2.0, [], left=[1, 2])
        assert sub.wait(lambda: [e["event"] for e in sub.json("facerec/events")].count("left") == 2)
        left = [e for e in sub.json("facerec/events") if e["event"] == "left"]
        assert {e["name"] for e in left} == {"alice", None} and all(e["camera"] == "door" for e in left)
        assert sub.wait(lambda: sub.json("facerec/people/alice")[-1]["present"] is False, 5)
        waited = time.monotonic() - t_left
        assert 0.5 <= waited < 3.0, f"presence cleared after {waited:.2f} s, timeout 0.6 s"
        assert sub.json("facerec/cameras/door")[-1]["faces"] == 0
        assert _retained_now(broker.port, "facerec/people/alice") is not None
        assert json.loads(_retained_now(broker.port, "facerec/people/alice"))["present"] is False
        kinds = [e["event"] for e in sub.json("facerec/door/events")]
        assert kinds == ["appeared", "recognized", "appeared", "unknown", "left", "left"]
    finally:
        sink.close()
    assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"offline"])


def test_people_created_renamed_and_deleted_with_the_gallery(broker: Broker, sub: Subscriber) -> None:
    sink = MqttSink(_cfg(broker), people=["alice"])
    try:
        a = f"homeassistant/binary_sensor/facerec/{object_id('person', 'alice')}_presence/config"
        c = f"homeassistant/binary_sensor/facerec/{object_id('person', 'carol')}_presence/config"
        assert sub.wait(lambda: sub.payloads(a))
        sink.set_people(["carol"])  # alice renamed to carol
        assert sub.wait(lambda: sub.payloads(a)[-1:] == [b""] and bool(sub.payloads(c)))
        assert _retained_now(broker.port, a, 1.0) is None, "the deleted entity's config is gone"
        assert _retained_now(broker.port, "facerec/people/alice", 1.0) is None
        assert json.loads(_retained_now(broker.port, c))["unique_id"].endswith("_presence")
    finally:
        sink.close()


def test_home_assistant_restart_gets_discovery_again(broker: Broker, sub: Subscriber) -> None:
    sink = MqttSink(_cfg(broker), cameras=["door"])
    try:
        assert sub.wait(lambda: len(sub.all(prefix="homeassistant/")) == 4)
        sub.client.publish("homeassistant/status", "online", qos=1)
        assert sub.wait(lambda: len([m for m in sub.all(prefix="homeassistant/") if m[0] != "homeassistant/status"]) == 8)
    finally:
        sink.close()


def test_broker_outage_never_blocks_counts_drops_and_reconnects(broker: Broker, sub: Subscriber) -> None:
    sink = MqttSink(_cfg(broker), cameras=["door"], people=["alice"])
    try:
        assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
        sub.close()
        broker.stop()
        assert sink.client.is_connected() is False or sub.wait(lambda: not sink.stats.connected, 5)
        t0 = time.perf_counter()
        for i in range(200):
            sink.publish(Event("appeared", None, 0.1, i, float(i), "door"))
        assert time.perf_counter() - t0 < 0.5, "publish must never wait for the broker"
        assert sub.wait(lambda: sink.stats.to_json()["dropped"] >= 200, 10), sink.stats.to_json()
        broker.start()
        s2 = Subscriber(broker.port)
        try:
            assert s2.wait(lambda: sink.stats.connects >= 2, 15), sink.stats.to_json()
            assert s2.wait(lambda: b"online" in s2.payloads("facerec/available"), 5)
            assert s2.wait(lambda: len(s2.all(prefix="homeassistant/")) >= 5, 5), "discovery republished"
            assert s2.wait(lambda: bool(s2.all("facerec/cameras/door")))
            sink.publish(Event("recognized", "alice", 0.7, 500, 1.0, "door"))
            assert s2.wait(lambda: any(e["track_id"] == 500 for e in s2.json("facerec/events")))
            assert sink.stats.to_json()["reconnects"] >= 1
        finally:
            s2.close()
    finally:
        sink.close()


def test_unreachable_broker_at_start_is_no_crash(tmp_path: Path) -> None:
    from mqtt_broker import free_port

    port = free_port()
    sink = MqttSink(MqttConfig(enabled=True, port=port, reconnect_max_s=1), cameras=["door"])
    try:
        sink.publish(Event("appeared", None, 0.1, 1, 0.0, "door"))
        time.sleep(0.5)
        assert sink.stats.connected is False and sink.stats.to_json()["dropped"] >= 1
        b = Broker(tmp_path / "late", port).start()
        try:
            s = Subscriber(port)
            assert s.wait(lambda: sink.stats.connected, 10)
            assert s.wait(lambda: b"online" in s.payloads("facerec/available"), 10)
            assert _retained_now(port, "facerec/available") == b"online"
            s.close()
        finally:
            sink.close()
            b.stop()
    finally:
        sink.close()


def test_sigkilled_process_leaves_offline_through_the_last_will(broker: Broker, sub: Subscriber) -> None:
    code = (
        "import sys, time\n"
        "from facerec.config import MqttConfig\n"
        "from facerec.mqtt import MqttSink\n"
        f"s = MqttSink(MqttConfig(enabled=True, port={broker.port}, topic_prefix='lw'))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, env=dict(os.environ))
    try:
        assert proc.stdout.readline().strip() == b"up"
        assert sub.wait(lambda: sub.payloads("lw/available") == [b"online"], 10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert sub.wait(lambda: sub.payloads("lw/available")[-1:] == [b"offline"], 15)
        assert _retained_now(broker.port, "lw/available") == b"offline", "the Last Will is retained"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_run_command_publishes_a_clip_over_mqtt(broker: Broker, sub: Subscriber, tmp_path: Path, data_dir: Path,
                                                 photo) -> None:
    """``facerec run`` with a config whose ``mqtt:`` names only host and port (on, since it
    names a host): an enrolled person gets a presence entity before any sighting, the clip's
    face leaves as events, the discovery configs stay retained, and ``offline`` follows the
    clean exit."""
    from facerec.cli import run

    gallery = tmp_path / "gallery"
    assert run(["enroll", "add", "Obama", str(photo("face_recognition_examples/obama/obama.jpg")),
                "--data-dir", str(gallery), "--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet"]) == 0
    conf = tmp_path / "mqtt.yaml"
    conf.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n", encoding="utf-8")
    clip = data_dir / "video" / "lp_driving_d0.mp4"
    rc = run(["run", "--source", str(clip), "--max-frames", "30", "--config", str(conf), "--data-dir", str(gallery),
              "--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet"])
    assert rc == 0
    presence = f"homeassistant/binary_sensor/facerec/{object_id('person', 'Obama')}_presence/config"
    assert sub.wait(lambda: bool(sub.json(presence)))
    assert sub.wait(lambda: {e["event"] for e in sub.json("facerec/events")} >= {"appeared", "left"})
    events = sub.json("facerec/events")
    assert all(e["camera"] == "lp_driving_d0" for e in events)
    assert not any(e["name"] == "Obama" for e in events)  # the driver of this clip is not Obama
    assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"offline"])
    assert sub.payloads("facerec/available")[0] == b"online"
    assert json.loads(_retained_now(broker.port, presence))["name"] == "Obama", "discovery stays retained"
    assert _retained_now(broker.port, "facerec/available") == b"offline"


def test_a_section_naming_a_host_is_on_unless_it_says_enabled_false(tmp_path: Path) -> None:
    from facerec.config import load_config

    cases = {"mqtt: {host: broker, port: 1884}\n": True, "mqtt: {host: broker, enabled: false}\n": False,
             "mqtt: {enabled: true}\n": True, "mqtt: {port: 1884}\n": False, "serve: {port: 8001}\n": False}
    for i, (text, on) in enumerate(cases.items()):
        conf = tmp_path / f"c{i}.yaml"
        conf.write_text(text, encoding="utf-8")
        assert load_config(conf).mqtt.enabled is on, text
    assert load_config(REPO / "config.yaml").mqtt.enabled is False, "the shipped config says enabled: false"
