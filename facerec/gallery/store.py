"""The gallery on disk: one SQLite file (WAL) plus aligned crops as PNG files.

Layout under ``data_dir``::

    gallery.db                     people, samples, embeddings per embedder key, meta
    preprocessed/<Person>/*.png    112x112 aligned crops the samples point to

Consistency rules, so that a crash at any moment leaves the previous gallery intact and a
reader (the live daemon) never sees half a change:

* Every change is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, and ``meta.version``
  is incremented inside it; readers see either all of it or none of it (WAL snapshots).
* A crop file is written under a temporary name and ``os.replace``\\ d to its final name
  *before* the transaction that references it commits. Its path is first recorded in the
  ``pending_files`` table (its own small commit), so a file left behind by a crash between
  the rename and the commit is found and removed the next time the store is opened.
* A crop file that is no longer referenced (delete, move, rename) is recorded in
  ``pending_files`` by the same transaction that drops the reference and unlinked after
  the commit; a crash before the unlink is finished on the next open.
* Each ``pending_files`` row names the store instance that wrote it (process id + token);
  cleanup only touches rows of its own instance or of one that is gone (closed, or its
  process no longer exists), so two processes writing at once never remove each other's
  files in flight. Cleanup decides and unlinks inside a write transaction.

Files in ``preprocessed/`` that the store never recorded (for example crops written by
``facerec align`` that are not enrolled yet) are never touched by that cleanup; they are
picked up by :meth:`facerec.gallery.service.GalleryService.sync_preprocessed`.

Crop paths are stored relative to ``data_dir`` (POSIX separators) so a gallery folder can be
moved or archived; :class:`SampleInfo` reports them as absolute paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import threading
import time
import unicodedata
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import cv2
import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.backend import ChangeSet, DumpedSample
from facerec.types import ALIGNED_SIZE, EmbedderKey, Embeddings

log = logging.getLogger(__name__)

DB_NAME = "gallery.db"
CROPS_DIR = "preprocessed"
SCHEMA_VERSION = 3
#: Change-feed entries kept; a reader further behind reloads everything.
FEED_KEEP = 10_000
MAX_NAME_LENGTH = 100
#: Seconds a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_S = 30.0
_TMP_PREFIX = ".tmp-"
#: Pending-file rows older than this are cleaned even if their owner looks alive (pid reuse).
_STALE_PENDING_S = 24 * 3600.0
#: Tokens of the store instances open in this process (see ``pending_files``).
_LIVE_TOKENS: set[str] = set()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id   INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source_path TEXT,
    sha256      TEXT NOT NULL,
    crop_path   TEXT NOT NULL UNIQUE,
    crop_sha256 TEXT NOT NULL,
    quality     REAL NOT NULL,
    added       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_person ON samples(person_id);
CREATE INDEX IF NOT EXISTS samples_sha256 ON samples(sha256);
CREATE TABLE IF NOT EXISTS embeddings (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    embedder  TEXT NOT NULL,
    dim       INTEGER NOT NULL,
    vector    BLOB NOT NULL,
    norm      REAL NOT NULL,
    PRIMARY KEY (sample_id, embedder)
);
CREATE INDEX IF NOT EXISTS embeddings_embedder ON embeddings(embedder);
CREATE TABLE IF NOT EXISTS changes (
    version    INTEGER PRIMARY KEY,
    sample_ids TEXT,
    at         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_files (
    path    TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    created REAL NOT NULL
);
"""


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
    return hashlib.sha256(data).hexdigest()


def _rowid(c: sqlite3.Cursor) -> int:
    """The id of the row the cursor just inserted."""
    rowid = c.lastrowid
    if rowid is None:
        raise GalleryError("the gallery database did not return the new row's id")
    return int(rowid)


