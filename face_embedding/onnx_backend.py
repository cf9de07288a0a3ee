"""Embedders that run an ONNX file (an upstream export, or one a user passes).

Chosen with ``engine: onnx`` where upstream publishes an export (the released
MobileFaceNet ONNX), or with an explicit weights path ending in ``.onnx``. The
preprocessing is the model's :class:`~facerec.weights.WeightsSpec`, the same as for the
PyTorch module, so the two differ only in arithmetic. Their keys still differ (the key
hashes the file actually loaded): galleries never mix vectors of the two.

Exports whose batch dimension is fixed (the released MobileFaceNet ONNX takes exactly one
face) are run once per face by the session; exports with a dynamic batch take whole batches.
"""

from __future__ import annotations

import os

from face_embedding.checkpoint import SessionEmbedder
from facerec.errors import CheckpointError
from facerec.runtime import Session
from facerec.weights import WeightsSpec


def check_io(session: Session, path: str | os.PathLike, spec: WeightsSpec, dim: int, name: str) -> None:
    """Check that an ONNX embedder takes ``(n, 3, h, w)`` of the spec and makes ``dim`` values.

    Raises:
        CheckpointError: the shapes do not fit (the file is another model).
    """
    shape = list(session.info.input_shape)
    want = [3, *spec.input_size]
    if len(shape) != 4 or any(s is not None and s != w for s, w in zip(shape[1:], want)):
        raise CheckpointError(f"{path}: input {session.info.input_name} has shape {shape}, "
                              f"expected [n, {', '.join(map(str, want))}]")
    out_dim = None
    shapes = getattr(session, "output_shapes", None)
    if shapes:
        out_dim = shapes[0][-1] if shapes[0] else None
    if out_dim is not None and out_dim != dim:
        raise CheckpointError(f"{path}: output has {out_dim} values per face, {name} makes {dim}")


class OnnxEmbedder(SessionEmbedder):
    """A :class:`SessionEmbedder` whose network is an ONNX file (its key hashes that file)."""
