"""The MQTT sink: events, per-person presence and Home Assistant discovery (paho-mqtt).

Topics (``<prefix>`` = ``mqtt.topic_prefix``; payloads in docs/events.md):

* ``<prefix>/available``: retained ``online``; ``offline`` on a clean stop and, through
  the broker's Last Will (qos 1, retained), when the daemon dies without a word;
* ``<prefix>/events``: every event record; ``<prefix>/<camera>/events``: the face events
  of one camera (the Home Assistant event entity);
* ``<prefix>/<camera>/faces``: one message per ``recognized`` / ``unknown`` face, shaped
  like Frigate's face ``tracked_object_update`` (type, id, name, score, camera,
  timestamp);
* ``<prefix>/<camera>/available``: retained ``online`` / ``offline``, the camera's stream
  (from the ``camera`` events);
* ``<prefix>/people/<name>``: retained last sighting, ``present`` (false
  ``mqtt.presence_timeout_s`` after the person's last track left) and ``home`` (false
  ``mqtt.consider_home_s`` after it);
* ``<prefix>/cameras/<camera>``: retained counts of the faces visible now, the last person
  recognized there and the stream's state.

Retained state is published only when it changes. At start the retained state of the last
run is read back (the last sighting and the last person recognized survive a restart;
nobody is present until seen again), then discovery, the state and only then ``online``;
a clean stop publishes everyone absent, then ``offline``. So Home Assistant never sees a
person arrive because the daemon restarted.

Home Assistant discovery configs (retained, under ``mqtt.discovery_prefix``; what they
hold is :mod:`facerec.ha_discovery`) give one device for the daemon with a presence, a
last camera and a ``device_tracker`` entity per enrolled person
(:meth:`MqttSink.set_people`, called when the gallery changes: enrolment creates the
entities, deletion removes them, a rename does both), and one device per camera. They are
published again whenever ``<discovery_prefix>/status`` says ``online`` and after every
reconnect.

The camera never waits for the broker: :meth:`MqttSink.publish` puts the event on a
bounded queue (the oldest is dropped and counted when full) and a worker thread turns it
into messages. paho's network thread reconnects with a backoff of 1 s doubling up to
``mqtt.reconnect_max_s``; an unreachable or lost broker is logged once per change (with
host, port and the reason), messages that cannot be sent meanwhile are counted as
dropped, and the retained state is sent again on reconnect, so nothing a subscriber relies
on stays stale.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from facerec.config import MqttConfig
from facerec.errors import ConfigError
from facerec.events import Event, iso_time
from facerec.ha_discovery import DiscoveryMessage, HaDiscovery, display_name, object_id, page_url, topic_part
from facerec.queued import QueuedWorker

# The Home Assistant names stay importable from here, where they lived first.
__all__ = ["RESTORE_WAIT_S", "MqttSink", "MqttStats", "default_client_id", "display_name", "object_id",
           "page_url", "topic_part"]

log = logging.getLogger(__name__)

#: Longest wait at start for the retained state of the last run, s.
RESTORE_WAIT_S = 2.0


def default_client_id(prefix: str) -> str:
    """``<prefix>-<host name>``: unique per machine, so two daemons on two machines with
    the default prefix never take each other's session at the broker."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname()) or "host"
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '_', prefix)}-{host}"[:64]


@dataclass
class _Person:
    present: bool = False
    home: bool = False
    camera: str | None = None
    score: float | None = None
    ts: float | None = None
    expire_at: float | None = None  # monotonic; set while present with no track visible
    away_at: float | None = None  # monotonic; set while home with no track visible


@dataclass
class _Camera:
    tracks: dict[int, str | None] = field(default_factory=dict)  # track -> name; "" = not decided
    last_recognized: str | None = None
    ts: float | None = None
    state: str = "online"
    reason: str | None = None


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


