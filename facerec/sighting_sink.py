"""The daemon's side of unknown people: each unknown track becomes a stored sighting.

:class:`SightingSink` is a frame sink (:mod:`facerec.sinks`) that writes, off the camera's
thread, what :mod:`facerec.unknowns` later groups into candidate people.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from facerec.queued import QueuedWorker
from facerec.sinks import FrameSinkBase
from facerec.types import TrackRecord

log = logging.getLogger(__name__)



def sighting_vector(vectors: np.ndarray) -> np.ndarray:
    """One unit vector for a track: the renormalised mean of its best faces' vectors."""
    m = np.asarray(vectors, np.float32).reshape(len(vectors), -1).mean(0)
    n = float(np.linalg.norm(m))
    return m / n if n > 0 else m


def encode_jpeg(crop: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 BGR crop (the kept sighting crops)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a crop of shape {crop.shape} as JPEG")
    return buf.tobytes()


class SightingSink(FrameSinkBase):
    """Stores the unknown tracks the live loop reports as ended, off the camera thread.

    A frame sink: :func:`facerec.live.run_live` hands it every track that ended
    (:meth:`tracks_ended`) and, after each frame, the tracks still in view
    (:meth:`tracks_in_view`). Each track that was decided *unknown* and kept faces (``LivePipeline(keep_crops=True)``)
    becomes one sighting: its best ``crops_per_sighting`` crops, camera, times and track
    id. The writes happen on a worker thread behind a bounded queue (a slow database never
    stalls the camera; overflow drops the oldest and is counted), and retention is applied
    after each write at most once a minute.

    Args:
        store: the gallery backend (:class:`~facerec.gallery.backend.GalleryBackend`) keeping the sightings.
        cfg: the ``unknowns:`` section.
        camera: camera name stored with each sighting.
        embedder: key string of the vectors.
        queue_size: sightings waiting to be written.
    """

    PRUNE_EVERY_S = 60.0
    #: Seconds an unknown track must have been in view before it is saved while still there.
    SAVE_AFTER_S = 3.0
    #: Seconds between updates of the sighting of a track still in view.
    UPDATE_EVERY_S = 10.0

    def __init__(self, store, cfg, camera: str, embedder: str, queue_size: int = 256) -> None:
        self.store = store
        self.cfg = cfg
        self.camera = camera
        self.embedder = embedder
        self.saved = 0
        self.failed = 0
        self.pruned = 0
        self._last_prune = 0.0
        self._live: dict[int, float] = {}  # track id -> wall time its sighting was last queued
        self._sids: dict[int, int] = {}  # track id -> sighting id (worker thread only)
        self._worker = QueuedWorker(self._write, queue_size, f"sightings:{camera}")

    @property
    def dropped(self) -> int:
        """Sightings thrown away because the queue was full."""
        return self._worker.dropped

    def _item(self, st: TrackRecord, now: float, final: bool) -> tuple:
        best = st.best_faces[: self.cfg.crops_per_sighting]
        return (st.track_id, now - max(0.0, st.last_t - st.first_t), now, [(q, c) for q, c, _ in best],
                sighting_vector(np.stack([v for _, _, v in best])), final)

    @staticmethod
    def _unknown(st: TrackRecord) -> bool:
        return bool(st.unknown and st.best_faces)

    def on_frame(self, result, image: np.ndarray | None) -> bool:
        if result.left:
            self.tracks_ended(result.left)
        if result.in_view:
            self.tracks_in_view(result.in_view)
        return True

    def on_ended(self, ended: Sequence[TrackRecord], t: float) -> None:
        if ended:
            self.tracks_ended(ended)

    def tracks_ended(self, tracks: Iterable[TrackRecord]) -> None:
        """Queue the unknown tracks among ``tracks`` (never blocks); a track already saved
        while in view gets its sighting updated instead of a second one."""
        now = time.time()
        for st in tracks:
            was_live = self._live.pop(st.track_id, None) is not None
            if not self._unknown(st):
                if was_live:  # named after all: its sighting stays as last saved
                    self._worker.put(("forget", st.track_id))
                continue
            self._worker.put(self._item(st, now, True))

    def tracks_in_view(self, tracks: Iterable[TrackRecord]) -> None:
        """Save unknown tracks still in view: once they have been seen for
        :attr:`SAVE_AFTER_S`, then every :attr:`UPDATE_EVERY_S` (never blocks), so a
        stranger standing in front of a camera appears without leaving first."""
        now = time.time()
        for st in tracks:
            if not self._unknown(st) or st.last_t - st.first_t < self.SAVE_AFTER_S:
                continue
            last = self._live.get(st.track_id)
            if last is not None and now - last < self.UPDATE_EVERY_S:
                continue
            self._live[st.track_id] = now
            self._worker.put(self._item(st, now, False))

    def _write(self, item: tuple) -> None:
        """Store one queued sighting (on the worker thread)."""
        if item[0] == "forget":
            self._sids.pop(item[1], None)
            return
        track_id, first, last, faces, vec, final = item
        try:
            crops = [(encode_jpeg(c), q) for q, c in faces]
            sid = self._sids.pop(track_id, None) if final else self._sids.get(track_id)
            if sid is not None:
                # gone meanwhile (named or dismissed on the page): not brought back
                self.store.update_sighting(sid, last, vec, crops)
            else:
                sid = self.store.add_sighting(self.camera, track_id, first, last, self.embedder, vec, crops)
                self.saved += 1
                if not final:
                    self._sids[track_id] = sid
            if time.monotonic() - self._last_prune > self.PRUNE_EVERY_S:
                self.prune()
        except Exception as e:  # a lost database must not end the camera
            self.failed += 1
            log.warning("unknown sighting of track %s not stored: %s", track_id, e)

    def prune(self) -> list[int]:
        """Apply ``unknowns`` retention now; returns the deleted sighting ids."""
        self._last_prune = time.monotonic()
        c = self.cfg
        gone = self.store.prune_sightings(c.retention_s, c.max_sightings, int(c.max_mb * 1e6))
        self.pruned += len(gone)
        return gone

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued sighting is written (or ``timeout`` s passed)."""
        self._worker.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (at most ``timeout`` s), then stop the worker."""
        self._worker.close(timeout)
