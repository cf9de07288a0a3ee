"""What a gallery backend offers, and how the configured one is opened.

Two backends implement :class:`GalleryBackend`:

* ``sqlite`` (:class:`facerec.gallery.store.GalleryStore`, the default): one file under
  ``gallery.data_dir``, crops as PNG files beside it; no server.
* ``postgres`` (:class:`facerec.gallery.postgres.PostgresGallery`): one database shared by
  several hosts; crops are stored in the database so any host can re-embed them, and
  every committed change is announced with ``NOTIFY`` so daemons update at once.

Both keep a **version** (a counter bumped by every committed change) and a **change feed**:
for each version the sample ids whose vectors, owner or existence changed. A reader that
knows version ``v`` asks :meth:`GalleryBackend.changes_since` and fetches only the vectors
of those samples (:meth:`GalleryBackend.vectors` with ``sample_ids``), so a change costs in
proportion to its size, not to the gallery's.

The gallery service is the only consumer; the command line, the web app and the live loop
go through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol, runtime_checkable

import numpy as np

from facerec.errors import GalleryError
from facerec.types import EmbedderKey, Embeddings

if TYPE_CHECKING:
    from pathlib import Path

    from facerec.config import GalleryConfig
    from facerec.gallery.store import PersonInfo, SampleInfo

#: Environment variable read when ``gallery.dsn`` is unset.
DSN_ENV = "FACEREC_DB_DSN"


class GalleryUnavailable(GalleryError):
    """The gallery database cannot be reached (server down, network gone).

    Nothing was changed; the message says what to check. The web app answers 503.
    """


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


@runtime_checkable
class GalleryBackend(Protocol):
    """People, samples with their crops, vectors per embedder key, a version and a change feed.

    Every method that changes something is one transaction: after a crash or a lost
    connection, either all of it is stored or none of it. Methods raise
    :class:`~facerec.errors.GalleryError` for bad requests and :class:`GalleryUnavailable`
    when the database cannot be reached.
    """

    kind: str
    readonly: bool

    # reading
    def version(self) -> int: ...
    def changes_since(self, version: int) -> ChangeSet: ...
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

    # writing
    def add_person(self, name: str) -> None: ...
    def add_sample(self, person: str, crop: np.ndarray, *, source_path: str | None, source_sha256: str,
                   quality: float, embeddings: Embeddings | None = None, stem: str | None = None) -> SampleInfo: ...
    def add_dumped(self, people: list[tuple[str, float]], samples: list[DumpedSample]) -> int: ...
    def add_existing_crops(self, items: list[tuple[str, Path, str, str, float, str | None]]) -> list[SampleInfo]: ...
    def update_sample_file(self, sample_id: int, crop_sha256: str, quality: float, source_sha256: str | None = None,
                           png: bytes | None = None) -> None: ...
    def put_embeddings(self, key: EmbedderKey, sample_ids: list[int], emb: Embeddings,
                       quality: np.ndarray | None = None) -> None: ...
    def delete_embeddings(self, key: EmbedderKey | str) -> int: ...
    def rename_person(self, old: str, new: str) -> None: ...
    def merge_people(self, src: str, dst: str) -> None: ...
    def move_sample(self, sample_id: int, person: str) -> None: ...
    def delete_person(self, name: str) -> int: ...
    def delete_sample(self, sample_id: int) -> None: ...
    def forget_samples(self, sample_ids: list[int]) -> int: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


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
