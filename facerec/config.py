"""The configuration: declared once, validated, documented in place.

``config.yaml`` at the project root documents every key; this module is its schema.
Unknown keys are rejected naming the key (a typo is an error at start-up, never a
silently ignored setting) and every number has bounds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facerec.config_rules import (check_camera_source, check_http_url, check_roi, check_unique_names,
                                  webcam_index_as_text)
from facerec.errors import ConfigError
from facerec.runtime.engines import ENGINE_ALIAS, EngineName
from facerec.weights import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "config.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelsConfig(_Section):
    detector: str = Field("auto", description="Detector name from `facerec weights`, or auto.")
    embedder: str = Field("auto", description="Embedder name from `facerec weights`, or auto.")
    weights_dir: str | None = Field(None, description="Directory searched first for weight files.")
    detector_weights: str | None = Field(None, description="Explicit detector weights file.")
    embedder_weights: str | None = Field(None, description="Explicit embedder weights file.")
    verify_sha256: bool = Field(True, description="Check published sha256 before loading.")


class RuntimeConfig(_Section):
    """How every model runs: the engine, its arithmetic and its threads (one rule for all)."""

    engine: Literal["auto", EngineName] = Field(
        "auto", description="Inference engine; auto = the fastest measured for each model that is installed (README).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Arithmetic; auto = bf16 where the CPU has native bf16 (AVX512-BF16/AMX), else fp32.")
    threads: int | None = Field(
        None, ge=1, le=1024, description="Intra-op threads of every engine; null = the cores available to the process (batch tools) or 1 per call (live loop).")
    hint: Literal["auto", "latency", "throughput"] = Field(
        "auto", description="OpenVINO performance hint; auto = latency for live commands, throughput for batch tools.")
    cache_dir: str | None = Field(
        None, description="Converted models (ONNX exports, OpenVINO IR); null = $FACEREC_CACHE or ~/.cache/facerec/runtime.")


#: Keys that moved into ``runtime:``; old config files still load, with a warning.
MOVED_KEYS = {("models", ENGINE_ALIAS): "engine", ("live", "threads"): "threads", ("live", "precision"): "precision"}


class DetectionConfig(_Section):
    input_size: int = Field(640, ge=64, le=4096, multiple_of=32, description="Long side of the letterboxed input, px.")
    conf_thres: float = Field(0.5, gt=0, lt=1, description="Minimum face score.")
    iou_thres: float = Field(0.45, gt=0, lt=1, description="NMS IoU threshold.")
    min_face: int = Field(16, ge=0, description="Ignore faces whose shorter box side is below this, px.")
    max_faces: int = Field(500, ge=1, description="Keep at most this many faces per image, highest score first.")


class RecognitionConfig(_Section):
    threshold: float | None = Field(None, ge=-1, le=1, description="Cosine similarity to accept a match; null = the embedder's default.")
    flip_tta: bool = Field(False, description="Add the mirrored face's feature before normalising.")
    top_k: int = Field(5, ge=1, le=100, description="Candidates reported per face.")
    batch_size: int = Field(32, ge=1, le=1024, description="Faces per embedder call.")


class GalleryConfig(_Section):
    data_dir: str = Field("data_recognition", description="Gallery root: raw/, preprocessed/, gallery.db.")
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="Where the gallery lives: sqlite (a file under data_dir) or postgres (shared by hosts).")
    dsn: str | None = Field(
        None, description="PostgreSQL connection string (postgresql://user@host:port/db); null = env FACEREC_DB_DSN.")
    template: Literal["mean", "quality_mean", "max"] = Field("mean", description="Per-person template or all-samples max.")
    index: Literal["auto", "exact", "faiss"] = Field("auto", description="Search backend; auto uses FAISS above index_min_size.")
    index_min_size: int = Field(200_000, ge=1, description="Gallery vectors above which auto switches to FAISS.")
    multiple_faces: Literal["largest", "skip"] = Field("largest", description="Enrollment photo with several faces.")
    min_quality: float | None = Field(None, description="Reject enrollment faces below this quality; null = embedder default.")
    duplicate_similarity: float = Field(0.98, gt=0, le=1, description="Warn when a new sample is this close to an existing one.")
    min_face_size: int = Field(32, ge=0, description="Refuse enrollment/alignment faces whose shorter box side is below this, px.")
    pad_retry: float = Field(0.5, ge=0, le=2, description="No face found: retry once with this much border (fraction of the long side).")


class TrackingConfig(_Section):
    track_thresh: float = Field(0.5, gt=0, lt=1, description="Detections above this score start/continue tracks.")
    match_thresh: float = Field(0.8, gt=0, le=1, description="Association threshold (1 - IoU cost).")
    track_buffer: int = Field(30, ge=1, description="Frames a lost track is kept.")
    reembed_every: int = Field(15, ge=1, description="Re-embed a tracked face every K frames.")
    quality_gain: float = Field(1.15, ge=1, description="Re-embed when face size/score improves by this factor.")
    vote_window: int = Field(10, ge=1, description="Recent matches a track's name is voted over.")
    switch_margin: float = Field(0.1, ge=0, le=1, description="Hysteresis: a new name must lead by this vote share.")
    min_hits: int = Field(2, ge=2, description="Detections a new track needs before it gets an id and is recognised (at least 2).")
    identity_check: bool = Field(True, description="Check each embedding of a track against the track's own template and split the track on a drop; false = trust the box tracker (the old behaviour).")
    identity_drop: float = Field(0.5, ge=-1, le=1, description="Split a track when an embedding's cosine to the track's template falls below this.")
    template_alpha: float = Field(0.3, gt=0, le=1, description="Weight of a new embedding in the track's running template (EMA).")
    cut_threshold: float = Field(0.08, gt=0, le=1, description="Scene cut: mean absolute change of a 32x32 grey thumbnail, fraction of 255; every face is re-checked. 0.08 lies above every change between consecutive frames of the test clips (at most 0.078) and below 99% of hard cuts between them (bench/identity.py --cuts); 1 = off.")
    jump_threshold: float = Field(0.5, gt=0, description="Box jump: centre moved by this many box sizes (or size changed by 1 + this); the face is re-checked.")
    min_agree: int = Field(2, ge=1, description="Agreeing matches a track needs before it shows a name (or unknown), unless one match is strong.")
    strong_margin: float = Field(0.2, ge=0, le=2, description="One match this far above the recognition threshold names a track at once.")


class LiveConfig(_Section):
    detect_every: int = Field(3, ge=1, description="Run the detector on every Nth frame; with adapt, the narrowest interval the loop returns to.")
    input_size: int | None = Field(320, ge=64, le=4096, multiple_of=32, description="Detector input in the live loop, px; with adapt, the largest it uses; null = detection.input_size.")
    adapt: bool = Field(True, description="Hold the frame rate: widen the detect interval and lower the detector input when frames take longer than the frame interval, go back when the CPU frees up.")
    target_fps: float | None = Field(None, gt=0, le=1000, description="Frame rate adapt holds; null = the source's own rate.")
    max_detect_every: int = Field(8, ge=1, le=100, description="Widest detect interval adapt may choose, frames.")
    max_detect_interval_s: float = Field(0.2, gt=0, le=5, description="Widest detect interval adapt may choose, s (a new face is named within about 2x this).")
    min_input_size: int = Field(192, ge=64, le=4096, multiple_of=32, description="Smallest detector input adapt may choose, px.")
    overlay_stats: bool = Field(False, description="Draw FPS, detect interval, input size and ms per stage on shown and saved frames.")
    reconnect_max_s: float = Field(1.0, gt=0, description="Longest wait between two attempts to reopen a stream that is away, s (the first is at once).")
    reconnect_jitter: float = Field(0.2, ge=0, le=1, description="Each wait between reconnect attempts is scaled by a random factor in [1 - j, 1 + j].")
    read_timeout_s: float = Field(10.0, gt=0, description="A stream that delivers nothing this long is offline and reconnected, s.")
    camera_name: str | None = Field(None, description="Name in events; default: a slug of the source (file stem, or URL host and path without user and password).")
    stats_every_s: float = Field(10.0, ge=0, description="Log a stats line this often, s; 0 = never.")
    gallery_poll_s: float = Field(1.0, gt=0, description=(
        "Longest time between two checks of the gallery for changes, s; commits are noticed sooner (PostgreSQL "
        "NOTIFY, SQLite's data version checked every 0.25 s) on the gallery watcher's own thread."))

    def live_input_size(self, detection: DetectionConfig) -> int:
        """The detector input the live loop starts at (and, with adapt, its largest), px."""
        return self.input_size if self.input_size is not None else detection.input_size


class EventsConfig(_Section):
    cooldown_s: float = Field(10.0, ge=0, description="Seconds of source time between two 'recognized' events of the same person on one camera ('appeared', 'unknown' and 'left' are never held back).")
    webhook_url: str | None = Field(None, description="POST each event as JSON here (an http:// or https:// URL).")
    queue_size: int = Field(256, ge=1, description="Events waiting for the webhook, and for the event bus that feeds every sink (at least 64 there); when full the oldest is dropped and counted.")
    webhook_timeout_s: float = Field(5.0, gt=0, description="Longest wait for one webhook POST, s.")
    keep_unknown_crops: bool = Field(False, description="Save crops of unknown tracks for later enrollment.")
    unknown_retention_s: float = Field(7 * 24 * 3600, ge=0, description="Delete kept unknown crops after this, s.")
    unknown_max_files: int = Field(1000, ge=0, description="Keep at most this many unknown crops.")

    _webhook = field_validator("webhook_url")(check_http_url)


class UnknownsConfig(_Section):
    """Unknown sightings and their grouping into candidate people (``facerec unknowns``)."""

    enabled: bool = Field(False, description="Keep the best crops of every unknown track and group them into candidate people.")
    min_faces: int = Field(2, ge=1, le=1000, description="Sightings within max_distance (itself included) that make a sighting the core of a candidate person.")
    max_distance: float = Field(0.5, gt=0, le=2, description="Cosine distance (1 - cos) up to which two sightings are neighbours.")
    crops_per_sighting: int = Field(3, ge=1, le=50, description="Best crops (by face quality) kept per unknown track.")
    retention_s: float = Field(30 * 24 * 3600, ge=0, description="Delete sightings (crops, vectors) older than this, s; 0 = keep forever.")
    max_sightings: int = Field(5000, ge=1, description="Keep at most this many sightings; the oldest go first.")
    max_mb: float = Field(500.0, gt=0, description="Keep at most this many megabytes of sighting crops; the oldest go first.")


class ServeConfig(_Section):
    host: str = Field("127.0.0.1", description="Bind address of `facerec serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `facerec serve`.")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest accepted upload, MB.")
    max_import_mb: float = Field(500.0, gt=0, description="Largest accepted gallery archive upload, MB.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Largest accepted uploaded image, pixels (width x height).")
    keyless_clients: list[str] = Field(default_factory=list, description="Addresses or networks that may recognise and detect through the DeepStack API without a key (CodeProject.AI-style clients); empty = none.")

    @field_validator("keyless_clients")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 192.168.1.20 or 192.168.1.0/24)") from None
        return v


class MqttConfig(_Section):
    enabled: bool = Field(False, description="Publish events and Home Assistant discovery over MQTT; "
                                             "unset = on when the section names a host.")
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS).")
    topic_prefix: str = Field("facerec", min_length=1, pattern=r"^[^#+]+$", description="First level of every topic.")
    discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^#+]+$", description="Home Assistant discovery prefix.")
    discovery: bool = Field(True, description="Publish Home Assistant discovery configs.")
    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Broker password.")
    tls: bool = Field(False, description="Connect with TLS (system CA certificates unless ca_certs is set).")
    ca_certs: str | None = Field(None, description="CA bundle file for TLS.")
    client_id: str | None = Field(None, description="MQTT client id; null = <topic_prefix>-<host name>, unique per machine.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive, s; the Last Will fires about 1.5x this after a silent death.")
    presence_timeout_s: float = Field(30.0, gt=0, description="A person is no longer present this long after their last track left, s.")
    queue_size: int = Field(1024, ge=1, description="Messages waiting for the broker; older ones are dropped and counted.")
    reconnect_max_s: float = Field(30.0, ge=1, description="Longest wait between two reconnect attempts, s.")
    consider_home_s: float = Field(180.0, gt=0, description="A person's device_tracker turns not_home this long after their last track left, s.")
    configuration_url: str | None = Field(None, description="Link shown on the Home Assistant devices; null = the `facerec serve` page (serve.host, serve.port), empty = none.")

    @model_validator(mode="before")
    @classmethod
    def _on_with_a_host(cls, data: Any) -> Any:
        """A section that names a ``host`` and says nothing of ``enabled`` is on: writing
        the broker's address is asking for MQTT."""
        if isinstance(data, dict) and "enabled" not in data and "host" in data:
            data = {**data, "enabled": True}
        return data


