"""Face verification on LFW-format pair lists.

Pair list format (``pairs.txt``, ``pairsDevTest.txt``):

* header ``N``: View 1, ``N`` same-person lines followed by ``N`` different-person lines;
* header ``F N``: View 2, ``F`` folds each of ``N`` same then ``N`` different lines;
* ``name i j`` is a same-person pair, ``name1 i name2 j`` a different-person pair, images
  ``ROOT/<name>/<name>_<i:04d>.jpg``.

Each image is embedded once (images repeat across pairs). LFW images are built around one
face at the centre, and deep-funneled images often show other people behind it, so the
detected face nearest the image centre is used. Where the detector finds nothing, the
face is cut from the centre of the image with fixed landmarks (:data:`LFW_CENTRE_LANDMARKS`)
through the same :func:`~facerec.align.align` as every other path, and counted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facerec.align import align
from facerec.analyze import FaceAnalyzer
from facerec.errors import FacerecError, ImageReadError
from facerec.evaluate.metrics import VerificationReport, verification_report
from facerec.imageio import read_image
from facerec.types import AlignedFaces, Detections

log = logging.getLogger(__name__)

#: Five landmarks (left eye, right eye, nose, left mouth, right mouth) of the centre face
#: of a 250 x 250 LFW deep-funneled image: the mean of the centre-face landmarks that
#: yolov5n-0.5-face finds on the 1,549 distinct images of ``pairsDevTest.txt`` (it found a
#: face on every one; per-point spread 2.5-6.6 px). Scaled to the size of other images.
LFW_CENTRE_LANDMARKS = np.array(
    [[104.5, 113.4], [146.2, 112.4], [125.9, 137.3], [108.6, 158.3], [143.7, 157.3]], dtype=np.float32
)
LFW_SIZE = 250

#: Score given to a pair whose image could not be read: the lowest cosine similarity,
#: so a failure is a rejection (wrong on a same pair) and never helps the result.
FAILED_SCORE = -1.0


class PairsFormatError(FacerecError):
    """A pair list does not follow the LFW format."""


@dataclass(frozen=True)
class Pair:
    """Two images and whether they show the same person.

    Attributes:
        left, right: ``(name, number)`` of each image.
        same: True for a same-person pair.
        fold: fold index (0 for a View 1 list).
    """

    left: tuple[str, int]
    right: tuple[str, int]
    same: bool
    fold: int = 0


@dataclass(frozen=True)
class PairList:
    """A parsed pair list. ``n_folds`` is 1 for View 1 lists."""

    pairs: list[Pair]
    n_folds: int
    source: str = ""

    def __len__(self) -> int:
        return len(self.pairs)

    def limit(self, n: int | None) -> PairList:
        """At most ``n`` pairs, half same and half different, spread evenly over the list.

        Evenly spaced picks keep the alphabetical spread of names; folds are dropped
        (a subset of folds is not the protocol), so the result counts as View 1.
        """
        if n is None or n >= len(self.pairs):
            return self
        if n < 1:
            raise ValueError(f"--limit must be at least 1, got {n}")
        same = [p for p in self.pairs if p.same]
        diff = [p for p in self.pairs if not p.same]
        n_same = min(len(same), (n + 1) // 2)
        n_diff = min(len(diff), n - n_same)
        n_same = min(len(same), n - n_diff)

        def pick(items: list[Pair], k: int) -> list[Pair]:
            if k == 0:
                return []
            idx = np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))
            return [Pair(items[i].left, items[i].right, items[i].same, 0) for i in idx]

        return PairList(pick(same, n_same) + pick(diff, n_diff), 1, self.source)

    def folds(self) -> np.ndarray | None:
        """Fold index per pair for View 2 lists, else ``None``."""
        if self.n_folds < 2:
            return None
        return np.array([p.fold for p in self.pairs])


def read_pairs(path: str | os.PathLike) -> PairList:
    """Parse an LFW pair list.

    Raises:
        PairsFormatError: unreadable file, bad header, a malformed line, or counts that do
            not match the header.
    """
    p = Path(path)
    try:
        lines = [ln.split() for ln in p.read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise PairsFormatError(f"{p}: cannot read the pair list ({e.strerror or e})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise PairsFormatError(f"{p}: empty pair list")
    head = lines[0]
    try:
        nums = [int(v) for v in head]
    except ValueError:
        raise PairsFormatError(f"{p}: the first line must be 'N' or 'FOLDS N', got {' '.join(head)!r}") from None
    if len(nums) == 1:
        n_folds, per = 1, nums[0]
    elif len(nums) == 2:
        n_folds, per = nums
    else:
        raise PairsFormatError(f"{p}: the first line must be 'N' or 'FOLDS N', got {' '.join(head)!r}")
    if n_folds < 1 or per < 1:
        raise PairsFormatError(f"{p}: header numbers must be positive, got {' '.join(head)!r}")
    body = lines[1:]
    if len(body) != 2 * n_folds * per:
        raise PairsFormatError(
            f"{p}: the header promises {2 * n_folds * per} pairs ({n_folds} fold(s) of {per} same + {per} different), "
            f"the file has {len(body)}"
        )
    pairs: list[Pair] = []
    for k, f in enumerate(body):
        lineno = k + 2
        fold, pos = divmod(k, 2 * per)
        want_same = pos < per
        try:
            if len(f) == 3:
                pair = Pair((f[0], int(f[1])), (f[0], int(f[2])), True, fold)
            elif len(f) == 4:
                pair = Pair((f[0], int(f[1])), (f[2], int(f[3])), False, fold)
            else:
                raise ValueError
        except ValueError:
            raise PairsFormatError(f"{p}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {' '.join(f)!r}") from None
        if pair.same != want_same:
            kind = "same-person" if want_same else "different-person"
            raise PairsFormatError(f"{p}:{lineno}: a {kind} pair was expected here by the header layout")
        pairs.append(pair)
    return PairList(pairs, n_folds, str(p))


def image_path(root: str | os.PathLike, name: str, number: int) -> Path:
    """``ROOT/<name>/<name>_<number:04d>.jpg``."""
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def centre_face(det: Detections, shape: tuple[int, ...]) -> int | None:
    """Index of the detection whose box centre is nearest the image centre, or None."""
    if len(det) == 0:
        return None
    h, w = shape[:2]
    centres = (det.xyxy[:, :2] + det.xyxy[:, 2:]) / 2.0
    d = np.hypot(centres[:, 0] - w / 2.0, centres[:, 1] - h / 2.0)
    return int(np.argmin(d))


def centre_landmarks(shape: tuple[int, ...]) -> np.ndarray:
    """Fallback landmarks for an image without a detected face: the LFW mean, scaled."""
    h, w = shape[:2]
    return LFW_CENTRE_LANDMARKS * np.array([w / LFW_SIZE, h / LFW_SIZE], np.float32)


@dataclass
class EmbeddingCache:
    """Embeds images once each: centre face, or the centre-crop fallback.

    Attributes:
        analyzer: detector + embedder (its ``flip`` setting is used).
        vectors: path -> unit vector (``None`` when the image could not be read).
        fallback: paths embedded through the centre-crop fallback.
        failed: paths that could not be read, with the reason.
        landmarks: path -> the five landmarks used.
    """

    analyzer: FaceAnalyzer
    batch: int = 32
    vectors: dict[Path, np.ndarray | None] = field(default_factory=dict)
    fallback: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    landmarks: dict[Path, np.ndarray] = field(default_factory=dict)

    def crop(self, path: Path) -> np.ndarray | None:
        """The aligned ``(112, 112, 3)`` crop of the image's centre face, or None."""
        try:
            img = read_image(path)
        except ImageReadError as e:
            log.warning("%s", e)
            self.failed[path] = str(e)
            return None
        det = self.analyzer.detector(img)
        i = centre_face(det, img.shape)
        if i is None:
            log.debug("%s: no face found, using the centre crop", path)
            self.fallback.append(path)
            lms = centre_landmarks(img.shape)
        else:
            lms = det.landmarks[i]
        self.landmarks[path] = lms
        return align(img, lms).images[0]

    def embed(self, paths: Iterable[Path], progress: bool = False, desc: str = "embedding") -> None:
        """Embed every path not embedded yet."""
        todo = list(dict.fromkeys(p for p in paths if p not in self.vectors))
        bar = tqdm(total=len(todo), desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False)
        try:
            for start in range(0, len(todo), self.batch):
                chunk = todo[start : start + self.batch]
                crops = [(p, self.crop(p)) for p in chunk]
                good = [(p, c) for p, c in crops if c is not None]
                if good:
                    emb = self.analyzer.embed_faces(AlignedFaces(np.stack([c for _, c in good])))
                    for (p, _), v in zip(good, emb.vectors):
                        self.vectors[p] = v
                for p, c in crops:
                    if c is None:
                        self.vectors[p] = None
                bar.update(len(chunk))
        finally:
            bar.close()


