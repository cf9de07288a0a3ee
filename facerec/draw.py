"""Drawing results on frames. Knows nothing about models: it draws what it is given.

:func:`annotate` takes a frame, the faces to show (:class:`~facerec.types.TrackedFace`)
and optional stats, and returns the annotated frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from facerec.types import TrackedFace

KNOWN_COLOR = (60, 200, 60)  # BGR green
UNKNOWN_COLOR = (40, 40, 230)  # BGR red
PENDING_COLOR = (200, 200, 200)  # grey: tracked, not recognised yet
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_label(name: str | None, similarity: float | None, track_id: int | None = None, decided: bool = True) -> str:
    """``"Alice 0.62 #3"``, ``"unknown 0.21 #4"`` or ``"#5"`` when not recognised yet.

    A similarity of -1 or below means "no candidate at all" (an empty gallery) and is
    left out.
    """
    parts = []
    if decided:
        parts.append(name if name is not None else "unknown")
        if similarity is not None and similarity > -1.0:
            parts.append(f"{similarity:.2f}")
    if track_id is not None and track_id >= 0:
        parts.append(f"#{track_id}")
    return " ".join(parts)


def _scale(frame: np.ndarray) -> tuple[float, int]:
    """Font scale and line thickness that stay readable from 320 px to 4K frames."""
    s = max(0.4, min(frame.shape[:2]) / 900)
    return s, max(1, round(s * 2))


def _text_box(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], scale: float, thick: int) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    x, y = org
    h, w = img.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y = int(min(max(th + base + 2, y), h))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), color, -1)
    cv2.putText(img, text, (x + 2, y - base - 2), FONT, scale, TEXT_COLOR, thick, cv2.LINE_AA)


def draw_stats(img: np.ndarray, stats: Mapping[str, float], title: str | None = None) -> np.ndarray:
    """Write ``title`` and ``stage: value`` lines in the top-left corner, in place."""
    scale, thick = _scale(img)
    scale *= 0.8
    lines = ([title] if title else []) + [f"{k} {v:.1f} ms" for k, v in stats.items()]
    y = 0
    for line in lines:
        (tw, th), base = cv2.getTextSize(line, FONT, scale, thick)
        y += th + base + 6
        cv2.rectangle(img, (0, y - th - base - 6), (tw + 8, y), (0, 0, 0), -1)
        cv2.putText(img, line, (4, y - base - 3), FONT, scale, TEXT_COLOR, thick, cv2.LINE_AA)
    return img


def annotate(
    frame: np.ndarray,
    faces: Sequence[TrackedFace],
    stats: Mapping[str, float] | None = None,
    fps: float | None = None,
    copy: bool = True,
    info: str | None = None,
) -> np.ndarray:
    """Draw boxes and labels for ``faces`` and, optionally, FPS and per-stage times.

    Args:
        frame: ``(H, W, 3)`` uint8 BGR image.
        faces: the faces to draw: a green box for a name, red for unknown, grey while
            not decided; the label is the name, the similarity and the track id.
        stats: milliseconds per stage to print in the corner.
        fps: frames per second to print above the stage times (``None`` with ``stats``
            or ``info`` given: not measured yet, shown as ``FPS -``).
        copy: draw on a copy (the default) rather than on ``frame`` itself.
        info: text after the FPS on the title line, e.g. the detect interval and input
            size in use (``"detect 1/3 @320"``).

    Returns:
        The annotated image.
    """
    img = frame.copy() if copy else frame
    scale, thick = _scale(img)
    for f in faces:
        name = f.name
        color = PENDING_COLOR if not f.decided else KNOWN_COLOR if name is not None else UNKNOWN_COLOR
        x1, y1, x2, y2 = (int(round(v)) for v in f.xyxy)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick + 1)
        label = face_label(name, float(f.similarity) if f.decided else None, f.track_id, f.decided)
        if label:
            _text_box(img, label, (x1, y1), color, scale, thick)
    if stats is not None or fps is not None or info is not None:
        title = f"FPS {fps:.1f}" if fps is not None else "FPS -"
        draw_stats(img, stats or {}, f"{title}  {info}" if info else title)
    return img
