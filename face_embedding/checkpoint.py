"""Loading PyTorch checkpoints into the embedder modules written here, and running them.

Checkpoints are read with the project's restricted unpickler
(:func:`facerec.safe_unpickle.read_torch_pickle`: tensors and plain containers only, no
code from the file runs) and loaded with exact key checks: a checkpoint that does not fit raises
:class:`~facerec.errors.CheckpointError` naming the file, the missing and unexpected keys
and any tensor whose shape differs. Wrapper prefixes (``module.``, ``features.module.``)
are stripped by the family that knows its layout, never guessed here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from face_embedding.base import Embedder
from facerec.config import RecognitionConfig, RuntimeConfig
from facerec.errors import CheckpointError
from facerec.runtime import Session
from facerec.runtime.base import state_sha256
from facerec.runtime.settings import engine_overrides, merge_section
from facerec.safe_unpickle import SHOWN_KEYS, key_mismatch, read_torch_pickle, short_list
from facerec.types import EmbedderKey
from facerec.weights import WeightsSpec, sha256_file

logger = logging.getLogger(__name__)

def read_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a ``.pt``/``.pth`` file safely onto the CPU (zip or legacy torch format).

    Raises:
        CheckpointError: the file is not a torch checkpoint (truncated, not a torch file,
            or naming any class or function beyond tensors and plain containers).
    """
    return read_torch_pickle(path, what="an embedder checkpoint (a state_dict of tensors)")


