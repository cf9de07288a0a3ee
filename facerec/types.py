"""Typed containers passed between pipeline stages.

Every container can be empty (``n == 0``): "no face" is an empty result, never ``None``
and never an exception. Shapes and dtypes are checked in ``__post_init__`` so a stage
that produces a wrong array fails where the mistake is made, with expected vs actual.

Conventions used everywhere in facerec:

* Boxes are ``xyxy`` in pixels of the original image (not the letterboxed input).
* Five landmarks are ordered left eye, right eye, nose tip, left mouth corner,
  right mouth corner, where "left" means image-left.
* Images are ``uint8`` BGR (OpenCV's order); models that want RGB convert internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

ALIGNED_SIZE = 112


def _check(name: str, arr: np.ndarray, shape: tuple[int | None, ...]) -> None:
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")


@dataclass(frozen=True)
class Detections:
    """Faces found in one image.

    Attributes:
        xyxy: ``(n, 4)`` float32 boxes, pixels of the original image.
        score: ``(n,)`` float32 confidence in [0, 1].
        landmarks: ``(n, 5, 2)`` float32 five points in pixels (see module docstring).
    """

    xyxy: np.ndarray
    score: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4))
        object.__setattr__(self, "score", np.asarray(self.score, dtype=np.float32).reshape(-1))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2))
        n = len(self.xyxy)
        _check("score", self.score, (n,))
        _check("landmarks", self.landmarks, (n, 5, 2))

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Subset by position, slice, index list or boolean mask (always a Detections)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Detections(self.xyxy[idx], self.score[idx], self.landmarks[idx])

    @property
    def area(self) -> np.ndarray:
        """Box areas in square pixels, ``(n,)``."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def largest(self) -> Detections:
        """The single largest face, or empty."""
        if len(self) == 0:
            return self
        return self[[int(np.argmax(self.area))]]

    def to_json(self) -> list[dict]:
        """Plain JSON-ready dicts: ``box``, ``score``, ``landmarks`` rounded to 0.01 px."""
        return [
            {
                "box": [round(float(v), 2) for v in self.xyxy[i]],
                "score": round(float(self.score[i]), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks[i]],
            }
            for i in range(len(self))
        ]


@dataclass(frozen=True)
class AlignedFaces:
    """Faces warped onto the ArcFace template by :func:`facerec.align.align`.

    Attributes:
        images: ``(n, 112, 112, 3)`` uint8 BGR crops.
    """

    images: np.ndarray

    def __post_init__(self) -> None:
        imgs = np.asarray(self.images)
        if imgs.size == 0:
            imgs = np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        if imgs.dtype != np.uint8:
            raise ValueError(f"aligned faces must be uint8, got {imgs.dtype}")
        _check("images", imgs, (None, ALIGNED_SIZE, ALIGNED_SIZE, 3))
        object.__setattr__(self, "images", imgs)

    @classmethod
    def empty(cls) -> AlignedFaces:
        return cls(np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8))

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class EmbedderKey:
    """Identifies a vector space: a model name plus the sha256 of its weights.

    Two embeddings are comparable only when their keys are equal; a gallery stores one
    set of vectors per key and never mixes them.
    """

    model: str
    weights_sha256: str

    def __str__(self) -> str:
        return f"{self.model}@{self.weights_sha256[:12]}"

    @classmethod
    def parse(cls, text: str) -> EmbedderKey:
        model, _, sha = text.partition("@")
        return cls(model, sha)


