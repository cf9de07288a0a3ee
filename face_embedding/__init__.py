"""Face embedders: the vendored MagFace iResNet family, MobileFaceNet and ONNX Runtime
backends, behind one registry.

Use :func:`create_embedder` to build one by name; every embedder turns
:class:`~facerec.types.AlignedFaces` into unit-length :class:`~facerec.types.Embeddings`
tagged with its :class:`~facerec.types.EmbedderKey`.
"""

from __future__ import annotations

from face_embedding.base import EMBEDDERS, Embedder, FaceEmbedder, create_embedder, embedder_registry

__all__ = ["EMBEDDERS", "Embedder", "FaceEmbedder", "create_embedder", "embedder_registry"]
