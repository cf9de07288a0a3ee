"""ONNX Runtime sessions (CPU execution provider)."""

from __future__ import annotations

import os

import numpy as np

from facerec.errors import CheckpointError
from facerec.runtime.base import SessionBase, SessionInfo, warn_once


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OnnxSession(SessionBase):
    """An ``onnxruntime.InferenceSession`` on the CPU, sequential execution.

    Args:
        path: the ``.onnx`` file.
        precision: only ``fp32`` runs here; ``bf16`` is reported once and runs as fp32
            (ONNX Runtime's CPU provider has no bf16 kernels for these networks).
        threads: intra-op threads; inter-op is 1 (sequential graph execution), and idle
            workers do not spin (they would starve the other stages on a shared CPU).

    Raises:
        CheckpointError: ONNX Runtime cannot load the file or it has more than one input.
    """

    def __init__(self, path: str | os.PathLike, *, precision: str, threads: int) -> None:
        import onnxruntime as ort

        if precision == "bf16":
            warn_once("engine onnx runs fp32 only; precision bf16 applies to the torch and openvino engines")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own, unexported exception types
            raise CheckpointError(f"{path}: cannot be loaded by ONNX Runtime ({type(e).__name__}: {e})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(f"{path}: expected one input, the model has {[i.name for i in inputs]}")
        names = tuple(o.name for o in self.session.get_outputs())
        self.info = SessionInfo(inputs[0].name, _dims(inputs[0].shape), names, "onnx", "fp32", threads, str(path))
        self.output_shapes = [_dims(o.shape) for o in self.session.get_outputs()]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, np.float32) for o in self.session.run(None, {self.info.input_name: batch})]