class MqttSink:
    """Publishes events to an MQTT broker; see the module docstring for the topics.

    Args:
        cfg: the ``mqtt:`` section.
        cameras: names of the cameras (their discovery entities and count topics).
        people: the people enrolled now (more come through :meth:`set_people`).
        version: software version written into the Home Assistant device and origin.
        configuration_url: the ``facerec serve`` page, linked from the Home Assistant
            devices when ``mqtt.configuration_url`` is not set (``None``: no link).

    Raises:
        ConfigError: paho-mqtt is missing or the TLS files cannot be read.
    """

    def __init__(self, cfg: MqttConfig, cameras: Sequence[str] = (), people: Iterable[str] = (),
                 version: str = "", configuration_url: str | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("mqtt.enabled needs paho-mqtt: pip install paho-mqtt") from None
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.rstrip("/")
        self.disc = cfg.discovery_prefix.rstrip("/")
        self.version = version
        url = cfg.configuration_url if cfg.configuration_url is not None else configuration_url
        self.configuration_url = url or None
        self.ha = HaDiscovery(self.prefix, self.disc, version, self.configuration_url)
        self.node = self.ha.node
        self.available_topic = self.ha.available_topic
        self.client_id = cfg.client_id or default_client_id(self.prefix)
        self.stats = MqttStats()
        self._cameras: dict[str, _Camera] = {c: _Camera() for c in cameras}
        self._people: dict[str, _Person] = {p: _Person() for p in people}
        self._active: dict[tuple[str, int], str] = {}  # (camera, track) -> name, tracks named now
        self._retained: dict[str, str] = {}  # every retained payload, re-sent after a reconnect
        self._published: dict[str, str] = {}  # retained payloads the broker has now (publish on change)
        self._lock = threading.Lock()
        self._resync = threading.Event()
        self._closed = False
        self._closing = False
        self._broker_up: bool | None = None  # None until the first attempt; logs once per change
        self._down_since: float | None = None
        self._restored = False
        self._restore_done = threading.Event()
        self._restore_msgs: list[tuple[str, bytes]] = []
        self._marker = f"{self.prefix}/_start/{topic_part(self.client_id)}"
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311)
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
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        for name in self._people:
            self._person_state(name)
        for cam in self._cameras:
            self._camera_state(cam)
        # events and people changes in order, plus a tick every 0.2 s (expiry, resync)
        self._worker = QueuedWorker(self._on_item, cfg.queue_size, "mqtt", idle_s=0.2)
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()

    # ------------------------------------------------------------------ paho callbacks

    @property
    def where(self) -> str:
        """``host:port`` of the broker, for messages."""
        return f"{self.cfg.host}:{self.cfg.port}"

    def _broker_down(self, why: str, lost: bool) -> None:
        """Log the broker going away once, not on every reconnect attempt."""
        self.stats.connected = False
        if self._closing:
            return
        if self._broker_up is False:
            log.debug("mqtt: %s still away (%s)", self.where, why)
            return
        self._broker_up = False
        self._down_since = time.monotonic()
        self.stats.errors = (self.stats.errors + [why])[-5:]
        if lost:
            log.warning("mqtt: lost the broker %s (%s); reconnecting, the cameras keep running", self.where, why)
        else:
            log.warning("mqtt: cannot reach the broker %s (%s); retrying every %g s at most, the cameras keep "
                        "running", self.where, why, max(1, int(self.cfg.reconnect_max_s)))

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """No Nagle delay: one event is several small messages, and without this all but
        the first wait for the broker's delayed ACK (about 40 ms on Linux)."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not a TCP socket (a proxy, a websocket wrapper)
            pass

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        err = sys.exc_info()[1]  # paho calls this from its ``except OSError`` block
        if isinstance(err, socket.gaierror):
            why = f"the host name does not resolve: {err.strerror or err}"
        elif isinstance(err, ConnectionRefusedError):
            why = "connection refused: is the broker running on that port?"
        elif err is not None:
            why = getattr(err, "strerror", None) or str(err) or type(err).__name__
        else:
            why = "connection failed"
        self._broker_down(why, lost=False)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._broker_down(f"the broker refused the connection: {reason_code}; check mqtt.username / "
                              f"mqtt.password", lost=False)
            return
        self.stats.connected = True
        self.stats.connects += 1
        if self._broker_up is False and self._down_since is not None:
            log.warning("mqtt: connected to %s again after %.0f s", self.where, time.monotonic() - self._down_since)
        else:
            log.info("mqtt: connected to %s", self.where)
        self._broker_up, self._down_since = True, None
        with self._lock:
            self._published.clear()  # the broker may have restarted without its retained messages
        client.subscribe(f"{self.disc}/status", qos=1)
        if not self._restored:
            client.subscribe([(f"{self.prefix}/people/+", 1), (f"{self.prefix}/cameras/+", 1), (self._marker, 1)])
            client.publish(self._marker, "1", qos=1)  # comes back after every retained message above
        self._resync.set()
        self._wake()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._broker_down(str(reason_code), lost=True)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic == self._marker:
            self._restore_done.set()
        elif msg.topic == f"{self.disc}/status":
            if msg.payload.strip().lower() == b"online":
                log.info("mqtt: Home Assistant came online; publishing discovery again")
                with self._lock:
                    self._published.clear()  # it asks for every config again, unchanged or not
                self._resync.set()
                self._wake()
        elif not self._restore_done.is_set() and msg.retain:
            self._restore_msgs.append((msg.topic, bytes(msg.payload)))

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
        self._worker.put(item)
        self.stats.queue_dropped = self._worker.dropped

    def _wake(self) -> None:
        self._worker.poke()

    # ------------------------------------------------------------------ worker

    def _send(self, topic: str, payload: str, retain: bool = False, qos: int = 0) -> Any:
        """Publish now when connected; a retained payload is remembered for reconnects and
        sent only when it differs from what the broker holds."""
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
            with self._lock:
                if self.stats.connected and self._published.get(topic) == payload:
                    return None
        if not self.stats.connected:
            if not retain:
                self.stats.dropped += 1
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            self.stats.sent += 1
            if retain:
                with self._lock:
                    self._published[topic] = payload
        elif not retain:
            self.stats.dropped += 1
        return info

    def _on_item(self, item: tuple[str, Any] | None) -> None:
        """The worker: one queued item (``None``: the idle tick), then resync and expiry."""
        try:
            if self._resync.is_set() and self.stats.connected:
                self._resync.clear()
                if not self._restored:
                    self._restore()
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

    def _restore(self) -> None:
        """Take the last sighting of everyone and the last person recognized per camera
        from the retained state of the last run (never ``present``: nobody is here until
        seen again), then stop listening to the state topics."""
        if not self._restore_done.wait(RESTORE_WAIT_S):
            log.info("mqtt: no answer from %s about the last run's state within %g s; starting afresh", self.where,
                     RESTORE_WAIT_S)
        self._restored = True
        self._restore_done.set()
        self.client.unsubscribe([f"{self.prefix}/people/+", f"{self.prefix}/cameras/+", self._marker])
        for topic, raw in self._restore_msgs:
            try:
                old = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(old, dict):
                continue
            if topic.startswith(f"{self.prefix}/people/"):
                p = self._people.get(str(old.get("name")))
                if p is not None and p.ts is None and isinstance(old.get("ts"), (int, float)):
                    p.camera, p.ts = old.get("camera"), float(old["ts"])
                    p.score = float(old["score"]) if isinstance(old.get("score"), (int, float)) else None
                    self._person_state(str(old["name"]))
            else:
                c = self._cameras.get(str(old.get("camera")))
                if c is not None and c.last_recognized is None and old.get("last_recognized"):
                    c.last_recognized = str(old["last_recognized"])
                    c.ts = float(old["ts"]) if isinstance(old.get("ts"), (int, float)) else None
                    self._camera_state(str(old["camera"]))
        self._restore_msgs.clear()

    def _republish(self) -> None:
        """Discovery, then the retained state, then ``online``: Home Assistant has every
        entity's current state before it is available."""
        if self.cfg.discovery:
            for cam in self._cameras:
                self._send_configs(self.ha.camera_configs(cam))
            for name in self._people:
                self._send_configs(self.ha.person_configs(name))
        for topic, payload in list(self._retained.items()):
            if topic != self.available_topic and not topic.startswith(self.disc + "/"):
                self._send(topic, payload, retain=True, qos=1)
        self._send(self.available_topic, "online", retain=True, qos=1)

    def _new_camera(self, camera: str) -> _Camera:
        cam = self._cameras[camera] = _Camera()
        if self.cfg.discovery and self.stats.connected:
            self._send_configs(self.ha.camera_configs(camera))
        return cam

    def _handle(self, ev: Event) -> None:
        """The state first (the person, then the camera), then the event records: the
        first of a burst of messages leaves without waiting for the broker's ACK, so the
        state Home Assistant automates on arrives soonest."""
        record = json.dumps(ev.to_json(), ensure_ascii=False)
        cam_t = topic_part(ev.camera)
        cam = self._cameras.get(ev.camera) or self._new_camera(ev.camera)
        if ev.event == "camera":  # the stream's state, not a face: HA's event entity lists face kinds only
            cam.state, cam.reason = (ev.state or "offline"), ev.reason
            self._camera_state(ev.camera)
            self._send(f"{self.prefix}/events", record)
            return
        self._track(cam, ev)
        self._send(f"{self.prefix}/events", record)
        self._send(self.ha.camera_events_topic(ev.camera), record)
        if ev.event in ("recognized", "unknown"):
            face = {"type": "face", "id": f"{ev.camera}-{ev.track_id}", "name": ev.name,
                    "score": round(float(ev.score), 4), "camera": ev.camera, "timestamp": round(ev.ts, 3)}
            self._send(f"{self.prefix}/{cam_t}/faces", json.dumps(face, ensure_ascii=False))

    def _track(self, cam: _Camera, ev: Event) -> None:
        """Update and publish the person's and the camera's state for a face event."""
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
        if ev.name is not None and ev.event in ("recognized", "left", "appeared"):
            self._sighting(ev)
        self._camera_state(ev.camera)

    def _sighting(self, ev: Event) -> None:
        name = ev.name
        assert name is not None
        p = self._people.get(name)
        if p is None:  # a name the gallery list has not brought yet
            p = self._people[name] = _Person()
            if self.cfg.discovery and self.stats.connected:
                self._send_configs(self.ha.person_configs(name))
        p.present, p.home, p.camera, p.score, p.ts = True, True, ev.camera, float(ev.score), ev.ts
        visible = any(n == name for n in self._active.values())
        now = time.monotonic()
        p.expire_at = None if visible else now + self.cfg.presence_timeout_s
        p.away_at = None if visible else now + self.cfg.consider_home_s
        self._person_state(name)

    def _expire(self) -> None:
        now = time.monotonic()
        for name, p in self._people.items():
            changed = False
            if p.present and p.expire_at is not None and now >= p.expire_at:
                p.present, p.expire_at, changed = False, None, True
            if p.home and p.away_at is not None and now >= p.away_at:
                p.home, p.away_at, changed = False, None, True
            if changed:
                self._person_state(name)

    def _person_payload(self, name: str) -> str:
        p = self._people[name]
        payload = {"name": name, "present": p.present, "home": p.home, "camera": p.camera,
                   "score": round(p.score, 4) if p.score is not None else None,
                   "time": iso_time(p.ts) if p.ts is not None else None, "ts": p.ts}
        return json.dumps(payload, ensure_ascii=False)

    def _person_state(self, name: str) -> Any:
        return self._send(self.person_topic(name), self._person_payload(name), retain=True, qos=1)

    def _camera_state(self, camera: str) -> list[Any]:
        c = self._cameras[camera]
        names = list(c.tracks.values())
        payload = {"camera": camera, "faces": len(names), "known": sum(1 for n in names if n),
                   "unknown": sum(1 for n in names if n is None), "last_recognized": c.last_recognized,
                   "time": iso_time(c.ts) if c.ts is not None else None, "ts": c.ts,
                   "state": c.state, "reason": c.reason}
        return [self._send(self.camera_topic(camera), json.dumps(payload, ensure_ascii=False), retain=True, qos=1),
                self._send(self.camera_available_topic(camera), c.state, retain=True, qos=1)]

    def _update_people(self, names: list[str]) -> None:
        wanted = set(names)
        for gone in [n for n in self._people if n not in wanted]:
            log.info("mqtt: %s left the gallery; removing their entities", gone)
            for topic, _ in self.ha.person_configs(gone):
                self._send(topic, "", retain=True, qos=1)
            self._send(self.person_topic(gone), "", retain=True, qos=1)
            del self._people[gone]
        for new in [n for n in names if n not in self._people]:
            self._people[new] = _Person()
            if self.cfg.discovery:
                self._send_configs(self.ha.person_configs(new))
            self._person_state(new)

    # ------------------------------------------------------------------ topics and discovery

    def person_topic(self, name: str) -> str:
        """The retained state topic of one person (:meth:`HaDiscovery.person_topic`)."""
        return self.ha.person_topic(name)

    def camera_topic(self, camera: str) -> str:
        """The retained state topic of one camera (:meth:`HaDiscovery.camera_topic`)."""
        return self.ha.camera_topic(camera)

    def camera_available_topic(self, camera: str) -> str:
        """The retained stream state of one camera (:meth:`HaDiscovery.camera_available_topic`)."""
        return self.ha.camera_available_topic(camera)

    def _send_configs(self, configs: list[DiscoveryMessage]) -> None:
        """Publish discovery configs, retained (sent only when changed)."""
        for topic, cfg in configs:
            self._send(topic, json.dumps(cfg, ensure_ascii=False), retain=True, qos=1)

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued, then everyone absent and the cameras' reset counts, then
        ``offline``, and disconnect quietly (at most ``timeout`` s in all)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        self.stats.queue_dropped += self._worker.close(timeout)
        self._closing = True
        if self.stats.connected and not self._worker.running:
            infos: list[Any] = []
            for p in self._people.values():
                p.present, p.home, p.expire_at, p.away_at = False, False, None, None
            for name in self._people:
                infos.append(self._person_state(name))
            for cam_name, cam in self._cameras.items():
                cam.tracks.clear()
                cam.state, cam.reason = "offline", "facerec stopped"
                infos.extend(self._camera_state(cam_name))
            infos.append(self._send(self.available_topic, "offline", retain=True, qos=1))
            for info in infos:
                if info is None:
                    continue
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()
        self.stats.connected = False