def _encode_png(crop: np.ndarray) -> bytes:
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        raise GalleryError(
            f"a crop must be a ({ALIGNED_SIZE}, {ALIGNED_SIZE}, 3) uint8 BGR image, got {crop.shape} {crop.dtype}"
        )
    ok, buf = cv2.imencode(".png", crop)
    if not ok:
        raise GalleryError("could not encode the crop as PNG")
    return buf.tobytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    The file is flushed and fsynced before the rename, so after a crash ``path`` holds
    either its old content or the new one, never a partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}{path.suffix}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class GalleryStore:
    """People, samples and embeddings of one gallery folder.

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
        if readonly:
            if not self.db_path.is_file():
                raise GalleryError(
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

    def _init_schema(self) -> None:
        self._migrate_sample_ids()
        with self._write() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '0')")
            elif int(row[0]) > SCHEMA_VERSION:
                raise GalleryError(
                    f"{self.db_path} was written by a newer facerec (schema {row[0]} > {SCHEMA_VERSION}); upgrade facerec"
                )
            elif int(row[0]) < SCHEMA_VERSION:  # 1 -> 2: the change feed table (created above); 2 -> 3: ids
                c.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def _migrate_sample_ids(self) -> None:
        """Schema 3: sample ids are never reused (``AUTOINCREMENT``). A plain ``INTEGER PRIMARY
        KEY`` hands the id of the last deleted sample to the next one, and the audit log then
        names one id for two people. SQLite cannot change a key in place: the table is copied
        into a new one in one transaction (foreign keys off meanwhile, as SQLite prescribes)."""
        with self._lock:
            row = self._conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='samples'").fetchone()
            if row is None or "AUTOINCREMENT" in row[0].upper():
                return
            self._conn.execute("PRAGMA foreign_keys=OFF")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                new_sql = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS samples"):]
                new_sql = new_sql[:new_sql.index(";")].replace("IF NOT EXISTS samples", "samples_migrating")
                cur.execute(new_sql)
                cur.execute("INSERT INTO samples_migrating SELECT id, person_id, source_path, sha256, crop_path, "
                            "crop_sha256, quality, added FROM samples")
                cur.execute("DROP TABLE samples")
                cur.execute("ALTER TABLE samples_migrating RENAME TO samples")
                cur.execute("CREATE INDEX IF NOT EXISTS samples_person ON samples(person_id)")
                cur.execute("CREATE INDEX IF NOT EXISTS samples_sha256 ON samples(sha256)")
                bad = cur.execute("PRAGMA foreign_key_check").fetchall()
                if bad:
                    raise GalleryError(f"{self.db_path}: {len(bad)} broken references while upgrading; nothing changed")
                cur.execute("COMMIT")
            except BaseException as e:
                self._roll_back(cur, e, f"cannot upgrade the gallery {self.db_path}")
                raise
            finally:
                cur.close()
                self._conn.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def _roll_back(cur: sqlite3.Cursor, e: BaseException, what: str) -> None:
        """Undo a failed transaction; a database error becomes a :class:`GalleryError` saying ``what``."""
        try:
            cur.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(e, sqlite3.DatabaseError):
            raise GalleryError(f"{what}: {e}") from e

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

    # ------------------------------------------------------------------ paths and files

    def _abs(self, rel: str) -> Path:
        return self.data_dir / PurePosixPath(rel)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    def crop_dir(self, person: str) -> Path:
        """``data_dir/preprocessed/<person>/`` (the name is validated)."""
        return self.data_dir / CROPS_DIR / validate_name(person)

    def _unique_crop_path(self, person: str, stem: str, taken: set[str] | None = None) -> Path:
        folder = self.crop_dir(person)
        stem = stem.lstrip(".") or "crop"
        candidate = folder / f"{stem}.png"
        n = 1
        referenced = taken or set()
        while candidate.exists() or self._rel(candidate) in referenced or self._is_referenced(self._rel(candidate)):
            candidate = folder / f"{stem}-{n}.png"
            n += 1
        return candidate

    def _is_referenced(self, rel: str) -> bool:
        return bool(self._read("SELECT 1 FROM samples WHERE crop_path=?", (rel,)))

    def _pending_rows(self, rels: list[str] | list[tuple]) -> list[tuple[str, str, float]]:
        now = time.time()
        return [(r[0] if isinstance(r, tuple) else r, self._token, now) for r in rels]

    def _queue(self, c: sqlite3.Cursor, rels: list[str] | list[tuple]) -> None:
        """Inside a transaction: these files lose (or are about to gain) their reference."""
        c.executemany("INSERT OR REPLACE INTO pending_files(path, owner, created) VALUES (?, ?, ?)",
                      self._pending_rows(rels))

    def _stage(self, rels: list[str]) -> None:
        """Record paths about to be created, so a crash before they are referenced is cleaned up."""
        if rels:
            with self._write() as c:
                self._queue(c, rels)

    def _owner_gone(self, owner: str, created: float) -> bool:
        """Whether the store instance that wrote a pending row can no longer finish its work."""
        if owner == self._token or time.time() - created > _STALE_PENDING_S:
            return True
        pid_text, _, _ = owner.partition("-")
        try:
            pid = int(pid_text)
        except ValueError:
            return True
        if pid == os.getpid():
            return owner not in _LIVE_TOKENS
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # exists, owned by someone else
        return False

    def _cleanup_pending(self) -> int:
        """Unlink recorded files nothing references any more; returns how many were removed."""
        if self.readonly:
            return 0
        removed = 0
        dirs: set[Path] = set()
        if self._read("SELECT 1 FROM pending_files LIMIT 1"):
            with self._write() as c:
                rows = c.execute(
                    "SELECT p.path, p.owner, p.created, EXISTS(SELECT 1 FROM samples s WHERE s.crop_path = p.path) "
                    "FROM pending_files p"
                ).fetchall()
                for rel, owner, created, referenced in rows:
                    if not referenced:
                        if not self._owner_gone(owner, created):
                            continue  # another live writer's file in flight
                        p = self._abs(rel)
                        try:
                            p.unlink()
                            removed += 1
                        except FileNotFoundError:
                            pass
                        except OSError as e:
                            log.warning("could not remove %s: %s", p, e)
                            continue
                        dirs.add(p.parent)
                    c.execute("DELETE FROM pending_files WHERE path=? AND owner=?", (rel, owner))
        crops_root = self.data_dir / CROPS_DIR
        for d in dirs:
            if d.parent == crops_root:
                try:
                    d.rmdir()  # only when empty
                except OSError:
                    pass
        # temporary files of interrupted writes
        if crops_root.is_dir():
            for d in crops_root.iterdir():
                if d.is_dir():
                    for t in d.glob(f"{_TMP_PREFIX}*"):
                        try:  # another writer may rename its temporary file meanwhile
                            if time.time() - t.stat().st_mtime > 3600:
                                t.unlink(missing_ok=True)
                        except FileNotFoundError:
                            pass
        return removed

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

    def add_dumped(self, people: list[tuple[str, float]], samples: list[DumpedSample]) -> int:
        """Add dumped people and samples (crops, vectors, times kept) in one transaction; returns samples added."""
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

    def add_person(self, name: str) -> None:
        """Enroll a person with no samples yet (no-op when they exist)."""
        name = validate_name(name)
        with self._write(bump=True) as c:
            self._person_id(c, name, create=True)

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
    ) -> SampleInfo:
        """Add one aligned crop to ``person`` (created if needed).

        The crop is written to ``preprocessed/<person>/<stem>.png`` atomically before the
        transaction that adds the sample (and, when given, its one-row ``embeddings``)
        commits.

        Args:
            stem: file name stem of the crop; default: the first 16 hex digits of the
                crop's own sha256.
        """
        name = validate_name(person)
        if embeddings is not None and len(embeddings) != 1:
            raise GalleryError(f"add_sample takes the embedding of one face, got {len(embeddings)}")
        data = _encode_png(crop)
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
        finally:
            self._cleanup_pending()
        return SampleInfo(sid, name, source_path, source_sha256, str(path), float(quality), now)

    def add_existing_crops(self, items: list[tuple[str, Path, str, str, float, str | None]]) -> list[SampleInfo]:
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
        return out

    def update_sample_file(self, sample_id: int, crop_sha256: str, quality: float, source_sha256: str | None = None,
                           png: bytes | None = None) -> None:
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

    def put_embeddings(self, key: EmbedderKey, sample_ids: list[int], emb: Embeddings,
                       quality: np.ndarray | None = None) -> None:
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

    def delete_embeddings(self, key: EmbedderKey | str) -> int:
        """Drop every vector of one embedder (samples stay); returns how many."""
        with self._write(bump=True) as c:
            self._tx_full = True
            return c.execute("DELETE FROM embeddings WHERE embedder=?", (str(key),)).rowcount

    def _relink(self, c: sqlite3.Cursor, moves: list[tuple[int, str, str]], person_id: int | None) -> None:
        """Point samples at their new crop paths (files already linked) and queue the old files."""
        self._touch([m[0] for m in moves])
        for sid, old_rel, new_rel in moves:
            if person_id is None:
                c.execute("UPDATE samples SET crop_path=? WHERE id=?", (new_rel, sid))
            else:
                c.execute("UPDATE samples SET crop_path=?, person_id=? WHERE id=?", (new_rel, person_id, sid))
            if old_rel != new_rel:
                self._queue(c, [old_rel])

    def _prepare_moves(self, rows: list[tuple[int, str]], dst_person: str) -> list[tuple[int, str, str]]:
        """Hard-link (or copy) crops into ``dst_person``'s folder; returns (id, old, new) rel paths."""
        taken: set[str] = set()
        plan = []
        for sid, old_rel in rows:
            old = self._abs(old_rel)
            new = self._unique_crop_path(dst_person, old.stem, taken)
            taken.add(self._rel(new))
            plan.append((int(sid), old_rel, self._rel(new)))
        self._stage([n for _, _, n in plan])
        for _, old_rel, new_rel in plan:
            src, dst = self._abs(old_rel), self._abs(new_rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not src.exists():
                log.warning("crop %s is missing on disk; the sample keeps its record", src)
                continue
            tmp = dst.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}.png")
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        return plan

    def rename_person(self, old: str, new: str) -> None:
        """Rename a person (their crop folder moves with them).

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
        finally:
            self._cleanup_pending()

    def merge_people(self, src: str, dst: str) -> None:
        """Move every sample of ``src`` into ``dst`` (created if needed) and remove ``src``."""
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
        finally:
            self._cleanup_pending()

    def move_sample(self, sample_id: int, person: str) -> None:
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
        finally:
            self._cleanup_pending()

    def delete_person(self, name: str) -> int:
        """Remove a person with every sample, crop file and embedding; returns the sample count."""
        n = validate_name(name)
        try:
            with self._write(bump=True) as c:
                pid = self._person_id(c, n, create=False)
                rows = c.execute("SELECT crop_path FROM samples WHERE person_id=?", (pid,)).fetchall()
                self._touch(c.execute("SELECT id FROM samples WHERE person_id=?", (pid,)).fetchall())
                self._queue(c, rows)
                c.execute("DELETE FROM people WHERE id=?", (pid,))  # cascades to samples, embeddings
        finally:
            self._cleanup_pending()
        folder = self.data_dir / CROPS_DIR / n
        try:
            folder.rmdir()
        except OSError:
            pass
        return len(rows)

    def delete_sample(self, sample_id: int) -> None:
        """Remove one sample, its crop file and its embeddings (the person stays)."""
        try:
            with self._write(bump=True) as c:
                row = c.execute("SELECT crop_path FROM samples WHERE id=?", (int(sample_id),)).fetchone()
                if row is None:
                    raise GalleryError(f"no sample with id {sample_id}")
                self._queue(c, [row])
                self._touch([sample_id])
                c.execute("DELETE FROM samples WHERE id=?", (int(sample_id),))
        finally:
            self._cleanup_pending()

    def forget_samples(self, sample_ids: list[int]) -> int:
        """Drop sample records whose crop files are gone (``facerec embed --prune``)."""
        with self._write(bump=True) as c:
            self._touch(sample_ids)
            return sum(c.execute("DELETE FROM samples WHERE id=?", (int(s),)).rowcount for s in sample_ids)

    def clear(self) -> None:
        """Remove everyone: every person, sample, crop file and embedding."""
        try:
            with self._write(bump=True) as c:
                self._tx_full = True
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

    # ------------------------------------------------------------------ archives

    def export_archive(self, path: str | os.PathLike) -> None:
        """Write the gallery to one archive: a consistent database snapshot plus the crops.

        The format follows the suffix: ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``. The
        snapshot is taken with SQLite's online backup API, so a daemon may keep running.
        """
        out = Path(path).expanduser().absolute()
        name = out.name.lower()
        if not (name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))):
            raise GalleryError(f"{out}: the archive name must end in .zip, .tar, .tar.gz or .tgz")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="facerec-export-") as tmpdir:
            snap = Path(tmpdir) / DB_NAME
            dest = sqlite3.connect(str(snap))
            with self._lock:
                self._conn.backup(dest)
            rows = dest.execute("SELECT crop_path FROM samples ORDER BY id").fetchall()
            counts = dest.execute("SELECT (SELECT count(*) FROM people), (SELECT count(*) FROM samples)").fetchone()
            dest.execute("DELETE FROM pending_files")
            dest.commit()
            dest.execute("PRAGMA journal_mode=DELETE")
            dest.close()
            manifest = json.dumps({"format": "facerec-gallery", "schema": SCHEMA_VERSION, "people": counts[0],
                                   "samples": counts[1], "exported": time.time()}, indent=2).encode()
            tmp_out = out.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{out.name}")
            try:
                if name.endswith(".zip"):
                    with zipfile.ZipFile(tmp_out, "w", zipfile.ZIP_STORED) as z:
                        z.writestr("manifest.json", manifest)
                        z.write(snap, DB_NAME)
                        for (rel,) in rows:
                            if self._abs(rel).is_file():
                                z.write(self._abs(rel), rel)
                else:
                    gz = name.endswith((".gz", ".tgz"))
                    with (tarfile.open(tmp_out, "w:gz") if gz else tarfile.open(tmp_out, "w")) as t:
                        info = tarfile.TarInfo("manifest.json")
                        info.size = len(manifest)
                        info.mtime = int(time.time())
                        t.addfile(info, io.BytesIO(manifest))
                        t.add(snap, DB_NAME)
                        for (rel,) in rows:
                            if self._abs(rel).is_file():
                                t.add(self._abs(rel), rel)
                os.replace(tmp_out, out)
            finally:
                tmp_out.unlink(missing_ok=True)

    def import_archive(self, path: str | os.PathLike) -> int:
        """Merge an archive written by :meth:`export_archive` into this gallery.

        People that exist in both galleries receive the archive's samples; a sample whose
        source hash is already enrolled under the same person is skipped. Embeddings come
        along for every embedder key in the archive.

        Returns:
            The number of samples added.

        Raises:
            GalleryError: not a gallery archive, or a conflict: the same source photo is
                enrolled under different people here and in the archive (nothing is
                imported then; resolve it with ``enroll move``/``rename`` first).
        """
        src = Path(path).expanduser()
        if not src.is_file():
            raise GalleryError(f"{src}: no such archive")
        with tempfile.TemporaryDirectory(prefix="facerec-import-") as tmpdir:
            reader = _ArchiveReader(src)
            try:
                snap = Path(tmpdir) / DB_NAME
                snap.write_bytes(reader.read(DB_NAME))
                try:
                    other = sqlite3.connect(f"{snap.as_uri()}?mode=ro", uri=True)
                    people = other.execute("SELECT id, name FROM people").fetchall()
                    samples = other.execute(
                        "SELECT s.id, p.name, s.source_path, s.sha256, s.crop_path, s.quality FROM samples s "
                        "JOIN people p ON p.id = s.person_id ORDER BY s.id"
                    ).fetchall()
                    embs = other.execute("SELECT sample_id, embedder, dim, vector, norm FROM embeddings").fetchall()
                    other.close()
                except sqlite3.DatabaseError as e:
                    raise GalleryError(f"{src}: the archive's {DB_NAME} is not a facerec gallery ({e})") from None
                for _, pname in people:
                    validate_name(pname)
                conflicts, todo = [], []
                for row in samples:
                    here = self.find_sha256(row[3])
                    if any(h.person != row[1] for h in here):
                        conflicts.append(f"{row[4]} ({row[1]} in the archive, {', '.join(sorted({h.person for h in here}))} here)")
                    elif not here:
                        todo.append(row)
                if conflicts:
                    raise GalleryError(
                        f"{src}: {len(conflicts)} sample(s) are enrolled under another person here; nothing imported:\n  "
                        + "\n  ".join(conflicts[:20])
                    )
                crops = {}
                for row in todo:
                    rel = PurePosixPath(row[4])
                    if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != CROPS_DIR:
                        raise GalleryError(f"{src}: refusing the archive member path {row[4]!r}")
                    data = reader.read(row[4])
                    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
                        raise GalleryError(f"{src}: {row[4]} is not a readable image")
                    crops[row[0]] = data
            finally:
                reader.close()
        by_sample: dict[int, list[tuple]] = {}
        for erow in embs:
            by_sample.setdefault(int(erow[0]), []).append(erow)
        # pick file names and write the crops before the transaction that references them
        taken: set[str] = set()
        plan = []
        for row in todo:
            dst = self._unique_crop_path(row[1], PurePosixPath(row[4]).stem, taken)
            taken.add(self._rel(dst))
            plan.append((row, dst))
        self._stage([self._rel(d) for _, d in plan])
        try:
            for row, dst in plan:
                write_atomic(dst, crops[row[0]])
            with self._write(bump=True) as c:
                now = time.time()
                for (oid, pname, srcp, sha, _, q), dst in plan:
                    pid = self._person_id(c, pname, create=True)
                    c.execute(
                        "INSERT INTO samples(person_id, source_path, sha256, crop_path, crop_sha256, quality, added) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (pid, srcp, sha, self._rel(dst), sha256_bytes(crops[oid]), q, now),
                    )
                    sid = _rowid(c)
                    self._touch([sid])
                    c.executemany(
                        "INSERT OR REPLACE INTO embeddings(sample_id, embedder, dim, vector, norm) VALUES (?,?,?,?,?)",
                        [(sid, e[1], e[2], e[3], e[4]) for e in by_sample.get(int(oid), [])],
                    )
                for _, pname in people:  # people without samples come along too
                    self._person_id(c, pname, create=True)
        finally:
            self._cleanup_pending()
        return len(plan)


class _ArchiveReader:
    """Reads named members of a zip or tar archive without extracting anything else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
            else:
                self._tar = tarfile.open(path)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise GalleryError(f"{path}: not a zip or tar archive ({e})") from None

    def read(self, member: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(member)
            tar = self._tar
            if tar is None:
                raise KeyError(member)
            info = tar.getmember(member)
            if not info.isfile():
                raise KeyError(member)
            f = tar.extractfile(info)
            return f.read() if f else b""
        except KeyError:
            raise GalleryError(f"{self.path}: the archive has no {member} (not a facerec gallery export?)") from None
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise GalleryError(f"{self.path}: cannot read {member} ({e})") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()
