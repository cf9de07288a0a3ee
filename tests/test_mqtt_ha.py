"""What Home Assistant sees of the MQTT sink, against a real Mosquitto broker and a real
subscriber: the order of messages at start and exit (no false arrival on a restart), state
that survives a restart, unknown instead of a literal ``none``, camera state as
availability, the device_tracker, publishing on change only, and the broker's outages
reported once per change."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import jinja2
import pytest
from mqtt_broker import Broker, Subscriber, free_port

from facerec.config import MqttConfig, ServeConfig
from facerec.events import Event
from facerec.mqtt import MqttSink, default_client_id, display_name, object_id, page_url


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _cfg(port: int, **kw) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, keepalive_s=5, reconnect_max_s=1, **kw)


def _render(template: str, payload: bytes) -> str:
    """A discovery ``value_template`` applied to a payload, as Home Assistant's Jinja does."""
    return jinja2.Environment().from_string(template).render(value_json=json.loads(payload), value=payload.decode())


def _seen(name: str, camera: str, track: int, score: float = 0.7) -> list[Event]:
    return [Event("appeared", name, score, track, 1.0, camera), Event("recognized", name, score, track, 1.0, camera)]


def test_display_names_client_id_and_page_url() -> None:
    assert display_name("lin_manuel_miranda") == "Lin Manuel Miranda"
    assert display_name("alice") == "Alice"
    assert display_name("Barack Obama") == "Barack Obama" and display_name("van_Gogh") == "van_Gogh"
    assert display_name("zoë") == "Zoë"
    assert default_client_id("facerec") == f"facerec-{socket.gethostname()}"
    assert page_url(ServeConfig()) == "http://127.0.0.1:8000/"
    assert page_url(ServeConfig(host="0.0.0.0", port=8080)) == f"http://{socket.gethostname()}:8080/"


def test_start_and_exit_order_and_a_restart_without_a_false_arrival(broker: Broker) -> None:
    person, state = "lin_manuel_miranda", "facerec/people/lin_manuel_miranda"
    sub = Subscriber(broker.port)
    try:
        sink = MqttSink(_cfg(broker.port, configuration_url="http://nvr.local:8000/"), cameras=["door"],
                        people=[person], version="t")
        try:
            assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
            topics = [t for t, _, _ in sub.all()]
            online = topics.index("facerec/available")
            assert topics.index(state) < online and topics.index("facerec/cameras/door") < online, topics
            assert topics.index("facerec/door/available") < online
            assert max(i for i, t in enumerate(topics) if t.startswith("homeassistant/")) < online
            presence = sub.json(f"homeassistant/binary_sensor/facerec/{object_id('person', person)}_presence/config")[-1]
            assert presence["name"] == "Lin Manuel Miranda"
            assert presence["unique_id"] == f"facerec_facerec_{object_id('person', person)}_presence"
            assert presence["device"]["configuration_url"] == "http://nvr.local:8000/"
            for t, p, _ in sub.all(prefix="homeassistant/"):
                assert "json_attributes_topic" not in json.loads(p), f"{t}: attribute-only updates"
            for ev in _seen(person, "door", 1):
                sink.publish(ev)
            assert sub.wait(lambda: sub.json(state)[-1]["present"] is True)
        finally:
            sink.close()
        # exit: everyone absent (keeping the last sighting), the camera reset, then offline
        assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"offline"])
        msgs = sub.all()
        offline = max(i for i, (t, p, _) in enumerate(msgs) if t == "facerec/available")
        last_state = max(i for i, (t, _, _) in enumerate(msgs) if t == state)
        assert last_state < offline
        gone = json.loads(msgs[last_state][1])
        assert (gone["present"], gone["home"], gone["camera"]) == (False, False, "door")
        assert sub.payloads("facerec/door/available")[-1] == b"offline"
        assert sub.json("facerec/cameras/door")[-1]["faces"] == 0
    finally:
        sub.close()

    # restart with the person out of view: they never turn on, the last sighting survives
    sub = Subscriber(broker.port)
    try:
        assert sub.wait(lambda: len(sub.json(state)) == 1)  # the retained state of the last run
        assert sub.json(state)[0]["present"] is False
        sink = MqttSink(_cfg(broker.port), cameras=["door"], people=[person], version="t")
        try:
            assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"online"])
            time.sleep(0.3)
            assert all(s["present"] is False for s in sub.json(state)), "a restart turned the person on"
            after = sub.json(state)[-1]
            assert after["camera"] == "door" and after["ts"] == gone["ts"] and after["score"] == pytest.approx(0.7)
            cam = sub.json("facerec/cameras/door")[-1]
            assert cam["last_recognized"] == person and cam["state"] == "online"
            cam_cfg = sub.json(f"homeassistant/sensor/facerec/{object_id('camera', 'door')}_last_recognized/config")[-1]
            assert _render(cam_cfg["value_template"], sub.payloads("facerec/cameras/door")[-1]) == person
        finally:
            sink.close()
    finally:
        sub.close()


def test_missing_values_render_as_unknown_not_none(broker: Broker) -> None:
    """A text sensor's state is the rendered text (Home Assistant 2024.3 showed ``None``
    literally), so a missing value renders as ``unknown``, Home Assistant's own state for it."""
    sub = Subscriber(broker.port)
    sink = MqttSink(_cfg(broker.port), cameras=["gate"], people=["bob"])
    try:
        assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
        oid, cam_oid = object_id("person", "bob"), object_id("camera", "gate")
        camera_cfg = sub.json(f"homeassistant/sensor/facerec/{oid}_camera/config")[-1]
        last_cfg = sub.json(f"homeassistant/sensor/facerec/{cam_oid}_last_recognized/config")[-1]
        assert json.loads(sub.payloads("facerec/people/bob")[-1])["camera"] is None
        assert _render(camera_cfg["value_template"], sub.payloads("facerec/people/bob")[-1]) == "unknown"
        assert _render(last_cfg["value_template"], sub.payloads("facerec/cameras/gate")[-1]) == "unknown"
        assert camera_cfg["name"] == "Bob last camera"
    finally:
        sink.close()
        sub.close()


