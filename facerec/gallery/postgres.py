"""The ``postgres`` gallery backend: one database shared by several hosts.

Tables and migrations: :mod:`facerec.gallery.postgres_db`. Sightings, negatives and the
audit log are the shared :mod:`facerec.gallery.feedback`.

Consistency: every change is one transaction that ends by incrementing the version (a row
lock, so versions are handed out in commit order), appending its change-feed row and
calling ``pg_notify('facerec_gallery', version)``, which PostgreSQL delivers to listeners
only when the transaction commits. A reader that missed notifications (a reconnect) reads
``changes`` from its last version on, so nothing is lost.

Connection failures become :class:`~facerec.gallery.backend.GalleryUnavailable`; a
transaction interrupted by one is rolled back by the server, so nothing is half-written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.postgres_db import (
    CONNECT_TIMEOUT_S,
    SCHEMA_VERSION,
    _psycopg,
    _where,
    schema_version,
    unavailable,
)
from facerec.gallery.postgres_db import upgrade as upgrade_schema
from facerec.gallery.feedback import FeedbackTables, SqlCursor, move_negatives, write_audit
from facerec.gallery.records import (
    FEED_KEEP,
    AuditNote,
    ChangeSet,
    DumpedSample,
    PersonInfo,
    SampleInfo,
    encode_png,
    validate_name,
)
from facerec.types import EmbedderKey, Embeddings

log = logging.getLogger(__name__)

#: The NOTIFY channel; the payload is the new version.
CHANNEL = "facerec_gallery"
class PostgresGallery(FeedbackTables):
    """The ``postgres`` implementation of :class:`~facerec.gallery.backend.GalleryBackend`,
    with sightings, negatives and the audit log in the same database
    (:class:`~facerec.gallery.feedback.FeedbackTables`).

    Args:
        dsn: ``postgresql://user@host:port/db``.
        readonly: refuse writes (a daemon that only searches).
        upgrade: apply pending migrations now (safe: they are serialised between hosts).
        pool_size: most connections held (the web app's thread pool shares them).

    Raises:
        GalleryUnavailable: the server cannot be reached.
        GalleryError: the schema is missing or older and ``upgrade`` is False.
    """

    kind = "postgres"

    def __init__(self, dsn: str, *, readonly: bool = False, upgrade: bool = True, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.readonly = readonly
        self.where = _where(dsn)
        self.label = f"the PostgreSQL gallery {self.where}"
        psycopg, psycopg_pool = _psycopg()
        self._psycopg = psycopg
        #: (schema before, schema after) opening this gallery
        self.schema_upgrade = (SCHEMA_VERSION, SCHEMA_VERSION)
        if upgrade and not readonly:
            self.schema_upgrade = upgrade_schema(dsn)
        self._pool = psycopg_pool.ConnectionPool(
            dsn, min_size=1, max_size=pool_size, open=False, timeout=CONNECT_TIMEOUT_S,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S)}, reconnect_timeout=0,
            check=psycopg_pool.ConnectionPool.check_connection)
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise unavailable(dsn, e) from None
        try:
            with self._conn() as conn:
                have = schema_version(conn)
        except BaseException:
            self._pool.close()
            raise
        if have < SCHEMA_VERSION:
            self._pool.close()
            raise GalleryError(f"the gallery database at {self.where} has schema {have}, this facerec needs "
                               f"{SCHEMA_VERSION}: run facerec db upgrade")

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        psycopg = self._psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as e:
            raise unavailable(self.dsn, e) from None
        except psycopg.errors.UniqueViolation as e:
            raise GalleryError(f"the gallery refused the change: {e.diag.message_detail or e}") from None
        except psycopg.Error as e:
            if isinstance(e, (psycopg.InterfaceError,)):
                raise unavailable(self.dsn, e) from None
            raise GalleryError(f"the gallery database at {self.where} refused the request: {e}") from None

    def _read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    @contextmanager
    def _tx(self, bump: bool = True) -> Iterator[Any]:
        """One write transaction; yields ``(cursor, touched ids set, flags dict)``."""
        if self.readonly:
            raise GalleryError(f"the gallery database at {self.where} was opened read-only")
        with self._conn() as conn:
            with conn.transaction():
                cur = conn.cursor()
                touched: set[int] = set()
                flags = {"full": False}
                yield cur, touched, flags
                if bump:
                    v = int(cur.execute("UPDATE facerec_meta SET version = version + 1 WHERE id = 1 RETURNING version"
                                        ).fetchone()[0])
                    cur.execute("INSERT INTO changes(version, sample_ids, at) VALUES (%s, %s, %s)",
                                (v, None if flags["full"] else sorted(touched), time.time()))
                    if v % 100 == 0:
                        cur.execute("DELETE FROM changes WHERE version <= %s", (v - FEED_KEEP,))
                    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(v)))

    @contextmanager
    def _feedback_tx(self) -> Iterator[SqlCursor]:
        with self._tx(bump=False) as (cur, _t, _f):
            yield SqlCursor(cur, "%s")

    @contextmanager
    def _feedback_read(self) -> Iterator[SqlCursor]:
        with self._conn() as conn:
            yield SqlCursor(conn.cursor(), "%s")

    def _audit(self, cur: Any, note: AuditNote | None, **extra: Any) -> None:
        write_audit(SqlCursor(cur, "%s"), note, **extra)

    def subscribe(self) -> ChangeListener:
        """Changes as they commit on any host (``LISTEN``), for a watcher's own thread."""
        return ChangeListener(self.dsn)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    _SAMPLE_SQL = ("SELECT s.id, p.name, s.source_path, s.sha256, s.crop_name, s.quality, s.added "
                   "FROM samples s JOIN people p ON p.id = s.person_id ")

    @staticmethod
    def _info(row: tuple) -> SampleInfo:
        sid, person, src, sha, crop, q, added = row
        return SampleInfo(int(sid), person, src, sha, f"db:{person}/{crop}", float(q), float(added))

    def version(self) -> int:
        return int(self._read("SELECT version FROM facerec_meta WHERE id = 1")[0][0])

    def changes_since(self, version: int) -> ChangeSet:
        with self._conn() as conn, conn.transaction():
            now = int(conn.execute("SELECT version FROM facerec_meta WHERE id = 1").fetchone()[0])
            if now <= version:
                return ChangeSet(now)
            rows = conn.execute("SELECT version, sample_ids FROM changes WHERE version > %s AND version <= %s",
                                (int(version), now)).fetchall()
        if len(rows) != now - version or any(r[1] is None for r in rows):
            return ChangeSet(now, full=True)
        return ChangeSet(now, frozenset(int(i) for r in rows for i in r[1]))

    def people(self) -> list[PersonInfo]:
        rows = self._read("SELECT p.name, count(s.id), p.created FROM people p LEFT JOIN samples s ON s.person_id = p.id "
                          "GROUP BY p.id ORDER BY p.name COLLATE \"C\"")
        return [PersonInfo(n, int(k), float(t)) for n, k, t in rows]

    def has_person(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM people WHERE name = %s", (validate_name(name),)))

    def samples(self, person: str | None = None) -> list[SampleInfo]:
        if person is None:
            return [self._info(r) for r in self._read(self._SAMPLE_SQL + "ORDER BY s.id")]
        name = validate_name(person)
        if not self.has_person(name):
            raise GalleryError(f"no person named {name!r} in the gallery")
        return [self._info(r) for r in self._read(self._SAMPLE_SQL + "WHERE p.name = %s ORDER BY s.id", (name,))]

    def sample(self, sample_id: int) -> SampleInfo:
        rows = self._read(self._SAMPLE_SQL + "WHERE s.id = %s", (int(sample_id),))
        if not rows:
            raise GalleryError(f"no sample with id {sample_id}")
        return self._info(rows[0])

    def find_sha256(self, sha256: str) -> list[SampleInfo]:
        return [self._info(r) for r in self._read(self._SAMPLE_SQL + "WHERE s.sha256 = %s ORDER BY s.id", (sha256,))]

    def crop_png(self, sample_id: int) -> bytes:
        rows = self._read("SELECT crop FROM samples WHERE id = %s", (int(sample_id),))
        if not rows:
            raise GalleryError(f"no sample with id {sample_id}")
        return bytes(rows[0][0])

    def crop_hashes(self) -> dict[str, tuple[int, str]]:
        rows = self._read("SELECT s.id, p.name, s.crop_name, s.crop_sha256 FROM samples s JOIN people p ON p.id = s.person_id")
        return {f"preprocessed/{p}/{c}": (int(i), sha) for i, p, c, sha in rows}

    def embedder_keys(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._read("SELECT embedder, count(*) FROM embeddings GROUP BY embedder ORDER BY embedder")}

    def vectors(self, key: EmbedderKey, sample_ids: list[int] | None = None
                ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        # array_send: the vectors as PostgreSQL's binary array bytes, decoded by NumPy in one go
        # (psycopg would build a Python float per element: minutes and gigabytes at a million rows)
        sql = ("SELECT s.id, p.name, e.dim, array_send(e.vector), s.quality FROM embeddings e "
               "JOIN samples s ON s.id = e.sample_id JOIN people p ON p.id = s.person_id WHERE e.embedder = %s ")
        with self._conn() as conn:
            cur = conn.cursor(binary=True)
            if sample_ids is None:
                rows = cur.execute(sql + "ORDER BY s.id", (str(key),)).fetchall()
            else:
                rows = cur.execute(sql + "AND s.id = ANY(%s) ORDER BY s.id", (str(key), [int(i) for i in sample_ids])).fetchall()
        if not rows:
            return np.zeros((0,), np.int64), [], np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
        dims = {r[2] for r in rows}
        if len(dims) != 1:
            raise GalleryError(f"embeddings of {key} have mixed dimensions {sorted(dims)}; re-embed with --force")
        vec = _decode_float4_arrays([r[3] for r in rows], dims.pop())
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        quality = np.fromiter((r[4] for r in rows), np.float32, len(rows))
        return ids, [r[1] for r in rows], vec, quality

    def raw_vectors(self, key: EmbedderKey) -> list[tuple[str, str, np.ndarray, float]]:
        rows = self._read("SELECT p.name, s.crop_name, e.vector, e.norm FROM embeddings e JOIN samples s ON s.id = e.sample_id "
                          "JOIN people p ON p.id = s.person_id WHERE e.embedder = %s", (str(key),))
        return [(n, c, np.asarray(v, np.float32), float(m)) for n, c, v, m in rows]

    def missing_embeddings(self, key: EmbedderKey) -> list[SampleInfo]:
        rows = self._read(self._SAMPLE_SQL + "WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sample_id = s.id "
                          "AND e.embedder = %s) ORDER BY s.id", (str(key),))
        return [self._info(r) for r in rows]

    def count(self, key: EmbedderKey | None = None) -> int:
        if key is None:
            return int(self._read("SELECT count(*) FROM samples")[0][0])
        return int(self._read("SELECT count(*) FROM embeddings WHERE embedder = %s", (str(key),))[0][0])

    def integrity_check(self) -> list[str]:
        """Orphans, vectors whose length differs from their dimension, crops that do not
        match their hash, and a version counter behind its change feed; empty when sound."""
        checks = [
            ("SELECT count(*) FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.id = e.sample_id)",
             "vector(s) without a sample"),
            ("SELECT count(*) FROM samples s WHERE NOT EXISTS (SELECT 1 FROM people p WHERE p.id = s.person_id)",
             "sample(s) without a person"),
            ("SELECT count(*) FROM embeddings WHERE cardinality(vector) <> dim", "vector(s) of the wrong length"),
            ("SELECT count(*) FROM samples WHERE encode(sha256(crop), 'hex') <> crop_sha256", "crop(s) not matching their hash"),
            ("SELECT count(*) FROM changes WHERE version > (SELECT version FROM facerec_meta)", "change(s) beyond the version"),
        ]
        out = []
        for sql, what in checks:
            n = int(self._read(sql)[0][0])
            if n:
                out.append(f"{n} {what}")
        return out

    def dump(self) -> tuple[list[tuple[str, float]], list[DumpedSample]]:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            people = [(n, float(t)) for n, t in conn.execute("SELECT name, created FROM people ORDER BY id")]
            rows = conn.execute("SELECT s.id, p.name, s.crop, s.crop_name, s.source_path, s.sha256, s.quality, s.added "
                                "FROM samples s JOIN people p ON p.id = s.person_id ORDER BY s.id").fetchall()
            embs = conn.cursor(binary=True).execute("SELECT sample_id, embedder, vector, norm FROM embeddings").fetchall()
        vec: dict[int, dict] = {}
        for sid, key, v, norm in embs:
            vec.setdefault(int(sid), {})[key] = (np.asarray(v, np.float32), float(norm))
        return people, [DumpedSample(n, bytes(png), Path(c).stem, src, sha, float(q), float(a), vec.get(int(sid), {}))
                        for sid, n, png, c, src, sha, q, a in rows]

    # ------------------------------------------------------------------ writing

    @staticmethod
    def _person_id(cur, name: str, create: bool) -> int:
        row = cur.execute("SELECT id FROM people WHERE name = %s", (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            raise GalleryError(f"no person named {name!r} in the gallery")
        cur.execute("INSERT INTO people(name, created) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, time.time()))
        return int(cur.execute("SELECT id FROM people WHERE name = %s", (name,)).fetchone()[0])

    @staticmethod
    def _crop_name(cur, person_id: int, stem: str) -> str:
        stem = stem.lstrip(".").replace("/", "_") or "crop"
        taken = {r[0] for r in cur.execute("SELECT crop_name FROM samples WHERE person_id = %s AND crop_name LIKE %s",
                                           (person_id, f"{stem}%"))}
        name, n = f"{stem}.png", 1
        while name in taken:
            name, n = f"{stem}-{n}.png", n + 1
        return name

    @staticmethod
    def _insert_vectors(cur, key: EmbedderKey | str, sample_ids: list[int], vectors: np.ndarray, norms) -> None:
        vec = np.ascontiguousarray(vectors, np.float32)
        cur.executemany(
            "INSERT INTO embeddings(sample_id, embedder, dim, vector, norm) SELECT %s, %s, %s, %s, %s "
            "WHERE EXISTS (SELECT 1 FROM samples WHERE id = %s) "
            "ON CONFLICT (sample_id, embedder) DO UPDATE SET dim = EXCLUDED.dim, vector = EXCLUDED.vector, norm = EXCLUDED.norm",
            [(int(s), str(key), int(vec.shape[1]), vec[i].tolist(), float(norms[i]), int(s)) for i, s in enumerate(sample_ids)])

    def add_person(self, name: str, *, audit: AuditNote | None = None) -> None:
        name = validate_name(name)
        with self._tx() as (cur, _, _f):
            self._person_id(cur, name, create=True)
            self._audit(cur, audit)

    def add_sample(self, person: str, crop: np.ndarray, *, source_path: str | None, source_sha256: str,
                   quality: float, embeddings: Embeddings | None = None, stem: str | None = None,
                   audit: AuditNote | None = None) -> SampleInfo:
        name = validate_name(person)
        if embeddings is not None and len(embeddings) != 1:
            raise GalleryError(f"add_sample takes the embedding of one face, got {len(embeddings)}")
        data = encode_png(crop)
        sha = hashlib.sha256(data).hexdigest()
        with self._tx() as (cur, touched, _f):
            pid = self._person_id(cur, name, create=True)
            crop_name = self._crop_name(cur, pid, stem or sha[:16])
            now = time.time()
            sid = int(cur.execute(
                "INSERT INTO samples(person_id, source_path, sha256, crop_name, crop, crop_sha256, quality, added) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (pid, source_path, source_sha256, crop_name, data, sha, float(quality), now)).fetchone()[0])
            touched.add(sid)
            if embeddings is not None:
                self._insert_vectors(cur, embeddings.key, [sid], embeddings.vectors, embeddings.norm)
            self._audit(cur, audit, samples=[sid])
        return SampleInfo(sid, name, source_path, source_sha256, f"db:{name}/{crop_name}", float(quality), now)

    def add_existing_crops(self, items: list[tuple[str, Path, str, str, float, str | None]], *,
                           audit: AuditNote | None = None) -> list[SampleInfo]:
        """Store crop files (``facerec align`` output) in the database, one transaction."""
        out: list[SampleInfo] = []
        with self._tx() as (cur, touched, _f):
            now = time.time()
            for person, path, crop_sha, sha, q, src in items:
                name = validate_name(person)
                data = Path(path).read_bytes()
                pid = self._person_id(cur, name, create=True)
                crop_name = Path(path).name
                sid = int(cur.execute(
                    "INSERT INTO samples(person_id, source_path, sha256, crop_name, crop, crop_sha256, quality, added) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (pid, src, sha, crop_name, data, hashlib.sha256(data).hexdigest(), float(q), now)).fetchone()[0])
                touched.add(sid)
                out.append(SampleInfo(sid, name, src, sha, f"db:{name}/{crop_name}", float(q), now))
            self._audit(cur, audit, samples=len(out))
        return out

    def update_sample_file(self, sample_id: int, crop_sha256: str, quality: float, source_sha256: str | None = None,
                           png: bytes | None = None, *, audit: AuditNote | None = None) -> None:
        with self._tx() as (cur, touched, _f):
            if png is not None:
                cur.execute("UPDATE samples SET crop = %s WHERE id = %s", (png, int(sample_id)))
            cur.execute("UPDATE samples SET crop_sha256 = %s, quality = %s, sha256 = coalesce(%s, sha256) WHERE id = %s",
                        (crop_sha256, float(quality), source_sha256, int(sample_id)))
            if cur.rowcount == 0:
                raise GalleryError(f"no sample with id {sample_id}")
            cur.execute("DELETE FROM embeddings WHERE sample_id = %s", (int(sample_id),))
            touched.add(int(sample_id))
            self._audit(cur, audit)

    def add_dumped(self, people: list[tuple[str, float]], samples: list[DumpedSample], *,
                   audit: AuditNote | None = None) -> int:
        with self._tx() as (cur, touched, _f):
            for name, created in people:
                cur.execute("INSERT INTO people(name, created) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                            (validate_name(name), created))
            for d in samples:
                pid = self._person_id(cur, validate_name(d.person), create=True)
                crop_name = self._crop_name(cur, pid, d.stem)
                sid = int(cur.execute(
                    "INSERT INTO samples(person_id, source_path, sha256, crop_name, crop, crop_sha256, quality, added) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (pid, d.source_path, d.sha256, crop_name, d.png, hashlib.sha256(d.png).hexdigest(), d.quality,
                     d.added)).fetchone()[0])
                touched.add(sid)
                for key, (v, n) in d.vectors.items():
                    self._insert_vectors(cur, key, [sid], v.reshape(1, -1), [n])
            if samples:
                self._audit(cur, audit, samples=len(samples))
        return len(samples)

    def put_embeddings(self, key: EmbedderKey, sample_ids: list[int], emb: Embeddings,
                       quality: np.ndarray | None = None, *, audit: AuditNote | None = None) -> None:
        if emb.key != key:
            raise GalleryError(f"embeddings come from {emb.key}, not from {key}: vector spaces are never mixed")
        if len(sample_ids) != len(emb):
            raise GalleryError(f"{len(sample_ids)} sample ids for {len(emb)} embeddings")
        if not len(sample_ids):
            return
        with self._tx() as (cur, touched, _f):
            self._insert_vectors(cur, key, list(sample_ids), emb.vectors, emb.norm)
            if quality is not None:
                cur.executemany("UPDATE samples SET quality = %s WHERE id = %s",
                                [(float(q), int(s)) for q, s in zip(quality, sample_ids)])
            touched.update(int(s) for s in sample_ids)
            self._audit(cur, audit)

    def delete_embeddings(self, key: EmbedderKey | str, *, audit: AuditNote | None = None) -> int:
        with self._tx() as (cur, _t, flags):
            flags["full"] = True
            n = cur.execute("DELETE FROM embeddings WHERE embedder = %s", (str(key),)).rowcount
            self._audit(cur, audit, vectors=n)
        return n

    def rename_person(self, old: str, new: str, *, audit: AuditNote | None = None) -> None:
        old_n, new_n = validate_name(old), validate_name(new)
        if old_n == new_n:
            return
        with self._tx() as (cur, touched, _f):
            pid = self._person_id(cur, old_n, create=False)
            if cur.execute("SELECT 1 FROM people WHERE name = %s", (new_n,)).fetchone():
                raise GalleryError(f"{new_n!r} is already enrolled; use merge to combine two people")
            cur.execute("UPDATE people SET name = %s WHERE id = %s", (new_n, pid))
            touched.update(r[0] for r in cur.execute("SELECT id FROM samples WHERE person_id = %s", (pid,)))
            self._audit(cur, audit, negatives=move_negatives(SqlCursor(cur, "%s"), old_n, new_n))

    def merge_people(self, src: str, dst: str, *, audit: AuditNote | None = None) -> None:
        src_n, dst_n = validate_name(src), validate_name(dst)
        if src_n == dst_n:
            raise GalleryError(f"cannot merge {src_n!r} into itself")
        with self._tx() as (cur, touched, _f):
            spid = self._person_id(cur, src_n, create=False)
            dpid = self._person_id(cur, dst_n, create=True)
            moved = [r[0] for r in cur.execute("UPDATE samples SET person_id = %s WHERE person_id = %s RETURNING id",
                                               (dpid, spid))]
            touched.update(moved)
            cur.execute("DELETE FROM people WHERE id = %s", (spid,))
            self._audit(cur, audit, samples=len(moved), negatives=move_negatives(SqlCursor(cur, "%s"), src_n, dst_n))

    def move_sample(self, sample_id: int, person: str, *, audit: AuditNote | None = None) -> None:
        name = validate_name(person)
        s = self.sample(sample_id)
        if s.person == name:
            return
        with self._tx() as (cur, touched, _f):
            pid = self._person_id(cur, name, create=True)
            if cur.execute("UPDATE samples SET person_id = %s WHERE id = %s", (pid, int(sample_id))).rowcount == 0:
                raise GalleryError(f"no sample with id {sample_id}")
            touched.add(int(sample_id))
            self._audit(cur, audit)

    def delete_person(self, name: str, *, audit: AuditNote | None = None) -> int:
        n = validate_name(name)
        with self._tx() as (cur, touched, _f):
            pid = self._person_id(cur, n, create=False)
            ids = [r[0] for r in cur.execute("SELECT id FROM samples WHERE person_id = %s", (pid,))]
            touched.update(ids)
            cur.execute("DELETE FROM people WHERE id = %s", (pid,))
            negatives = cur.execute("DELETE FROM negatives WHERE person = %s", (n,)).rowcount
            self._audit(cur, audit, samples=len(ids), negatives=negatives)
        return len(ids)

    def delete_sample(self, sample_id: int, *, audit: AuditNote | None = None) -> None:
        with self._tx() as (cur, touched, _f):
            if cur.execute("DELETE FROM samples WHERE id = %s", (int(sample_id),)).rowcount == 0:
                raise GalleryError(f"no sample with id {sample_id}")
            touched.add(int(sample_id))
            self._audit(cur, audit)

    def forget_samples(self, sample_ids: list[int], *, audit: AuditNote | None = None) -> int:
        with self._tx() as (cur, touched, _f):
            touched.update(int(s) for s in sample_ids)
            n = cur.execute("DELETE FROM samples WHERE id = ANY(%s)", ([int(s) for s in sample_ids],)).rowcount
            self._audit(cur, audit, samples=n)
        return n

    def clear(self, *, audit: AuditNote | None = None) -> None:
        with self._tx() as (cur, _t, flags):
            flags["full"] = True
            people, samples = cur.execute("SELECT (SELECT count(*) FROM people), (SELECT count(*) FROM samples)").fetchone()
            self._audit(cur, audit, people=people, samples=samples)
            cur.execute("DELETE FROM embeddings")
            cur.execute("DELETE FROM samples")
            cur.execute("DELETE FROM people")


class ChangeListener:
    """A ``LISTEN facerec_gallery`` connection: :meth:`wait` returns when a change committed.

    Raises:
        GalleryUnavailable: on connect, or from :meth:`wait` when the connection drops.
    """

    def __init__(self, dsn: str) -> None:
        psycopg, _ = _psycopg()
        self.dsn = dsn
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.OperationalError as e:
            raise unavailable(dsn, e) from None

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds for an announced change; True when one came."""
        newest = None
        try:
            for n in self._conn.notifies(timeout=timeout, stop_after=1):
                newest = int(n.payload)
            for n in self._conn.notifies(timeout=0.0):  # drain what else is queued
                newest = max(newest or 0, int(n.payload))
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as e:
            raise unavailable(self.dsn, e) from None
        if newest is None and self._conn.closed:
            raise unavailable(self.dsn, RuntimeError("the listening connection closed"))
        return newest is not None

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass


def _decode_float4_arrays(blobs: list[bytes], dim: int) -> np.ndarray:
    """``(n, dim)`` float32 from ``array_send`` output of one-dimensional ``real[]`` without NULLs.

    The binary layout: ndim, has-nulls flag, element type oid, then (length, lower bound)
    per dimension, then each element as (byte length 4, big-endian float4).
    """
    row = np.dtype([("ndim", ">i4"), ("nulls", ">i4"), ("oid", ">i4"), ("size", ">i4"), ("lbound", ">i4"),
                    ("el", [("len", ">i4"), ("v", ">f4")], (dim,))])
    data = b"".join(bytes(b) for b in blobs)
    if len(data) != row.itemsize * len(blobs):
        raise GalleryError(f"stored vectors are not {dim}-element real arrays without NULLs; re-embed with --force")
    arr = np.frombuffer(data, row)
    if (arr["ndim"] != 1).any() or (arr["nulls"] != 0).any() or (arr["size"] != dim).any() or (arr["el"]["len"] != 4).any():
        raise GalleryError(f"stored vectors are not {dim}-element real arrays without NULLs; re-embed with --force")
    return arr["el"]["v"].astype(np.float32)


def decode_png(data: bytes) -> np.ndarray | None:
    """BGR image of PNG bytes, or ``None`` when not decodable."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
