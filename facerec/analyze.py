"""Still-image analysis: detect -> align -> embed, the path every offline tool shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from face_embedding import Embedder
from facerec.align import align
from facerec.config import Config
from facerec.detect import Detector
from facerec.models import build_detector, build_embedder, threshold_for
from facerec.types import AlignedFaces, Detections, Embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceResult:
    """Everything known about the faces of one image, index-aligned."""

    detections: Detections
    faces: AlignedFaces
    embeddings: Embeddings

    def __len__(self) -> int:
        return len(self.detections)


class FaceAnalyzer:
    """A detector and an embedder used together on still images.

    Args:
        detector: any :class:`~facerec.detect.Detector`.
        embedder: any :class:`~face_embedding.Embedder`.
        flip: flip test-time augmentation for embeddings.
        threshold: cosine similarity for same/different decisions.
    """

    def __init__(self, detector: Detector, embedder: Embedder, flip: bool = False, threshold: float = 0.4) -> None:
        self.detector = detector
        self.embedder = embedder
        self.flip = flip
        self.threshold = threshold

    @classmethod
    def from_config(cls, cfg: Config) -> FaceAnalyzer:
        """Build both models as ``cfg`` says (``auto`` resolved, weights verified)."""
        emb = build_embedder(cfg)
        return cls(build_detector(cfg), emb, cfg.recognition.flip_tta, threshold_for(cfg, emb))

    def analyze(self, image: np.ndarray) -> FaceResult:
        """Detect, align and embed every face of one BGR image."""
        det = self.detector(image)
        faces = align(image, det.landmarks)
        return FaceResult(det, faces, self.embedder.embed(faces, flip=self.flip))

    def embed_faces(self, faces: AlignedFaces) -> Embeddings:
        return self.embedder.embed(faces, flip=self.flip)