class CameraConfig(_Section):
    """One camera of ``cameras:``; unset overrides take the global section's value."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Camera name in events and topics (letters, digits, _ . -).")
    source: str = Field(description="Webcam index, video file, image folder or rtsp:// / http:// URL.")
    enabled: bool = Field(True, description="Run this camera.")
    realtime: bool = Field(False, description="Play a file at its own frame rate (as a camera would).")
    loop: bool = Field(False, description="Restart a file or folder at its end.")
    detect_every: int | None = Field(None, ge=1, description="Override of live.detect_every.")
    input_size: int | None = Field(None, ge=64, le=4096, multiple_of=32, description="Override of live.input_size for this camera (with live.adapt, the largest it uses), px.")
    min_face: int | None = Field(None, ge=0, description="Override of detection.min_face, px.")
    roi: tuple[int, int, int, int] | None = Field(None, description="Region of interest [x1, y1, x2, y2], frame px; only this part of the frame is searched for faces.")

    _roi = field_validator("roi")(check_roi)
    _source = field_validator("source")(check_camera_source)
    _webcam = field_validator("source", mode="before")(webcam_index_as_text)


class Config(_Section):
    """The whole ``config.yaml``."""

    models: ModelsConfig = ModelsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    detection: DetectionConfig = DetectionConfig()
    recognition: RecognitionConfig = RecognitionConfig()
    gallery: GalleryConfig = GalleryConfig()
    tracking: TrackingConfig = TrackingConfig()
    live: LiveConfig = LiveConfig()
    events: EventsConfig = EventsConfig()
    unknowns: UnknownsConfig = UnknownsConfig()
    serve: ServeConfig = ServeConfig()
    mqtt: MqttConfig = MqttConfig()
    cameras: list[CameraConfig] = Field(default_factory=list, description="Cameras one daemon runs; empty = --source.")

    @model_validator(mode="after")
    def _camera_names(self) -> Config:
        check_unique_names([c.name for c in self.cameras])
        return self


def format_errors(err: ValidationError, source: str, flags: dict[str, str] | None = None,
                  overridden: set[str] | None = None) -> str:
    """One line per problem, naming the key, or the flag for a value given on the command line.

    Args:
        err: pydantic's error.
        source: where the values came from (a file name).
        flags: dotted key -> command-line flag.
        overridden: dotted keys whose value came from a flag (``None``: every key in ``flags``).
    """
    flags = flags or {}
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if key.startswith("runtime.") and key.count(".") > 1:  # a model_validator of the section
            key = key.rsplit(".", 1)[0]
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling against config.yaml)")
            continue
        name = flags.get(key) if key in flags and (overridden is None or key in overridden) else None
        msg = str(e["msg"]).replace("Input should be", "must be").replace("Value error, ", "")
        if name:
            lines.append(f"  {name} {e.get('input')!r}: {msg} (config key {key})")
        elif not key or e["type"] == "value_error":  # a rule of ours: its sentence names the value
            lines.append(f"  {key + ': ' if key else ''}{msg}")
        else:
            lines.append(f"  {key}: {msg} (got {e.get('input')!r})")
    if len(lines) == 2 and any(f in lines[1] for f in flags.values()):
        return lines[1].strip()  # one bad flag: just that line
    if len(lines) == 2:
        return f"{lines[0]} {lines[1].strip()}"  # one problem: one line
    return "\n".join(lines)


def _move_old_keys(data: dict[str, Any], source: str) -> None:
    """Move keys of older config files into ``runtime:`` (in place), warning once each.

    Raises:
        ConfigError: the old and the new key are both set.
    """
    for (section, key), new in MOVED_KEYS.items():
        old = data.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        value = old.pop(key)
        runtime = data.setdefault("runtime", {})
        if not isinstance(runtime, dict):
            return  # the validation error about runtime: comes next
        if new in runtime and runtime[new] is not None and value is not None:
            raise ConfigError(f"{source}: {section}.{key} moved to runtime.{new}; remove {section}.{key} "
                              f"(both are set)")
        if value is not None:
            runtime[new] = value
        logging.getLogger(__name__).warning(
            "%s: %s.%s is deprecated, it moved to runtime.%s (update the file)", source, section, key, new)


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, *,
                flags: dict[str, str] | None = None) -> Config:
    """Load and validate a configuration file.

    Args:
        path: YAML file; ``None`` uses the project's ``config.yaml`` if present, else defaults.
        overrides: dotted keys applied after the file, e.g. ``{"models.detector": "x"}``
            (command-line flags end up here).
        flags: dotted key -> command-line flag, so a bad value given on the command line
            is reported under its flag (``--threads 0``), not as a key of the file.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key or out-of-range value.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            with p.open(encoding="utf-8") as f:  # a stream, so YAML errors name the file
                loaded = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} cannot be read: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    _move_old_keys(data, source)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        given = {k for k, v in (overrides or {}).items() if v is not None}
        raise ConfigError(format_errors(e, source, flags, given)) from None
