"""Still-image analysis: detect -> align -> embed, the path every offline tool shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from face_embedding import Embedder
from facerec.config import Config, GalleryConfig
from facerec.detect import Detector
from facerec.gallery.faces import analyze_image
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
        pad_retry: no face found: retry once with this much black border (fraction of the
            long side; ``gallery.pad_retry``, 0 = no retry), as enrollment and
            identification do, so a tightly cropped face is found by every still-image tool.
    """

    def __init__(self, detector: Detector, embedder: Embedder, flip: bool = False, threshold: float = 0.4,
                 pad_retry: float = GalleryConfig.model_fields["pad_retry"].default) -> None:
        self.detector = detector
        self.embedder = embedder
        self.flip = flip
        self.threshold = threshold
        self.pad_retry = pad_retry

    @classmethod
    def from_config(cls, cfg: Config) -> FaceAnalyzer:
        """Build both models as ``cfg`` says (``auto`` resolved, weights verified)."""
        emb = build_embedder(cfg)
        return cls(build_detector(cfg), emb, cfg.recognition.flip_tta, threshold_for(cfg, emb), cfg.gallery.pad_retry)

    def analyze(self, image: np.ndarray) -> FaceResult:
        """Detect (with the padding retry), align and embed every face of one BGR image."""
        det, faces, emb = analyze_image(self.detector, self.embed_faces, image, self.pad_retry)
        return FaceResult(det, faces, emb if emb is not None else self.embed_faces(faces))

    def embed_faces(self, faces: AlignedFaces) -> Embeddings:
        return self.embedder.embed(faces, flip=self.flip)
