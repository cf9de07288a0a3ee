"""Unknown sightings, negative samples and the audit log: the part of a gallery backend that
is the same SQL on SQLite and PostgreSQL.

* A **sighting** is one unknown track: its camera, track id, first and last time seen, the
  mean unit vector of its best crops (what :mod:`facerec.unknowns` groups) and those
  crops themselves (JPEG, best face quality first).
* A **negative** is a face someone marked "not X": X's name, the face's vector (per
  embedder key) and its crop. The matcher refuses to name X a face that is closer to one
  of X's negatives than to X. Negatives have no age retention (they are deliberate
  feedback); they follow their person through a rename or merge and go with them.
* The **audit log** records every gallery change: what, when, through which interface
  (``cli``, ``api``, ``daemon``). The entry is written by the backend inside the
  transaction of the change it records (every changing method takes an
  :class:`~facerec.gallery.records.AuditNote`), so there is never a change without its
  entry or an entry without its change. It is append-only: the database refuses updates
  and deletes of its rows (a trigger).

:class:`FeedbackTables` holds these methods once; each backend mixes it in and provides
two primitives, :meth:`FeedbackTables._feedback_tx` (a write transaction that does not
bump the gallery version: a sighting is not a gallery change) and
:meth:`FeedbackTables._wrap` (its own cursor as a :class:`SqlCursor`). The tables
themselves are created by each backend's schema (``gallery.db`` for SQLite, a migration
for PostgreSQL).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.records import AuditEntry, AuditNote, Sighting


def vec_bytes(v: np.ndarray) -> bytes:
    """A vector as float32 bytes (how sightings and negatives store theirs)."""
    return np.ascontiguousarray(v, np.float32).reshape(-1).tobytes()


def bytes_vec(b: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(b), np.float32).copy()


class SqlCursor:
    """The few cursor calls the shared SQL needs, written with ``?`` placeholders.

    Args:
        cur: a DB-API cursor inside an open transaction.
        mark: the driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg).
    """

    def __init__(self, cur: Any, mark: str) -> None:
        self._c = cur
        self._pg = mark != "?"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        self._c.execute(self._sql(sql), params)
        return list(self._c.fetchall())

    def run(self, sql: str, params: tuple = ()) -> int:
        self._c.execute(self._sql(sql), params)
        return int(self._c.rowcount or 0)

    def insert(self, sql: str, params: tuple) -> int:
        """Insert one row; returns its id."""
        if self._pg:
            self._c.execute(self._sql(sql) + " RETURNING id", params)
            return int(self._c.fetchone()[0])
        self._c.execute(sql, params)
        return int(self._c.lastrowid)


def write_audit(c: SqlCursor, note: AuditNote | None, **extra: Any) -> None:
    """Append ``note`` (with ``extra`` detail the backend knows) inside the caller's transaction."""
    if note is None:
        return
    detail = {**note.detail, **extra}
    c.insert("INSERT INTO audit_log(at, interface, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
             (time.time(), note.interface, note.action, note.subject, json.dumps(detail, sort_keys=True, default=str)))


def move_negatives(c: SqlCursor, old: str, new: str) -> int:
    """Inside a transaction: give ``old``'s negatives to ``new`` (rename, merge). The rows are
    copied under new ids and the old ones deleted, so :meth:`FeedbackTables.negatives_version`
    changes. Returns how many moved."""
    if old == new:
        return 0
    c.run("INSERT INTO negatives(person, embedder, vector, jpeg, added) "
          "SELECT ?, embedder, vector, jpeg, added FROM negatives WHERE person = ? ORDER BY id", (new, old))
    return c.run("DELETE FROM negatives WHERE person = ?", (old,))