@dataclass
class VerifyResult:
    """Scored pairs and how they were obtained.

    Attributes:
        scores: cosine similarity per pair (:data:`FAILED_SCORE` where an image failed).
        labels: same-person flag per pair.
        folds: View 2 fold per pair, else ``None``.
        pairs: the pairs in score order.
        failed_pairs: pairs with an unreadable image.
        images: distinct images embedded.
        fallback_images: images embedded through the centre-crop fallback.
        seconds: wall time of embedding and scoring.
    """

    scores: np.ndarray
    labels: np.ndarray
    folds: np.ndarray | None
    pairs: list[Pair]
    failed_pairs: int
    images: int
    fallback_images: int
    seconds: float

    def report(self) -> VerificationReport:
        return verification_report(self.scores, self.labels, self.folds)


def score_pairs(analyzer: FaceAnalyzer, pairs: PairList, root: str | os.PathLike,
                progress: bool = False, cache: EmbeddingCache | None = None) -> VerifyResult:
    """Embed every image of ``pairs`` once and score each pair by cosine similarity."""
    t0 = time.perf_counter()
    cache = cache or EmbeddingCache(analyzer)
    paths = [(image_path(root, *p.left), image_path(root, *p.right)) for p in pairs.pairs]
    cache.embed([q for ab in paths for q in ab], progress=progress)
    scores = np.empty(len(paths), np.float64)
    failed = 0
    for k, (a, b) in enumerate(paths):
        va, vb = cache.vectors[a], cache.vectors[b]
        if va is None or vb is None:
            scores[k] = FAILED_SCORE
            failed += 1
        else:
            scores[k] = float(np.clip(np.dot(va, vb), -1.0, 1.0))
    images = {q for ab in paths for q in ab}
    return VerifyResult(
        scores=scores,
        labels=np.array([p.same for p in pairs.pairs]),
        folds=pairs.folds(),
        pairs=list(pairs.pairs),
        failed_pairs=failed,
        images=len(images),
        fallback_images=sum(1 for q in set(cache.fallback) if q in images),
        seconds=time.perf_counter() - t0,
    )


