"""OpenVINO sessions on the CPU plugin."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from facerec.errors import CheckpointError
from facerec.runtime.base import SessionBase, SessionInfo, warn_once

_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_HINT = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def _dims(partial_shape) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


class OpenVinoSession(SessionBase):
    """A model compiled by OpenVINO for the CPU, with every setting given explicitly.

    Args:
        path: an OpenVINO IR (``.xml`` with its ``.bin``) or an ``.onnx`` file.
        precision: ``bf16`` sets ``INFERENCE_PRECISION_HINT`` to bf16; on a CPU without
            AVX512-BF16/AMX the plugin runs f32 anyway, and :attr:`precision` says so.
        threads: ``INFERENCE_NUM_THREADS``.
        hint: ``latency`` (one stream using every thread: the live loop's single frame)
            or ``throughput`` (several streams; a batch is split across them, for batch
            tools). ``PERFORMANCE_HINT`` is set accordingly.
        blob_cache: folder for OpenVINO's compiled-kernel cache (``CACHE_DIR``): the
            second compile of the same model and settings reads it instead of compiling.

    Raises:
        CheckpointError: OpenVINO cannot read or compile the file.
    """

    def __init__(self, path: str | os.PathLike, *, precision: str, threads: int, hint: str,
                 blob_cache: Path | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": _PRECISION[precision],
            "PERFORMANCE_HINT": _HINT[hint],
            "INFERENCE_NUM_THREADS": int(threads),
            # OpenVINO pins its stream threads to cores by default: on a CPU shared with
            # other programs a pinned thread waits for its busy core instead of moving to
            # a free one (bench/live.py --contention: the detector call took 2.5x its idle
            # time pinned, 1.7x unpinned, with 2 burners on 2 cores)
            "ENABLE_CPU_PINNING": False,
        }
        if blob_cache is not None:
            blob_cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(blob_cache)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # openvino raises RuntimeError subclasses of its own
            raise CheckpointError(f"{path}: OpenVINO cannot compile it ({type(e).__name__}: {e})") from None
        inputs = self.compiled.inputs
        if len(inputs) != 1:
            raise CheckpointError(f"{path}: expected one input, the model has {len(inputs)}")
        # the property is an ov.Type (str() gives "<Type: 'bfloat16'>"): compare types, not text
        actual = "bf16" if self.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"
        if precision == "bf16" and actual != "bf16":
            warn_once("openvino: this CPU has no native bf16 (AVX512-BF16/AMX); running fp32")
        names = tuple(next(iter(o.get_names()), f"output{i}") for i, o in enumerate(self.compiled.outputs))
        in_name = next(iter(inputs[0].get_names()), "input")
        self.info = SessionInfo(in_name, _dims(inputs[0].get_partial_shape()), names, "openvino", actual,
                                int(threads), str(path))
        self.hint = hint
        self._local = threading.local()  # one infer request per calling thread (cameras share the model)
        self._streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if hint == "throughput" else 1
        self._queue = None
        if self._streams > 1:
            self._queue = ov.AsyncInferQueue(self.compiled, self._streams)
        if self.info.fixed_batch is None and hint == "throughput" and self._queue is None:
            warn_once("openvino: throughput hint gave one stream on %d thread(s); batches run as one request", threads)

    def _infer(self, request, batch: np.ndarray) -> list[np.ndarray]:
        request.infer({0: batch})
        return [np.array(request.get_output_tensor(i).data, np.float32) for i in range(len(self.compiled.outputs))]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = len(batch)
        if self._queue is None or n < 2 or self.info.fixed_batch is not None:
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = self.compiled.create_infer_request()
            return self._infer(request, batch)
        # Throughput: one slice of the batch per stream, run concurrently.
        k = min(self._streams, n)
        bounds = np.linspace(0, n, k + 1).astype(int)
        parts: list[list[np.ndarray] | None] = [None] * k

        def done(request, idx: int) -> None:
            parts[idx] = [np.array(request.get_output_tensor(i).data, np.float32)
                          for i in range(len(self.compiled.outputs))]

        self._queue.set_callback(done)
        for i in range(k):
            self._queue.start_async({0: np.ascontiguousarray(batch[bounds[i]:bounds[i + 1]])}, i)
        self._queue.wait_all()
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.compiled.outputs))]  # type: ignore[index]
