"""Choosing the engine and building a session, with an on-disk cache of converted models."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from facerec.errors import ConfigError
from facerec.runtime.base import ENGINES, Session, available_engines, resolve_precision, resolve_threads

log = logging.getLogger(__name__)

#: ``engine: auto`` -> engine per model family, first installed one wins. Measured with
#: ``bench/runtime.py`` on the project's 2-core AVX2 machine (no native bf16), fp32,
#: batch 1 and 32 (README, "Models and engines"): OpenVINO was 1.5-3.3x faster than eager
#: PyTorch for every family and as fast as ONNX Runtime (which wins only on the published
#: MobileFaceNet export, a different vector space); it converts the checkpoint itself, so
#: the vector space and dynamic input sizes are kept. PyTorch is the fallback: always
#: installed, no conversion.
AUTO_ENGINES: dict[str, tuple[str, ...]] = {
    "yolov5": ("openvino", "torch"),
    "iresnet": ("openvino", "torch"),
    "mobilefacenet": ("openvino", "torch"),
    "ultralytics": ("torch",),
}

_INSTALL = {"onnx": "pip install onnxruntime", "openvino": "pip install openvino"}


def resolve_engine(family: str, requested: str, *, flag: str = "runtime.engine") -> str:
    """The engine to run ``family`` on.

    Args:
        family: key of :data:`AUTO_ENGINES` (``yolov5``, ``iresnet``, ...).
        requested: ``auto`` or an engine name.
        flag: how the setting is named in error messages.

    Raises:
        ConfigError: an unknown engine, or one whose package is not installed (the
            message says what to install).
    """
    installed = available_engines()
    if requested == "auto":
        for engine in AUTO_ENGINES.get(family, ("torch",)):
            if engine in installed:
                return engine
        return "torch"
    if requested not in ENGINES:
        raise ConfigError(f"{flag} must be auto, torch, onnx or openvino, got {requested!r}")
    if requested not in installed:
        raise ConfigError(f"{flag} {requested} needs its package: {_INSTALL.get(requested, requested)}")
    return requested


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``runtime.cache_dir``, else ``$FACEREC_CACHE``, else ``$XDG_CACHE_HOME/facerec`` or ``~/.cache/facerec``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("FACEREC_CACHE"):
        return Path(os.environ["FACEREC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facerec" / "runtime"


@dataclass
class ModelSource:
    """Where a network comes from, for any engine.

    Attributes:
        name: model name (logs and cache file names).
        sha256: identity of the weights: the file's sha256, or a hash of an in-memory
            module's tensors. Cache entries are keyed by it, so new weights never reuse an
            old conversion.
        input_shape: ``(n, c, h, w)`` with ``None`` for dynamic dimensions; used for the
            example input and the dynamic axes of an ONNX export.
        output_names: output names, in the order the module returns them.
        module: builds (or returns) the PyTorch module; ``None`` when only an ONNX file exists.
        onnx_path: an existing ONNX file to run instead of exporting the module.
        example_hw: spatial size of the export's example input where it is dynamic, px.
        channels_last: run fp32 in channels-last memory on PyTorch (bf16 always does):
            about 2x faster for the YOLOv5 CSP convolutions, rounding differs by ~1e-5.
        persistent: keep conversions in the on-disk cache. False for modules passed in
            memory (random weights of tests and benchmarks): their hash changes every run,
            so cached files would only pile up; they go to a folder removed at exit.
    """

    name: str
    sha256: str
    input_shape: tuple[int | None, ...]
    output_names: tuple[str, ...]
    module: Callable[[], Any] | None = None
    onnx_path: Path | None = None
    example_hw: tuple[int, int] = (640, 640)
    channels_last: bool = False
    persistent: bool = True
    _built: Any = field(default=None, repr=False)

    def torch_module(self):
        if self.module is None:
            raise ConfigError(f"{self.name}: engine torch needs the PyTorch weights; only {self.onnx_path} was found")
        if self._built is None:
            self._built = self.module()
        return self._built

    def cache_key(self, engine: str, precision: str) -> str:
        return f"{self.name}-{self.sha256[:16]}-{engine}-{precision}"


def _atomic_dir_file(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


def export_onnx(source: ModelSource, path: Path) -> Path:
    """Export the source's module to ``path`` with its dynamic dimensions (opset 17).

    Uses the TorchScript exporter (``dynamo=False``): it handles these convolutional
    networks directly and needs no extra packages. Written through a temporary file, so
    an interrupted export never leaves a truncated cache entry.
    """
    import torch

    module = source.torch_module()
    n, c, h, w = source.input_shape
    eh, ew = source.example_hw
    example = torch.zeros(n or 1, c or 3, h or eh, w or ew)
    axes = {i: f"d{i}" for i, d in enumerate(source.input_shape) if d is None}
    dynamic = {"input": axes, **{o: {0: "d0"} for o in source.output_names if 0 in axes}}
    tmp = _atomic_dir_file(path)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter announces its own deprecation; it is the one that
            # needs no extra packages and handles these networks exactly
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module.float().eval(), (example,), str(tmp), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=list(source.output_names),
                              dynamic_axes=dynamic)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s: exported to ONNX in %.1f s (%s)", source.name, time.perf_counter() - t0, path)
    return path


def _onnx_file(source: ModelSource, root: Path) -> tuple[Path, bool]:
    """The ONNX file to run: the source's own, or a cached export. Second value: from cache."""
    if source.onnx_path is not None:
        return source.onnx_path, False
    path = root / f"{source.cache_key('onnx', 'fp32')}.onnx"
    if path.is_file():
        return path, True
    return export_onnx(source, path), False


