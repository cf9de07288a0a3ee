"""The live daemon's in-memory gallery index, kept in step with the backend.

:class:`GalleryWatcher` loads the vectors of one embedder once and then applies changes
incrementally: it asks the backend's change feed which samples changed since its version,
fetches only those (see :mod:`facerec.gallery.backend`) and recomputes only the templates of
the people they belong to (:meth:`~facerec.gallery.search.GalleryIndex.with_people`).

All of that happens on the watcher's own thread: it waits on the backend's
:meth:`~facerec.gallery.backend.GalleryBackend.subscribe` (``LISTEN`` on PostgreSQL, so a
change made on any host is applied within milliseconds; a cheap ``data_version`` poll on
SQLite) and, as a safety net, checks the version every ``poll_s``. A camera's loop only
reads :attr:`GalleryWatcher.index`, a reference swapped in whole: it never touches the
database or builds an index.

When the database is away the daemon keeps recognising with the last loaded gallery: the
watcher says so once in the log and in :meth:`GalleryWatcher.status` (the ``--stats``
JSON), retries with a growing back-off (1 s doubling to 30 s), and on reconnection catches
up from the change feed (or reloads everything when the feed no longer reaches back).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerec.config import GalleryConfig
from facerec.errors import FacerecError
from facerec.gallery.backend import ChangeSubscription, GalleryBackend, GalleryMissing, open_backend

if TYPE_CHECKING:
    from facerec.gallery.search import GalleryIndex

log = logging.getLogger(__name__)

#: Back-off between reconnection attempts, seconds: first and largest.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0


class GalleryWatcher:
    """The current gallery index for one embedder, updated as the gallery changes.

    The backend is opened read-only. When no gallery exists yet, everyone is unknown and
    the watcher tries again every ``poll_s``, so the first enrollment is picked up too.

    Args:
        data_dir: the gallery root (``gallery.data_dir``; where a SQLite gallery lives).
        key: the embedder's vector space; only its vectors are searched.
        gallery_cfg: the ``gallery:`` section (backend, DSN, template, index kind).
        poll_s: seconds between two version checks when nothing was announced (a safety
            net under the subscription), and between two attempts to open a gallery that
            does not exist yet.
        store: an already open backend to use instead of opening the configured one.
        listen: apply changes on the watcher's own thread as soon as they commit; False
            leaves it to the caller's :meth:`poll` (tests, benchmarks).

    Attributes:
        reloads: times the index changed after the first load.
        full_reloads: of those, how many needed every vector (feed too short, ``clear``).
        online: False while the database cannot be reached.
        applied_at: ``time.time()`` of the last index change (latency measurements).
    """

    def __init__(self, data_dir: str | Path | None, key, gallery_cfg: GalleryConfig | None = None,
                 poll_s: float = 1.0, store=None, *, listen: bool = True) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.key = key
        self.cfg = gallery_cfg or GalleryConfig()
        self.poll_s = float(poll_s)
        self.reloads = 0
        self.full_reloads = 0
        self.online = True
        self.offline_since: float | None = None
        self.last_error = ""
        self.applied_at = 0.0
        self._store = store
        self._own_store = store is None
        self._version: int | None = None
        self._index: Any = None  # a GalleryIndex once loaded
        self._neg_version = 0
        self._ids = np.zeros((0,), np.int64)
        self._names: list[str] = []
        self._vec = np.zeros((0, 0), np.float32)
        self._quality = np.zeros((0,), np.float32)
        self._next_poll = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll(force=True)
        if listen:
            self._thread = threading.Thread(target=self._listen, name="gallery-watch", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ backend

    def _open(self) -> GalleryBackend | None:
        """The backend, opened read-only on first use; ``None`` while no gallery exists."""
        if self._store is None:
            cfg = self.cfg if self.data_dir is None else self.cfg.model_copy(update={"data_dir": str(self.data_dir)})
            try:
                self._store = open_backend(cfg, readonly=True)
            except GalleryMissing:
                return None
        return self._store

    def _drop_store(self) -> None:
        if self._own_store and self._store is not None:
            try:
                self._store.close()
            except Exception:
                pass
            self._store = None

    # ------------------------------------------------------------------ applying changes

    def _rebuild(self) -> None:
        from facerec.gallery.search import GalleryIndex

        c = self.cfg
        index = GalleryIndex(self._names, self._vec, self._quality, c.template, c.index, c.index_min_size, key=self.key)
        index.sample_ids = self._ids
        self._neg_version = self._load_negatives(index)
        self._index = index

    def _patch(self, touched: set[str]) -> None:
        """Recompute only the ``touched`` people's templates (the rest of the index is kept)."""
        if not touched:
            index = copy.copy(self._index)
        else:
            mine = [i for i, n in enumerate(self._names) if n in touched]
            index = self._index.with_people(touched, [self._names[i] for i in mine], self._vec[mine],
                                            self._quality[mine], len(self._ids))
        index.sample_ids = self._ids
        self._index = index

    def _load_negatives(self, index: GalleryIndex) -> int:
        """Give ``index`` the "not X" samples of this embedder; returns their version."""
        store = self._open()
        if store is None:
            return 0
        try:
            version = store.negatives_version()
            names, vec = store.negatives(str(self.key))
        except FacerecError as e:  # feedback unreadable: recognise without it
            log.warning("negative samples not loaded: %s", e)
            return self._neg_version
        if names:
            index.set_negatives(names, vec)
        return version

    def _negatives_changed(self) -> bool:
        """Rebuild the index when "not X" samples were added or removed; True if so."""
        store = self._open()
        if self._index is None or store is None:
            return False
        if store.negatives_version() == self._neg_version:
            return False
        index = copy.copy(self._index)  # the templates did not change, only the "not X" samples
        index._negatives = {}
        self._neg_version = self._load_negatives(index)
        self._index = index
        self.reloads += 1
        return True

    def _refresh(self) -> bool:
        """Bring the index up to the backend's version; True when it changed. Raises on outage."""
        with self._lock:
            store = self._open()
            if store is None:
                return False
            full = self._version is None
            if self._version is not None:
                ch = store.changes_since(self._version)
                if ch.version == self._version:
                    return self._negatives_changed()
                full = ch.full
            if full:
                version = store.version()
                ids, names, vec, quality = store.vectors(self.key)
                self._ids, self._names, self._vec, self._quality = ids, list(names), vec, quality
                if self._version is not None:
                    self.full_reloads += 1
            else:
                version = ch.version
                changed = np.fromiter(ch.sample_ids, np.int64, len(ch.sample_ids))
                ids, names, vec, quality = store.vectors(self.key, changed.tolist()) if len(changed) else (
                    np.zeros((0,), np.int64), [], np.zeros((0, 0), np.float32), np.zeros((0,), np.float32))
                keep = ~np.isin(self._ids, changed)
                kept_all = bool(keep.all())  # a new sample removes nothing: no copies for keep
                touched = {self._names[i] for i in np.flatnonzero(~keep).tolist()} | set(names)
                old_names = self._names if kept_all else [n for n, k in zip(self._names, keep) if k]
                if len(ids):
                    d = vec.shape[1]
                    old_vec = self._vec if kept_all else self._vec[keep]
                    if old_vec.shape[1] != d:
                        old_vec = np.zeros((0, d), np.float32)
                    self._vec = np.concatenate([old_vec, vec]) if len(old_vec) else vec
                else:
                    self._vec = self._vec[keep]
                self._ids = np.concatenate([self._ids[keep], ids])
                self._names = old_names + list(names)
                self._quality = np.concatenate([self._quality[keep], quality])
            first = self._index is None
            self._version = version
            if full or first or self._index.dim not in (0, self._vec.shape[1]):
                self._rebuild()
            else:
                self._patch(touched)
            self.applied_at = time.time()
            if not first:
                self.reloads += 1
            log.info("gallery %s: %d people (version %d)", "loaded" if first else "updated", len(self._index), version)
            return True

    def _attempt(self) -> bool:
        """One refresh with outage handling: logs once when the database goes and comes back."""
        try:
            changed = self._refresh()
        except Exception as e:  # an outage, a gallery being rewritten or a driver error must not stop the camera
            self._went_offline(e)
            return False
        if not self.online:
            log.warning("gallery database reachable again after %.0f s; caught up to version %s",
                        time.time() - (self.offline_since or time.time()), self._version)
            self.online, self.offline_since, self.last_error = True, None, ""
        self._backoff = BACKOFF_FIRST_S
        return changed

    def _went_offline(self, e: BaseException) -> None:
        self.last_error = str(e)
        self._drop_store()  # reopened on the next attempt
        if self.online:
            have = f"{len(self._index)} people, version {self._version}" if self._index is not None else "no gallery yet"
            log.warning("gallery unavailable, recognising with the last loaded gallery (%s); retrying with back-off: %s",
                        have, e)
            self.online, self.offline_since = False, time.time()
        self._next_poll = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _listen(self) -> None:
        """The watcher's thread: wait for a commit (or ``poll_s``), apply it; after a lost
        connection, reconnect with back-off and catch up from the change feed."""
        sub: ChangeSubscription | None = None
        while not self._stop.is_set():
            try:
                if sub is None:
                    with self._lock:
                        store = self._open()
                    if store is None:  # no gallery yet
                        self._stop.wait(self.poll_s)
                        self._attempt()
                        continue
                    sub = store.subscribe()
                    self._attempt()  # catch up with what was missed while not listening
                else:
                    sub.wait(max(min(self.poll_s, 1.0), 0.01))
                    if not self._stop.is_set():
                        self._attempt()
            except Exception as e:  # opening, subscribing or waiting failed (_attempt reports its own)
                self._went_offline(e)
            if not self.online:  # back off, then reopen, subscribe and catch up from the change feed
                if sub is not None:
                    sub.close()
                    sub = None
                self._stop.wait(self._backoff)
        if sub is not None:
            sub.close()

    # ------------------------------------------------------------------ public

    def poll(self, force: bool = False) -> bool:
        """Apply changes if the gallery changed; at most once per ``poll_s``. True if updated.

        With the watcher's own thread (``listen``) this does nothing unless ``force``d: the
        thread applies changes and reconnects, so a camera loop never waits on the database.
        """
        if self._thread is not None and not force:
            return False
        now = time.monotonic()
        if not force and now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        return self._attempt()

    @property
    def index(self) -> GalleryIndex | None:
        """The current :class:`~facerec.gallery.search.GalleryIndex`, or ``None`` (no
        gallery yet). Reads no database: the watcher's thread keeps it current."""
        if self._thread is None:
            self.poll()
        return self._index

    @property
    def version(self) -> int | None:
        """The gallery version the index reflects (``None`` before the first load)."""
        return self._version

    def status(self) -> dict:
        """For the stats JSON: reachability, version, people and update counts."""
        out: dict[str, Any] = {"backend": self.cfg.backend, "online": self.online, "version": self._version,
               "people": len(self._index) if self._index is not None else 0,
               "samples": int(len(self._ids)), "updates": self.reloads, "full_reloads": self.full_reloads}
        if not self.online:
            out["offline_s"] = round(time.time() - (self.offline_since or time.time()), 1)
            out["error"] = self.last_error
        elif not out["samples"]:
            warning = self.warning()
            if warning:
                out["warning"] = warning
        return out

    def warning(self) -> str | None:
        """Why nobody can be named (empty gallery, or no vectors of this embedder) and the
        fix, or ``None`` (:func:`~facerec.gallery.readiness.gallery_warning`)."""
        from facerec.gallery.readiness import gallery_warning

        with self._lock:
            try:
                store = self._open()
                return gallery_warning(store, self.key, store.label if store is not None else str(self.data_dir))
            except Exception:  # the database is away: status() says that instead
                return None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop_store()
