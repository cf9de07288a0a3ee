"""The SQLite gallery's schema, its upgrades, and how a reader hears of commits.

Schema history (``meta.schema``): 1 the first; 2 the change feed (``changes``); 3 sample
ids never reused (``AUTOINCREMENT``); 4 sightings, negatives and the audit log moved in
from ``unknowns.db``, so a change and its audit entry share one transaction. Opening a
gallery for writing applies what is pending, each step in one transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

from facerec.errors import GalleryError

log = logging.getLogger(__name__)

DB_NAME = "gallery.db"
SCHEMA_VERSION = 4
#: The file that held sightings, negatives and the audit log before schema 4; its rows are
#: copied in once and the file is renamed ``unknowns.db.migrated`` (kept, never deleted).
OLD_FEEDBACK_DB = "unknowns.db"

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
"""
#: Triggers keep the audit log append-only (one statement each: the schema above is split on ';').
_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
#: Tables copied from ``unknowns.db`` (ids kept, so crop and sighting ids stay valid).
_FEEDBACK_TABLES = ("unknown_sightings", "unknown_crops", "negatives", "audit_log")


_EMPTY: sqlite3.Connection | None = None
_EMPTY_LOCK = threading.Lock()


def empty_feedback() -> sqlite3.Connection:
    """An in-memory database with the gallery tables and no rows, for a read-only
    reader of a gallery whose feedback tables do not exist yet (one per process)."""
    global _EMPTY
    with _EMPTY_LOCK:
        if _EMPTY is None:
            _EMPTY = sqlite3.connect(":memory:", check_same_thread=False)
            _EMPTY.executescript(_SCHEMA)
        return _EMPTY


class SqliteSchema:
    """Creates and upgrades a gallery file's tables (mixed into :class:`~facerec.gallery.store.GalleryStore`)."""

    data_dir: Path
    db_path: Path
    schema_upgrade: tuple[int, int]
    _lock: threading.RLock
    _conn: sqlite3.Connection

    def _write(self, bump: bool = False) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def _init_schema(self) -> None:
        self._migrate_sample_ids()
        with self._write() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            self.schema_upgrade = (int(row[0]) if row is not None else 0, SCHEMA_VERSION)
            if row is None:
                c.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '0')")
            elif int(row[0]) > SCHEMA_VERSION:
                raise GalleryError(
                    f"{self.db_path} was written by a newer facerec (schema {row[0]} > {SCHEMA_VERSION}); upgrade facerec"
                )
            elif int(row[0]) < SCHEMA_VERSION:  # 1 -> 2: the change feed table (created above); 2 -> 3: ids
                c.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
            for trigger in _TRIGGERS:
                c.execute(trigger)
        self._adopt_old_feedback()

    def _adopt_old_feedback(self) -> None:
        """Schema 4: copy sightings, negatives and the audit log from ``unknowns.db`` (where
        they were kept before) in one transaction, ids kept, then rename that file to
        ``unknowns.db.migrated``. Runs once: a gallery whose audit log is not empty is
        taken as adopted already, and the old file is only renamed."""
        old = self.data_dir / OLD_FEEDBACK_DB
        if not old.is_file():
            return
        with self._lock:
            try:
                self._conn.execute("ATTACH DATABASE ? AS old", (f"{old.as_uri()}?mode=ro",))
            except sqlite3.DatabaseError as e:
                log.warning("%s cannot be read (%s); its sightings, negatives and audit log stay there", old, e)
                return
            try:
                have = {r[0] for r in self._conn.execute("SELECT name FROM old.sqlite_master WHERE type='table'")}
                moved: dict[str, int] = {}
                with self._write() as c:
                    if not c.execute("SELECT 1 FROM main.audit_log LIMIT 1").fetchone():
                        for table in _FEEDBACK_TABLES:
                            if table in have:
                                moved[table] = c.execute(f"INSERT INTO main.{table} SELECT * FROM old.{table}").rowcount
            finally:
                self._conn.execute("DETACH DATABASE old")
        os.replace(old, old.with_name(OLD_FEEDBACK_DB + ".migrated"))
        for suffix in ("-wal", "-shm"):
            old.with_name(OLD_FEEDBACK_DB + suffix).unlink(missing_ok=True)
        log.info("moved %s into %s (%s); the old file is kept as %s.migrated", old, self.db_path,
                 ", ".join(f"{n} {t}" for t, n in moved.items()) or "its rows were moved before", OLD_FEEDBACK_DB)

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


class SqliteChanges:
    """Commits to a gallery file, for a watcher's own thread.

    SQLite has no notifications, so this polls ``PRAGMA data_version`` on a read-only
    connection of its own every ``interval_s``: the pragma reads no table and changes when
    any other connection (any process) commits. A commit that is not a gallery change (a
    sighting) wakes the watcher too; it then finds the version unchanged in one query.

    Args:
        db_path: the gallery file.
        interval_s: seconds between two checks.
    """

    def __init__(self, db_path: Path, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        try:
            self._conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
            self._seen = self._data_version()
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"cannot watch the gallery {db_path}: {e}") from None

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds for a commit; True when one came."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = self._data_version()
            except sqlite3.DatabaseError as e:
                raise GalleryError(f"cannot watch the gallery: {e}") from None
            if v != self._seen:
                self._seen = v
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.interval_s, left))

    def close(self) -> None:
        self._conn.close()