@dataclass(frozen=True)
class Embeddings:
    """Unit-length face vectors from one embedder.

    Attributes:
        vectors: ``(n, d)`` float32, L2-normalised.
        norm: ``(n,)`` float32 raw feature norm before normalisation. For MagFace this
            is the model's quality score (higher = more recognisable face); models
            without such a meaning still report it, it is only comparable within a model.
        key: the embedder that made them.
    """

    vectors: np.ndarray
    norm: np.ndarray
    key: EmbedderKey

    def __post_init__(self) -> None:
        vec = np.asarray(self.vectors, dtype=np.float32)
        if vec.ndim == 1 and vec.size == 0:
            vec = vec.reshape(0, 0)
        _check("vectors", vec, (None, None))
        norm = np.asarray(self.norm, dtype=np.float32).reshape(-1)
        _check("norm", norm, (len(vec),))
        object.__setattr__(self, "vectors", vec)
        object.__setattr__(self, "norm", norm)

    @classmethod
    def empty(cls, key: EmbedderKey, dim: int = 0) -> Embeddings:
        return cls(np.zeros((0, dim), np.float32), np.zeros((0,), np.float32), key)

    @classmethod
    def from_raw(cls, raw: np.ndarray, key: EmbedderKey) -> Embeddings:
        """Normalise raw features, keeping their norms as quality."""
        raw = np.asarray(raw, dtype=np.float32)
        norm = np.linalg.norm(raw, axis=1) if len(raw) else np.zeros((0,), np.float32)
        vec = raw / np.maximum(norm, 1e-12)[:, None] if len(raw) else raw
        return cls(vec, norm, key)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class Match:
    """The gallery's answer for one face.

    Attributes:
        name: the decided person, or ``None`` for unknown (nobody cleared the threshold).
        similarity: cosine similarity of the best candidate (even when unknown).
        top: up to k ``(person, similarity)`` pairs, best first, whether or not they
            clear the threshold.
    """

    name: str | None
    similarity: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Matches:
    """One :class:`Match` per face, in the order of the embeddings they answer."""

    items: list[Match] = field(default_factory=list)

    @classmethod
    def empty(cls) -> Matches:
        return cls([])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Match:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame, as the pipeline hands it to the overlay, the events and the
    track log (:class:`facerec.live.LivePipeline` makes them; the sinks only read them).

    Attributes:
        track_id: stable id of the face's track; negative for a face that is not tracked
            (a photo), which the overlay then labels without an id.
        xyxy: ``(4,)`` float32 box, pixels of the original frame (the track's last
            detected box on frames the detector skipped).
        name: the track's voted name; ``None`` = unknown, or not decided yet.
        similarity: cosine similarity behind the name (the best candidate's when unknown;
            -1 or below = no candidate at all, an empty gallery).
        score: detector confidence of the box, in [0, 1] (of its last detection when
            coasting); 1.0 where no detector scored the box.
        decided: False until the track's first embedding was matched (the overlay shows
            the face grey and unnamed, events are not announced yet).
        detected: True when the detector ran on this very frame (False: a coasting box).
    """

    track_id: int
    xyxy: np.ndarray
    name: str | None
    similarity: float
    score: float = 1.0
    decided: bool = True
    detected: bool = True

    def __post_init__(self) -> None:
        box = np.asarray(self.xyxy, dtype=np.float32)
        if box.size != 4:
            raise ValueError(f"xyxy must have 4 values (x1, y1, x2, y2), got shape {tuple(box.shape)}")
        object.__setattr__(self, "xyxy", box.reshape(4))


@dataclass(frozen=True)
class TrackRecord:
    """A track as it leaves the pipeline: what the sinks read of it, frozen.

    The pipeline hands these out for tracks that ended (``FrameResult.left``) and for
    the tracks still in view (``FrameResult.in_view``); its own mutable track state stays
    inside it.

    Attributes:
        track_id: the track's id, unique per camera and run.
        name: its voted name; ``None`` = unknown, or not decided yet.
        decided: whether its identity was decided (an undecided track was never announced).
        similarity: cosine similarity behind the name (the best candidate's when unknown).
        xyxy: ``(4,)`` its last box, pixels of the frame.
        first_t: source time it was first seen, s.
        last_t: source time it was last seen, s.
        best_crop: its best aligned crop (uint8 BGR), when the pipeline keeps crops.
        best_faces: its best ``(quality, crop, vector)``, best first, when the pipeline
            keeps them (unknown sightings).
    """

    track_id: int
    name: str | None
    decided: bool
    similarity: float
    xyxy: np.ndarray
    first_t: float
    last_t: float
    best_crop: np.ndarray | None = None
    best_faces: tuple[tuple[float, np.ndarray, np.ndarray], ...] = field(default=())

    @property
    def unknown(self) -> bool:
        """Decided to be nobody enrolled."""
        return self.decided and self.name is None
