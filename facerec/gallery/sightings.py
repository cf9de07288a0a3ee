"""Unknown sightings, negative samples and the audit log, beside the gallery.

* A **sighting** is one unknown track: its camera, track id, first and last time seen, the
  mean unit vector of its best crops (what :mod:`facerec.unknowns` groups) and those
  crops themselves (JPEG, best face quality first).
* A **negative** is a face someone marked "not X": X's name, the face's vector (per
  embedder key) and its crop. The matcher refuses to name X a face that is closer to one
  of X's negatives than to X.
* The **audit log** records every gallery change: what, when, through which interface
  (``cli``, ``api``, ``daemon``). :class:`~facerec.gallery.service.GalleryService` writes
  one entry per change it makes (its ``interface`` names the caller), and the
  unknown-people and feedback functions of :mod:`facerec.unknowns` one per theirs. It is
  append-only: the database refuses updates and deletes of its rows (a trigger).
* **Negatives** have no age retention (``unknowns.retention_s`` is for crops a camera
  happened to keep, these are deliberate feedback); they go with their person.

Two backends with one behaviour, chosen by ``gallery.backend``: SQLite in
``<data_dir>/unknowns.db`` (crops in the file), or tables in the PostgreSQL gallery
database (nothing written under ``data_dir``). Every method is one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, cast

import numpy as np

from facerec.errors import GalleryError

if TYPE_CHECKING:
    from facerec.config import Config, GalleryConfig

log = logging.getLogger(__name__)

#: Interfaces named in the audit log.
INTERFACES = ("cli", "api", "daemon", "test", "deepstack", "compreface")

_SQLITE_SCHEMA = """
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS unknown_sightings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    camera     TEXT NOT NULL,
    track_id   INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    added      REAL NOT NULL,
    embedder   TEXT NOT NULL,
    vector     BLOB NOT NULL,
    quality    REAL NOT NULL,
    bytes      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS unknown_sightings_added ON unknown_sightings(added);