class FeedbackTables:
    """Sightings, negatives and the audit log over a backend's own transactions (see the module doc)."""

    # ------------------------------------------------------------------ what a backend provides
    def _feedback_tx(self) -> AbstractContextManager[SqlCursor]:
        """A write transaction that leaves the gallery version alone."""
        raise NotImplementedError

    def _feedback_read(self) -> AbstractContextManager[SqlCursor]:
        """A read (one consistent snapshot)."""
        raise NotImplementedError

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
        with self._feedback_tx() as c:
            sid = c.insert("INSERT INTO unknown_sightings(camera, track_id, first_seen, last_seen, added, embedder, "
                           "vector, quality, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (camera, int(track_id), float(first_seen), float(last_seen),
                            float(time.time() if added is None else added), embedder, vec_bytes(vector),
                            float(crops[0][1]), size))
            self._put_crops(c, sid, crops)
        return sid

    @staticmethod
    def _put_crops(c: SqlCursor, sighting_id: int, crops: list[tuple[bytes, float]]) -> None:
        for rank, (jpeg, q) in enumerate(crops):
            c.insert("INSERT INTO unknown_crops(sighting_id, rank, quality, jpeg) VALUES (?, ?, ?, ?)",
                     (int(sighting_id), rank, float(q), jpeg))

    def update_sighting(self, sighting_id: int, last_seen: float, vector: np.ndarray,
                        crops: list[tuple[bytes, float]]) -> bool:
        """Bring a sighting of a track still in view up to date: its last time, vector and
        best crops (replaced). Returns ``False`` when it no longer exists (named, dismissed
        or pruned meanwhile): nothing is written then."""
        if not crops:
            raise GalleryError("a sighting needs at least one crop")
        crops = sorted(crops, key=lambda c: -c[1])
        with self._feedback_tx() as c:
            n = c.run("UPDATE unknown_sightings SET last_seen = ?, vector = ?, quality = ?, bytes = ? WHERE id = ?",
                      (float(last_seen), vec_bytes(vector), float(crops[0][1]), sum(len(b) for b, _ in crops),
                       int(sighting_id)))
            if not n:
                return False
            c.run("DELETE FROM unknown_crops WHERE sighting_id = ?", (int(sighting_id),))
            self._put_crops(c, sighting_id, crops)
        return True

    def sightings(self, ids: list[int] | None = None, after: int = 0) -> list[Sighting]:
        """Kept sightings (all, the given ids, or those with id above ``after``), oldest first."""
        where, params = "WHERE s.id > ?", [int(after)]
        if ids is not None:
            if not ids:
                return []
            where += f" AND s.id IN ({', '.join('?' * len(ids))})"
            params += [int(i) for i in ids]
        with self._feedback_read() as c:
            rows = c.all(f"SELECT s.id, s.camera, s.track_id, s.first_seen, s.last_seen, s.added, s.embedder, "
                         f"s.quality, s.bytes FROM unknown_sightings s {where} ORDER BY s.id", tuple(params))
            crops = c.all(f"SELECT k.sighting_id, k.id FROM unknown_crops k JOIN unknown_sightings s "
                          f"ON s.id = k.sighting_id {where} ORDER BY k.sighting_id, k.rank", tuple(params))
        by: dict[int, list[int]] = {}
        for sid, cid in crops:
            by.setdefault(int(sid), []).append(int(cid))
        return [Sighting(int(r[0]), r[1], int(r[2]), float(r[3]), float(r[4]), float(r[5]), r[6], float(r[7]),
                         tuple(by.get(int(r[0]), ())), int(r[8])) for r in rows]

    def sighting_vectors(self, embedder: str, after: int = 0) -> tuple[list[int], np.ndarray]:
        """Ids and ``(n, d)`` vectors of the sightings embedded with ``embedder`` (id above ``after``)."""
        with self._feedback_read() as c:
            rows = c.all("SELECT id, vector FROM unknown_sightings WHERE embedder = ? AND id > ? ORDER BY id",
                         (embedder, int(after)))
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [int(r[0]) for r in rows], np.stack([bytes_vec(r[1]) for r in rows])

    def latest_embedder(self) -> str | None:
        """Embedder key string of the newest sighting (``None`` when there is none)."""
        with self._feedback_read() as c:
            rows = c.all("SELECT embedder FROM unknown_sightings ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None

    def sighting_ids(self) -> list[int]:
        with self._feedback_read() as c:
            return [int(r[0]) for r in c.all("SELECT id FROM unknown_sightings ORDER BY id")]

    def unknown_crop(self, crop_id: int) -> bytes:
        """JPEG bytes of one kept crop.

        Raises:
            GalleryError: no such crop (deleted, or never kept).
        """
        with self._feedback_read() as c:
            rows = c.all("SELECT jpeg FROM unknown_crops WHERE id = ?", (int(crop_id),))
        if not rows:
            raise GalleryError(f"no unknown crop {crop_id} (it was named, dismissed or expired)")
        return bytes(rows[0][0])

    def unknown_crops(self, sighting_ids: list[int], per_sighting: int | None = None
                      ) -> list[tuple[int, int, float, bytes]]:
        """``(sighting id, crop id, quality, jpeg)`` of these sightings, best first within each."""
        if not sighting_ids:
            return []
        with self._feedback_read() as c:
            rows = c.all(f"SELECT sighting_id, id, quality, jpeg, rank FROM unknown_crops WHERE sighting_id IN "
                         f"({', '.join('?' * len(sighting_ids))}) ORDER BY sighting_id, rank",
                         tuple(int(i) for i in sighting_ids))
        return [(int(r[0]), int(r[1]), float(r[2]), bytes(r[3])) for r in rows
                if per_sighting is None or int(r[4]) < per_sighting]

    def delete_sightings(self, ids: list[int], *, audit: AuditNote | None = None) -> int:
        """Delete sightings with their crops; returns how many existed. ``audit`` is written
        in the same transaction (naming, dismissing or pruning them)."""
        if not ids and audit is None:
            return 0
        with self._feedback_tx() as c:
            n = self._delete_sightings(c, ids)
            write_audit(c, audit)
        return n

    @staticmethod
    def _delete_sightings(c: SqlCursor, ids: list[int]) -> int:
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        c.run(f"DELETE FROM unknown_crops WHERE sighting_id IN ({marks})", tuple(int(i) for i in ids))
        return c.run(f"DELETE FROM unknown_sightings WHERE id IN ({marks})", tuple(int(i) for i in ids))

    def prune_sightings(self, retention_s: float, max_sightings: int, max_bytes: int, now: float | None = None,
                        *, audit: AuditNote | None = None) -> list[int]:
        """Apply retention: older than ``retention_s`` (0 = no age limit), beyond
        ``max_sightings``, or beyond ``max_bytes`` of crops go, the oldest first.

        Args:
            audit: written with the deletion (with ``sightings`` = the ids) when any went.

        Returns:
            The deleted sighting ids.
        """
        now = time.time() if now is None else now
        with self._feedback_tx() as c:
            rows = c.all("SELECT id, added, bytes FROM unknown_sightings ORDER BY added DESC, id DESC")
            doomed: list[int] = []
            total = 0
            for k, (sid, added, size) in enumerate(rows):
                total += int(size)
                if (retention_s and now - float(added) > retention_s) or k >= max_sightings or total > max_bytes:
                    doomed.append(int(sid))
            self._delete_sightings(c, doomed)
            if doomed:
                write_audit(c, audit, sightings=len(doomed))
        return sorted(doomed)

    def unknowns_stats(self) -> dict:
        """Counts of kept sightings, their crops and bytes, and negatives."""
        with self._feedback_read() as c:
            n, size = c.all("SELECT count(*), coalesce(sum(bytes), 0) FROM unknown_sightings")[0]
            crops = c.all("SELECT count(*) FROM unknown_crops")[0][0]
            neg = c.all("SELECT count(*) FROM negatives")[0][0]
        return {"sightings": int(n), "crops": int(crops), "bytes": int(size), "negatives": int(neg)}

    # ------------------------------------------------------------------ negatives
    def add_negative(self, person: str, embedder: str, vector: np.ndarray, jpeg: bytes | None = None,
                     *, audit: AuditNote | None = None) -> int:
        """Keep a face as "not ``person``"; returns its id (``audit`` gets it as ``negative``)."""
        with self._feedback_tx() as c:
            nid = c.insert("INSERT INTO negatives(person, embedder, vector, jpeg, added) VALUES (?, ?, ?, ?, ?)",
                           (person, embedder, vec_bytes(vector), jpeg, time.time()))
            write_audit(c, audit, negative=nid)
        return nid

    def negatives(self, embedder: str) -> tuple[list[str], np.ndarray]:
        """``(person of each row, (n, d) vectors)`` of the negatives for ``embedder``."""
        with self._feedback_read() as c:
            rows = c.all("SELECT person, vector FROM negatives WHERE embedder = ? ORDER BY id", (embedder,))
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([bytes_vec(r[1]) for r in rows])

    def negative_counts(self) -> dict[str, int]:
        with self._feedback_read() as c:
            return {r[0]: int(r[1]) for r in c.all("SELECT person, count(*) FROM negatives GROUP BY person")}

    def negatives_version(self) -> int:
        """A number that changes whenever a negative is added, removed or renamed (rows
        are never updated in place): one cheap query to decide whether to reload."""
        with self._feedback_read() as c:
            return int(c.all("SELECT coalesce(max(id), 0) * 1000003 + count(*) FROM negatives")[0][0])

    # ------------------------------------------------------------------ audit log
    def audit(self, note: AuditNote) -> None:
        """Append an entry that goes with no single change (the summary of a job made of many
        transactions, such as ``facerec embed``); every single change writes its own."""
        with self._feedback_tx() as c:
            write_audit(c, note)

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        with self._feedback_read() as c:
            rows = c.all("SELECT id, at, interface, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT ?",
                         (int(limit),))
        return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]
