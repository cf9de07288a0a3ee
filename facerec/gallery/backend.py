"""What a gallery backend offers, and how the configured one is opened.

Two backends implement :class:`GalleryBackend`:

* ``sqlite`` (:class:`facerec.gallery.store.GalleryStore`, the default): one file,
  ``gallery.data_dir/gallery.db``, crops as PNG files beside it; no server.
* ``postgres`` (:class:`facerec.gallery.postgres.PostgresGallery`): one database shared by
  several hosts; crops are stored in the database so any host can re-embed them, and
  every committed change is announced with ``NOTIFY`` so daemons update at once.

A backend keeps everything of a gallery: people, samples with their crops, vectors per
embedder key, the change feed, and beside them unknown sightings, negative samples and the
audit log (:mod:`facerec.gallery.feedback`, the same SQL on both). Every changing method
takes an ``audit`` :class:`~facerec.gallery.records.AuditNote` and writes it in its own
transaction.

Both keep a **version** (a counter bumped by every committed change) and a **change feed**:
for each version the sample ids whose vectors, owner or existence changed. A reader that
knows version ``v`` asks :meth:`GalleryBackend.changes_since` and fetches only the vectors
of those samples (:meth:`GalleryBackend.vectors` with ``sample_ids``), so a change costs in
proportion to its size, not to the gallery's. :meth:`GalleryBackend.subscribe` wakes a
reader's own thread when something commits (``LISTEN`` on PostgreSQL, a cheap poll on
SQLite).

:func:`open_backend` is the only code that reads ``gallery.backend``; nothing else asks
which backend it holds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Self, runtime_checkable

import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.records import (
    AuditEntry,
    AuditNote,
    ChangeSet,
    DumpedSample,
    PersonInfo,
    SampleInfo,
    Sighting,
)
from facerec.types import EmbedderKey, Embeddings

if TYPE_CHECKING:
    from pathlib import Path

    from facerec.config import GalleryConfig

__all__ = ["DSN_ENV", "AuditEntry", "AuditNote", "ChangeSet", "ChangeSubscription", "DumpedSample", "GalleryBackend",
           "GalleryMissing", "GalleryUnavailable", "PersonInfo", "SampleInfo", "Sighting", "open_backend", "resolve_dsn"]

#: Environment variable read when ``gallery.dsn`` is unset.
DSN_ENV = "FACEREC_DB_DSN"


class GalleryUnavailable(GalleryError):
    """The gallery database cannot be reached (server down, network gone).

    Nothing was changed; the message says what to check. The web app answers 503.
    """


class GalleryMissing(GalleryError):
    """A gallery opened read-only does not exist yet (nobody was enrolled there)."""


class ChangeSubscription(Protocol):
    """What :meth:`GalleryBackend.subscribe` returns: a wait for the next commit."""

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds; True when something committed (then ask
        :meth:`GalleryBackend.changes_since`). Raises :class:`GalleryUnavailable` when the
        connection is lost."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class GalleryBackend(Protocol):
    """People, samples with their crops, vectors per embedder key, a version and a change
    feed; unknown sightings, negative samples and the audit log.

    Every method that changes something is one transaction, its ``audit`` entry included:
    after a crash or a lost connection, either all of it is stored or none of it. Methods
    raise :class:`~facerec.errors.GalleryError` for bad requests and
    :class:`GalleryUnavailable` when the database cannot be reached.

    Attributes:
        readonly: opened for reading only (changes raise).
        label: the gallery as the user knows it, for messages (a folder, or "the
            PostgreSQL gallery host:port/db").
        schema_upgrade: ``(before, after)`` schema numbers: what opening it applied.
    """

    readonly: bool
    schema_upgrade: tuple[int, int]

    @property
    def label(self) -> str: ...

    # reading the gallery
    def version(self) -> int: ...
    def changes_since(self, version: int) -> ChangeSet: ...
    def subscribe(self) -> ChangeSubscription: ...
    def people(self) -> list[PersonInfo]: ...
    def has_person(self, name: str) -> bool: ...
    def samples(self, person: str | None = None) -> list[SampleInfo]: ...
    def sample(self, sample_id: int) -> SampleInfo: ...
    def find_sha256(self, sha256: str) -> list[SampleInfo]: ...
    def crop_png(self, sample_id: int) -> bytes: ...
    def crop_hashes(self) -> dict[str, tuple[int, str]]: ...
    def embedder_keys(self) -> dict[str, int]: ...
    def vectors(self, key: EmbedderKey, sample_ids: list[int] | None = None
                ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]: ...
    def raw_vectors(self, key: EmbedderKey) -> list[tuple[str, str, np.ndarray, float]]: ...
    def missing_embeddings(self, key: EmbedderKey) -> list[SampleInfo]: ...
    def count(self, key: EmbedderKey | None = None) -> int: ...
    def integrity_check(self) -> list[str]: ...
    def dump(self) -> tuple[list[tuple[str, float]], list[DumpedSample]]: ...

    # changing the gallery (each one transaction with its audit entry)
    def add_person(self, name: str, *, audit: AuditNote | None = None) -> None: ...
    def add_sample(self, person: str, crop: np.ndarray, *, source_path: str | None, source_sha256: str,
                   quality: float, embeddings: Embeddings | None = None, stem: str | None = None,
                   audit: AuditNote | None = None) -> SampleInfo: ...
    def add_dumped(self, people: list[tuple[str, float]], samples: list[DumpedSample], *,
                   audit: AuditNote | None = None) -> int: ...
    def add_existing_crops(self, items: list[tuple[str, Path, str, str, float, str | None]], *,
                           audit: AuditNote | None = None) -> list[SampleInfo]: ...
    def update_sample_file(self, sample_id: int, crop_sha256: str, quality: float, source_sha256: str | None = None,
                           png: bytes | None = None, *, audit: AuditNote | None = None) -> None: ...
    def put_embeddings(self, key: EmbedderKey, sample_ids: list[int], emb: Embeddings,
                       quality: np.ndarray | None = None, *, audit: AuditNote | None = None) -> None: ...
    def delete_embeddings(self, key: EmbedderKey | str, *, audit: AuditNote | None = None) -> int: ...
    def rename_person(self, old: str, new: str, *, audit: AuditNote | None = None) -> None: ...
    def merge_people(self, src: str, dst: str, *, audit: AuditNote | None = None) -> None: ...
    def move_sample(self, sample_id: int, person: str, *, audit: AuditNote | None = None) -> None: ...
    def delete_person(self, name: str, *, audit: AuditNote | None = None) -> int: ...
    def delete_sample(self, sample_id: int, *, audit: AuditNote | None = None) -> None: ...
    def forget_samples(self, sample_ids: list[int], *, audit: AuditNote | None = None) -> int: ...
    def clear(self, *, audit: AuditNote | None = None) -> None: ...

    # unknown sightings (not gallery changes: the version stays)
    def add_sighting(self, camera: str, track_id: int, first_seen: float, last_seen: float, embedder: str,
                     vector: np.ndarray, crops: list[tuple[bytes, float]], added: float | None = None) -> int: ...
    def update_sighting(self, sighting_id: int, last_seen: float, vector: np.ndarray,
                        crops: list[tuple[bytes, float]]) -> bool: ...
    def sightings(self, ids: list[int] | None = None, after: int = 0) -> list[Sighting]: ...
    def sighting_vectors(self, embedder: str, after: int = 0) -> tuple[list[int], np.ndarray]: ...
    def latest_embedder(self) -> str | None: ...
    def sighting_ids(self) -> list[int]: ...
    def unknown_crop(self, crop_id: int) -> bytes: ...
    def unknown_crops(self, sighting_ids: list[int], per_sighting: int | None = None
                      ) -> list[tuple[int, int, float, bytes]]: ...
    def delete_sightings(self, ids: list[int], *, audit: AuditNote | None = None) -> int: ...
    def prune_sightings(self, retention_s: float, max_sightings: int, max_bytes: int, now: float | None = None,
                        *, audit: AuditNote | None = None) -> list[int]: ...
    def unknowns_stats(self) -> dict[str, Any]: ...

    # negative samples ("not X")
    def add_negative(self, person: str, embedder: str, vector: np.ndarray, jpeg: bytes | None = None,
                     *, audit: AuditNote | None = None) -> int: ...
    def negatives(self, embedder: str) -> tuple[list[str], np.ndarray]: ...
    def negative_counts(self) -> dict[str, int]: ...
    def negatives_version(self) -> int: ...

    # the audit log
    def audit(self, note: AuditNote) -> None: ...
    def audit_log(self, limit: int = 100) -> list[AuditEntry]: ...

    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


def resolve_dsn(cfg: GalleryConfig, env: Mapping[str, str] | None = None) -> str:
    """``gallery.dsn``, else ``FACEREC_DB_DSN``.

    Raises:
        GalleryError: neither is set.
    """
    env = os.environ if env is None else env
    dsn = cfg.dsn or env.get(DSN_ENV)
    if not dsn:
        raise GalleryError(
            f"gallery.backend is postgres but no database is named: set gallery.dsn in the config "
            f"(postgresql://user@host:port/db) or the {DSN_ENV} environment variable")
    return dsn


def open_backend(cfg: GalleryConfig, *, readonly: bool = False, upgrade: bool = True) -> GalleryBackend:
    """Open the configured backend.

    Args:
        cfg: the ``gallery:`` section.
        readonly: a reader only (the daemon, ``facerec identify``).
        upgrade: apply pending schema migrations when opening for writing (PostgreSQL;
            the SQLite file upgrades itself).

    Raises:
        GalleryError: no DSN for postgres, the gallery cannot be opened.
        GalleryUnavailable: the database server cannot be reached.
    """
    if cfg.backend == "postgres":
        from facerec.gallery.postgres import PostgresGallery

        return PostgresGallery(resolve_dsn(cfg), readonly=readonly, upgrade=upgrade and not readonly)
    from facerec.gallery.store import GalleryStore

    return GalleryStore(cfg.data_dir, readonly=readonly)
