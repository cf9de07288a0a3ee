"""A SQLite gallery's crop files: where they go and how a crash never loses or strands one.

Aligned crops are PNG files under ``data_dir/preprocessed/<Person>/`` that samples point to
(paths relative to ``data_dir``, POSIX separators, so a gallery folder can be moved). The
rules, so that a crash at any moment leaves the previous gallery intact:

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

:class:`CropFiles` is mixed into :class:`~facerec.gallery.store.GalleryStore`, which
provides the transactions.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any

from facerec.gallery.records import validate_name

log = logging.getLogger(__name__)

CROPS_DIR = "preprocessed"
_TMP_PREFIX = ".tmp-"
#: Pending-file rows older than this are cleaned even if their owner looks alive (pid reuse).
_STALE_PENDING_S = 24 * 3600.0
#: Tokens of the store instances open in this process (see ``pending_files``).
_LIVE_TOKENS: set[str] = set()


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


class CropFiles:
    """Crop paths, staging and cleanup of a SQLite gallery (see the module doc)."""

    data_dir: Path
    readonly: bool
    _token: str

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _write(self, bump: bool = False) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def _touch(self, ids: Any) -> None:
        raise NotImplementedError

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
