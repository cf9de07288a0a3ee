"""The MQTT topics of one daemon and the Home Assistant discovery configs that point at them.

Home Assistant builds its devices and entities from retained JSON configs under
``<discovery_prefix>/<component>/<node>/<object_id>/config``. :class:`HaDiscovery` says
what those configs hold, so the MQTT sink (:mod:`facerec.mqtt`) only decides *when* to
send them:

* one device for the daemon holding, per enrolled person, a presence ``binary_sensor``, a
  last-camera ``sensor`` and a ``device_tracker`` (home / not home);
* one device per camera (so each can go into its own area, linked ``via_device`` to the
  daemon) with the last person recognized, the count of faces, a face ``event`` entity and
  the stream's connectivity.

Every config carries a ``unique_id``, an ``origin`` and a device block (with
``configuration_url`` when the page's address is known). A camera's entities are
available while both the daemon and the camera are (``availability_mode: all``).
Entity ids are ASCII slugs plus a short hash of the name (:func:`object_id`), so two
names that slug alike still get different entities.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from typing import Any

from facerec.config import ServeConfig
from facerec.events import EVENT_KINDS

#: A discovery message: the topic and the config it carries.
DiscoveryMessage = tuple[str, dict[str, Any]]


def topic_part(text: str) -> str:
    """``text`` made safe as one topic level (no ``/``, ``+``, ``#`` or control characters)."""
    out = re.sub(r"[/+#\x00-\x1f]", "_", text).strip()
    return out or "_"


def object_id(kind: str, text: str) -> str:
    """A Home Assistant object id for ``text``: ASCII slug plus a short hash, so that two
    names that slug alike (``Zoë`` and ``Zoe``) still get different entities."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "x"
    return f"{kind}_{slug}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"


def display_name(name: str) -> str:
    """How a gallery name reads in Home Assistant: a key-like name (all lower case, words
    joined by ``_``) becomes words with capitals (``lin_manuel_miranda`` -> ``Lin Manuel
    Miranda``); a name written with capitals or spaces is the display name already."""
    if name != name.lower() or " " in name.strip():
        return name
    words = [w for w in name.replace("_", " ").split() if w]
    return " ".join(w[:1].upper() + w[1:] for w in words) or name


def page_url(serve: ServeConfig) -> str:
    """The ``facerec serve`` page as Home Assistant should link it: ``serve.host`` and
    ``serve.port``, with the machine's name when the server binds every address."""
    host = serve.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{serve.port}/"


@dataclass(frozen=True)
class HaDiscovery:
    """The topics of one daemon and its Home Assistant discovery configs.

    Args:
        prefix: ``mqtt.topic_prefix`` without a trailing ``/``.
        discovery_prefix: ``mqtt.discovery_prefix`` without a trailing ``/``.
        version: software version written into the devices and the origin (``""``: none).
        configuration_url: the link shown on the devices (``None``: none).
    """

    prefix: str
    discovery_prefix: str
    version: str = ""
    configuration_url: str | None = None

    @property
    def node(self) -> str:
        """The prefix as a discovery node id and a ``unique_id`` part (``[A-Za-z0-9_-]``)."""
        return re.sub(r"[^A-Za-z0-9_-]+", "_", self.prefix)

    @property
    def available_topic(self) -> str:
        """The daemon's retained ``online`` / ``offline`` (also its Last Will)."""
        return f"{self.prefix}/available"

    # ------------------------------------------------------------------ state topics

    def person_topic(self, name: str) -> str:
        """The retained state of one person (last sighting, ``present``, ``home``)."""
        return f"{self.prefix}/people/{topic_part(name)}"

    def camera_topic(self, camera: str) -> str:
        """The retained state of one camera (faces visible now, last person recognized)."""
        return f"{self.prefix}/cameras/{topic_part(camera)}"

    def camera_available_topic(self, camera: str) -> str:
        """The retained ``online`` / ``offline`` of one camera's stream."""
        return f"{self.prefix}/{topic_part(camera)}/available"

    def camera_events_topic(self, camera: str) -> str:
        """The face events of one camera (its event entity)."""
        return f"{self.prefix}/{topic_part(camera)}/events"

    # ------------------------------------------------------------------ devices and entities

    def daemon_device(self) -> dict[str, Any]:
        """The device holding every person's entities."""
        name = "facerec" if self.prefix == "facerec" else f"facerec {self.prefix}"
        return self._device([f"facerec_{self.node}"], name, "face recognition daemon")

    def camera_device(self, camera: str) -> dict[str, Any]:
        """The device of one camera, reached through the daemon's."""
        name = camera if self.prefix == "facerec" else f"{camera} ({self.prefix})"
        dev = self._device([f"facerec_{self.node}_{object_id('camera', camera)}"], name, "camera")
        dev["via_device"] = f"facerec_{self.node}"
        return dev

    def _device(self, identifiers: list[str], name: str, model: str) -> dict[str, Any]:
        dev: dict[str, Any] = {"identifiers": identifiers, "name": name, "manufacturer": "facerec", "model": model}
        if self.version:
            dev["sw_version"] = self.version
        if self.configuration_url:
            dev["configuration_url"] = self.configuration_url
        return dev

    def entity(self, oid: str, name: str, device: dict[str, Any], camera: str | None = None,
               **extra: Any) -> dict[str, Any]:
        """One discovery config; a camera's entities are available while the daemon and
        the camera both are.

        Args:
            oid: the entity's object id (unique within this daemon).
            name: the entity's name as Home Assistant shows it.
            device: the device block it belongs to.
            camera: the camera whose stream it also depends on (``None``: the daemon only).
            **extra: the component's own keys (``state_topic``, ``value_template``, ...).
        """
        avail = [{"topic": self.available_topic}]
        if camera is not None:
            avail.append({"topic": self.camera_available_topic(camera)})
        origin: dict[str, Any] = {"name": "facerec"}
        if self.version:
            origin["sw_version"] = self.version
        return {"name": name, "unique_id": f"facerec_{self.node}_{oid}", "availability": avail,
                "availability_mode": "all", "device": device, "origin": origin, **extra}

    def camera_configs(self, camera: str) -> list[DiscoveryMessage]:
        """The discovery messages of one camera's entities."""
        oid = object_id("camera", camera)
        state = self.camera_topic(camera)
        dev = self.camera_device(camera)
        base = f"{self.discovery_prefix}/%s/{self.node}/{oid}_%s/config"
        return [
            (base % ("sensor", "last_recognized"), self.entity(
                f"{oid}_last_recognized", "Last recognized", dev, camera, state_topic=state,
                value_template="{{ value_json.last_recognized or 'unknown' }}", icon="mdi:face-recognition")),
            (base % ("sensor", "faces"), self.entity(
                f"{oid}_faces", "Faces", dev, camera, state_topic=state, value_template="{{ value_json.faces }}",
                state_class="measurement", unit_of_measurement="faces", icon="mdi:account-group")),
            (base % ("event", "face"), self.entity(
                f"{oid}_face", "Face", dev, camera, state_topic=self.camera_events_topic(camera),
                event_types=list(EVENT_KINDS),
                value_template="{{ {'event_type': value_json.event, 'name': value_json.name, "
                               "'score': value_json.score, 'track_id': value_json.track_id} | to_json }}",
                icon="mdi:face-man")),
            (base % ("binary_sensor", "stream"), self.entity(
                f"{oid}_stream", "Stream", dev, None, state_topic=self.camera_available_topic(camera),
                payload_on="online", payload_off="offline", device_class="connectivity",
                entity_category="diagnostic")),
        ]

    def person_configs(self, name: str) -> list[DiscoveryMessage]:
        """The discovery messages of one person's entities (on the daemon's device)."""
        oid = object_id("person", name)
        state = self.person_topic(name)
        shown = display_name(name)
        dev = self.daemon_device()
        base = f"{self.discovery_prefix}/%s/{self.node}/{oid}_%s/config"
        return [
            (base % ("binary_sensor", "presence"), self.entity(
                f"{oid}_presence", shown, dev, state_topic=state, device_class="presence",
                value_template="{{ 'ON' if value_json.present else 'OFF' }}")),
            (base % ("sensor", "camera"), self.entity(
                f"{oid}_camera", f"{shown} last camera", dev, state_topic=state,
                value_template="{{ value_json.camera or 'unknown' }}", icon="mdi:cctv")),
            (base % ("device_tracker", "tracker"), self.entity(
                f"{oid}_tracker", shown, dev, state_topic=state, source_type="router",
                value_template="{{ 'home' if value_json.home else 'not_home' }}",
                payload_home="home", payload_not_home="not_home", icon="mdi:account")),
        ]
