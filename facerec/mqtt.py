"""The MQTT sink: events, per-person presence and Home Assistant discovery (paho-mqtt).

Topics (``<prefix>`` = ``mqtt.topic_prefix``; payloads in docs/events.md):

* ``<prefix>/available``: retained ``online``; ``offline`` on a clean stop and, through
  the broker's Last Will (qos 1, retained), when the daemon dies without a word;
* ``<prefix>/events`` and ``<prefix>/<camera>/events``: every event record;
* ``<prefix>/<camera>/faces``: one message per ``recognized`` / ``unknown`` face, shaped
  like Frigate's face ``tracked_object_update`` (type, id, name, score, camera,
  timestamp);
* ``<prefix>/people/<name>``: retained last sighting and ``present``, which turns false
  ``mqtt.presence_timeout_s`` after the person's last track left;
* ``<prefix>/cameras/<camera>``: retained counts of the faces visible now.

Home Assistant discovery configs (retained, ``unique_id``, a device block, availability on
``<prefix>/available``) are published under ``mqtt.discovery_prefix`` for every camera and
for every person enrolled (:meth:`MqttSink.set_people`, called when the gallery changes:
enrolment creates the entities, deletion removes them, a rename does both), and published
again whenever ``<discovery_prefix>/status`` says ``online`` and after every reconnect.

The camera never waits for the broker: :meth:`MqttSink.publish` puts the event on a
bounded queue (the oldest is dropped and counted when full) and a worker thread turns it
into messages. paho's network thread reconnects with a backoff of 1 s doubling up to
``mqtt.reconnect_max_s``; messages that cannot be sent meanwhile are counted as dropped,
and the retained state (availability, discovery, people, cameras) is sent again on
reconnect, so nothing a subscriber relies on stays stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from facerec.config import MqttConfig
from facerec.errors import ConfigError
from facerec.events import EVENT_KINDS, Event, iso_time, put_dropping_oldest

log = logging.getLogger(__name__)


def topic_part(text: str) -> str:
    """``text`` made safe as one topic level (no ``/``, ``+``, ``#`` or control characters)."""
    out = re.sub(r"[/+#\x00-\x1f]", "_", text).strip()
    return out or "_"


def object_id(kind: str, text: str) -> str:
    """A Home Assistant object id for ``text``: ASCII slug plus a short hash, so that two
    names that slug alike (``Zoë`` and ``Zoe``) still get different entities."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "x"
    return f"{kind}_{slug}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"


@dataclass
class _Person:
    present: bool = False
    camera: str | None = None
    score: float | None = None
    ts: float | None = None
    expire_at: float | None = None  # monotonic; set while present with no track visible


@dataclass
class _Camera:
    tracks: dict[int, str | None] = field(default_factory=dict)  # track -> name; "" = not decided
    last_recognized: str | None = None
    ts: float | None = None


@dataclass
class MqttStats:
    """Counters of an :class:`MqttSink` (all since start)."""

    connected: bool = False
    connects: int = 0
    sent: int = 0
    dropped: int = 0
    queue_dropped: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "connects": self.connects, "reconnects": max(0, self.connects - 1),
                "sent": self.sent, "dropped": self.dropped + self.queue_dropped,
                "queue_dropped": self.queue_dropped}


_STOP = object()


class MqttSink:
    """Publishes events to an MQTT broker; see the module docstring for the topics.

    Args:
        cfg: the ``mqtt:`` section.
        cameras: names of the cameras (their discovery entities and count topics).
        people: the people enrolled now (more come through :meth:`set_people`).
        version: software version written into the Home Assistant device block.

    Raises:
        ConfigError: paho-mqtt is missing or the TLS files cannot be read.
    """

    def __init__(self, cfg: MqttConfig, cameras: Sequence[str] = (), people: Iterable[str] = (),
                 version: str = "") -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("mqtt.enabled needs paho-mqtt: pip install paho-mqtt") from None
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.rstrip("/")
        self.disc = cfg.discovery_prefix.rstrip("/")
        self.node = re.sub(r"[^A-Za-z0-9_-]+", "_", self.prefix)
        self.available_topic = f"{self.prefix}/available"
        self.version = version
        self.stats = MqttStats()
        self._cameras: dict[str, _Camera] = {c: _Camera() for c in cameras}
        self._people: dict[str, _Person] = {p: _Person() for p in people}
        self._active: dict[tuple[str, int], str] = {}  # (camera, track) -> name, tracks named now
        self._retained: dict[str, str] = {}  # every retained payload, re-sent after a reconnect
        self._resync = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, cfg.queue_size))
        self._closed = False
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"facerec-{self.node}",
                             protocol=mqtt.MQTTv311)
        client.will_set(self.available_topic, "offline", qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_certs)
            except (OSError, ValueError) as e:
                raise ConfigError(f"mqtt.tls: cannot set up TLS ({e}); check mqtt.ca_certs") from None
        client.reconnect_delay_set(1, max(1, int(cfg.reconnect_max_s)))
        client.max_queued_messages_set(max(16, cfg.queue_size))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        for name in self._people:
            self._person_state(name)
        for cam in self._cameras:
            self._camera_state(cam)
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        self._thread = threading.Thread(target=self._work, name="mqtt", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            msg = f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}"
            self.stats.errors = (self.stats.errors + [msg])[-5:]
            log.warning("mqtt: %s (check mqtt.username / mqtt.password)", msg)
            return
        self.stats.connected = True
        self.stats.connects += 1
        log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        client.subscribe(f"{self.disc}/status", qos=1)
        self._resync.set()
        self._wake()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.stats.connected:
            log.warning("mqtt: lost the broker %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port, reason_code)
        self.stats.connected = False

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == f"{self.disc}/status" and msg.payload.strip().lower() == b"online":
            log.info("mqtt: Home Assistant came online; publishing discovery again")
            self._resync.set()
            self._wake()

    # ------------------------------------------------------------------ the sink interface

    def publish(self, event: Event) -> None:
        """Queue ``event``; never blocks (the oldest waiting item is dropped when full)."""
        self._put(("event", event))

    def set_people(self, names: Iterable[str]) -> None:
        """The people enrolled now: entities are created for new names and removed for
        names that are gone (a rename is both)."""
        self._put(("people", sorted(set(names))))

    def _put(self, item: Any) -> None:
        if self._closed:
            return
        self.stats.queue_dropped += put_dropping_oldest(self._queue, item)

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    # ------------------------------------------------------------------ worker

    def _send(self, topic: str, payload: str, retain: bool = False, qos: int = 0) -> None:
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
        if not self.stats.connected:
            if not retain:
                self.stats.dropped += 1
            return
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            self.stats.sent += 1
        elif not retain:
            self.stats.dropped += 1

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if self._resync.is_set():
                    self._resync.clear()
                    self._republish()
                if item is not None:
                    kind, payload = item
                    if kind == "event":
                        self._handle(payload)
                    elif kind == "people":
                        self._update_people(payload)
                self._expire()
            except Exception:  # never let one bad message end the sink
                log.exception("mqtt: publishing failed")

    def _republish(self) -> None:
        self._send(self.available_topic, "online", retain=True, qos=1)
        if self.cfg.discovery:
            for cam in self._cameras:
                for topic, cfg in self._camera_discovery(cam):
                    self._send(topic, json.dumps(cfg), retain=True, qos=1)
            for name in self._people:
                for topic, cfg in self._person_discovery(name):
                    self._send(topic, json.dumps(cfg), retain=True, qos=1)
        for topic, payload in list(self._retained.items()):
            if topic != self.available_topic and not topic.startswith(self.disc + "/"):
                self._send(topic, payload, retain=True, qos=1)

    def _handle(self, ev: Event) -> None:
        record = json.dumps(ev.to_json(), ensure_ascii=False)
        cam_t = topic_part(ev.camera)
        self._send(f"{self.prefix}/events", record)
        self._send(f"{self.prefix}/{cam_t}/events", record)
        if ev.camera not in self._cameras:
            self._cameras[ev.camera] = _Camera()
            if self.cfg.discovery and self.stats.connected:
                for topic, cfg in self._camera_discovery(ev.camera):
                    self._send(topic, json.dumps(cfg), retain=True, qos=1)
        cam = self._cameras[ev.camera]
        if ev.event in ("recognized", "unknown"):
            face = {"type": "face", "id": f"{ev.camera}-{ev.track_id}", "name": ev.name,
                    "score": round(float(ev.score), 4), "camera": ev.camera, "timestamp": round(ev.ts, 3)}
            self._send(f"{self.prefix}/{cam_t}/faces", json.dumps(face, ensure_ascii=False))
        key = (ev.camera, ev.track_id)
        if ev.event == "left":
            cam.tracks.pop(ev.track_id, None)
            self._active.pop(key, None)
        else:
            cam.tracks[ev.track_id] = ev.name if ev.name is not None else (None if ev.event == "unknown" else "")
            if ev.name is not None:
                self._active[key] = ev.name
            else:
                self._active.pop(key, None)
        if ev.event == "recognized":
            cam.last_recognized, cam.ts = ev.name, ev.ts
        self._camera_state(ev.camera)
        if ev.name is not None and ev.event in ("recognized", "left", "appeared"):
            self._sighting(ev)

    def _sighting(self, ev: Event) -> None:
        name = ev.name
        assert name is not None
        p = self._people.get(name)
        if p is None:  # a name the gallery list has not brought yet
            p = self._people[name] = _Person()
            if self.cfg.discovery and self.stats.connected:
                for topic, cfg in self._person_discovery(name):
                    self._send(topic, json.dumps(cfg), retain=True, qos=1)
        p.present, p.camera, p.score, p.ts = True, ev.camera, float(ev.score), ev.ts
        visible = any(n == name for n in self._active.values())
        p.expire_at = None if visible else time.monotonic() + self.cfg.presence_timeout_s
        self._person_state(name)

    def _expire(self) -> None:
        now = time.monotonic()
        for name, p in self._people.items():
            if p.present and p.expire_at is not None and now >= p.expire_at:
                p.present, p.expire_at = False, None
                self._person_state(name)

    def _person_state(self, name: str) -> None:
        p = self._people[name]
        payload = {"name": name, "present": p.present, "camera": p.camera,
                   "score": round(p.score, 4) if p.score is not None else None,
                   "time": iso_time(p.ts) if p.ts is not None else None, "ts": p.ts}
        self._send(self.person_topic(name), json.dumps(payload, ensure_ascii=False), retain=True, qos=1)

    def _camera_state(self, camera: str) -> None:
        c = self._cameras[camera]
        names = list(c.tracks.values())
        payload = {"camera": camera, "faces": len(names), "known": sum(1 for n in names if n),
                   "unknown": sum(1 for n in names if n is None), "last_recognized": c.last_recognized,
                   "time": iso_time(c.ts) if c.ts is not None else None, "ts": c.ts}
        self._send(self.camera_topic(camera), json.dumps(payload, ensure_ascii=False), retain=True, qos=1)

    def _update_people(self, names: list[str]) -> None:
        wanted = set(names)
        for gone in [n for n in self._people if n not in wanted]:
            log.info("mqtt: %s left the gallery; removing their entities", gone)
            for topic, _ in self._person_discovery(gone):
                self._send(topic, "", retain=True, qos=1)
            self._send(self.person_topic(gone), "", retain=True, qos=1)
            del self._people[gone]
        for new in [n for n in names if n not in self._people]:
            self._people[new] = _Person()
            if self.cfg.discovery:
                for topic, cfg in self._person_discovery(new):
                    self._send(topic, json.dumps(cfg), retain=True, qos=1)
            self._person_state(new)

    # ------------------------------------------------------------------ topics and discovery

    def person_topic(self, name: str) -> str:
        return f"{self.prefix}/people/{topic_part(name)}"

    def camera_topic(self, camera: str) -> str:
        return f"{self.prefix}/cameras/{topic_part(camera)}"

    def _device(self) -> dict[str, Any]:
        return {"identifiers": [f"facerec_{self.node}"], "name": f"facerec {self.prefix}",
                "manufacturer": "facerec", "model": "face recognition daemon", "sw_version": self.version or None}

    def _entity(self, oid: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "unique_id": f"facerec_{self.node}_{oid}",
                "availability_topic": self.available_topic, "payload_available": "online",
                "payload_not_available": "offline", "device": self._device(), **extra}

    def _camera_discovery(self, camera: str) -> list[tuple[str, dict[str, Any]]]:
        oid = object_id("camera", camera)
        state = self.camera_topic(camera)
        base = f"{self.disc}/%s/{self.node}/{oid}_%s/config"
        return [
            (base % ("sensor", "last_recognized"), self._entity(
                f"{oid}_last_recognized", f"{camera} last recognized", state_topic=state,
                value_template="{{ value_json.last_recognized if value_json.last_recognized else 'none' }}",
                json_attributes_topic=state, icon="mdi:face-recognition")),
            (base % ("sensor", "faces"), self._entity(
                f"{oid}_faces", f"{camera} faces", state_topic=state, value_template="{{ value_json.faces }}",
                state_class="measurement", unit_of_measurement="faces", icon="mdi:account-group")),
            (base % ("event", "face"), self._entity(
                f"{oid}_face", f"{camera} face", state_topic=f"{self.prefix}/{topic_part(camera)}/events",
                event_types=list(EVENT_KINDS),
                value_template="{{ {'event_type': value_json.event, 'name': value_json.name, "
                               "'score': value_json.score, 'track_id': value_json.track_id} | to_json }}",
                icon="mdi:face-man")),
        ]

    def _person_discovery(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        oid = object_id("person", name)
        state = self.person_topic(name)
        base = f"{self.disc}/%s/{self.node}/{oid}_%s/config"
        return [
            (base % ("binary_sensor", "presence"), self._entity(
                f"{oid}_presence", f"{name} presence", state_topic=state, device_class="presence",
                value_template="{{ 'ON' if value_json.present else 'OFF' }}", json_attributes_topic=state)),
            (base % ("sensor", "camera"), self._entity(
                f"{oid}_camera", f"{name} last camera", state_topic=state,
                value_template="{{ value_json.camera if value_json.camera else 'none' }}", icon="mdi:cctv")),
        ]

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued (at most ``timeout`` s), say ``offline``, disconnect."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if self.stats.connected:
            info = self.client.publish(self.available_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.stats.connected = False
