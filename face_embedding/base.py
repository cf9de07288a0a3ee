"""The embedder interface shared by every backend, and the registry."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np

from facerec.registry import Registry
from facerec.types import AlignedFaces, EmbedderKey, Embeddings
from facerec.weights import WeightsSpec

EMBEDDERS: Registry[Embedder] = Registry("embedder")

#: Modules that register embedders; imported lazily by :func:`create_embedder`.
_FAMILIES = ("face_embedding.iresnet", "face_embedding.mobilefacenet")


@runtime_checkable
class FaceEmbedder(Protocol):
    """What the live loop, the daemon and the gallery use of an embedder.

    :class:`Embedder` (every registered model) implements it, and so do wrappers such as
    the daemon's shared embedder, which runs the model in an inference slot.
    """

    @property
    def key(self) -> EmbedderKey:
        """The vector space (model name + weights sha256); galleries are keyed by it."""
        ...

    @property
    def default_threshold(self) -> float:
        """Cosine similarity accepted as the same person when the config sets none."""
        ...

    def embed(self, faces: AlignedFaces | np.ndarray, flip: bool = False) -> Embeddings:
        """Unit vectors of aligned faces (see :meth:`Embedder.embed`)."""
        ...


class Embedder(ABC):
    """Turns aligned 112x112 BGR crops into unit vectors plus a quality norm.

    Subclasses implement :meth:`forward_raw` on a preprocessed float batch; this class
    does batching, preprocessing (channel order, scaling, mean/std from the
    :class:`~facerec.weights.WeightsSpec`) and the optional flip test-time augmentation.

    Attributes:
        key: the vector space (model name + weights sha256).
        dim: output dimension.
        spec: weights spec, including preprocessing.
        default_threshold: cosine similarity that separates same/different people for
            this model when the config leaves ``recognition.threshold`` empty.
        quality_is_norm: True where the raw feature norm is a trained quality score
            (MagFace); otherwise quality falls back to a blur/size measure.
    """

    key: EmbedderKey
    dim: int
    spec: WeightsSpec
    default_threshold: float = 0.4
    quality_is_norm: bool = False
    batch_size: int = 32

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """``(n, 112, 112, 3)`` uint8 BGR -> ``(n, 3, 112, 112)`` float32 network input."""
        x = images[..., ::-1] if self.spec.channel_order == "RGB" else images
        x = x.astype(np.float32) / 255.0
        x = (x - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    @abstractmethod
    def forward_raw(self, batch: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) features ``(n, dim)`` float32 for a preprocessed batch."""

    def embed(self, faces: AlignedFaces | np.ndarray, flip: bool = False) -> Embeddings:
        """Embed aligned faces.

        Args:
            faces: aligned crops (or their ``(n, 112, 112, 3)`` uint8 BGR array).
            flip: combine the raw feature of each crop with that of its mirror image
                before normalising; costs a second forward pass. The two are averaged
                (not summed) so the norm, MagFace's quality score, stays on the scale of
                a single pass; the direction is the same as for the sum.

        Returns:
            One unit vector per face; empty when there are no faces.
        """
        images = faces.images if isinstance(faces, AlignedFaces) else AlignedFaces(faces).images
        if len(images) == 0:
            return Embeddings.empty(self.key, self.dim)
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            raw = self.forward_raw(self.preprocess(chunk))
            if flip:
                raw = (raw + self.forward_raw(self.preprocess(chunk[:, :, ::-1]))) / 2
            out.append(np.asarray(raw, np.float32))
        return Embeddings.from_raw(np.concatenate(out), self.key)


def _load_families() -> None:
    for mod in _FAMILIES:
        importlib.import_module(mod)


def embedder_registry() -> Registry[Embedder]:
    """The registry with every family imported."""
    _load_families()
    return EMBEDDERS


def create_embedder(name: str, **kwargs) -> Embedder:
    """Build embedder ``name`` (see ``facerec weights`` for the names).

    Keyword arguments are passed to the family's constructor: ``weights`` (explicit
    file), ``weights_dir``, ``verify``, ``batch_size``, ``engine`` (``backend`` is its
    old name), ``precision``, ``threads`` (see
    :func:`~face_embedding.checkpoint.build_embedder`).
    """
    return embedder_registry().get(name).build(**kwargs)
