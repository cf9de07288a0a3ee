"""The session protocol and the rules every engine shares: threads, spinning, precision."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from facerec.runtime.engines import ENGINE_TABLE, EngineName

log = logging.getLogger(__name__)

Engine = EngineName
Precision = Literal["fp32", "bf16"]
Hint = Literal["latency", "throughput"]

#: Engines in the order ``facerec`` knows them (``auto`` is resolved per model).
ENGINES: tuple[str, ...] = tuple(ENGINE_TABLE)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

#: Environment that stops idle OpenMP workers from spin-waiting. On a CPU shared with
#: other programs a spinning worker burns a core that another stage (or process) needs:
#: on two busy cores ``facerec detect`` took 73 s with spinning against 24 s without.
#: Read by libgomp / Intel OpenMP when the thread pool starts, so it must be set before
#: ``torch`` is imported (``facerec/__init__.py`` calls :func:`no_spin_environment`).
NO_SPIN_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "KMP_AFFINITY": "disabled"}


def no_spin_environment() -> None:
    """Set :data:`NO_SPIN_ENV` unless the user set those variables (theirs win)."""
    for k, v in NO_SPIN_ENV.items():
        os.environ.setdefault(k, v)


@dataclass(frozen=True)
class SessionInfo:
    """What a session expects and what it is.

    Attributes:
        input_name: name of the single network input.
        input_shape: ``(n, c, h, w)``; ``None`` marks a dynamic dimension.
        output_names: names of the outputs, in the order :meth:`Session.run` returns them.
        engine: ``torch``, ``onnx`` or ``openvino``.
        precision: the arithmetic actually used (``bf16`` only where the engine runs it).
        threads: intra-op threads of this session.
        source: where the network came from (a file path, or ``module`` for an in-memory one).
    """

    input_name: str
    input_shape: tuple[int | None, ...]
    output_names: tuple[str, ...]
    engine: str
    precision: str
    threads: int
    source: str

    @property
    def fixed_batch(self) -> int | None:
        """Batch size the network accepts, or ``None`` when the batch is dynamic."""
        return self.input_shape[0] if self.input_shape else None

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """``(h, w)`` the network accepts, or ``None`` when the size is dynamic."""
        h, w = self.input_shape[2:4] if len(self.input_shape) == 4 else (None, None)
        return (h, w) if h is not None and w is not None else None


@runtime_checkable
class Session(Protocol):
    """A network ready to run: one float32 ``(n, c, h, w)`` batch in, its outputs out."""

    info: SessionInfo

    @property
    def engine(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for ``batch`` (float32, batch first), in :attr:`SessionInfo.output_names` order."""
        ...


class SessionBase:
    """Shared parts of the implementations: the info accessors and fixed-batch splitting."""

    info: SessionInfo
    #: True when :func:`~facerec.runtime.build.build_session` read a cached conversion.
    from_cache: bool = False

    @property
    def engine(self) -> str:
        return self.info.engine

    @property
    def precision(self) -> str:
        return self.info.precision

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(batch, np.float32)
        step = self.info.fixed_batch
        if step is None or len(x) == step:
            return self._run(x)
        n = len(x)
        if n % step:  # pad the last call up to the fixed batch; the padding is dropped below
            x = np.concatenate([x, np.zeros((step - n % step, *x.shape[1:]), np.float32)])
        parts = [self._run(x[i:i + step]) for i in range(0, len(x), step)]
        return [np.concatenate(level)[:n] for level in zip(*parts)]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        i = self.info
        return f"{type(self).__name__}({i.engine}, {i.precision}, threads={i.threads}, input={i.input_shape})"


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``runtime.threads``, or when unset the cores available to this process.

    Raises:
        ValueError: ``threads`` below 1.
    """
    if threads is None:
        return cores_available()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


_torch_threads: int | None = None


def set_torch_threads(threads: int) -> None:
    """The one place that calls ``torch.set_num_threads`` (a process-wide setting).

    PyTorch has one intra-op pool per process, so the last caller would win; sessions
    call this with the same resolved ``runtime.threads`` and it changes the pool only
    when the value differs.
    """
    global _torch_threads
    import torch

    if _torch_threads != threads or torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        _torch_threads = threads


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 pays.

    Elsewhere bf16 is emulated and slower than fp32, so ``precision: auto`` means fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on CPUs with native bf16, else ``fp32``; others unchanged."""
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return precision


def available_engines() -> tuple[str, ...]:
    """The engines whose Python package is installed."""
    return tuple(e.name for e in ENGINE_TABLE.values() if importlib.util.find_spec(e.package) is not None)


_warned: set[str] = set()


def warn_once(message: str, *args: object) -> None:
    """Log a warning the first time this exact message is seen in the process."""
    text = message % args if args else message
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def order_outputs(outputs: Sequence[np.ndarray], names: Sequence[str],
                  wanted: Sequence[str]) -> list[np.ndarray]:
    """``outputs`` (named by ``names``) reordered to ``wanted``."""
    by_name = dict(zip(names, outputs))
    return [by_name[n] for n in wanted]


def state_sha256(module) -> str:
    """sha256 over a module's parameter and buffer names, shapes and bytes.

    Identifies a model passed in memory (tests, benchmarks): two modules with identical
    weights get the same key (and share converted-model cache entries), different random
    initialisations get different ones.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