def tensor_items(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` mapping of a checkpoint that is a state_dict.

    Raises:
        CheckpointError: ``obj`` is not a mapping of tensors.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state_dict; these entries are not named tensors: {short_list(bad)}")
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
        raise CheckpointError(
            f"{path} does not fit {type(module).__name__}: " + key_mismatch(missing, unexpected)
            + ". Is it the right model (and size) for this embedder?"
        )
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:SHOWN_KEYS]) + (f"; and {len(wrong) - SHOWN_KEYS} more" if len(wrong) > SHOWN_KEYS else "")
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) have the wrong shape: {shown}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


class SessionEmbedder(Embedder):
    """An embedder network running in a :class:`~facerec.runtime.Session` (any engine).

    Args:
        session: the network on its engine; takes ``(n, 3, 112, 112)`` float32.
        key: the vector space it produces (the name and the sha256 of the weights file
            read, whatever the engine: the same checkpoint on OpenVINO or PyTorch is the
            same space, agreeing at cosine >= 0.999 in fp32).
        spec: weights spec (preprocessing).
        dim: output dimension.
        batch_size: faces per call.
        model: the PyTorch module where one was built (``None`` for an ONNX file).
    """

    def __init__(self, session: Session, key: EmbedderKey, spec: WeightsSpec, dim: int, batch_size: int, *,
                 model: nn.Module | None = None, default_threshold: float | None = None,
                 quality_is_norm: bool | None = None) -> None:
        self.session = session
        self.model = model
        self.key = key
        self.spec = spec
        self.dim = dim
        self.batch_size = batch_size
        if default_threshold is not None:
            self.default_threshold = default_threshold
        if quality_is_norm is not None:
            self.quality_is_norm = quality_is_norm

    @property
    def engine(self) -> str:
        return self.session.engine

    @property
    def precision(self) -> str:
        return self.session.precision

    @property
    def fixed_batch(self) -> int | None:
        """Batch size the network accepts, or ``None`` when dynamic (fixed ones are padded)."""
        return self.session.info.fixed_batch

    def forward_raw(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(np.ascontiguousarray(batch, np.float32))[0]
        return np.asarray(out, np.float32).reshape(len(batch), -1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.key}, dim={self.dim}, engine={self.engine}, "
                f"precision={self.precision}, batch_size={self.batch_size})")


def _settings(runtime: RuntimeConfig | None, recognition: RecognitionConfig | None,
              overrides: dict[str, Any], name: str) -> tuple[RuntimeConfig, RecognitionConfig]:
    overrides = engine_overrides(overrides)
    rec_keys = {k: overrides.pop(k) for k in list(overrides) if k in RecognitionConfig.model_fields}
    rt = merge_section(RuntimeConfig, runtime, overrides, name)
    rec = merge_section(RecognitionConfig, recognition, rec_keys, name)
    return rt, rec


def build_embedder(
    name: str,
    spec: WeightsSpec,
    make_module: Callable[[], nn.Module],
    load_state: Callable[[nn.Module, Any, Path], None],
    dim: int,
    *,
    family: str,
    weights: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    verify: bool = True,
    model: nn.Module | None = None,
    runtime: RuntimeConfig | None = None,
    recognition: RecognitionConfig | None = None,
    default_threshold: float | None = None,
    quality_is_norm: bool | None = None,
    **overrides: Any,
) -> Embedder:
    """The shared body of every registered embedder constructor.

    Args:
        name: registry name; the first half of the :class:`EmbedderKey`.
        spec: weights spec of the model.
        make_module: builds the network with random weights.
        load_state: puts the unpickled checkpoint into the network (the family's prefix
            handling and :func:`load_strict`).
        dim: output dimension.
        family: key of the ``engine: auto`` rule (:data:`facerec.runtime.build.AUTO_ENGINES`).
        weights: explicit weights file. A path ending in ``.onnx`` runs that file (on
            ONNX Runtime, or on OpenVINO when that engine is asked for).
        weights_dir: directory searched first (``models.weights_dir``).
        verify: check the published sha256 where one exists.
        model: an already built network (e.g. random weights for tests and benchmarks);
            no file is read and the key's hash is :func:`state_sha256` of its weights.
        runtime: the ``runtime:`` section (engine, precision, threads, hint, cache).
        recognition: the ``recognition:`` section (``batch_size``).
        **overrides: single settings of those sections (``engine``, ``precision``,
            ``threads``, ``hint``, ``cache_dir``, ``batch_size``; ``backend`` is the old
            name of ``engine``), validated by the sections' own models.

    Returns:
        An embedder whose key is ``(name, sha256 of the file actually loaded)``. With
        ``engine: onnx`` and a published ONNX export, that export is run (a different
        file and so a different key than the checkpoint: a gallery embedded with one is
        never silently searched with vectors of the other). Every other engine converts
        the checkpoint itself and keeps its key.

    Raises:
        InvalidSettingError: a setting out of bounds (also a ``ValueError``).
        WeightsNotFoundError, WeightsChecksumError, CheckpointError: as for the file.
    """
    from facerec.runtime import ModelSource, build_session
    from facerec.runtime.build import resolve_model_file

    rt, rec = _settings(runtime, recognition, overrides, name)
    extra = {"default_threshold": default_threshold, "quality_is_norm": quality_is_norm}
    file = resolve_model_file(spec, family, rt.engine, weights=weights, weights_dir=weights_dir, verify=verify,
                              in_memory=model is not None)
    engine, path = file.engine, file.path
    hint = "latency" if rt.hint == "auto" else rt.hint
    shape = (None, 3, *spec.input_size)
    onnx_path = path if file.onnx else None
    from_file = path is not None
    if path is None:  # the network was passed in memory
        key = EmbedderKey(name, state_sha256(model))
    else:
        if not file.onnx:
            model = make_module()
            load_state(model, read_checkpoint(path), path)
            logger.debug("loaded %s from %s", name, path)
        key = EmbedderKey(name, sha256_file(path))
    net = model.float().eval() if model is not None else None
    source = ModelSource(name=name, sha256=key.weights_sha256, input_shape=shape, output_names=("embedding",),
                         module=(lambda: net) if net is not None else None, onnx_path=onnx_path,
                         example_hw=tuple(spec.input_size), persistent=from_file)  # type: ignore[arg-type]
    session = build_session(source, engine=engine, precision=rt.precision, threads=rt.threads, hint=hint,
                            cache_dir=rt.cache_dir)
    if onnx_path is not None:
        from face_embedding.onnx_backend import OnnxEmbedder, check_io

        check_io(session, onnx_path, spec, dim, name)
        return OnnxEmbedder(session, key, spec, dim, rec.batch_size, **extra)
    return SessionEmbedder(session, key, spec, dim, rec.batch_size, model=net, **extra)


#: The embedder of a PyTorch module (kept as a name: it is a session embedder on any engine).
TorchEmbedder = SessionEmbedder
