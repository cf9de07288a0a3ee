"""Choosing the engine and building a session, with an on-disk cache of converted models."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from facerec.errors import ConfigError
from facerec.runtime.base import ENGINES, Session, available_engines, resolve_precision, resolve_threads
from facerec.runtime.engines import ENGINE_TABLE

if TYPE_CHECKING:
    from facerec.weights import WeightsSpec

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
        raise ConfigError(f"{flag} must be auto, {', '.join(ENGINES[:-1])} or {ENGINES[-1]}, got {requested!r}")
    if requested not in installed:
        raise ConfigError(f"{flag} {requested} needs its package: {ENGINE_TABLE[requested].install}")
    return requested


@dataclass(frozen=True)
class ModelFile:
    """Which file a model runs from, and on which engine.

    Attributes:
        engine: the concrete engine (``auto`` resolved for the family).
        path: the weights file; ``None`` for a network passed in memory.
        onnx: ``path`` is an ONNX export, run as it is (its key hashes that file);
            otherwise it is a PyTorch checkpoint the family loads (and the engine
            converts, when not ``torch``).
    """

    engine: str
    path: Path | None
    onnx: bool = False


def resolve_model_file(spec: WeightsSpec, family: str, requested: str, *,
                       weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None,
                       verify: bool = True, in_memory: bool = False) -> ModelFile:
    """The one rule, for every model family, of which file runs on which engine.

    * a ``weights`` path ending in ``.onnx`` runs that export (on ONNX Runtime, or on
      OpenVINO when that engine is asked for: PyTorch cannot run an ONNX file);
    * with no explicit file, ``engine: onnx`` runs the published ONNX export where the
      spec names one and it is present, and so does ``openvino`` when only the export is
      present (:func:`facerec.weights.use_onnx_export`); without the export both convert
      the checkpoint, so the ``.pt`` alone runs every engine;
    * everything else loads the PyTorch checkpoint, converted by the engine when it is
      not ``torch`` (same vector space and key as on PyTorch).

    Args:
        spec: the model's weights spec (file names, hashes, ONNX export).
        family: key of :data:`AUTO_ENGINES` for ``engine: auto``.
        requested: ``runtime.engine`` (``auto`` or an engine name).
        weights: an explicit weights file.
        weights_dir: the configured weights folder, searched first.
        verify: check the published sha256 where one exists.
        in_memory: the network was passed in memory; no file is looked for.

    Raises:
        ConfigError: an unknown or uninstalled engine.
        WeightsNotFoundError, WeightsChecksumError: as for the file.
    """
    from facerec.weights import find_weights, resolve_weights, use_onnx_export

    engine = resolve_engine(family, requested, flag="engine")
    if in_memory:
        return ModelFile(engine, None)
    explicit_onnx = weights is not None and str(weights).lower().endswith(".onnx")
    pt = None if explicit_onnx else find_weights(spec, weights, weights_dir, "torch")
    if explicit_onnx or use_onnx_export(spec, engine, weights, weights_dir, pt):
        engine = "onnx" if engine == "torch" else engine
        return ModelFile(engine, resolve_weights(spec, weights, weights_dir, verify=verify, backend="onnx"), True)
    return ModelFile(engine, resolve_weights(spec, weights, weights_dir, verify=verify, backend="torch"))


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


_said_preparing: list[bool] = []


def _preparing(source: ModelSource, engine: str) -> None:
    """Say once per process that models are being converted: the first start with an
    empty cache spends seconds here (about 4 s for the default pair on 2 cores), which
    would otherwise look like a hang. Conversions of in-memory test networks say nothing."""
    if source.persistent and not _said_preparing:
        _said_preparing.append(True)
        log.warning("preparing models (first start only): converting %s for %s, a few seconds; "
                    "later starts read the cache", source.name, engine)


def onnx_file(source: ModelSource, root: Path) -> tuple[Path, bool]:
    """The ONNX file to run: the source's own, or a cached export. Second value: from cache."""
    if source.onnx_path is not None:
        return source.onnx_path, False
    path = root / f"{source.cache_key('onnx', 'fp32')}.onnx"
    if path.is_file():
        return path, True
    _preparing(source, "onnx")
    return export_onnx(source, path), False


def openvino_ir(source: ModelSource, root: Path, precision: str) -> tuple[Path, bool]:
    """The converted OpenVINO IR, from the cache when present. Second value: from cache."""
    import openvino as ov

    xml = root / f"{source.cache_key('openvino', precision)}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml, True
    _preparing(source, "openvino")
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
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)} here, got {engine!r} (resolve 'auto' first)")
    resolve_engine("", engine)  # installed?
    spec = ENGINE_TABLE[engine]
    prec = resolve_precision(precision)
    if precision == "auto" and prec not in spec.precisions:
        prec = spec.precisions[0]  # auto: the best this engine has; an explicit bf16 is still reported
    n = resolve_threads(threads)
    root = cache_root(cache_dir) if source.persistent else _scratch_dir()
    session, from_cache = spec.build(source, prec, n, hint, root)
    session.from_cache = from_cache
    log.debug("%s: %r%s", source.name, session, " (from cache)" if from_cache else "")
    return session
