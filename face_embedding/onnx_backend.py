"""ONNX Runtime backend: runs an embedder's ONNX export on the CPU.

Chosen with ``backend="onnx"`` (or an explicit weights path ending in ``.onnx``). The
preprocessing is the model's :class:`~facerec.weights.WeightsSpec`, the same as for the
PyTorch module, so the two backends differ only in arithmetic. Their keys still differ
(the key hashes the file actually loaded): galleries never mix vectors of the two.

Exports whose batch dimension is fixed (the released MobileFaceNet ONNX takes exactly one
face) are run once per face; exports with a dynamic batch take whole batches.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from face_embedding.base import Embedder
from facerec.errors import CheckpointError
from facerec.types import EmbedderKey
from facerec.weights import WeightsSpec, sha256_file

logger = logging.getLogger(__name__)


class OnnxEmbedder(Embedder):
    """An embedder backed by an ``onnxruntime.InferenceSession`` on the CPU.

    Args:
        path: the ``.onnx`` file.
        name: registry name of the model (first half of the key).
        spec: weights spec (preprocessing, input size).
        batch_size: faces per call when the export has a dynamic batch dimension.
        threads: intra-op threads of the session (``None``: ONNX Runtime's default).
        expected_dim: output dimension the model family promises; checked against the
            export so a wrong file fails at start-up.

    Raises:
        CheckpointError: the file is not a loadable ONNX model or its input/output shapes
            do not fit the spec.
    """

    def __init__(self, path: str | os.PathLike, name: str, spec: WeightsSpec, *, batch_size: int = 32,
                 threads: int | None = None, expected_dim: int | None = None,
                 default_threshold: float | None = None, quality_is_norm: bool | None = None) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own, unexported exception types
            raise CheckpointError(f"{self.path}: cannot be loaded by ONNX Runtime ({e})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise CheckpointError(f"{self.path}: expected one input, the model has {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        shape = list(inputs[0].shape)
        want = [3, *spec.input_size]
        if len(shape) != 4 or any(isinstance(s, int) and s != w for s, w in zip(shape[1:], want)):
            raise CheckpointError(f"{self.path}: input {self.input_name} has shape {shape}, expected [n, {', '.join(map(str, want))}]")
        #: Batch size the export accepts, or ``None`` when the batch dimension is dynamic.
        self.fixed_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        out_dim = outputs[0].shape[-1] if outputs[0].shape else None
        if expected_dim is not None and isinstance(out_dim, int) and out_dim != expected_dim:
            raise CheckpointError(f"{self.path}: output has {out_dim} values per face, {name} makes {expected_dim}")
        self.dim = int(out_dim) if isinstance(out_dim, int) else int(expected_dim or 0)
        self.spec = spec
        self.batch_size = batch_size
        self.key = EmbedderKey(name, sha256_file(self.path))
        if default_threshold is not None:
            self.default_threshold = default_threshold
        if quality_is_norm is not None:
            self.quality_is_norm = quality_is_norm
        logger.debug("ONNX Runtime session for %s from %s (batch %s)", name, self.path, self.fixed_batch or "dynamic")

    def forward_raw(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, np.float32)
        step = self.fixed_batch
        if step is None:
            out = self.session.run(None, {self.input_name: x})[0]
            return np.asarray(out, np.float32).reshape(len(x), -1)
        n = len(x)
        if n % step:  # pad the last call up to the fixed batch; the padding is dropped below
            x = np.concatenate([x, np.zeros((step - n % step, *x.shape[1:]), np.float32)])
        outs = [self.session.run(None, {self.input_name: x[i : i + step]})[0] for i in range(0, len(x), step)]
        return np.concatenate(outs).astype(np.float32).reshape(len(x), -1)[:n]

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.key}, dim={self.dim}, batch={self.fixed_batch or 'dynamic'})"
