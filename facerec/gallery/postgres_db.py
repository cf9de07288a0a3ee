"""Reaching the PostgreSQL gallery database, and its schema migrations.

Tables (see :data:`MIGRATIONS`): ``people``, ``samples`` (with the aligned crop as PNG
bytes, so any host can re-embed after a model change), ``embeddings`` (one ``real[]``
vector per sample and embedder key), ``facerec_meta`` (the version counter), ``changes``
(the change feed: the sample ids each version touched), and since migration 2
``unknown_sightings``, ``unknown_crops``, ``negatives`` and the append-only ``audit_log``.
Hosts starting at once serialise migrations on an advisory lock.
"""

from __future__ import annotations

import logging
import time

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryUnavailable

log = logging.getLogger(__name__)

#: Seconds to wait for a connection before reporting the database unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Key of the advisory lock that serialises migrations between hosts starting at once.
_MIGRATION_LOCK = 0x66616365

#: Schema migrations, applied in order; each runs in one transaction.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE facerec_meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO facerec_meta(id, version) VALUES (1, 0);
CREATE TABLE people (
    id      BIGSERIAL PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE samples (
    id          BIGSERIAL PRIMARY KEY,
    person_id   BIGINT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source_path TEXT,
    sha256      TEXT NOT NULL,
    crop_name   TEXT NOT NULL,
    crop        BYTEA NOT NULL,
    crop_sha256 TEXT NOT NULL,
    quality     DOUBLE PRECISION NOT NULL,
    added       DOUBLE PRECISION NOT NULL
);
CREATE INDEX samples_person ON samples(person_id);
CREATE INDEX samples_sha256 ON samples(sha256);
CREATE TABLE embeddings (
    sample_id BIGINT NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    embedder  TEXT NOT NULL,
    dim       INTEGER NOT NULL,
    vector    REAL[] NOT NULL CHECK (cardinality(vector) = dim),
    norm      REAL NOT NULL,
    PRIMARY KEY (sample_id, embedder)
);
CREATE INDEX embeddings_embedder ON embeddings(embedder);
CREATE TABLE changes (
    version    BIGINT PRIMARY KEY,
    sample_ids BIGINT[],
    at         DOUBLE PRECISION NOT NULL
);
"""),
]
# 2: sightings, negatives and the audit log (created on first use by earlier releases, hence
# IF NOT EXISTS: an existing database keeps its rows).
MIGRATIONS.append((2, """
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
"""))
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _psycopg():
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise GalleryError("gallery.backend postgres needs psycopg 3: pip install 'facerec[postgres]'") from None
    return psycopg, psycopg_pool


def _where(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
        return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', '')}"
    except Exception:
        return "the configured server"


def unavailable(dsn: str, e: BaseException) -> GalleryUnavailable:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return GalleryUnavailable(
        f"the gallery database at {_where(dsn)} cannot be reached ({first}); nothing was changed. "
        "Start the server or fix gallery.dsn / FACEREC_DB_DSN, then retry")


def schema_version(conn) -> int:
    """The applied migration (0 for an empty database)."""
    row = conn.execute("SELECT to_regclass('facerec_schema')").fetchone()
    if row[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM facerec_schema").fetchone()
    return int(row[0] or 0)


def upgrade(dsn: str) -> tuple[int, int]:
    """Apply pending migrations (``facerec db upgrade``); returns ``(before, after)``.

    Hosts starting at once serialise on an advisory lock; each migration is one transaction.

    Raises:
        GalleryUnavailable: the server cannot be reached.
        GalleryError: the database was migrated by a newer facerec.
    """
    psycopg, _ = _psycopg()
    try:
        with psycopg.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS facerec_schema (version INTEGER PRIMARY KEY, "
                             "applied DOUBLE PRECISION NOT NULL)")
                before = schema_version(conn)
                if before > SCHEMA_VERSION:
                    raise GalleryError(f"the gallery database at {_where(dsn)} has schema {before}, newer than this "
                                       f"facerec's {SCHEMA_VERSION}; upgrade facerec")
                for version, sql in MIGRATIONS:
                    if version > before:
                        conn.execute(sql)
                        conn.execute("INSERT INTO facerec_schema(version, applied) VALUES (%s, %s)", (version, time.time()))
                        log.info("gallery database %s: applied migration %d", _where(dsn), version)
            return before, SCHEMA_VERSION
    except psycopg.OperationalError as e:
        raise unavailable(dsn, e) from None