def _openvino_ir(source: ModelSource, root: Path, precision: str) -> tuple[Path, bool]:
    """The converted OpenVINO IR, from the cache when present. Second value: from cache."""
    import openvino as ov

    xml = root / f"{source.cache_key('openvino', precision)}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml, True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root) as tmpdir:
        onnx_path = source.onnx_path or export_onnx(source, Path(tmpdir) / f"{source.name}.onnx")
        model = ov.convert_model(str(onnx_path))
        tmp_xml = Path(tmpdir) / xml.name
        # f32 weights in the IR: precision is a compile-time hint, and fp16 compression
        # would cost parity for nothing on a CPU
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_xml, xml)
    log.info("%s: converted for OpenVINO in %.1f s (%s)", source.name, time.perf_counter() - t0, xml)
    return xml, False


_SCRATCH: list[Path] = []


def _scratch_dir() -> Path:
    """A per-process folder for conversions of in-memory modules, removed at exit."""
    if not _SCRATCH:
        import atexit
        import shutil

        path = Path(tempfile.mkdtemp(prefix="facerec-runtime-"))
        atexit.register(shutil.rmtree, path, True)
        _SCRATCH.append(path)
    return _SCRATCH[0]


def build_session(source: ModelSource, *, engine: str, precision: str = "auto", threads: int | None = None,
                  hint: str = "latency", cache_dir: str | os.PathLike | None = None) -> Session:
    """A session for ``source`` on a concrete ``engine``.

    Args:
        source: the network and its identity.
        engine: ``torch``, ``onnx`` or ``openvino`` (resolve ``auto`` with
            :func:`resolve_engine` first: the rule depends on the model family).
        precision: ``auto``, ``fp32`` or ``bf16``.
        threads: intra-op threads; ``None`` = the cores available to this process.
        hint: ``latency`` (live loop) or ``throughput`` (batch tools); OpenVINO only.
        cache_dir: root of the converted-model cache (see :func:`cache_root`).

    Returns:
        The session; its ``from_cache`` attribute is True when a cached export or IR
        was read instead of converting again.

    Raises:
        ConfigError: ``engine`` is not a concrete engine or is not installed.
        CheckpointError: the engine cannot load the network.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be torch, onnx or openvino here, got {engine!r} (resolve 'auto' first)")
    resolve_engine("", engine)  # installed?
    prec = resolve_precision(precision)
    n = resolve_threads(threads)
    root = cache_root(cache_dir) if source.persistent else _scratch_dir()
    from_cache = False
    session: Any
    if engine == "torch":
        from facerec.runtime.torch_engine import TorchSession

        session = TorchSession(source.torch_module(), source.input_shape, source.output_names, precision=prec,
                               threads=n, channels_last=source.channels_last, source=source.name)
    elif engine == "onnx":
        from facerec.runtime.ort_engine import OnnxSession

        path, from_cache = _onnx_file(source, root)
        session = OnnxSession(path, precision=prec, threads=n)
    else:
        from facerec.runtime.openvino_engine import OpenVinoSession

        root.mkdir(parents=True, exist_ok=True)
        path, from_cache = _openvino_ir(source, root, prec)
        session = OpenVinoSession(path, precision=prec, threads=n, hint=hint, blob_cache=root / "openvino_blobs")
    session.from_cache = from_cache
    log.debug("%s: %r%s", source.name, session, " (from cache)" if from_cache else "")
    return session
