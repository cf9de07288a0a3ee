"""Face tracks: stable ids across frames, and a stable name per track.

Tracking is what makes recognition real-time on a CPU: a face is embedded when its track
is new, when it becomes clearly better (bigger and sharper-scored), or every few frames,
instead of on every frame; its name is a vote over its recent matches, so one bad frame
(a blink, a turned head) neither flips the name nor costs an embedding.

The association itself is ByteTrack as implemented by Roboflow's maintained ``trackers``
package (:class:`trackers.ByteTrackTracker`: Kalman-predicted boxes, two-stage IoU
matching of high- then low-score detections, lost tracks kept for a while). Our
detections carry five landmarks the tracker knows nothing about, so each box goes in with
its row index and the tracker's output is mapped back to that row.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from facerec.config import TrackingConfig
from facerec.errors import FacerecError
from facerec.types import Detections

#: Added to a vote's distance from the threshold so a borderline vote still counts a little.
MARGIN_FLOOR = 0.05


def face_quality(xyxy: np.ndarray, score: np.ndarray | float) -> np.ndarray:
    """Quality of detected faces for re-embedding decisions: box area (px^2) x score."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    wh = np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None)
    return wh[:, 0] * wh[:, 1] * np.asarray(score, np.float32).reshape(-1)


@dataclass(frozen=True)
class TrackAssignment:
    """Which detection rows belong to which confirmed track in one frame.

    Attributes:
        track_ids: ``(m,)`` int track ids.
        det_index: ``(m,)`` int rows of the frame's :class:`~facerec.types.Detections`.
        alive: ids of every track the tracker still remembers (including ones not seen
            in this frame but kept for ``track_buffer`` frames).
    """

    track_ids: np.ndarray
    det_index: np.ndarray
    alive: frozenset[int]

    def __len__(self) -> int:
        return len(self.track_ids)


class FaceTracker:
    """ByteTrack over face detections, keeping the detection rows (and so the landmarks).

    Args:
        cfg: the ``tracking:`` section.
        detect_every: the detector runs on every Nth frame; the tracker only sees those
            frames, so ``track_buffer`` (in frames of the source) is divided by N.

    Raises:
        FacerecError: the ``trackers`` package is not installed.
    """

    def __init__(self, cfg: TrackingConfig, detect_every: int = 1) -> None:
        try:
            import supervision as sv
            from trackers import ByteTrackTracker
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise FacerecError(
                f"the live loop needs the 'trackers' package (ByteTrack): pip install 'trackers>=2.6' ({e})"
            ) from None
        self._sv = sv
        self._bt = ByteTrackTracker(
            lost_track_buffer=cfg.track_buffer,
            # the tracker counts its buffer in 30 fps steps; one step per detector run
            frame_rate=30.0 / max(1, detect_every),
            track_activation_threshold=cfg.track_thresh,
            high_conf_det_threshold=cfg.track_thresh,
            minimum_iou_threshold=1.0 - cfg.match_thresh,
            minimum_consecutive_frames=cfg.min_hits,
        )

    def update(self, det: Detections) -> TrackAssignment:
        """Associate one frame's detections with tracks.

        Detections that do not (yet) belong to a confirmed track are left out: a new
        face gets its id once it has been seen ``min_hits`` times.
        """
        n = len(det)
        sv_det = self._sv.Detections(
            xyxy=det.xyxy.astype(np.float32),
            confidence=det.score.astype(np.float32),
            data={"det_index": np.arange(n, dtype=np.int64)},
        )
        out = self._bt.update(sv_det)
        ids = np.asarray(out.tracker_id if out.tracker_id is not None else [], np.int64).reshape(-1)
        rows = np.asarray(out.data.get("det_index", np.zeros(0, np.int64)), np.int64).reshape(-1) if len(out) else np.zeros(0, np.int64)
        keep = ids >= 0
        alive = frozenset(int(t.tracker_id) for t in self._bt.tracks if t.tracker_id >= 0)
        return TrackAssignment(ids[keep], rows[keep], alive)


@dataclass(frozen=True)
class Vote:
    """One recognition of a track: the gallery's decision for one embedding."""

    name: str | None
    similarity: float
    quality: float


class NameVote:
    """A track's name, decided by a weighted vote with hysteresis.

    Each vote weighs ``quality / best quality in the window`` times how far its
    similarity lies from the threshold (plus a small floor): a large, confident face
    whose match is well above (or well below) the threshold counts more than a small
    face that only just crossed it. The shares of the names (``None`` = unknown) over
    the last ``window`` votes are compared; the current name changes only when another
    leads it by ``switch_margin`` of the total weight, so a single outlier cannot make
    the label flicker.

    Args:
        threshold: the similarity at which the gallery accepts a match.
        window: votes kept (``tracking.vote_window``).
        switch_margin: share lead a new name needs (``tracking.switch_margin``).
    """

    def __init__(self, threshold: float, window: int = 10, switch_margin: float = 0.1) -> None:
        self.threshold = float(threshold)
        self.switch_margin = float(switch_margin)
        self.votes: deque[Vote] = deque(maxlen=max(1, window))
        self._name: str | None = None
        self._decided = False

    @property
    def decided(self) -> bool:
        """True once at least one vote was cast."""
        return self._decided

    @property
    def name(self) -> str | None:
        """The current name; ``None`` is unknown (or not yet decided)."""
        return self._name

    @property
    def similarity(self) -> float:
        """Similarity of the latest vote for the current name (best candidate when unknown)."""
        for v in reversed(self.votes):
            if v.name == self._name:
                return v.similarity
        return self.votes[-1].similarity if self.votes else 0.0

    def shares(self) -> dict[str | None, float]:
        """Each candidate name's share of the total vote weight (sums to 1)."""
        if not self.votes:
            return {}
        qmax = max(v.quality for v in self.votes)
        weights: dict[str | None, float] = {}
        for v in self.votes:
            q = v.quality / qmax if qmax > 0 else 1.0
            w = q * (MARGIN_FLOOR + abs(v.similarity - self.threshold))
            weights[v.name] = weights.get(v.name, 0.0) + w
        total = sum(weights.values())
        return {k: w / total for k, w in weights.items()} if total > 0 else {k: 1.0 / len(weights) for k in weights}

    def add(self, name: str | None, similarity: float, quality: float) -> str | None:
        """Cast a vote and return the (possibly unchanged) name."""
        self.votes.append(Vote(name, float(similarity), max(0.0, float(quality))))
        shares = self.shares()
        leader = max(shares, key=lambda k: shares[k])
        if not self._decided:
            self._name, self._decided = leader, True
        elif leader != self._name and shares[leader] - shares.get(self._name, 0.0) >= self.switch_margin:
            self._name = leader
        return self._name
