"""The records a gallery backend reads and writes: people, samples, change sets, dumped
samples, unknown sightings and audit entries.

They live apart from :mod:`facerec.gallery.backend` (the protocol) and from the backends
themselves so that every backend, the service and the web app share one definition.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from facerec.errors import GalleryError
from facerec.types import ALIGNED_SIZE

#: Longest person name, characters.
MAX_NAME_LENGTH = 100
#: Change-feed entries kept; a reader further behind reloads everything.
FEED_KEEP = 10_000
#: Interfaces named in the audit log.
INTERFACES = ("cli", "api", "daemon", "test", "deepstack", "compreface")


@dataclass(frozen=True)
class PersonInfo:
    """An enrolled person.

    Attributes:
        name: display name, unique in the gallery.
        samples: number of samples (crops) enrolled for the person.
        created: Unix time the person was first enrolled.
    """

    name: str
    samples: int
    created: float


@dataclass(frozen=True)
class SampleInfo:
    """One enrolled face crop.

    Attributes:
        id: stable sample id (used by ``facerec enroll move``).
        person: the person it belongs to.
        source_path: the photo it was cut from, when known.
        sha256: content hash of the source (the photo, or the crop file itself when the
            crop was found in ``preprocessed/``); used to recognise repeated photos.
        crop_path: absolute path of the aligned 112x112 PNG crop.
        quality: face quality at enrollment: the MagFace feature norm where the embedder
            has one, else the blur measure of :mod:`facerec.gallery.quality`.
        added: Unix time the sample was added.
    """

    id: int
    person: str
    source_path: str | None
    sha256: str
    crop_path: str
    quality: float
    added: float


def validate_name(name: str) -> str:
    """Check a person's name and return its canonical form (NFC, outer spaces stripped).

    Names become directory names under ``preprocessed/``, so anything that could escape
    that directory or hide in it is refused; spaces and any script are fine.

    Raises:
        GalleryError: empty, too long, contains a path separator, ``..``, a control
            character, or starts with a dot.
    """
    if not isinstance(name, str):
        raise GalleryError(f"a person's name must be text, got {type(name).__name__}")
    canon = unicodedata.normalize("NFC", name).strip()
    if not canon:
        raise GalleryError("a person's name cannot be empty")
    if len(canon) > MAX_NAME_LENGTH:
        raise GalleryError(f"a person's name is limited to {MAX_NAME_LENGTH} characters, got {len(canon)}: {canon[:40]!r}...")
    if "/" in canon or "\\" in canon:
        raise GalleryError(f"a person's name cannot contain '/' or '\\': {canon!r}")
    if ".." in canon:
        raise GalleryError(f"a person's name cannot contain '..': {canon!r}")
    if canon.startswith("."):
        raise GalleryError(f"a person's name cannot start with '.' (hidden directory): {canon!r}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in canon):
        raise GalleryError(f"a person's name cannot contain control characters: {canon!r}")
    return canon


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (photos and crops are recognised by it)."""
    return hashlib.sha256(data).hexdigest()


def encode_png(crop: np.ndarray) -> bytes:
    """A 112x112 BGR uint8 crop as PNG bytes (lossless: a re-embedded crop gives the same vector)."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        raise GalleryError(
            f"a crop must be a ({ALIGNED_SIZE}, {ALIGNED_SIZE}, 3) uint8 BGR image, got {crop.shape} {crop.dtype}"
        )
    ok, buf = cv2.imencode(".png", crop)
    if not ok:
        raise GalleryError("could not encode the crop as PNG")
    return buf.tobytes()



@dataclass(frozen=True)
class ChangeSet:
    """What changed after a version.

    Attributes:
        version: the newest version the changes lead to.
        sample_ids: samples to refetch (their vector, owner or existence changed).
        full: the feed no longer reaches back that far, or a change touched everything
            (``clear``, dropping an embedder's vectors): reload the whole gallery.
    """

    version: int
    sample_ids: frozenset[int] = field(default_factory=frozenset)
    full: bool = False


@dataclass
class DumpedSample:
    """One sample with everything needed to recreate it elsewhere (``facerec db copy``).

    Attributes:
        person: owner's name.
        png: the aligned 112x112 crop, PNG bytes.
        stem: file name stem of the crop (kept so exported feature lists keep their order).
        source_path: the photo it came from, when known.
        sha256: content hash of the source.
        quality: face quality at enrollment.
        added: Unix time it was added.
        vectors: embedder key string -> ``(unit vector (d,) float32, raw norm)``.
    """

    person: str
    png: bytes
    stem: str
    source_path: str | None
    sha256: str
    quality: float
    added: float
    vectors: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sighting:
    """One kept unknown track (without its crop bytes).

    Attributes:
        id: sighting id (increasing: a larger id arrived later).
        camera: camera name.
        track_id: the daemon's track id on that camera.
        first_seen, last_seen: Unix times the track started and ended, s.
        added: Unix time it was stored, s (retention counts from here).
        embedder: embedder key string of its vector.
        quality: best face quality of the track.
        crop_ids: its crops, best first.
        bytes: size of its crops, bytes.
    """

    id: int
    camera: str
    track_id: int
    first_seen: float
    last_seen: float
    added: float
    embedder: str
    quality: float
    crop_ids: tuple[int, ...] = ()
    bytes: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "camera": self.camera, "track_id": self.track_id,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "added": self.added,
                "quality": round(self.quality, 3), "crops": list(self.crop_ids), "bytes": self.bytes}


@dataclass(frozen=True)
class AuditNote:
    """What a change will say in the audit log; the backend writes it inside the change's
    own transaction, so a change and its entry are stored together or not at all.

    Attributes:
        interface: who asked (one of :data:`INTERFACES`).
        action: ``<thing>.<verb>`` (``person.rename``, ``samples.add``).
        subject: the person (or sample, candidate) it happened to.
        detail: counts and ids, stored as JSON; the backend adds what only it knows
            (e.g. how many negative samples followed a rename).
    """

    interface: str
    action: str
    subject: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"unknown interface {self.interface!r}: one of {', '.join(INTERFACES)}")


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    at: float
    interface: str
    action: str
    subject: str
    detail: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "at": self.at, "interface": self.interface, "action": self.action,
                "subject": self.subject, "detail": self.detail}
