"""The gallery on disk: one SQLite file (WAL) plus aligned crops as PNG files.

Layout under ``data_dir``::

    gallery.db                     people, samples, embeddings per embedder key, meta
    preprocessed/<Person>/*.png    112x112 aligned crops the samples point to

Every change is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction (its audit entry
included), and ``meta.version`` is incremented inside it; readers see either all of it or
none of it (WAL snapshots), so a crash at any moment leaves the previous gallery intact and
a reader (the live daemon) never sees half a change. How crop files stay consistent with
the rows is :mod:`facerec.gallery.crop_files`; the schema and its upgrades are
:mod:`facerec.gallery.sqlite_schema`; sightings, negatives and the audit log are the shared
:mod:`facerec.gallery.feedback`.

This module is one idea, the ``sqlite`` implementation of
:class:`~facerec.gallery.backend.GalleryBackend` (its reads and its changes), which is why
it is longer than most.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryMissing
from facerec.gallery.crop_files import _LIVE_TOKENS, CROPS_DIR, CropFiles, write_atomic
from facerec.gallery.feedback import FeedbackTables, SqlCursor, move_negatives, write_audit
from facerec.gallery.records import (
    FEED_KEEP,
    MAX_NAME_LENGTH,
    AuditNote,
    ChangeSet,
    DumpedSample,
    PersonInfo,
    SampleInfo,
    encode_png,
    sha256_bytes,
    validate_name,
)
from facerec.gallery.sqlite_schema import DB_NAME, SCHEMA_VERSION, SqliteChanges, SqliteSchema, empty_feedback
from facerec.types import EmbedderKey, Embeddings

__all__ = ["BUSY_TIMEOUT_S", "CROPS_DIR", "DB_NAME", "FEED_KEEP", "MAX_NAME_LENGTH", "SCHEMA_VERSION", "GalleryStore",
           "PersonInfo", "SampleInfo", "sha256_bytes", "validate_name", "write_atomic"]

log = logging.getLogger(__name__)

#: Seconds a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_S = 30.0


def _rowid(c: sqlite3.Cursor) -> int:
    """The id of the row the cursor just inserted."""
    rowid = c.lastrowid
    if rowid is None:
        raise GalleryError("the gallery database did not return the new row's id")
    return int(rowid)


class GalleryStore(CropFiles, SqliteSchema, FeedbackTables):
    """People, samples and embeddings of one gallery folder, with its sightings, negatives
    and audit log (:class:`~facerec.gallery.feedback.FeedbackTables`).

    The ``sqlite`` backend of :class:`facerec.gallery.backend.GalleryBackend`.
    Thread-safe (one connection guarded by a lock) and safe to share between processes
    (SQLite locking; writers wait up to ``BUSY_TIMEOUT_S``).

    Args:
        data_dir: gallery root; created when missing (unless ``readonly``).
        readonly: open an existing gallery for reading only (a daemon that only searches).

    Raises:
        GalleryError: ``readonly`` and no gallery exists there, or the file is not a
            gallery / cannot be opened.
    """

    kind = "sqlite"

    def __init__(self, data_dir: str | os.PathLike, *, readonly: bool = False) -> None:
        self._tx_ids: set[int] = set()
        self._tx_full = False
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.db_path = self.data_dir / DB_NAME
        self.readonly = readonly
        self._lock = threading.RLock()
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"
        #: (schema before, schema after) opening this store
        self.schema_upgrade = (SCHEMA_VERSION, SCHEMA_VERSION)
        if readonly:
            if not self.db_path.is_file():
                raise GalleryMissing(
                    f"no gallery at {self.db_path}: enroll someone first (facerec enroll add NAME PHOTO) "
                    "or point --data-dir at an existing gallery"
                )
            uri = f"{self.db_path.as_uri()}?mode=ro"
            self._conn = self._connect(uri, uri=True)
        else:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise GalleryError(f"cannot create the gallery folder {self.data_dir}: {e.strerror or e}") from None
            self._conn = self._connect(str(self.db_path))
            _LIVE_TOKENS.add(self._token)
            self._init_schema()
            self._cleanup_pending()

    # ------------------------------------------------------------------ connection

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA foreign_keys=ON")
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"cannot open the gallery database {self.db_path}: {e}") from None
        return conn

    @contextmanager
    def _write(self, bump: bool = False) -> Iterator[sqlite3.Cursor]:
        """One write transaction; ``bump`` increments the gallery version inside it."""
        if self.readonly:
            raise GalleryError(f"the gallery {self.db_path} was opened read-only")
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise GalleryError(f"the gallery {self.db_path} is busy or not writable: {e}") from None
            self._tx_ids, self._tx_full = set(), False
            try:
                yield cur
                if bump:
                    cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='version'")
                    v = int(cur.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0])
                    ids = None if self._tx_full else json.dumps(sorted(self._tx_ids))
                    cur.execute("INSERT OR REPLACE INTO changes(version, sample_ids, at) VALUES (?,?,?)", (v, ids, time.time()))
                    if v % 100 == 0:
                        cur.execute("DELETE FROM changes WHERE version <= ?", (v - FEED_KEEP,))
                cur.execute("COMMIT")
            except BaseException as e:
                self._roll_back(cur, e, f"the gallery {self.db_path} refused the change")
                raise
            finally:
                cur.close()

    def _touch(self, ids) -> None:
        """Inside a write: these samples changed (recorded in the change feed at commit)."""
        self._tx_ids.update(int(i[0] if isinstance(i, (tuple, list)) else i) for i in ids)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                raise GalleryError(f"cannot read the gallery {self.db_path}: {e}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Cursor]:
        """Several reads that must see one consistent state (one read transaction)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                cur.execute("COMMIT")
                cur.close()

    @contextmanager
    def _feedback_tx(self) -> Iterator[SqlCursor]:
        with self._write() as c:
            yield SqlCursor(c, "?")

    @contextmanager
    def _feedback_read(self) -> Iterator[SqlCursor]:
        """A read of the sightings, negatives and audit log. A reader opened on a gallery of
        an earlier release (schema < 4, not yet opened for writing) sees them empty: it
        cannot create the tables, and the daemon must keep recognising."""
        try:
            with self._snapshot() as c:
                if self.readonly and not c.execute("SELECT 1 FROM sqlite_master WHERE name='negatives'").fetchone():
                    yield SqlCursor(empty_feedback().cursor(), "?")
                else:
                    yield SqlCursor(c, "?")
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"cannot read the gallery {self.db_path}: {e}") from None

    def _audit(self, c: sqlite3.Cursor, note: AuditNote | None, **extra: Any) -> None:
        write_audit(SqlCursor(c, "?"), note, **extra)

    def subscribe(self) -> SqliteChanges:
        """Changes of this gallery as they commit, for a watcher's own thread (see
        :class:`SqliteChanges`)."""
        return SqliteChanges(self.db_path)

    @property
    def label(self) -> str:
        """The gallery as the user knows it, for messages (its folder)."""
        return str(self.data_dir)

    def close(self) -> None:
        _LIVE_TOKENS.discard(self._token)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def version(self) -> int:
        """A counter that increases with every committed change (cheap to poll)."""
        rows = self._read("SELECT value FROM meta WHERE key='version'")
        return int(rows[0][0]) if rows else 0

    def changes_since(self, version: int) -> ChangeSet:
        """What changed after ``version`` (see :class:`~facerec.gallery.backend.ChangeSet`)."""
        with self._snapshot() as c:
            now = int(c.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0])
            if now <= version:
                return ChangeSet(now)
            try:
                rows = c.execute("SELECT version, sample_ids FROM changes WHERE version > ? ORDER BY version",
                                 (int(version),)).fetchall()
            except sqlite3.OperationalError:  # a gallery written before the feed existed
                return ChangeSet(now, full=True)
        if len(rows) != now - version or any(r[1] is None for r in rows):
            return ChangeSet(now, full=True)
        ids: set[int] = set()
        for _, text in rows:
            ids.update(json.loads(text))
        return ChangeSet(now, frozenset(ids))

    def crop_png(self, sample_id: int) -> bytes:
        """The PNG bytes of a sample's aligned crop.

        Raises:
            GalleryError: no such sample, or its file is missing.
        """
        s = self.sample(sample_id)
        try:
            return Path(s.crop_path).read_bytes()
        except OSError as e:
            raise GalleryError(f"the crop of sample {sample_id} is missing: {s.crop_path} ({e.strerror or e})") from None

    def people(self) -> list[PersonInfo]:
        """Every person with their sample count, sorted by name."""
        rows = self._read(
            "SELECT p.name, count(s.id), p.created FROM people p LEFT JOIN samples s ON s.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        )
        return [PersonInfo(n, int(k), float(t)) for n, k, t in rows]

    def has_person(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM people WHERE name=?", (validate_name(name),)))

    def _sample_rows_sql(self) -> str:
        return (
            "SELECT s.id, p.name, s.source_path, s.sha256, s.crop_path, s.quality, s.added "
            "FROM samples s JOIN people p ON p.id = s.person_id "
        )

    def _to_info(self, row: tuple) -> SampleInfo:
        sid, person, src, sha, crop, q, added = row
        return SampleInfo(int(sid), person, src, sha, str(self._abs(crop)), float(q), float(added))

    def samples(self, person: str | None = None) -> list[SampleInfo]:
        """Samples of one person (or everyone), ordered by id.

        Raises:
            GalleryError: ``person`` is given and not enrolled.
        """
        if person is None:
            rows = self._read(self._sample_rows_sql() + "ORDER BY s.id")
        else:
            name = validate_name(person)
            if not self.has_person(name):
                raise GalleryError(f"no person named {name!r} in the gallery")
            rows = self._read(self._sample_rows_sql() + "WHERE p.name=? ORDER BY s.id", (name,))
        return [self._to_info(r) for r in rows]

    def sample(self, sample_id: int) -> SampleInfo:
        rows = self._read(self._sample_rows_sql() + "WHERE s.id=?", (int(sample_id),))
        if not rows:
            raise GalleryError(f"no sample with id {sample_id}")
        return self._to_info(rows[0])

    def find_sha256(self, sha256: str) -> list[SampleInfo]:
        """Samples whose source has this content hash."""
        return [self._to_info(r) for r in self._read(self._sample_rows_sql() + "WHERE s.sha256=? ORDER BY s.id", (sha256,))]

    def sample_by_crop(self, crop: str | os.PathLike) -> SampleInfo | None:
        p = Path(crop)
        rel = self._rel(p if p.is_absolute() else self.data_dir / p)
        rows = self._read(self._sample_rows_sql() + "WHERE s.crop_path=?", (rel,))
        return self._to_info(rows[0]) if rows else None

    def crop_hashes(self) -> dict[str, tuple[int, str]]:
        """Crop path relative to ``data_dir`` -> ``(sample id, sha256 of the crop file)``."""
        return {rel: (int(sid), sha) for sid, rel, sha in self._read("SELECT id, crop_path, crop_sha256 FROM samples")}

    def embedder_keys(self) -> dict[str, int]:
        """Embedder key string -> number of stored vectors."""
        return {k: int(n) for k, n in self._read("SELECT embedder, count(*) FROM embeddings GROUP BY embedder ORDER BY embedder")}

    def vectors(self, key: EmbedderKey, sample_ids: list[int] | None = None
                ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Every stored vector of one embedder (or of ``sample_ids`` only), in one consistent snapshot.

        Returns:
            ``(sample_ids (n,) int64, person names (n), vectors (n, d) float32 unit rows,
            quality (n,) float32)``; ``n == 0`` (and ``d == 0``) for an empty gallery or a
            key with no vectors yet. Only ``key``'s vectors: spaces are never mixed.
        """
        sql = ("SELECT s.id, p.name, e.dim, e.vector, s.quality FROM embeddings e "
               "JOIN samples s ON s.id = e.sample_id JOIN people p ON p.id = s.person_id WHERE e.embedder=? ")
        with self._snapshot() as c:
            if sample_ids is None:
                rows = c.execute(sql + "ORDER BY s.id", (str(key),)).fetchall()
            else:
                wanted = sorted({int(i) for i in sample_ids})
                rows = []
                for i in range(0, len(wanted), 500):
                    part = wanted[i : i + 500]
                    rows += c.execute(sql + f"AND s.id IN ({','.join('?' * len(part))}) ORDER BY s.id",
                                      (str(key), *part)).fetchall()
        if not rows:
            return np.zeros((0,), np.int64), [], np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
        dims = {r[2] for r in rows}
        if len(dims) != 1:
            raise GalleryError(f"embeddings of {key} have mixed dimensions {sorted(dims)}; re-embed with --force")
        d = dims.pop()
        vec = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(rows), d).copy()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        quality = np.fromiter((r[4] for r in rows), np.float32, len(rows))
        return ids, [r[1] for r in rows], vec, quality

    def raw_vectors(self, key: EmbedderKey) -> list[tuple[str, str, np.ndarray, float]]:
        """``(person, crop file name, unit vector, norm)`` of every vector of ``key`` (feature lists)."""
        with self._snapshot() as c:
            rows = c.execute(
                "SELECT p.name, s.crop_path, e.vector, e.norm FROM embeddings e JOIN samples s ON s.id = e.sample_id "
                "JOIN people p ON p.id = s.person_id WHERE e.embedder=?", (str(key),)).fetchall()
        return [(n, PurePosixPath(c).name, np.frombuffer(v, np.float32).copy(), float(m)) for n, c, v, m in rows]

    def dump(self) -> tuple[list[tuple[str, float]], list[DumpedSample]]:
        """Every person ``(name, created)`` and every sample with crop and vectors (``facerec db copy``)."""
        with self._snapshot() as c:
            people = [(n, float(t)) for n, t in c.execute("SELECT name, created FROM people ORDER BY id")]
            rows = c.execute("SELECT s.id, p.name, s.crop_path, s.source_path, s.sha256, s.quality, s.added "
                             "FROM samples s JOIN people p ON p.id = s.person_id ORDER BY s.id").fetchall()
            embs = c.execute("SELECT sample_id, embedder, vector, norm FROM embeddings").fetchall()
        vec: dict[int, dict] = {}
        for sid, key, blob, norm in embs:
            vec.setdefault(int(sid), {})[key] = (np.frombuffer(blob, np.float32).copy(), float(norm))
        out = []
        for sid, name, crop, src, sha, q, added in rows:
            try:
                png = self._abs(crop).read_bytes()
            except OSError as e:
                raise GalleryError(f"the crop of sample {sid} is missing: {self._abs(crop)} ({e.strerror or e}); "
                                   "run facerec embed --prune first") from None
            out.append(DumpedSample(name, png, PurePosixPath(crop).stem, src, sha, float(q), float(added), vec.get(int(sid), {})))
        return people, out

    def add_dumped(self, people: list[tuple[str, float]], samples: list[DumpedSample], *,
                   audit: AuditNote | None = None) -> int:
        """Add dumped people and samples (crops, vectors, times kept) in one transaction; returns
        samples added. ``audit`` is written with them (``samples`` = how many) when any were."""
        taken: set[str] = set()
        plan = []
        for d in samples:
            dst = self._unique_crop_path(validate_name(d.person), d.stem, taken)
            taken.add(self._rel(dst))
            plan.append((d, dst))
        self._stage([self._rel(p) for _, p in plan])
        try:
            for d, dst in plan:
                write_atomic(dst, d.png)
            with self._write(bump=True) as c:
                for name, created in people:
                    if not c.execute("SELECT 1 FROM people WHERE name=?", (validate_name(name),)).fetchone():
                        c.execute("INSERT INTO people(name, created) VALUES (?, ?)", (validate_name(name), created))
                for d, dst in plan:
                    pid = self._person_id(c, validate_name(d.person), create=True)
                    c.execute("INSERT INTO samples(person_id, source_path, sha256, crop_path, crop_sha256, quality, added) "
                              "VALUES (?,?,?,?,?,?,?)",
                              (pid, d.source_path, d.sha256, self._rel(dst), sha256_bytes(d.png), d.quality, d.added))
                    sid = _rowid(c)
                    self._touch([sid])
                    c.executemany("INSERT INTO embeddings(sample_id, embedder, dim, vector, norm) VALUES (?,?,?,?,?)",
                                  [(sid, k, int(v.shape[0]), np.ascontiguousarray(v, np.float32).tobytes(), n)
                                   for k, (v, n) in d.vectors.items()])
                if plan:
                    self._audit(c, audit, samples=len(plan))
        finally:
            self._cleanup_pending()
        return len(plan)

    def missing_embeddings(self, key: EmbedderKey) -> list[SampleInfo]:
        """Samples without a vector for ``key`` (what ``facerec embed`` still has to do)."""
        rows = self._read(
            self._sample_rows_sql()
            + "WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sample_id = s.id AND e.embedder = ?) ORDER BY s.id",
            (str(key),),
        )
        return [self._to_info(r) for r in rows]

    def count(self, key: EmbedderKey | None = None) -> int:
        """Number of samples, or of stored vectors for ``key``."""
        if key is None:
            return int(self._read("SELECT count(*) FROM samples")[0][0])
        return int(self._read("SELECT count(*) FROM embeddings WHERE embedder=?", (str(key),))[0][0])

    # ------------------------------------------------------------------ writing

    @staticmethod
    def _person_id(c: sqlite3.Cursor, name: str, create: bool) -> int:
        row = c.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            raise GalleryError(f"no person named {name!r} in the gallery")
        c.execute("INSERT INTO people(name, created) VALUES (?, ?)", (name, time.time()))
        return _rowid(c)

    @staticmethod
    def _insert_embeddings(c: sqlite3.Cursor, key: EmbedderKey, sample_ids: list[int], emb: Embeddings) -> int:
        if emb.key != key:
            raise GalleryError(f"embeddings come from {emb.key}, not from {key}: vector spaces are never mixed")
        if len(sample_ids) != len(emb):
            raise GalleryError(f"{len(sample_ids)} sample ids for {len(emb)} embeddings")
        vec = np.ascontiguousarray(emb.vectors, dtype=np.float32)
        rows = [
            (int(sid), str(key), int(vec.shape[1]), vec[i].tobytes(), float(emb.norm[i]), int(sid))
            for i, sid in enumerate(sample_ids)
        ]
        # samples deleted meanwhile (another process) are skipped, not an error
        c.executemany(
            "INSERT OR REPLACE INTO embeddings(sample_id, embedder, dim, vector, norm) "
            "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM samples WHERE id=?)",
            rows,
        )

        return len(rows)

    def add_person(self, name: str, *, audit: AuditNote | None = None) -> None:
        """Enroll a person with no samples yet (no-op when they exist)."""
        name = validate_name(name)
        with self._write(bump=True) as c:
            self._person_id(c, name, create=True)
            self._audit(c, audit)

    def add_sample(
        self,
        person: str,
        crop: np.ndarray,
        *,
        source_path: str | None,
        source_sha256: str,
        quality: float,
        embeddings: Embeddings | None = None,
        stem: str | None = None,
        audit: AuditNote | None = None,
    ) -> SampleInfo:
        """Add one aligned crop to ``person`` (created if needed).

        The crop is written to ``preprocessed/<person>/<stem>.png`` atomically before the
        transaction that adds the sample (and, when given, its one-row ``embeddings``)
        commits.

        Args:
            stem: file name stem of the crop; default: the first 16 hex digits of the
                crop's own sha256.
            audit: the audit entry, written in the same transaction (with ``samples`` =
                the new id).
        """
        name = validate_name(person)
        if embeddings is not None and len(embeddings) != 1:
            raise GalleryError(f"add_sample takes the embedding of one face, got {len(embeddings)}")
        data = encode_png(crop)
        path = self._unique_crop_path(name, stem or sha256_bytes(data)[:16])
        rel = self._rel(path)
        self._stage([rel])
        try:
            write_atomic(path, data)
            with self._write(bump=True) as c:
                pid = self._person_id(c, name, create=True)
                now = time.time()
                c.execute(
                    "INSERT INTO samples(person_id, source_path, sha256, crop_path, crop_sha256, quality, added) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (pid, source_path, source_sha256, rel, sha256_bytes(data), float(quality), now),
                )
                sid = _rowid(c)
                self._touch([sid])
                if embeddings is not None:
                    self._insert_embeddings(c, embeddings.key, [sid], embeddings)
                self._audit(c, audit, samples=[sid])
        finally:
            self._cleanup_pending()
        return SampleInfo(sid, name, source_path, source_sha256, str(path), float(quality), now)

    def add_existing_crops(self, items: list[tuple[str, Path, str, str, float, str | None]], *,
                           audit: AuditNote | None = None) -> list[SampleInfo]:
        """Register crop files already inside ``preprocessed/<person>/`` (one transaction).

        Args:
            items: ``(person, crop file, crop sha256, source sha256, quality, source path)``
                tuples; each file must lie in its person's crop folder.
        """
        out: list[SampleInfo] = []
        prepared = []
        for person, path, crop_sha, sha, q, src in items:
            name = validate_name(person)
            p = Path(path).absolute()
            if p.parent != self.crop_dir(name):
                raise GalleryError(f"{p} is not in {self.crop_dir(name)}")
            prepared.append((name, self._rel(p), crop_sha, sha, float(q), src))
        if not prepared:
            return out
        with self._write(bump=True) as c:
            now = time.time()
            for name, rel, crop_sha, sha, q, src in prepared:
                pid = self._person_id(c, name, create=True)
                c.execute(
                    "INSERT INTO samples(person_id, source_path, sha256, crop_path, crop_sha256, quality, added) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (pid, src, sha, rel, crop_sha, q, now),
                )
                out.append(SampleInfo(_rowid(c), name, src, sha, str(self._abs(rel)), q, now))
                self._touch([out[-1].id])
            self._audit(c, audit, samples=len(out))
        return out

    def update_sample_file(self, sample_id: int, crop_sha256: str, quality: float, source_sha256: str | None = None,
                           png: bytes | None = None, *, audit: AuditNote | None = None) -> None:
        """The crop file of a sample changed in place: new hashes and quality, embeddings dropped.

        ``png`` (the new content) is for backends that keep crops in the database; here the
        file itself is the crop."""
        with self._write(bump=True) as c:
            cur = c.execute("UPDATE samples SET crop_sha256=?, quality=?, sha256=coalesce(?, sha256) WHERE id=?",
                            (crop_sha256, float(quality), source_sha256, int(sample_id)))
            if cur.rowcount == 0:
                raise GalleryError(f"no sample with id {sample_id}")
            c.execute("DELETE FROM embeddings WHERE sample_id=?", (int(sample_id),))
            self._touch([sample_id])
            self._audit(c, audit)

    def put_embeddings(self, key: EmbedderKey, sample_ids: list[int], emb: Embeddings,
                       quality: np.ndarray | None = None, *, audit: AuditNote | None = None) -> None:
        """Store (or replace) the vectors of ``sample_ids`` for ``key`` in one transaction.

        Args:
            quality: when given, also replaces the samples' quality (MagFace norms).

        Raises:
            GalleryError: ``emb`` comes from another embedder, or lengths differ.
        """
        if len(sample_ids) == 0:
            return
        with self._write(bump=True) as c:
            self._insert_embeddings(c, key, [int(s) for s in sample_ids], emb)
            self._touch(sample_ids)
            if quality is not None:
                c.executemany("UPDATE samples SET quality=? WHERE id=?",
                              [(float(q), int(s)) for q, s in zip(quality, sample_ids)])
            self._audit(c, audit)

    def delete_embeddings(self, key: EmbedderKey | str, *, audit: AuditNote | None = None) -> int:
        """Drop every vector of one embedder (samples stay); returns how many."""
        with self._write(bump=True) as c:
            self._tx_full = True
            n = c.execute("DELETE FROM embeddings WHERE embedder=?", (str(key),)).rowcount
            self._audit(c, audit, vectors=n)
        return n

    def rename_person(self, old: str, new: str, *, audit: AuditNote | None = None) -> None:
        """Rename a person; their crop folder and negative samples move with them (``audit``
        gets ``negatives``, how many).

        Raises:
            GalleryError: ``old`` unknown, ``new`` invalid or already enrolled.
        """
        old_n, new_n = validate_name(old), validate_name(new)
        if old_n == new_n:
            return
        if self.has_person(new_n):
            raise GalleryError(f"{new_n!r} is already enrolled; use merge to combine two people")
        rows = self._read("SELECT s.id, s.crop_path FROM samples s JOIN people p ON p.id=s.person_id WHERE p.name=?", (old_n,))
        if not self.has_person(old_n):
            raise GalleryError(f"no person named {old_n!r} in the gallery")
        try:
            plan = self._prepare_moves(rows, new_n)
            with self._write(bump=True) as c:
                if c.execute("SELECT 1 FROM people WHERE name=?", (new_n,)).fetchone():
                    raise GalleryError(f"{new_n!r} is already enrolled; use merge to combine two people")
                c.execute("UPDATE people SET name=? WHERE name=?", (new_n, old_n))
                self._relink(c, plan, None)
                negatives = move_negatives(SqlCursor(c, "?"), old_n, new_n)
                self._audit(c, audit, negatives=negatives)
        finally:
            self._cleanup_pending()

    def merge_people(self, src: str, dst: str, *, audit: AuditNote | None = None) -> None:
        """Move every sample of ``src`` into ``dst`` (created if needed) and remove ``src``;
        ``src``'s negatives become ``dst``'s (``audit`` gets ``samples`` and ``negatives``)."""
        src_n, dst_n = validate_name(src), validate_name(dst)
        if src_n == dst_n:
            raise GalleryError(f"cannot merge {src_n!r} into itself")
        if not self.has_person(src_n):
            raise GalleryError(f"no person named {src_n!r} in the gallery")
        rows = self._read("SELECT s.id, s.crop_path FROM samples s JOIN people p ON p.id=s.person_id WHERE p.name=?", (src_n,))
        try:
            plan = self._prepare_moves(rows, dst_n)
            with self._write(bump=True) as c:
                pid = self._person_id(c, dst_n, create=True)
                self._relink(c, plan, pid)
                c.execute("DELETE FROM people WHERE name=?", (src_n,))
                negatives = move_negatives(SqlCursor(c, "?"), src_n, dst_n)
                self._audit(c, audit, samples=len(plan), negatives=negatives)
        finally:
            self._cleanup_pending()

    def move_sample(self, sample_id: int, person: str, *, audit: AuditNote | None = None) -> None:
        """Give one sample to another person (created if needed)."""
        name = validate_name(person)
        s = self.sample(sample_id)
        if s.person == name:
            return
        try:
            plan = self._prepare_moves([(s.id, self._rel(Path(s.crop_path)))], name)
            with self._write(bump=True) as c:
                pid = self._person_id(c, name, create=True)
                self._relink(c, plan, pid)
                self._audit(c, audit)
        finally:
            self._cleanup_pending()

    def delete_person(self, name: str, *, audit: AuditNote | None = None) -> int:
        """Remove a person with every sample, crop file, embedding and negative sample;
        returns the sample count (``audit`` gets ``samples`` and ``negatives``)."""
        n = validate_name(name)
        try:
            with self._write(bump=True) as c:
                pid = self._person_id(c, n, create=False)
                rows = c.execute("SELECT crop_path FROM samples WHERE person_id=?", (pid,)).fetchall()
                self._touch(c.execute("SELECT id FROM samples WHERE person_id=?", (pid,)).fetchall())
                self._queue(c, rows)
                c.execute("DELETE FROM people WHERE id=?", (pid,))  # cascades to samples, embeddings
                negatives = c.execute("DELETE FROM negatives WHERE person=?", (n,)).rowcount
                self._audit(c, audit, samples=len(rows), negatives=negatives)
        finally:
            self._cleanup_pending()
        folder = self.data_dir / CROPS_DIR / n
        try:
            folder.rmdir()
        except OSError:
            pass
        return len(rows)

    def delete_sample(self, sample_id: int, *, audit: AuditNote | None = None) -> None:
        """Remove one sample, its crop file and its embeddings (the person stays)."""
        try:
            with self._write(bump=True) as c:
                row = c.execute("SELECT crop_path FROM samples WHERE id=?", (int(sample_id),)).fetchone()
                if row is None:
                    raise GalleryError(f"no sample with id {sample_id}")
                self._queue(c, [row])
                self._touch([sample_id])
                c.execute("DELETE FROM samples WHERE id=?", (int(sample_id),))
                self._audit(c, audit)
        finally:
            self._cleanup_pending()

    def forget_samples(self, sample_ids: list[int], *, audit: AuditNote | None = None) -> int:
        """Drop sample records whose crop files are gone (``facerec embed --prune``)."""
        with self._write(bump=True) as c:
            self._touch(sample_ids)
            n = sum(c.execute("DELETE FROM samples WHERE id=?", (int(s),)).rowcount for s in sample_ids)
            self._audit(c, audit, samples=n)
        return n

    def clear(self, *, audit: AuditNote | None = None) -> None:
        """Remove everyone: every person, sample, crop file and embedding (``audit`` gets
        ``people`` and ``samples``, how many)."""
        try:
            with self._write(bump=True) as c:
                self._tx_full = True
                people, samples = c.execute("SELECT (SELECT count(*) FROM people), (SELECT count(*) FROM samples)").fetchone()
                self._audit(c, audit, people=people, samples=samples)
                self._queue(c, c.execute("SELECT crop_path FROM samples").fetchall())
                c.execute("DELETE FROM embeddings")
                c.execute("DELETE FROM samples")
                c.execute("DELETE FROM people")
        finally:
            self._cleanup_pending()
        root = self.data_dir / CROPS_DIR
        if root.is_dir():
            for d in root.iterdir():
                if d.is_dir():
                    try:
                        d.rmdir()
                    except OSError:
                        pass

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks and by the gallery's own
        rules (every crop file present and intact); empty when sound."""
        problems = [r[0] for r in self._read("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r}" for r in self._read("PRAGMA foreign_key_check")]
        for sid, rel, sha in self._read("SELECT id, crop_path, crop_sha256 FROM samples"):
            try:
                if sha256_bytes(self._abs(rel).read_bytes()) != sha:
                    problems.append(f"sample {sid}: crop {rel} does not match its hash")
            except OSError:
                problems.append(f"sample {sid}: crop {rel} is missing")
        return problems

