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

A box tracker follows boxes, not people: when one person replaces another in the same
place (a door, a hard cut in a video, two faces crossing) it keeps the track. So the
identity inside a track is checked, not assumed: every embedding of a track is compared
with the track's own running template (:class:`IdentityTemplate`), and a clear drop ends
the track (the caller splits it; the new track must earn its name again). Scene cuts
(:class:`SceneCutDetector`), box jumps (:func:`box_jumped`), faces that touch another
face and tracks found again after a gap force such a check on the very frame.
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

    A name can also be required to rest on consistent evidence: with ``min_agree`` > 1
    a name (or "unknown") is taken only once at least ``min_agree`` votes in the window
    agree on it, or once one vote for it reaches ``strong`` similarity. Until then the
    track is undecided (shown as "?", no event), which is better than a wrong name.

    Args:
        threshold: the similarity at which the gallery accepts a match.
        window: votes kept (``tracking.vote_window``).
        switch_margin: share lead a new name needs (``tracking.switch_margin``).
        min_agree: agreeing votes a name needs (``tracking.min_agree``); 1 = the first vote.
        strong: similarity at which one vote is enough; ``None`` = never.
    """

    def __init__(self, threshold: float, window: int = 10, switch_margin: float = 0.1, min_agree: int = 1,
                 strong: float | None = None) -> None:
        self.threshold = float(threshold)
        self.switch_margin = float(switch_margin)
        self.min_agree = max(1, int(min_agree))
        self.strong = None if strong is None else float(strong)
        self.votes: deque[Vote] = deque(maxlen=max(1, window))
        self._name: str | None = None
        self._decided = False

    @property
    def decided(self) -> bool:
        """True once the evidence settled on a name or on unknown (see ``min_agree``)."""
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
            if self._settled(leader):
                self._name, self._decided = leader, True
        elif (leader != self._name and shares[leader] - shares.get(self._name, 0.0) >= self.switch_margin
              and self._settled(leader)):
            self._name = leader
        return self._name

    def _settled(self, name: str | None) -> bool:
        """Whether the votes in the window are consistent enough to show ``name``."""
        if self.min_agree <= 1:
            return True
        votes = [v for v in self.votes if v.name == name]
        if len(votes) >= self.min_agree:
            return True
        return name is not None and self.strong is not None and any(v.similarity >= self.strong for v in votes)


class IdentityTemplate:
    """A track's own running template: the exponential moving average of its unit embeddings.

    The template is compared with each new embedding of the track before that embedding
    votes. Embeddings of one person in one track stay close to it (cosine 0.70 or more
    for MobileFaceNet on the talking-head clips of the test data, frames 0.2 s apart,
    median 0.94); a different person lies far below (0.34 at most), whatever the gallery
    holds. So the check needs no gallery and also catches a stranger replacing a stranger.

    Args:
        alpha: weight of a new embedding in the average (``tracking.template_alpha``).
    """

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = float(alpha)
        self.vector: np.ndarray | None = None

    def similarity(self, vec: np.ndarray) -> float:
        """Cosine of ``vec`` (a unit vector) with the template; 1.0 while there is none."""
        if self.vector is None:
            return 1.0
        n = float(np.linalg.norm(self.vector))
        return float(np.dot(vec, self.vector) / n) if n > 0 else 1.0

    def update(self, vec: np.ndarray) -> None:
        """Fold ``vec`` (an embedding that passed the check) into the template."""
        vec = np.asarray(vec, np.float32).reshape(-1)
        self.vector = vec.copy() if self.vector is None else (1 - self.alpha) * self.vector + self.alpha * vec


class SceneCutDetector:
    """Flags a frame whose content changed abruptly from the previous one (a hard cut,
    a camera switch, a jump after many dropped frames).

    Each frame is shrunk to a 32x32 grey thumbnail (about 0.1 ms); a cut is a mean
    absolute difference to the previous thumbnail above ``threshold`` (a fraction of the
    full 0..255 range). Talking heads and small camera motion change little; what gets
    flagged costs one re-check of every face, so a false alarm is cheap and a missed cut
    is still caught by the template check at the next embedding. On the 17 talking-head
    clips of the test data, consecutive frames change by 0.078 at most (0.116 with four
    frames dropped in between) and hard cuts between two clips by 0.062 to 0.55 (median
    0.245, 99.3% above 0.08); ``bench/identity.py --cuts`` measures it.

    Args:
        threshold: ``tracking.cut_threshold``.
    """

    SIZE = 32

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self._prev: np.ndarray | None = None
        self.last_score = 0.0

    def score(self, image: np.ndarray) -> float:
        """The change from the previous frame given to this method (0 for the first)."""
        import cv2

        img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(img, (self.SIZE, self.SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
        prev, self._prev = self._prev, thumb
        self.last_score = 0.0 if prev is None else float(np.abs(thumb - prev).mean() / 255.0)
        return self.last_score

    def __call__(self, image: np.ndarray) -> bool:
        """True when ``image`` starts a new scene."""
        return self.score(image) > self.threshold


def box_jumped(before: np.ndarray, after: np.ndarray, jump: float) -> bool:
    """True when a track's box moved or changed size more than a smooth motion would:
    its centre moved by more than ``jump`` box sizes, or its size changed by more than a
    factor ``1 + jump`` (``tracking.jump_threshold``)."""
    b, a = np.asarray(before, np.float32).reshape(4), np.asarray(after, np.float32).reshape(4)
    sb = max(1.0, float(np.sqrt(max(0.0, (b[2] - b[0]) * (b[3] - b[1])))))
    sa = max(1.0, float(np.sqrt(max(0.0, (a[2] - a[0]) * (a[3] - a[1])))))
    moved = float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))
    return moved > jump * sb or max(sa / sb, sb / sa) > 1.0 + jump


def touching(xyxy: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: boxes that overlap another box of the same frame (faces crossing,
    where a box tracker may swap the people behind two ids)."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    n = len(xyxy)
    if n < 2:
        return np.zeros(n, bool)
    lt = np.maximum(xyxy[:, None, :2], xyxy[None, :, :2])
    rb = np.minimum(xyxy[:, None, 2:], xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    np.fill_diagonal(inter, 0)
    return inter.max(1) > 0