CREATE TABLE IF NOT EXISTS unknown_crops (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sighting_id INTEGER NOT NULL REFERENCES unknown_sightings(id) ON DELETE CASCADE,
    rank        INTEGER NOT NULL,
    quality     REAL NOT NULL,
    jpeg        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS unknown_crops_sighting ON unknown_crops(sighting_id);
CREATE TABLE IF NOT EXISTS negatives (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    person   TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector   BLOB NOT NULL,
    jpeg     BLOB,
    added    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS negatives_person ON negatives(person);
CREATE TABLE IF NOT EXISTS audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    interface TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS unknown_sightings (
    id         BIGSERIAL PRIMARY KEY,
    camera     TEXT NOT NULL,
    track_id   BIGINT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL,
    added      DOUBLE PRECISION NOT NULL,
    embedder   TEXT NOT NULL,
    vector     BYTEA NOT NULL,
    quality    DOUBLE PRECISION NOT NULL,
    bytes      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS unknown_sightings_added ON unknown_sightings(added);
CREATE TABLE IF NOT EXISTS unknown_crops (
    id          BIGSERIAL PRIMARY KEY,
    sighting_id BIGINT NOT NULL REFERENCES unknown_sightings(id) ON DELETE CASCADE,
    rank        INTEGER NOT NULL,
    quality     DOUBLE PRECISION NOT NULL,
    jpeg        BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS unknown_crops_sighting ON unknown_crops(sighting_id);
CREATE TABLE IF NOT EXISTS negatives (
    id       BIGSERIAL PRIMARY KEY,
    person   TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector   BYTEA NOT NULL,
    jpeg     BYTEA,
    added    DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS negatives_person ON negatives(person);
CREATE TABLE IF NOT EXISTS audit_log (
    id        BIGSERIAL PRIMARY KEY,
    at        DOUBLE PRECISION NOT NULL,
    interface TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION facerec_audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION facerec_audit_append_only();
"""


@dataclass(frozen=True)
class Sighting:
    """One kept unknown track (without its crop bytes).

    Attributes:
        id: sighting id (increasing: a larger id arrived later).
        camera: camera name.
        track_id: the daemon's track id on that camera.
        first_seen, last_seen: Unix times the track started and ended, s.
        added: Unix time it was stored, s (retention counts from here).
        embedder: embedder key string of ``vector``.
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


def _vec_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, np.float32).reshape(-1).tobytes()


def _bytes_vec(b: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(b), np.float32).copy()


class SightingStore:
    """Sightings, negatives and the audit log in SQLite or PostgreSQL (see the module doc).

    Args:
        sqlite_path: the SQLite file (created with its folder); or
        dsn: a PostgreSQL connection string (tables created on first use).

    Raises:
        GalleryError: neither or both given, or the database cannot be opened.
    """

    def __init__(self, *, sqlite_path: str | os.PathLike | None = None, dsn: str | None = None) -> None:
        if (sqlite_path is None) == (dsn is None):
            raise GalleryError("SightingStore needs exactly one of sqlite_path or dsn")
        self._lock = threading.RLock()
        self.dsn = dsn
        self.kind = "postgres" if dsn else "sqlite"
        if dsn is not None:
            from facerec.gallery.postgres import CONNECT_TIMEOUT_S, _psycopg, unavailable

            psycopg, _ = _psycopg()
            try:
                self._pg = psycopg.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT_S))
                with self._pg.transaction():
                    if self._pg.execute("SELECT to_regclass('audit_log')").fetchone()[0] is None:
                        self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (0x756E6B6E,))
                        self._pg.execute(_PG_SCHEMA)
            except psycopg.OperationalError as e:
                raise unavailable(dsn, e) from None
            self.path = None
        else:
            self.path = Path(sqlite_path).expanduser()  # type: ignore[arg-type]
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SQLITE_SCHEMA)
            except (OSError, sqlite3.Error) as e:
                raise GalleryError(f"cannot open the unknown-sightings store {self.path}: {e}; "
                                   "check that the folder is writable") from None

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor inside one transaction; ``?`` placeholders work on both backends."""
        with self._lock:
            if self.kind == "sqlite":
                c = self._db.cursor()
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield _Cursor(c, "?")
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
            else:
                import psycopg

                try:
                    with self._pg.transaction():
                        yield _Cursor(self._pg.cursor(), "%s")
                except psycopg.OperationalError as e:
                    from facerec.gallery.postgres import unavailable

                    raise unavailable(self.dsn or "", e) from None

    def close(self) -> None:
        with self._lock:
            (self._db if self.kind == "sqlite" else self._pg).close()

    def __enter__(self) -> SightingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sightings
    def add_sighting(self, camera: str, track_id: int, first_seen: float, last_seen: float, embedder: str,
                     vector: np.ndarray, crops: list[tuple[bytes, float]], added: float | None = None) -> int:
        """Store one unknown track; returns its id.

        Args:
            crops: ``(jpeg bytes, face quality)``, any order (stored best first).
            vector: ``(d,)`` unit vector (mean of the crops' vectors, renormalised).
            added: Unix time, s; now when ``None``.
        """
        if not crops:
            raise GalleryError("a sighting needs at least one crop")
        crops = sorted(crops, key=lambda c: -c[1])
        size = sum(len(b) for b, _ in crops)
        with self._tx() as c:
            sid = c.insert("INSERT INTO unknown_sightings(camera, track_id, first_seen, last_seen, added, embedder, "
                           "vector, quality, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (camera, int(track_id), float(first_seen), float(last_seen),
                            float(time.time() if added is None else added), embedder, _vec_bytes(vector),
                            float(crops[0][1]), size))
            for rank, (jpeg, q) in enumerate(crops):
                c.insert("INSERT INTO unknown_crops(sighting_id, rank, quality, jpeg) VALUES (?, ?, ?, ?)",
                         (sid, rank, float(q), jpeg))
        return sid

    def update_sighting(self, sighting_id: int, last_seen: float, vector: np.ndarray,
                        crops: list[tuple[bytes, float]]) -> bool:
        """Bring a sighting of a track still in view up to date: its last time, vector and
        best crops (replaced). Returns ``False`` when it no longer exists (named, dismissed
        or pruned meanwhile): nothing is written then."""
        if not crops:
            raise GalleryError("a sighting needs at least one crop")
        crops = sorted(crops, key=lambda c: -c[1])
        with self._tx() as c:
            n = c.run("UPDATE unknown_sightings SET last_seen = ?, vector = ?, quality = ?, bytes = ? WHERE id = ?",
                      (float(last_seen), _vec_bytes(vector), float(crops[0][1]), sum(len(b) for b, _ in crops),
                       int(sighting_id)))
            if not n:
                return False
            c.run("DELETE FROM unknown_crops WHERE sighting_id = ?", (int(sighting_id),))
            for rank, (jpeg, q) in enumerate(crops):
                c.insert("INSERT INTO unknown_crops(sighting_id, rank, quality, jpeg) VALUES (?, ?, ?, ?)",
                         (int(sighting_id), rank, float(q), jpeg))
        return True

    def sightings(self, ids: list[int] | None = None, after: int = 0) -> list[Sighting]:
        """Kept sightings (all, the given ids, or those with id above ``after``), oldest first."""
        where, params = "WHERE s.id > ?", [int(after)]
        if ids is not None:
            if not ids:
                return []
            where += f" AND s.id IN ({', '.join('?' * len(ids))})"
            params += [int(i) for i in ids]
        with self._tx() as c:
            rows = c.all(f"SELECT s.id, s.camera, s.track_id, s.first_seen, s.last_seen, s.added, s.embedder, "
                         f"s.quality, s.bytes FROM unknown_sightings s {where} ORDER BY s.id", tuple(params))
            crops = c.all(f"SELECT k.sighting_id, k.id FROM unknown_crops k JOIN unknown_sightings s "
                          f"ON s.id = k.sighting_id {where} ORDER BY k.sighting_id, k.rank", tuple(params))
        by: dict[int, list[int]] = {}
        for sid, cid in crops:
            by.setdefault(int(sid), []).append(int(cid))
        return [Sighting(int(r[0]), r[1], int(r[2]), float(r[3]), float(r[4]), float(r[5]), r[6], float(r[7]),
                         tuple(by.get(int(r[0]), ())), int(r[8])) for r in rows]

    def vectors(self, embedder: str, after: int = 0) -> tuple[list[int], np.ndarray]:
        """Ids and ``(n, d)`` vectors of the sightings embedded with ``embedder`` (id above ``after``)."""
        with self._tx() as c:
            rows = c.all("SELECT id, vector FROM unknown_sightings WHERE embedder = ? AND id > ? ORDER BY id",
                         (embedder, int(after)))
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [int(r[0]) for r in rows], np.stack([_bytes_vec(r[1]) for r in rows])

    def latest_embedder(self) -> str | None:
        """Embedder key string of the newest sighting (``None`` when there is none)."""
        with self._tx() as c:
            rows = c.all("SELECT embedder FROM unknown_sightings ORDER BY id DESC LIMIT 1", ())
        return rows[0][0] if rows else None

    def ids(self) -> list[int]:
        with self._tx() as c:
            return [int(r[0]) for r in c.all("SELECT id FROM unknown_sightings ORDER BY id", ())]

    def crop(self, crop_id: int) -> bytes:
        """JPEG bytes of one kept crop.

        Raises:
            GalleryError: no such crop (deleted, or never kept).
        """
        with self._tx() as c:
            rows = c.all("SELECT jpeg FROM unknown_crops WHERE id = ?", (int(crop_id),))
        if not rows:
            raise GalleryError(f"no unknown crop {crop_id} (it was named, dismissed or expired)")
        return bytes(rows[0][0])

    def crops(self, sighting_ids: list[int], per_sighting: int | None = None) -> list[tuple[int, int, float, bytes]]:
        """``(sighting id, crop id, quality, jpeg)`` of these sightings, best first within each."""
        if not sighting_ids:
            return []
        with self._tx() as c:
            rows = c.all(f"SELECT sighting_id, id, quality, jpeg, rank FROM unknown_crops WHERE sighting_id IN "
                         f"({', '.join('?' * len(sighting_ids))}) ORDER BY sighting_id, rank",
                         tuple(int(i) for i in sighting_ids))
        return [(int(r[0]), int(r[1]), float(r[2]), bytes(r[3])) for r in rows
                if per_sighting is None or int(r[4]) < per_sighting]

    def delete_sightings(self, ids: list[int]) -> int:
        """Delete sightings with their crops; returns how many existed."""
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        with self._tx() as c:
            c.run(f"DELETE FROM unknown_crops WHERE sighting_id IN ({marks})", tuple(int(i) for i in ids))
            return c.run(f"DELETE FROM unknown_sightings WHERE id IN ({marks})", tuple(int(i) for i in ids))

    def prune(self, retention_s: float, max_sightings: int, max_bytes: int, now: float | None = None) -> list[int]:
        """Apply retention: older than ``retention_s`` (0 = no age limit), beyond
        ``max_sightings``, or beyond ``max_bytes`` of crops go, the oldest first.

        Returns:
            The deleted sighting ids.
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            rows = c.all("SELECT id, added, bytes FROM unknown_sightings ORDER BY added DESC, id DESC", ())
        doomed: list[int] = []
        total = 0
        for k, (sid, added, size) in enumerate(rows):
            total += int(size)
            if (retention_s and now - float(added) > retention_s) or k >= max_sightings or total > max_bytes:
                doomed.append(int(sid))
        self.delete_sightings(doomed)
        return sorted(doomed)

    def stats(self) -> dict:
        with self._tx() as c:
            n, size = c.all("SELECT count(*), coalesce(sum(bytes), 0) FROM unknown_sightings", ())[0]
            crops = c.all("SELECT count(*) FROM unknown_crops", ())[0][0]
            neg = c.all("SELECT count(*) FROM negatives", ())[0][0]
        return {"sightings": int(n), "crops": int(crops), "bytes": int(size), "negatives": int(neg)}

    # ------------------------------------------------------------------ negatives
    def add_negative(self, person: str, embedder: str, vector: np.ndarray, jpeg: bytes | None = None) -> int:
        """Keep a face as "not ``person``"; returns its id."""
        with self._tx() as c:
            return c.insert("INSERT INTO negatives(person, embedder, vector, jpeg, added) VALUES (?, ?, ?, ?, ?)",
                            (person, embedder, _vec_bytes(vector), jpeg, time.time()))

    def negatives(self, embedder: str) -> tuple[list[str], np.ndarray]:
        """``(person of each row, (n, d) vectors)`` of the negatives for ``embedder``."""
        with self._tx() as c:
            rows = c.all("SELECT person, vector FROM negatives WHERE embedder = ? ORDER BY id", (embedder,))
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([_bytes_vec(r[1]) for r in rows])

    def negative_counts(self) -> dict[str, int]:
        with self._tx() as c:
            return {r[0]: int(r[1]) for r in c.all("SELECT person, count(*) FROM negatives GROUP BY person", ())}

    def delete_negatives(self, person: str) -> int:
        with self._tx() as c:
            return c.run("DELETE FROM negatives WHERE person = ?", (person,))

    def rename_negatives(self, old: str, new: str) -> int:
        """Give ``old``'s negatives to ``new`` (rename, merge). The rows are copied under
        new ids and the old ones deleted, so :meth:`negatives_version` changes."""
        if old == new:
            return 0
        with self._tx() as c:
            c.run("INSERT INTO negatives(person, embedder, vector, jpeg, added) "
                  "SELECT ?, embedder, vector, jpeg, added FROM negatives WHERE person = ? ORDER BY id", (new, old))
            return c.run("DELETE FROM negatives WHERE person = ?", (old,))

    def negatives_version(self) -> int:
        """A number that changes whenever a negative is added, removed or renamed (rows
        are never updated in place): one cheap query to decide whether to reload."""
        with self._tx() as c:
            return int(c.all("SELECT coalesce(max(id), 0) * 1000003 + count(*) FROM negatives", ())[0][0])

    # ------------------------------------------------------------------ audit log
    def audit(self, interface: str, action: str, subject: str, **detail: Any) -> None:
        """Append one gallery change to the audit log."""
        if interface not in INTERFACES:
            raise ValueError(f"unknown interface {interface!r}: one of {', '.join(INTERFACES)}")
        with self._tx() as c:
            c.insert("INSERT INTO audit_log(at, interface, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                     (time.time(), interface, action, subject, json.dumps(detail, sort_keys=True, default=str)))

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        with self._tx() as c:
            rows = c.all("SELECT id, at, interface, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT ?",
                         (int(limit),))
        return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]


class _Cursor:
    """The few cursor calls used above, with ``?`` placeholders on both backends."""

    def __init__(self, cur: Any, mark: str) -> None:
        self._c = cur
        self._pg = mark != "?"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def all(self, sql: str, params: tuple) -> list[tuple]:
        self._c.execute(self._sql(sql), params)
        return list(self._c.fetchall())

    def run(self, sql: str, params: tuple) -> int:
        self._c.execute(self._sql(sql), params)
        return int(self._c.rowcount or 0)

    def insert(self, sql: str, params: tuple) -> int:
        if self._pg:
            self._c.execute(self._sql(sql) + " RETURNING id", params)
            return int(self._c.fetchone()[0])
        self._c.execute(sql, params)
        return int(self._c.lastrowid)


def open_sightings(cfg: Config | GalleryConfig) -> SightingStore:
    """The sightings store that goes with the configured gallery backend.

    Args:
        cfg: the whole config or its ``gallery:`` section.

    SQLite: ``<gallery.data_dir>/unknowns.db``; PostgreSQL: the gallery database.
    """
    g = cast("GalleryConfig", getattr(cfg, "gallery", cfg))
    if g.backend == "postgres":
        from facerec.gallery.backend import resolve_dsn

        return SightingStore(dsn=resolve_dsn(g))
    return SightingStore(sqlite_path=Path(g.data_dir) / "unknowns.db")


def negatives_of(cfg: Config | GalleryConfig, embedder: str) -> tuple[list[str], np.ndarray, int]:
    """``(names, vectors, version)`` of the "not X" samples for ``embedder``, without
    creating anything: a gallery that never had feedback has no ``unknowns.db`` and
    gets empty lists. ``version`` changes whenever a negative is added or removed.

    Called on every search-index check and every watcher poll (each second), so the
    answer is cached per database and embedder: one open connection per database is
    kept for the process, each call asks only :meth:`SightingStore.negatives_version`,
    and the vectors are read again only when that changed.
    """
    g = cast("GalleryConfig", getattr(cfg, "gallery", cfg))
    if g.backend == "postgres":
        from facerec.gallery.backend import resolve_dsn

        where: tuple[str, str] = ("postgres", resolve_dsn(g))
    else:
        path = Path(g.data_dir).expanduser().absolute() / "unknowns.db"
        where = ("sqlite", str(path))
        try:
            st = path.stat()
        except FileNotFoundError:
            _drop_cached(where)
            return [], np.zeros((0, 0), np.float32), 0
        file_id = (st.st_dev, st.st_ino)
        old = _NEG_CACHE.get(where)
        if old is not None and old.file_id != file_id:  # the file was replaced: the open one is stale
            _drop_cached(where)
    with _NEG_LOCK:
        entry = _NEG_CACHE.get(where)
        if entry is None:
            if where[0] == "postgres":
                entry = _NegativesEntry(SightingStore(dsn=where[1]))
            else:
                entry = _NegativesEntry(SightingStore(sqlite_path=where[1]), file_id=file_id)
            _NEG_CACHE[where] = entry
    with entry.lock:
        try:
            version = entry.store.negatives_version()
            hit = entry.loaded.get(embedder)
            if hit is not None and hit[2] == version:
                return hit
            names, vec = entry.store.negatives(embedder)
        except Exception:
            _drop_cached(where)  # a broken connection (server restart, file replaced) is reopened next call
            raise
        entry.loads += 1
        entry.loaded[embedder] = (names, vec, version)
        return names, vec, version


@dataclass
class _NegativesEntry:
    """One database's open store and its loaded negatives per embedder."""

    store: SightingStore
    loaded: dict[str, tuple[list[str], np.ndarray, int]] = field(default_factory=dict)
    loads: int = 0  # how many times vectors were read (tests check the cache with it)
    file_id: tuple[int, int] | None = None  # SQLite: (device, inode) of the file opened
    lock: threading.Lock = field(default_factory=threading.Lock)


_NEG_LOCK = threading.Lock()
_NEG_CACHE: dict[tuple[str, str], _NegativesEntry] = {}


def _drop_cached(where: tuple[str, str]) -> None:
    with _NEG_LOCK:
        entry = _NEG_CACHE.pop(where, None)
    if entry is not None:
        try:
            entry.store.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is dropped anyway
            pass


def negatives_loads(cfg: Config | GalleryConfig) -> int:
    """How many times :func:`negatives_of` read the vectors of this gallery's
    negatives (not just their version) in this process."""
    g = cast("GalleryConfig", getattr(cfg, "gallery", cfg))
    if g.backend == "postgres":
        from facerec.gallery.backend import resolve_dsn

        where = ("postgres", resolve_dsn(g))
    else:
        where = ("sqlite", str(Path(g.data_dir).expanduser().absolute() / "unknowns.db"))
    entry = _NEG_CACHE.get(where)
    return entry.loads if entry is not None else 0
