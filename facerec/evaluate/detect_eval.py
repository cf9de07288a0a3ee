"""Detection recall and precision against box ground truth, and false positives on photos
without faces.

Ground truth is a CSV with the columns ``split,file,x,y,w,h,ignore`` (the format of
``detection/dlib_faces/gt_boxes.csv``): one row per box, ``x,y,w,h`` in pixels, ``ignore=1``
for faces that should neither count as found nor as false positives.

Matching is greedy by score, as in PASCAL VOC: detections are visited from the highest
score; each takes the unmatched, non-ignored ground-truth box it overlaps most if that IoU
reaches the threshold (a true positive). A detection that reaches the threshold only on an
ignored box (or on a box already taken by a better detection, when that box is ignored)
is dropped; any other detection is a false positive.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facerec.detect import Detector
from facerec.errors import FacerecError, ImageReadError
from facerec.imageio import IMAGE_SUFFIXES, list_images, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GtBox:
    """One ground-truth box, ``xyxy`` in pixels."""

    xyxy: tuple[float, float, float, float]
    ignore: bool = False


def read_gt(path: str | os.PathLike, split: str | None = None) -> dict[str, list[GtBox]]:
    """Ground truth per image file name, from a ``split,file,x,y,w,h,ignore`` CSV.

    Args:
        split: keep only rows of this split (``None``: all rows).

    Raises:
        FacerecError: unreadable file, missing columns or a malformed row.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FacerecError(f"{p}: cannot read the ground truth ({e.strerror or e})") from None
    rows = csv.DictReader(text.splitlines())
    need = {"file", "x", "y", "w", "h"}
    if not rows.fieldnames or not need <= set(rows.fieldnames):
        raise FacerecError(f"{p}: expected the columns split,file,x,y,w,h,ignore, got {rows.fieldnames}")
    out: dict[str, list[GtBox]] = {}
    for k, r in enumerate(rows, start=2):
        if split is not None and r.get("split") != split:
            continue
        try:
            x, y, w, h = (float(r[c]) for c in ("x", "y", "w", "h"))
            ign = str(r.get("ignore") or "0").strip() not in ("0", "", "false", "False")
        except (TypeError, ValueError):
            raise FacerecError(f"{p}:{k}: malformed row {r}") from None
        out.setdefault(r["file"], []).append(GtBox((x, y, x + w, y + h), ign))
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), ``xyxy``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass(frozen=True)
class ImageMatch:
    """Matching counts for one image."""

    tp: int
    fp: int
    ignored: int
    gt: int


def match_image(boxes: np.ndarray, scores: np.ndarray, gt: list[GtBox], iou: float = 0.5) -> ImageMatch:
    """Greedy score-ordered matching of one image's detections to its ground truth."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    g = np.array([b.xyxy for b in gt], np.float64).reshape(-1, 4)
    ign = np.array([b.ignore for b in gt], bool)
    m = iou_matrix(boxes, g)
    taken = np.zeros(len(gt), bool)
    tp = fp = dropped = 0
    for d in order:
        cand = np.where(~ign & ~taken, m[d], -1.0)
        j = int(np.argmax(cand)) if len(gt) else -1
        if j >= 0 and cand[j] >= iou:
            taken[j] = True
            tp += 1
        elif len(gt) and ign.any() and m[d, ign].max() >= iou:
            dropped += 1
        else:
            fp += 1
    return ImageMatch(tp, fp, dropped, int((~ign).sum()))


@dataclass
class DetectionResult:
    """Totals of ``facerec eval detect``.

    Attributes:
        iou: IoU threshold used.
        images: annotated images evaluated.
        gt: non-ignored ground-truth faces.
        tp, fp: matched detections and false positives on annotated images.
        ignored: detections dropped because they matched an ignored box.
        per_image: file -> counts.
        negatives: negative photo -> number of faces found there (all false positives).
        seconds: wall time.
    """

    iou: float
    images: int
    gt: int
    tp: int
    fp: int
    ignored: int
    per_image: dict[str, ImageMatch] = field(default_factory=dict)
    negatives: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def recall(self) -> float | None:
        return self.tp / self.gt if self.gt else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    def summary(self) -> dict:
        return {
            "recall": self.recall,
            "precision": self.precision,
            "iou": self.iou,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.gt - self.tp,
            "gt": self.gt,
            "ignored_detections": self.ignored,
            "images": self.images,
            "negative_images": len(self.negatives),
            "negative_fp": sum(self.negatives.values()),
            "seconds": round(self.seconds, 2),
        }

    def to_dict(self) -> dict:
        d = self.summary()
        d["per_image"] = {k: asdict(v) for k, v in self.per_image.items()}
        d["negatives"] = dict(self.negatives)
        return d


def negative_paths(items: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the images inside folders."""
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out.extend(list_images(p))
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        else:
            raise FacerecError(f"{p}: not an image file or folder")
    return out


def evaluate_detector(detector: Detector, images: str | os.PathLike, gt: dict[str, list[GtBox]],
                      iou: float = 0.5, negatives: list[Path] | None = None, progress: bool = False,
                      ious: tuple[float, ...] = ()) -> dict[float, DetectionResult]:
    """Run ``detector`` on every annotated image (and negative photo) and match.

    Args:
        images: folder holding the files named in ``gt``.
        iou: the main IoU threshold.
        negatives: photos with no face; every detection there is a false positive.
        ious: further IoU thresholds evaluated on the same detections.

    Returns:
        IoU threshold -> result (the main one first).

    Raises:
        FacerecError: ``iou`` outside (0, 1] or no annotated image could be read.
    """
    thresholds = tuple(dict.fromkeys((iou, *ious)))
    for t in thresholds:
        if not 0 < t <= 1:
            raise FacerecError(f"IoU threshold must be in (0, 1], got {t}")
    t0 = time.perf_counter()
    root = Path(images)
    results = {t: DetectionResult(t, 0, 0, 0, 0, 0) for t in thresholds}
    files = sorted(gt)
    for name in tqdm(files, desc="detect", unit="img", file=sys.stderr, disable=not progress, leave=False):
        try:
            img = read_image(root / name)
        except ImageReadError as e:
            log.warning("%s; skipped", e)
            continue
        det = detector(img)
        for t, res in results.items():
            m = match_image(det.xyxy, det.score, gt[name], t)
            res.per_image[name] = m
            res.images += 1
            res.gt += m.gt
            res.tp += m.tp
            res.fp += m.fp
            res.ignored += m.ignored
    if files and not results[iou].images:
        raise FacerecError(f"no annotated image could be read from {root}")
    for p in negatives or []:
        try:
            n = len(detector(read_image(p)))
        except ImageReadError as e:
            log.warning("%s; skipped", e)
            continue
        for res in results.values():
            res.negatives[str(p)] = n
    dt = time.perf_counter() - t0
    for res in results.values():
        res.seconds = dt
    return results