def test_camera_state_is_availability_and_state_is_sent_on_change_only(broker: Broker) -> None:
    sub = Subscriber(broker.port)
    sink = MqttSink(_cfg(broker.port, presence_timeout_s=0.3, consider_home_s=0.8), cameras=["door"],
                    people=["alice"])
    try:
        assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
        stream = sub.json(f"homeassistant/binary_sensor/facerec/{object_id('camera', 'door')}_stream/config")[-1]
        assert stream["state_topic"] == "facerec/door/available" and stream["device_class"] == "connectivity"
        assert stream["availability"] == [{"topic": "facerec/available"}], "the stream's own state stays visible"
        sink.publish(Event.camera_state("door", "offline", 5.0, "no frame for 10 s"))
        assert sub.wait(lambda: sub.payloads("facerec/door/available")[-1:] == [b"offline"])
        assert sub.wait(lambda: sub.json("facerec/cameras/door")[-1]["reason"] == "no frame for 10 s")
        assert sub.json("facerec/events")[-1]["state"] == "offline"
        assert not sub.all("facerec/door/events"), "the event entity only lists face kinds"
        sink.publish(Event.camera_state("door", "online", 9.0, "reconnected after 4 s"))
        assert sub.wait(lambda: sub.payloads("facerec/door/available")[-1:] == [b"online"])

        # the same state again publishes nothing; a sighting publishes once per change
        n_cam, n_avail = len(sub.all("facerec/cameras/door")), len(sub.all("facerec/door/available"))
        sink.publish(Event.camera_state("door", "online", 9.5, "reconnected after 4 s"))
        sink.publish(Event("left", None, 0.0, 99, 9.6, "door"))  # a track never seen: nothing changes
        sink.publish(Event("appeared", None, 0.1, 5, 9.7, "door"))
        assert sub.wait(lambda: len(sub.all("facerec/events")) == 5)
        assert sub.wait(lambda: sub.json("facerec/cameras/door")[-1]["faces"] == 1)
        assert len(sub.all("facerec/cameras/door")) == n_cam + 1
        assert len(sub.all("facerec/door/available")) == n_avail

        # the device_tracker: home when seen, not_home consider_home_s after the track left
        tracker = sub.json(f"homeassistant/device_tracker/facerec/{object_id('person', 'alice')}_tracker/config")[-1]
        assert tracker["state_topic"] == "facerec/people/alice" and tracker["name"] == "Alice"
        for ev in [*_seen("alice", "door", 6), Event("left", "alice", 0.7, 6, 10.0, "door")]:
            sink.publish(ev)
        t_left = time.monotonic()
        assert sub.wait(lambda: _render(tracker["value_template"], sub.payloads("facerec/people/alice")[-1]) == "home")
        assert sub.wait(lambda: sub.json("facerec/people/alice")[-1]["present"] is False, 5)
        assert sub.json("facerec/people/alice")[-1]["home"] is True, "home outlasts presence"
        assert sub.wait(lambda: sub.json("facerec/people/alice")[-1]["home"] is False, 5)
        assert time.monotonic() - t_left >= 0.7
        assert _render(tracker["value_template"], sub.payloads("facerec/people/alice")[-1]) == "not_home"
    finally:
        sink.close()
        sub.close()


@pytest.mark.parametrize("host", ["refused", "no-such-host.invalid"])
def test_unreachable_broker_is_logged_at_start_once(host: str, caplog) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, logger="facerec.mqtt")
    sink = MqttSink(MqttConfig(host="127.0.0.1" if host == "refused" else host, port=port, reconnect_max_s=1))
    try:
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # a few more attempts, each silent
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        where = f"{'127.0.0.1' if host == 'refused' else host}:{port}"
        assert where in warnings[0]
        assert ("refused" if host == "refused" else "does not resolve") in warnings[0], warnings[0]
        assert sink.stats.connected is False
    finally:
        sink.close()


def test_broker_restart_is_reported_once_per_change_and_a_clean_exit_is_silent(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="facerec.mqtt")
    broker = Broker(tmp_path / "b").start()
    sink = MqttSink(_cfg(broker.port), cameras=["door"])
    try:
        sub = Subscriber(broker.port)
        assert sub.wait(lambda: sub.payloads("facerec/available") == [b"online"])
        sub.close()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        broker.stop()
        deadline = time.monotonic() + 10
        while sink.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sink.stats.connected
        time.sleep(3.0)  # several reconnect attempts while it is away
        broker.start()
        s2 = Subscriber(broker.port)
        try:
            assert s2.wait(lambda: sink.stats.connects >= 2, 15)
            assert s2.wait(lambda: b"online" in s2.payloads("facerec/available"))
            assert s2.wait(lambda: bool(s2.all(prefix="homeassistant/")), 5), "discovery sent again"
        finally:
            s2.close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "lost the broker" in warnings[0] and f"127.0.0.1:{broker.port}" in warnings[0]
        assert "again after" in warnings[1]
        caplog.clear()
    finally:
        sink.close()
        broker.stop()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], "a clean exit is silent"
