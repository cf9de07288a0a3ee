"""One seam for inference engines: PyTorch, ONNX Runtime and OpenVINO behind one protocol.

A model family (detector or embedder) builds its network once and asks
:func:`build_session` for a :class:`Session` on the configured engine; from then on it
only calls ``session.run(batch)`` and never names an engine again. Thread counts,
spin-waiting, precision and the on-disk cache of converted models are decided here, once,
by the same rule for every engine.
"""

from __future__ import annotations

from facerec.runtime.base import (ENGINES, PRECISIONS, Session, SessionInfo, available_engines, cpu_has_bf16,
                                  resolve_precision, resolve_threads)
from facerec.runtime.build import ModelSource, build_session, cache_root, resolve_engine

__all__ = [
    "ENGINES", "PRECISIONS", "ModelSource", "Session", "SessionInfo", "available_engines", "build_session",
    "cache_root", "cpu_has_bf16", "resolve_engine", "resolve_precision", "resolve_threads",
]
