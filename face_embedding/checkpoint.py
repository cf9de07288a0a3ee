"""Loading PyTorch checkpoints into the embedder modules written here, and running them.

Checkpoints are read with ``torch.load(weights_only=True)`` (no foreign code runs) and
loaded with exact key checks: a checkpoint that does not fit raises
:class:`~facerec.errors.CheckpointError` naming the file, the missing and unexpected keys
and any tensor whose shape differs. Wrapper prefixes (``module.``, ``features.module.``)
are stripped by the family that knows its layout, never guessed here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from face_embedding.base import Embedder
from facerec.errors import CheckpointError, WeightsNotFoundError
from facerec.types import EmbedderKey
from facerec.weights import Backend, WeightsSpec, resolve_weights, sha256_file

logger = logging.getLogger(__name__)

#: How many key names an error message lists before it says "and N more".
_SHOWN_KEYS = 8


def _short(keys: list[str]) -> str:
    """``a, b, c and 12 more`` for a sorted key list."""
    keys = sorted(keys)
    head = ", ".join(keys[:_SHOWN_KEYS])
    return head + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a ``.pt``/``.pth`` file safely onto the CPU.

    Raises:
        CheckpointError: the file is not a checkpoint ``weights_only`` loading accepts
            (truncated, not a torch file, or pickling arbitrary classes).
    """
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad file
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None


def tensor_items(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` mapping of a checkpoint that is a state_dict.

    Raises:
        CheckpointError: ``obj`` is not a mapping of tensors.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state_dict; these entries are not named tensors: {_short(bad)}")
    return dict(obj)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Copy ``state`` into ``module``, requiring exactly the module's keys and shapes.

    The one tolerated difference: BatchNorm ``num_batches_tracked`` counters may be
    absent (older PyTorch did not save them; inference never reads them).

    Raises:
        CheckpointError: keys are missing or unexpected (both listed, shortened), or a
            tensor has a different shape (name and both shapes given).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    counters = [k for k in missing if k.endswith(".num_batches_tracked")]
    if counters:
        # BatchNorm's training-step counter, absent from checkpoints of PyTorch < 0.4.1
        # and never read at inference: the module keeps its own value.
        state = {**state, **{k: own[k] for k in counters}}
        missing = [k for k in missing if k not in counters]
        logger.debug("%s: %d BatchNorm num_batches_tracked counters absent; not needed", path, len(counters))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        raise CheckpointError(
            f"{path} does not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Is it the right model (and size) for this embedder?"
        )
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:_SHOWN_KEYS]) + (f"; and {len(wrong) - _SHOWN_KEYS} more" if len(wrong) > _SHOWN_KEYS else "")
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) have the wrong shape: {shown}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's parameter and buffer names and bytes.

    Identifies a model passed in memory (tests, benchmarks): two modules with identical
    weights get the same key, different random initialisations get different keys.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TorchEmbedder(Embedder):
    """Runs an ``nn.Module`` on the CPU in eval mode, fp32, under ``torch.inference_mode``.

    Args:
        model: the network; put into eval mode here.
        key: the vector space it produces.
        spec: weights spec (preprocessing).
        dim: output dimension.
        batch_size: faces per forward pass.
        threads: ``torch.set_num_threads`` value; note that this setting is global to
            the process (PyTorch has no per-model thread pool).
    """

    def __init__(self, model: nn.Module, key: EmbedderKey, spec: WeightsSpec, dim: int,
                 batch_size: int = 32, threads: int | None = None, *,
                 default_threshold: float | None = None, quality_is_norm: bool | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.model = model.eval().float()
        self.key = key
        self.spec = spec
        self.dim = dim
        self.batch_size = batch_size
        if default_threshold is not None:
            self.default_threshold = default_threshold
        if quality_is_norm is not None:
            self.quality_is_norm = quality_is_norm

    def forward_raw(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return out.reshape(len(batch), -1).float().numpy()

    def __repr__(self) -> str:
        return f"TorchEmbedder({self.key}, dim={self.dim}, batch_size={self.batch_size})"


def build_embedder(
    name: str,
    spec: WeightsSpec,
    make_module: Callable[[], nn.Module],
    load_state: Callable[[nn.Module, Any, Path], None],
    dim: int,
    *,
    weights: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    backend: Backend = "torch",
    verify: bool = True,
    batch_size: int = 32,
    model: nn.Module | None = None,
    threads: int | None = None,
    default_threshold: float | None = None,
    quality_is_norm: bool | None = None,
) -> Embedder:
    """The shared body of every registered embedder constructor.

    Args:
        name: registry name; the first half of the :class:`EmbedderKey`.
        spec: weights spec of the model.
        make_module: builds the network with random weights.
        load_state: puts the unpickled checkpoint into the network (the family's prefix
            handling and :func:`load_strict`).
        dim: output dimension.
        weights: explicit weights file. A path ending in ``.onnx`` selects the ONNX
            Runtime backend whatever ``backend`` says.
        weights_dir: directory searched first (``models.weights_dir``).
        backend: ``"torch"`` runs the module written here on the checkpoint; ``"onnx"``
            runs the upstream ONNX export with ONNX Runtime.
        verify: check the published sha256 where one exists.
        batch_size: faces per forward pass.
        model: an already built network (e.g. random weights for tests and benchmarks);
            no file is read and the key's hash is :func:`state_sha256` of its weights.
        threads: CPU threads (see :class:`TorchEmbedder` and the ONNX backend).

    Returns:
        An embedder whose key is ``(name, sha256 of the file actually loaded)``. The
        PyTorch checkpoint and the ONNX export of the same model are different files and
        so different keys: a gallery embedded with one is never silently searched with
        vectors of the other.
    """
    extra = {"default_threshold": default_threshold, "quality_is_norm": quality_is_norm}
    if model is not None:
        if backend != "torch":
            raise ValueError("model= runs an nn.Module in PyTorch; it cannot be combined with backend='onnx'")
        key = EmbedderKey(name, state_sha256(model))
        return TorchEmbedder(model, key, spec, dim, batch_size, threads, **extra)
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if weights is not None and str(weights).lower().endswith(".onnx"):
        backend = "onnx"
    if backend == "onnx":
        from face_embedding.onnx_backend import OnnxEmbedder

        if weights is None and not spec.onnx_file:
            raise WeightsNotFoundError(
                f"{name}: upstream publishes no ONNX export of {spec.file}. Use backend 'torch', or export "
                f"the model yourself (torch.onnx.export) and pass the .onnx file as the weights path. "
                f"Checkpoint: {spec.url}"
            )
        path = resolve_weights(spec, weights, weights_dir, verify=verify, backend="onnx")
        return OnnxEmbedder(path, name, spec, batch_size=batch_size, threads=threads, expected_dim=dim, **extra)
    path = resolve_weights(spec, weights, weights_dir, verify=verify, backend="torch")
    net = make_module()
    load_state(net, read_checkpoint(path), path)
    logger.debug("loaded %s from %s", name, path)
    key = EmbedderKey(name, sha256_file(path))
    return TorchEmbedder(net, key, spec, dim, batch_size, threads, **extra)
