"""The inference engines, as one table: what each needs installed and how it builds a session.

Adding an engine is one module with its :class:`~facerec.runtime.base.SessionBase`
subclass, one row in :data:`ENGINE_TABLE` and its name in :data:`EngineName` (the config's
``runtime.engine`` accepts exactly ``auto`` and these names; an import-time check keeps
the two equal). Nothing here imports an engine's package: the table is read by the
config schema and the command-line parsers, which must stay light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, get_args

from facerec.errors import ConfigError

if TYPE_CHECKING:
    from facerec.runtime.base import SessionBase
    from facerec.runtime.build import ModelSource

log = logging.getLogger(__name__)

#: The engine names, as a type (``runtime.engine`` is ``auto`` or one of them).
EngineName = Literal["torch", "onnx", "openvino"]

#: The old name of ``engine``: constructor keyword ``backend=``, flag ``--backend``,
#: config key ``models.backend``. Still accepted everywhere, through :func:`engine_alias`.
ENGINE_ALIAS = "backend"

#: Builds a session: ``(source, precision, threads, hint, cache folder) -> (session, from cache)``.
#: ``precision`` is already resolved (``fp32`` or ``bf16``), ``threads`` a count.
SessionFactory = Callable[["ModelSource", str, int, str, Path], "tuple[SessionBase, bool]"]


@dataclass(frozen=True)
class EngineSpec:
    """One inference engine.

    Attributes:
        name: the value of ``runtime.engine``.
        package: the Python module whose presence means the engine is installed.
        install: what to run when it is missing (said in the error message).
        precisions: the arithmetic it runs; ``precision: auto`` picks bf16 only where
            the engine has it (so no warning about bf16 when nobody asked for it).
        build: makes a session for a model source (imports the package lazily).
    """

    name: str
    package: str
    install: str
    precisions: tuple[str, ...]
    build: SessionFactory


def _torch(source: ModelSource, precision: str, threads: int, hint: str, root: Path) -> tuple[SessionBase, bool]:
    from facerec.runtime.torch_engine import TorchSession

    return TorchSession(source.torch_module(), source.input_shape, source.output_names, precision=precision,
                        threads=threads, channels_last=source.channels_last, source=source.name), False


def _onnx(source: ModelSource, precision: str, threads: int, hint: str, root: Path) -> tuple[SessionBase, bool]:
    from facerec.runtime.build import onnx_file
    from facerec.runtime.ort_engine import OnnxSession

    path, from_cache = onnx_file(source, root)
    return OnnxSession(path, precision=precision, threads=threads), from_cache


def _openvino(source: ModelSource, precision: str, threads: int, hint: str, root: Path) -> tuple[SessionBase, bool]:
    from facerec.runtime.build import openvino_ir
    from facerec.runtime.openvino_engine import OpenVinoSession

    root.mkdir(parents=True, exist_ok=True)
    path, from_cache = openvino_ir(source, root, precision)
    return OpenVinoSession(path, precision=precision, threads=threads, hint=hint,
                           blob_cache=root / "openvino_blobs"), from_cache


#: Every engine, in the order ``facerec`` lists them.
ENGINE_TABLE: dict[str, EngineSpec] = {
    "torch": EngineSpec("torch", "torch", "pip install torch", ("fp32", "bf16"), _torch),
    "onnx": EngineSpec("onnx", "onnxruntime", "pip install onnxruntime", ("fp32",), _onnx),
    "openvino": EngineSpec("openvino", "openvino", "pip install openvino", ("fp32", "bf16"), _openvino),
}

if tuple(ENGINE_TABLE) != get_args(EngineName):  # pragma: no cover - a table edited without the type
    raise ImportError(f"ENGINE_TABLE {tuple(ENGINE_TABLE)} and EngineName {get_args(EngineName)} differ")


def engine_alias(engine: str | None, backend: str | None, *, engine_name: str = "engine",
                 alias_name: str = ENGINE_ALIAS, warn: bool = False) -> str | None:
    """The engine asked for, where ``backend`` is its old name (the one place that maps it).

    Args:
        engine: the value given under the current name, or ``None``.
        backend: the value given under the old name, or ``None``.
        engine_name: how the current name is spelled where the values came from
            (``engine``, ``--engine``), for messages.
        alias_name: how the old name is spelled there (``backend``, ``--backend``).
        warn: log that the old name is deprecated (command lines do; keyword arguments
            of scripts and tests do not).

    Raises:
        ConfigError: both names were given.
    """
    if backend is None:
        return engine
    if engine is not None:
        raise ConfigError(f"{alias_name} is the old name of {engine_name}; pass only {engine_name}")
    if warn:
        log.warning("%s is deprecated; use %s %s", alias_name, engine_name, backend)
    return backend
