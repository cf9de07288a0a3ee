"""Reading upstream YOLOv5-face checkpoints into :class:`~facerec.detect.yolov5_net.YoloV5Face`.

Upstream's ``.pt`` files pickle the whole model object. They are read with the project's
restricted unpickler (:mod:`facerec.safe_unpickle`): the classes they name become inert
stand-ins that only collect their pickled state, so no code from the checkpoint runs,
and anything outside :data:`INERT_ALLOWLIST` is refused. The network is then built from
the layer table the file holds and loaded strictly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from facerec.detect.yolov5_net import MODEL_TABLES, YoloV5Face
from facerec.errors import CheckpointError, ConfigError
from facerec.safe_unpickle import InertObject, key_mismatch, read_torch_pickle, short_list

#: Classes a YOLOv5(-face) checkpoint may name; each becomes an :class:`InertObject`.
INERT_ALLOWLIST: dict[str, frozenset[str]] = {
    "models.yolo": frozenset({"Model", "Detect"}),
    "models.common": frozenset({"Conv", "StemBlock", "ShuffleV2Block", "C3", "Bottleneck", "BottleneckCSP",
                                "SPP", "SPPF", "Focus", "Concat", "DWConv"}),
    "torch.nn.modules.conv": frozenset({"Conv2d"}),
    "torch.nn.modules.batchnorm": frozenset({"BatchNorm2d"}),
    "torch.nn.modules.activation": frozenset({"SiLU", "LeakyReLU", "ReLU", "ReLU6", "Hardswish", "Sigmoid"}),
    "torch.nn.modules.linear": frozenset({"Identity"}),
    "torch.nn.modules.container": frozenset({"Sequential", "ModuleList"}),
    "torch.nn.modules.pooling": frozenset({"MaxPool2d"}),
    "torch.nn.modules.upsampling": frozenset({"Upsample"}),
}

#: What a refusal says the file should have been.
_REFUSED = "a YOLOv5-face model. Only files saved by deepcam-cn/yolov5-face (or facerec) are read."

#: Deepest module nesting accepted in a pickled model (upstream's is about 6).
_MAX_DEPTH = 32


def _module_tree(root: InertObject, path: str | os.PathLike) -> dict[str, InertObject]:
    """Every pickled module by dotted path (``""`` is the root), refusing cycles."""
    out: dict[str, InertObject] = {}
    seen: set[int] = set()
    stack: list[tuple[str, InertObject, int]] = [("", root, 0)]
    while stack:
        name, obj, depth = stack.pop()
        if id(obj) in seen or depth > _MAX_DEPTH:
            raise CheckpointError(f"{path}: the pickled module tree is cyclic or deeper than {_MAX_DEPTH}")
        seen.add(id(obj))
        out[name] = obj
        children = obj.state.get("_modules") or {}
        if not isinstance(children, Mapping):
            raise CheckpointError(f"{path}: module {name or '<root>'} has malformed submodules")
        for key, child in children.items():
            if isinstance(child, InertObject):
                stack.append((f"{name}.{key}" if name else str(key), child, depth + 1))
    return out


def _module_tensors(tree: Mapping[str, InertObject]) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a pickled module tree, keyed like ``state_dict``."""
    out: dict[str, torch.Tensor] = {}
    for name, obj in tree.items():
        st = obj.state
        prefix = f"{name}." if name else ""
        skip = st.get("_non_persistent_buffers_set") or set()
        for kind in ("_parameters", "_buffers"):
            values = st.get(kind) or {}
            for key, value in (values.items() if isinstance(values, Mapping) else ()):
                if isinstance(value, torch.Tensor) and not (kind == "_buffers" and key in skip):
                    out[prefix + key] = value
    return out


@dataclass
class UpstreamCheckpoint:
    """What a YOLOv5-face checkpoint holds, as plain data.

    Attributes:
        state_dict: tensors keyed as upstream's ``model.state_dict()``, in stored dtype.
        table: the layer table (``model.yaml``), or ``None`` when the file has none.
        names: class names (``["face"]``).
        modules: the pickled module tree by dotted path (stand-ins), used to check
            activation types and BatchNorm epsilons; empty for a bare state_dict.
    """

    state_dict: dict[str, torch.Tensor]
    table: dict[str, Any] | None
    names: list[str]
    modules: dict[str, InertObject]