def summary(result: VerifyResult, report: VerificationReport | None = None) -> dict:
    """The flat dictionary ``facerec eval verify --json`` prints.

    ``accuracy`` is the 10-fold accuracy of the LFW protocol when the list has folds
    (View 2); otherwise the accuracy at the best threshold on the whole list, with the
    10-fold cross-validated accuracy over stratified folds of the list beside it as
    ``accuracy_10fold`` (and its spread as ``accuracy_std``).
    """
    rep = report or result.report()
    kf = rep.kfold
    view2 = result.folds is not None
    out: dict = {
        "accuracy": kf.mean if view2 and kf else rep.best_accuracy,
        "accuracy_std": kf.std if kf else None,
        "accuracy_protocol": "10-fold" if view2 else "best-threshold",
        "accuracy_10fold": kf.mean if kf else None,
        "accuracy_best_threshold": rep.best_accuracy,
        "auc": rep.auc,
        "eer": rep.eer,
        "eer_threshold": rep.eer_threshold,
    }
    for p in rep.operating_points:
        tag = f"{p.target_far:.0e}".replace("e-0", "e-")
        out[f"tar_at_far_{tag}"] = p.tar
        out[f"threshold_at_far_{tag}"] = p.threshold
    out.update({
        "threshold": rep.best_threshold,
        "pairs": rep.pairs,
        "genuine": rep.genuine,
        "impostor": rep.impostor,
        "failed": result.failed_pairs,
        "images": result.images,
        "fallback": result.fallback_images,
        "seconds": round(result.seconds, 2),
    })
    return out
