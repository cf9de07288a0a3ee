"""Clips that fool a box tracker, built from the talking-head clips of ../shared/data/video,
and the scoring of a run's ``--tracks`` lines against who really is where.

* :func:`write_cut_clip`: segments of one person each, joined with hard cuts; every
  frame is resized to one size, so the next face sits where the last one was. Enrolled
  and not enrolled people alternate, and the first person comes back at the end.
* :func:`write_crossing_clip`: two people side by side sliding past each other (the one
  in front hides the other while they cross).

Used by ``tests/test_identity_clip.py`` (acceptance) and ``bench/identity.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

FPS = 30.0
SIDE = 480
SEGMENT = 45  # frames = 1.5 s

#: (who, clip, first frame): ``who`` is the enrolled name, or ``None`` for a stranger.
CUT_SEGMENTS: tuple[tuple[str | None, str, int], ...] = (
    ("Anna_D3", "lp_driving_d3.mp4", 0),
    (None, "lp_driving_d0.mp4", 0),
    ("Wei_D9", "lp_driving_d9.mp4", 0),
    (None, "lp_driving_d11.mp4", 0),
    ("Anna_D3", "lp_driving_d3.mp4", 150),
    ("Wei_D9", "lp_driving_d9.mp4", 150),
)

#: Frames each enrolled person is enrolled from (never part of a clip).
ENROLL_FRAMES: dict[str, tuple[str, tuple[int, ...]]] = {
    "Anna_D3": ("lp_driving_d3.mp4", (300, 320, 340)),
    "Wei_D9": ("lp_driving_d9.mp4", (400, 450, 500)),
}


def read_frames(path: Path, first: int, n: int, side: int | None = SIDE) -> list[np.ndarray]:
    """``n`` frames of a video from ``first`` on (resized to ``side`` x ``side`` unless None)."""
    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        out = []
        for _ in range(n):
            ok, img = cap.read()
            if not ok:
                raise ValueError(f"{path}: fewer than {first + n} frames")
            out.append(img if side is None else cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
        return out
    finally:
        cap.release()


def enroll_images(video: Path) -> dict[str, list[np.ndarray]]:
    """The enrollment frames of each enrolled person (full size)."""
    return {name: [read_frames(video / clip, i, 1, None)[0] for i in idx] for name, (clip, idx) in ENROLL_FRAMES.items()}


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    if not out.isOpened():
        raise OSError(f"cannot write {path}")
    for img in frames:
        out.write(img)
    out.release()
    return path


@dataclass
class Truth:
    """Who is where in a clip: per frame, the people and their face areas (xyxy px)."""

    people: list[list[tuple[str | None, np.ndarray]]] = field(default_factory=list)
    #: (who, first frame) where a person appears
    appear: list[tuple[str | None, int]] = field(default_factory=list)


def write_cut_clip(path: Path, video: Path) -> Truth:
    """The hard-cut clip of :data:`CUT_SEGMENTS` (``SIDE`` px square, ``FPS``)."""
    frames: list[np.ndarray] = []
    truth = Truth()
    whole = np.array([0, 0, SIDE, SIDE], np.float32)
    for who, clip, first in CUT_SEGMENTS:
        truth.appear.append((who, len(frames)))
        for img in read_frames(video / clip, first, SEGMENT):
            frames.append(img)
            truth.people.append([(who, whole)])
    _write(path, frames)
    return truth


def write_crossing_clip(path: Path, video: Path, n: int = 90, tile: int = 240) -> Truth:
    """Anna (left to right, in front) and Wei (right to left) crossing on a 960x360 canvas."""
    width, height = 960, 360
    a = read_frames(video / "lp_driving_d3.mp4", 0, n, tile)
    b = read_frames(video / "lp_driving_d9.mp4", 0, n, tile)
    frames, truth = [], Truth(appear=[("Anna_D3", 0), ("Wei_D9", 0)])
    y = (height - tile) // 2
    for k in range(n):
        xa = round(k * (width - tile) / (n - 1))
        xb = width - tile - xa
        canvas = np.full((height, width, 3), 90, np.uint8)
        canvas[y:y + tile, xb:xb + tile] = b[k]
        canvas[y:y + tile, xa:xa + tile] = a[k]  # Anna passes in front
        frames.append(canvas)
        truth.people.append([("Anna_D3", np.array([xa, y, xa + tile, y + tile], np.float32)),
                             ("Wei_D9", np.array([xb, y, xb + tile, y + tile], np.float32))])
    _write(path, frames)
    return truth


def who_is(box, people: list[tuple[str | None, np.ndarray]]) -> tuple[bool, str | None]:
    """``(known, who)`` for a detected face box: the person whose area holds the box's
    centre; where two areas hold it (crossing) the nearer centre, unless both are within
    a tenth of a tile of each other (then ``known`` is False: not scored)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = [(math.hypot(cx - (r[0] + r[2]) / 2, cy - (r[1] + r[3]) / 2), who, r) for who, r in people
              if r[0] <= cx <= r[2] and r[1] <= cy <= r[3]]
    if not inside:
        return False, None
    inside.sort(key=lambda x: x[0])
    if len(inside) > 1 and inside[1][0] - inside[0][0] < 0.1 * (inside[0][2][2] - inside[0][2][0]):
        return False, None
    return True, inside[0][1]


@dataclass
class Score:
    """How a run's names compare with the truth.

    Attributes:
        face_frames: scored faces summed over frames.
        wrong: face-frames shown with another person's name (a stranger shown with any name).
        unsure: face-frames of an enrolled person with no name (``?`` or unknown).
        latency_s: per appearance of an enrolled person, seconds from their first frame to
            the first frame that shows their right name (``inf`` = never).
    """

    face_frames: int = 0
    wrong: int = 0
    unsure: int = 0
    latency_s: list[float] = field(default_factory=list)

    @property
    def worst_latency_s(self) -> float:
        return max(self.latency_s) if self.latency_s else 0.0


def score(rows: list[dict], truth: Truth, fps: float = FPS) -> Score:
    """Score ``--tracks`` rows (dicts of the contract) against ``truth``."""
    s = Score()
    named_at: dict[tuple[str, int], int] = {}
    starts = sorted(truth.appear, key=lambda x: x[1])
    for row in rows:
        k = row["frame"]
        if k >= len(truth.people):
            continue
        for face in row["faces"]:
            known, who = who_is(face["box"], truth.people[k])
            if not known:
                continue
            s.face_frames += 1
            name = face["name"]
            if name is not None and name != who:
                s.wrong += 1
            elif name is None and who is not None:
                s.unsure += 1
            elif name is not None:
                start = max(f for w, f in starts if w == who and f <= k)
                named_at.setdefault((who, start), k)
    for who, start in starts:
        if who is not None:
            k = named_at.get((who, start))
            s.latency_s.append(math.inf if k is None else (k - start) / fps)
    return s