def read_checkpoint(path: str | os.PathLike) -> UpstreamCheckpoint:
    """Read an upstream YOLOv5-face ``.pt`` (or a facerec-saved state_dict + table).

    Accepted layouts: upstream's ``{"model": <Model>, ...}`` (``"ema"`` preferred when
    set), a pickled ``Model`` alone, ``{"model": state_dict, "yaml": table}``, or a bare
    state_dict.

    Raises:
        CheckpointError: unreadable file, a refused class, or no model inside.
    """
    obj = read_torch_pickle(path, INERT_ALLOWLIST, what=_REFUSED, legacy=False)
    table: Any = None
    names: Any = None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        table, names = obj.get("yaml"), obj.get("names")
        obj = obj["ema"] if isinstance(obj.get("ema"), InertObject) else obj.get("model")
    if isinstance(obj, InertObject):
        root = obj
        if root.upstream != "models.yolo.Model":
            raise CheckpointError(f"{path}: expected a models.yolo.Model inside, found {root.upstream}")
        table = root.state.get("yaml", table)
        names = root.state.get("names", names)
        tree = _module_tree(root, path)
        return UpstreamCheckpoint(_module_tensors(tree), dict(table) if isinstance(table, dict) else None,
                                  list(names or ["face"]), tree)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return UpstreamCheckpoint(dict(obj), dict(table) if isinstance(table, dict) else None,
                                  list(names or ["face"]), {})
    raise CheckpointError(f"{path}: no YOLOv5 model or state_dict found in the checkpoint")


def _match_table(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """The registered layer table whose parameter shapes equal ``state``'s, if any."""
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    for name, make in MODEL_TABLES.items():
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in YoloV5Face(make()).state_dict().items()}
        if shapes == wanted:
            return name, make()
    return None


_ACTIVATIONS = {"SiLU": nn.SiLU, "Identity": nn.Identity}


def _check_keys(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Require exactly ``module``'s state_dict keys and shapes in ``state``.

    Raises:
        CheckpointError: missing/unexpected keys (listed, shortened) or shape mismatches
            (name, file shape, network shape), naming the file.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the YOLOv5-face network built from its layer table: "
                              + key_mismatch(missing, unexpected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes differ from the network (file vs network): {short_list(wrong)}")


def load_state_strict(module: YoloV5Face, ckpt: UpstreamCheckpoint, path: str | os.PathLike) -> YoloV5Face:
    """Copy a checkpoint into ``module`` as float32, requiring exactly its keys and shapes.

    Also copies each BatchNorm's epsilon from the pickled modules and checks that every
    activation the checkpoint names is the one this implementation runs there.

    Raises:
        CheckpointError: missing/unexpected keys (listed), shape mismatches, or an
            activation this implementation does not use at that place.
    """
    _check_keys(module, ckpt.state_dict, path)
    ours = dict(module.named_modules())
    for dotted, stand_in in ckpt.modules.items():
        kind = stand_in.upstream.rsplit(".", 1)[-1]
        target = ours.get(dotted)
        if kind == "BatchNorm2d" and isinstance(target, nn.BatchNorm2d):
            target.eps = float(stand_in.state.get("eps", target.eps))
        elif stand_in.upstream.startswith("torch.nn.modules.activation") or kind == "Identity":
            if target is not None and type(target) is not _ACTIVATIONS.get(kind):
                raise CheckpointError(f"{path}: layer {dotted} uses {kind}, but this implementation runs "
                                      f"{type(target).__name__} there; the checkpoint is not a supported variant")
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    module.load_state_dict(state, strict=True)
    return module.float().eval()


def load_yolov5_face(path: str | os.PathLike, default_table: Mapping[str, Any] | None = None) -> YoloV5Face:
    """Build the network a checkpoint describes and load it strictly (float32, eval mode).

    The layer table comes from the file (upstream stores ``model.yaml``); a file without
    one is matched by parameter shapes against the registered tables, then against
    ``default_table``.

    Raises:
        CheckpointError: see :func:`read_checkpoint` and :func:`load_state_strict`.
    """
    ckpt = read_checkpoint(path)
    table = ckpt.table
    if table is None:
        match = _match_table(ckpt.state_dict)
        if match is not None:
            table = match[1]
        elif default_table is not None:
            table = dict(default_table)
        else:
            raise CheckpointError(f"{path}: holds no layer table and matches no registered YOLOv5-face model")
    try:
        with torch.device("meta"):  # shapes only: a hostile table cannot allocate memory here
            probe = YoloV5Face(table)
        _check_keys(probe, ckpt.state_dict, path)
        module = YoloV5Face(table)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its layer table cannot be built: {e}") from None
    return load_state_strict(module, ckpt, path)

