"""YOLOv5-face detectors: boxes, scores and five landmarks per face.

Upstream is deepcam-cn/yolov5-face (GPL-3.0, derived from ultralytics/yolov5); its
pretrained weights are GPL-3.0 and trained on WIDER FACE. Nothing of upstream's code is
used or imported here. What this module holds is ours:

* a PyTorch re-implementation of the network (StemBlock, ShuffleV2Block, Conv, C3,
  Bottleneck, SPP, SPPF, Focus, Concat, Upsample and the Detect head with landmarks),
  built from the layer table that upstream stores in its checkpoints (``model.yaml``),
  with parameter names equal to upstream's so the weights load with ``strict=True``;
* a restricted reader for upstream's ``.pt`` files, which pickle the whole model object:
  the classes they name become inert stand-ins that only collect their pickled state,
  so no code from the checkpoint runs, and anything outside an allowlist is refused;
* letterboxing, head decoding, NMS and the mapping back to image pixels, shared by the
  engines of :mod:`facerec.runtime` (PyTorch, ONNX Runtime, OpenVINO);
* the registered models ``yolov5n-0.5-face``, ``yolov5n-face``, ``yolov5s-face``,
  ``yolov5m-face`` and ``yolov5l-face``.

Only the ``yolov5n-0.5`` weights (``.pt`` and ``.onnx``) are known to be obtainable; the
larger models are built from the same layer tables and load upstream checkpoints when a
user supplies them.
"""

from __future__ import annotations

import codecs
import collections
import copy
import io
import logging
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from facerec.config import DetectionConfig, RuntimeConfig
from facerec.detect import DETECTORS
from facerec.errors import CheckpointError, ConfigError
from facerec.runtime import Session
from facerec.runtime.settings import InvalidSettingError, merge_section
from facerec.types import Detections
from facerec.weights import WeightsSpec, find_weights, resolve_weights, sha256_file, use_onnx_export

try:  # numpy >= 2 moved the pickling helpers; numpy.core still works but warns
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

#: Outputs per anchor: box (4), objectness (1), five landmarks (10), then the classes.
_NON_CLASS_OUTPUTS = 15

#: Grey used by upstream to pad the letterboxed image.
PAD_VALUE = 114

#: Anchor boxes in input pixels, (w, h) pairs per level: P3/8, P4/16, P5/32.
DEFAULT_ANCHORS = [[4, 5, 8, 10, 13, 16], [23, 29, 43, 55, 73, 105], [146, 217, 231, 300, 335, 433]]

#: Most candidates passed to NMS (the best-scoring ones), as upstream caps them; only a
#: very low ``conf_thres`` on a crowd reaches it, and NMS time grows with its square.
MAX_CANDIDATES = 30_000

#: How many key names an error message lists before it says "and N more".
_SHOWN_KEYS = 8


# --------------------------------------------------------------------------------------
# Layer tables
# --------------------------------------------------------------------------------------


def _shufflenet_table(width: float) -> dict[str, Any]:
    """Layer table of ``yolov5n`` (width 1.0) and ``yolov5n-0.5`` (width 0.5).

    ShuffleNetV2 backbone after a stem block (stride 4), a PAN neck of single-bottleneck
    C3 blocks, and three detection levels (strides 8, 16, 32).
    """
    backbone = [
        [-1, 1, "StemBlock", [32, 3, 2]],
        [-1, 1, "ShuffleV2Block", [128, 2]],
        [-1, 3, "ShuffleV2Block", [128, 1]],
        [-1, 1, "ShuffleV2Block", [256, 2]],
        [-1, 7, "ShuffleV2Block", [256, 1]],
        [-1, 1, "ShuffleV2Block", [512, 2]],
        [-1, 3, "ShuffleV2Block", [512, 1]],
    ]
    head = []
    # Top-down: 1x1 conv, upsample, join a backbone level, C3. Bottom-up: strided 3x3
    # conv, join the matching top-down conv output, C3.
    for lateral in (4, 2):
        head += [[-1, 1, "Conv", [128, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
                 [[-1, lateral], 1, "Concat", [1]], [-1, 1, "C3", [128, False]]]
    for lateral in (11, 7):
        head += [[-1, 1, "Conv", [128, 3, 2]], [[-1, lateral], 1, "Concat", [1]], [-1, 1, "C3", [128, False]]]
    head.append([[14, 17, 20], 1, "Detect", ["nc", "anchors"]])
    return {"nc": 1, "depth_multiple": 1.0, "width_multiple": width, "anchors": copy.deepcopy(DEFAULT_ANCHORS),
            "backbone": backbone, "head": head, "ch": 3}


def _csp_table(depth: float, width: float) -> dict[str, Any]:
    """Layer table of ``yolov5s/m/l-face``: stem block, CSP (C3) backbone, SPP(3,5,7), PAN."""
    backbone = [
        [-1, 1, "StemBlock", [64, 3, 2]],
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 9, "C3", [256]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 9, "C3", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],
        [-1, 1, "SPP", [1024, [3, 5, 7]]],
        [-1, 3, "C3", [1024, False]],
    ]
    head = []
    for channels, lateral in ((512, 5), (256, 3)):
        head += [[-1, 1, "Conv", [channels, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
                 [[-1, lateral], 1, "Concat", [1]], [-1, 3, "C3", [channels, False]]]
    for channels, lateral, out in ((256, 13, 512), (512, 9, 1024)):
        head += [[-1, 1, "Conv", [channels, 3, 2]], [[-1, lateral], 1, "Concat", [1]], [-1, 3, "C3", [out, False]]]
    head.append([[16, 19, 22], 1, "Detect", ["nc", "anchors"]])
    return {"nc": 1, "depth_multiple": depth, "width_multiple": width, "anchors": copy.deepcopy(DEFAULT_ANCHORS),
            "backbone": backbone, "head": head, "ch": 3}


#: Layer tables of the registered models, equal to upstream's ``models/*.yaml``.
MODEL_TABLES: dict[str, Callable[[], dict[str, Any]]] = {
    "yolov5n-0.5-face": lambda: _shufflenet_table(0.5),
    "yolov5n-face": lambda: _shufflenet_table(1.0),
    "yolov5s-face": lambda: _csp_table(0.33, 0.5),
    "yolov5m-face": lambda: _csp_table(0.67, 0.75),
    "yolov5l-face": lambda: _csp_table(1.0, 1.0),
}


# --------------------------------------------------------------------------------------
# Network blocks (parameter names follow upstream's so state_dicts load strictly)
# --------------------------------------------------------------------------------------

#: BatchNorm epsilon upstream sets on every layer before training (and so in its files).
BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.03)


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU; ``padding=None`` keeps the size ("same")."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = _bn(c2)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class StemBlock(nn.Module):
    """Stride-4 stem: a strided conv, then a strided conv branch and a max-pool branch."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2, p: int | None = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.stem_1 = Conv(c1, c2, k, s, p, g, act)
        self.stem_2a = Conv(c2, c2 // 2, 1, 1, 0)
        self.stem_2b = Conv(c2 // 2, c2, 3, 2, 1)
        self.stem_2p = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.stem_3 = Conv(c2 * 2, c2, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_1(x)
        return self.stem_3(torch.cat((self.stem_2b(self.stem_2a(x)), self.stem_2p(x)), 1))


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit. Stride 1 splits channels in half and transforms one half;
    stride 2 downsamples both branches. Outputs are channel-shuffled in groups of two."""

    def __init__(self, c1: int, c2: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2, 3):
            raise ConfigError(f"ShuffleV2Block stride must be 1, 2 or 3, got {stride}")
        half = c2 // 2
        if stride == 1 and c1 != 2 * half:
            raise ConfigError(f"ShuffleV2Block with stride 1 needs in == out channels, got {c1} -> {c2}")
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(c1, stride), _bn(c1), nn.Conv2d(c1, half, 1, bias=False),
                                         _bn(half), nn.SiLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(c1 if stride > 1 else half, half, 1, bias=False), _bn(half), nn.SiLU(),
            _depthwise(half, stride), _bn(half),
            nn.Conv2d(half, half, 1, bias=False), _bn(half), nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, change = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(change)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class Bottleneck(nn.Module):
    """1x1 conv then 3x3 conv, with a residual add when shapes allow and ``shortcut``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convs: a bottleneck path and a bypass, joined by a 1x1 conv."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling: parallel stride-1 max-pools (3, 5, 7 in the face models)."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: one max-pool applied three times in series (same field as SPP(5, 9, 13))."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels into channels) followed by a conv; older YOLOv5 stem."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    """Concatenate the outputs of several earlier layers along channels."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class Detect(nn.Module):
    """Detection head: one 1x1 conv per level, reshaped to ``(b, na, ny, nx, 15 + nc)``.

    Returns raw values (no sigmoid, no grid), exactly what upstream's ONNX export outputs,
    so both backends share :func:`decode_heads`. Buffers as in upstream's files:
    ``anchors`` in grid units ``(nl, na, 2)`` and ``anchor_grid`` in input pixels
    ``(nl, 1, na, 1, 1, 2)``; decoding uses ``anchor_grid``.
    """

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]] | int, ch: Sequence[int],
                 strides: Sequence[int] | None = None) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + _NON_CLASS_OUTPUTS
        self.nl = len(ch)
        if isinstance(anchors, int):  # anchor count only; values come from the checkpoint
            grid = torch.zeros(self.nl, anchors, 2)
        else:
            grid = torch.tensor(anchors, dtype=torch.float32).view(len(anchors), -1, 2)
        if grid.shape[0] != self.nl:
            raise ConfigError(f"Detect has {self.nl} input levels but {grid.shape[0]} anchor sets")
        self.na = grid.shape[1]
        per_level = torch.tensor(list(strides) if strides else [1] * self.nl, dtype=torch.float32)
        self.register_buffer("anchors", grid / per_level.view(-1, 1, 1))
        self.register_buffer("anchor_grid", grid.clone().view(self.nl, 1, self.na, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for conv, x in zip(self.m, xs):
            y = conv(x)
            b, _, ny, nx = y.shape
            out.append(y.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out


_CHANNEL_BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": Conv, "StemBlock": StemBlock, "ShuffleV2Block": ShuffleV2Block, "Bottleneck": Bottleneck,
    "C3": C3, "SPP": SPP, "SPPF": SPPF, "Focus": Focus,
}


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def _resolve_arg(value: Any, table: Mapping[str, Any]) -> Any:
    """Upstream tables hold some arguments as names; map the few that occur, run nothing."""
    if not isinstance(value, str):
        return value
    named = {"None": None, "True": True, "False": False, "nearest": "nearest"}
    if value in named:
        return named[value]
    if value in ("nc", "anchors"):
        return table[value]
    raise ConfigError(f"unsupported argument {value!r} in the YOLOv5 layer table")


def _stride_of(kind: str, args: list[Any]) -> float:
    """How much a layer scales down its input (``args`` as passed to the block)."""
    if kind == "Conv":
        return args[3] if len(args) > 3 else 1
    if kind == "StemBlock":
        return (args[3] if len(args) > 3 else 2) * 2
    if kind == "ShuffleV2Block":
        return args[2]
    if kind == "Focus":
        return 2 * (args[3] if len(args) > 3 else 1)
    return 1


#: Sanity bounds for layer tables read from files: upstream's largest models use 1280
#: channels and 9 repeats. Anything far beyond is a corrupt or hostile table that would
#: otherwise allocate without limit before its keys are even compared.
_MAX_CHANNELS = 8192
_MAX_REPEATS = 64


class YoloV5Face(nn.Module):
    """The YOLOv5-face network, built from an upstream layer table.

    Args:
        table: upstream's ``model.yaml`` as a dict (``nc``, ``depth_multiple``,
            ``width_multiple``, ``anchors``, ``backbone``, ``head``); see
            :data:`MODEL_TABLES`. Layer names are looked up in a fixed set of blocks,
            nothing is evaluated.

    Attributes:
        yaml: the table the network was built from (kept under upstream's name, so a
            saved model carries it like upstream's do).
        stride: input pixels per grid cell of each detection level, e.g. ``(8, 16, 32)``.

    ``forward`` takes ``(b, 3, H, W)`` RGB in [0, 1] (H, W multiples of the largest
    stride) and returns one raw ``(b, na, H/s, W/s, 15 + nc)`` tensor per level.
    """

    def __init__(self, table: Mapping[str, Any]) -> None:
        super().__init__()
        self.yaml = copy.deepcopy(dict(table))
        layers, self._from, self._save, strides = self._parse(self.yaml)
        self.model = nn.Sequential(*layers)
        self.stride = strides
        self.eval()

    @staticmethod
    def _parse(table: dict[str, Any]) -> tuple[list[nn.Module], list[int | list[int]], set[int], tuple[int, ...]]:
        try:
            int(table["nc"])  # Detect arguments refer to it by name
            gd, gw = float(table["depth_multiple"]), float(table["width_multiple"])
            rows = list(table["backbone"]) + list(table["head"])
            ch_in = int(table.get("ch", 3))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"YOLOv5 layer table is incomplete or malformed ({type(e).__name__}: {e})") from None
        layers: list[nn.Module] = []
        froms: list[int | list[int]] = []
        save: set[int] = set()
        chans: list[int] = []
        scale: list[float] = []
        det_strides: tuple[int, ...] = ()

        def source(i: int, f: int) -> int:
            return i - 1 if f == -1 else f

        for i, row in enumerate(rows):
            try:
                f, n, kind, args = row
                n = int(n)
                args = [_resolve_arg(a, table) for a in args]
            except (TypeError, ValueError):
                raise ConfigError(f"layer {i} of the YOLOv5 table is not [from, number, module, args]: {row!r}") \
                    from None
            n = max(round(n * gd), 1) if n > 1 else n
            if not 1 <= n <= _MAX_REPEATS:
                raise ConfigError(f"layer {i} of the YOLOv5 table repeats {n} times; expected 1 to {_MAX_REPEATS}")
            ins = [f] if isinstance(f, int) else list(f)
            for j in ins:
                if j != -1 and not 0 <= j < i:
                    raise ConfigError(f"layer {i} of the YOLOv5 table reads from layer {j}, which is not before it")
                if j != -1:
                    save.add(j)
            c_prev = ch_in if (i == 0 and ins[0] == -1) else chans[source(i, ins[0])]
            s_prev = 1.0 if (i == 0 and ins[0] == -1) else scale[source(i, ins[0])]
            if kind in _CHANNEL_BLOCKS:
                c2 = _make_divisible(args[0] * gw, 8)
                if not 0 < c2 <= _MAX_CHANNELS:
                    raise ConfigError(f"layer {i} of the YOLOv5 table has {c2} channels; expected 1 to {_MAX_CHANNELS}")
                args = [c_prev, c2, *args[1:]]
                if kind == "C3":
                    args.insert(2, n)
                    n = 1
                block = _CHANNEL_BLOCKS[kind]
                try:
                    module: nn.Module = nn.Sequential(*(block(*args) for _ in range(n))) if n > 1 else block(*args)
                except (TypeError, ValueError, RuntimeError) as e:
                    raise ConfigError(f"layer {i} ({kind} {args}) of the YOLOv5 table cannot be built: {e}") from None
                stride_in = _stride_of(kind, args) ** n
            elif kind == "Concat":
                c2 = sum(chans[source(i, j)] for j in ins)
                module = Concat(*args)
                stride_in = 1
            elif kind in ("nn.Upsample", "Upsample"):
                c2 = c_prev
                size, factor, mode = (list(args) + [None, None, "nearest"])[:3]
                module = nn.Upsample(size=size, scale_factor=factor, mode=mode)
                stride_in = 1 / factor
            elif kind == "Detect":
                nc_d, anchors = args[0], args[1]
                srcs = [source(i, j) for j in ins]
                det_strides = tuple(int(round(scale[j])) for j in srcs)
                module = Detect(nc_d, anchors, [chans[j] for j in srcs], det_strides)
                c2 = 0
                stride_in = 1
            else:
                raise ConfigError(f"unsupported layer type {kind!r} at layer {i} of the YOLOv5 table")
            layers.append(module)
            froms.append(f if isinstance(f, int) else list(f))
            chans.append(c2)
            scale.append(s_prev * stride_in)
        if not layers or not isinstance(layers[-1], Detect):
            raise ConfigError("the YOLOv5 layer table must end with a Detect layer")
        return layers, froms, save, det_strides

    @property
    def detect(self) -> Detect:
        return self.model[-1]  # type: ignore[return-value]

    def anchors_px(self) -> np.ndarray:
        """Anchor sizes in input pixels, ``(nl, na, 2)`` float32 (from the loaded buffer)."""
        return self.detect.anchor_grid.detach().float().cpu().numpy().reshape(self.detect.nl, self.detect.na, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor | None] = []
        y: Any = x
        for i, layer in enumerate(self.model):
            f = self._from[i]
            if f != -1:
                y = outs[f] if isinstance(f, int) else [y if j == -1 else outs[j] for j in f]
            y = layer(y)
            outs.append(y if i in self._save else None)
        return y


# --------------------------------------------------------------------------------------
# Restricted checkpoint reader
# --------------------------------------------------------------------------------------


class InertObject:
    """Stand-in for a class named in a pickled checkpoint.

    Creating one and restoring its state only stores what the pickle holds (in
    ``state`` and ``args``); no method of the original class exists here, so nothing the
    checkpoint refers to can run. ``upstream`` names the class it stands in for.
    """

    upstream = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        self.state = state if isinstance(state, dict) else {"__state__": state}

    def __repr__(self) -> str:
        return f"<inert {self.upstream}>"


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

#: Storage class name -> (torch dtype, numpy dtype of the stored bytes, little-endian).
_STORAGE_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "HalfStorage": (torch.float16, "<f2"), "FloatStorage": (torch.float32, "<f4"),
    "DoubleStorage": (torch.float64, "<f8"), "BFloat16Storage": (torch.bfloat16, "<u2"),
    "LongStorage": (torch.int64, "<i8"), "IntStorage": (torch.int32, "<i4"), "ShortStorage": (torch.int16, "<i2"),
    "CharStorage": (torch.int8, "i1"), "ByteStorage": (torch.uint8, "u1"), "BoolStorage": (torch.bool, "?"),
}

#: Largest single record read from a checkpoint archive. Upstream's largest YOLOv5-face
#: file is a few hundred MB; a bigger record is a corrupt or hostile file (zip bomb).
MAX_RECORD_BYTES = 1 << 30


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Sequence[int], stride: Sequence[int],
                    *_unused: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_unused: Any) -> torch.Tensor:
    return data


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as numpy's pickles use it (bytes stored as latin-1 text)."""
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


def _read_record(archive: zipfile.ZipFile, name: str) -> bytes:
    if archive.getinfo(name).file_size > MAX_RECORD_BYTES:
        raise pickle.UnpicklingError(f"record {name} is larger than {MAX_RECORD_BYTES} bytes")
    return archive.read(name)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch zip checkpoints that resolves only allowlisted names.

    Stand-in classes are made per file, so a hostile pickle that sets attributes on a
    class it names cannot affect any other load.
    """

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._storages: dict[str, torch.Tensor] = {}
        self._inert: dict[str, type[InertObject]] = {}
        self._big_endian = False
        if f"{prefix}/byteorder" in archive.namelist():
            self._big_endian = _read_record(archive, f"{prefix}/byteorder").strip() == b"big"

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        real = _REAL_GLOBALS.get((module, name))
        if real is not None:
            return real
        if name in INERT_ALLOWLIST.get(module, ()):
            qualname = f"{module}.{name}"
            if qualname not in self._inert:
                self._inert[qualname] = type(name, (InertObject,), {"upstream": qualname})
            return self._inert[qualname]
        raise CheckpointError(
            f"{self._path}: refused to load, the checkpoint references {module}.{name}, which is not "
            "part of a YOLOv5-face model. Only files saved by deepcam-cn/yolov5-face (or facerec) are read."
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        dtype, np_dtype = _STORAGE_DTYPES[pid[1].name]
        key = str(pid[2])
        if key not in self._storages:
            raw = _read_record(self._archive, f"{self._prefix}/data/{key}")
            array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder(">" if self._big_endian else "<"))
            tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
            self._storages[key] = tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor
        return self._storages[key]


def read_torch_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a PyTorch zip checkpoint without importing or running anything it names.

    Tensors come back as CPU tensors in their stored dtype; classes from
    :data:`INERT_ALLOWLIST` come back as :class:`InertObject` stand-ins.

    Raises:
        CheckpointError: not a zip-format torch file (torch >= 1.6 writes those), a
            truncated file, or a reference to any class or function outside the allowlist.
    """
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"{p}: not a PyTorch zip checkpoint (files from torch < 1.6 or plain pickles are not read); "
            "re-save it with a current torch or use the ONNX backend"
        )
    try:
        with zipfile.ZipFile(p) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{p}: expected one data.pkl in the archive, found {len(pickles)}")
            prefix = pickles[0].rsplit("/", 1)[0]
            return _RestrictedUnpickler(_read_record(archive, pickles[0]), archive, prefix, str(p)).load()
    except CheckpointError:
        raise
    except Exception as e:  # corrupt archives raise many unrelated types
        raise CheckpointError(f"{p}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None


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
    obj = read_torch_pickle(path)
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


def _short(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:_SHOWN_KEYS])
    return head + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


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
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        raise CheckpointError(f"{path} does not fit the YOLOv5-face network built from its layer table: "
                              + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes differ from the network (file vs network): {_short(wrong)}")


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


# --------------------------------------------------------------------------------------
# Pre- and post-processing (shared by both backends)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed into the network input.

    Attributes:
        scale_x: input pixels per original pixel, horizontally.
        scale_y: same, vertically.
        pad_x: left padding in input pixels.
        pad_y: top padding in input pixels.
        width: original image width in pixels.
        height: original image height in pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept ``(H, W, 3)`` BGR, ``(H, W)``/``(H, W, 1)`` grey or ``(H, W, 4)`` BGRA uint8.

    Raises:
        ValueError: another dtype or shape (the message says which).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detector input must be a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"detector input must have shape (H, W, 3), (H, W) or (H, W, 4), got {image.shape}")


def letterbox(image: np.ndarray, size: int | tuple[int, int], stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centre on grey (114) padding, make an RGB blob.

    Args:
        image: ``(H, W, 3)`` uint8 BGR, at least 1x1.
        size: an int makes the long side ``size`` pixels and pads the short side only up
            to the next multiple of ``stride`` (less work for wide frames, as upstream's
            detect script does); an ``(h, w)`` pair fits the image inside exactly that
            input (fixed-size ONNX models).
        stride: the network's largest stride; input sides must be multiples of it.

    Returns:
        ``(1, 3, h, w)`` float32 RGB in [0, 1], and the placement for mapping back.
        Shrinking uses area interpolation (less aliasing), enlarging bilinear.
    """
    h0, w0 = image.shape[:2]
    if isinstance(size, int):
        r = size / max(h0, w0)
        nw, nh = max(1, min(size, round(w0 * r))), max(1, min(size, round(h0 * r)))
        out_w, out_h = math.ceil(nw / stride) * stride, math.ceil(nh / stride) * stride
    else:
        out_h, out_w = size
        r = min(out_h / h0, out_w / w0)
        nw, nh = max(1, min(out_w, round(w0 * r))), max(1, min(out_h, round(h0 * r)))
    if (nw, nh) != (w0, h0):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    left, top = int(round((out_w - nw) / 2 - 0.1)), int(round((out_h - nh) / 2 - 0.1))
    canvas = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    canvas[top:top + nh, left:left + nw] = image
    blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(blob), Letterbox(nw / w0, nh / h0, left, top, w0, h0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def decode_heads(heads: Sequence[np.ndarray], anchors_px: np.ndarray, strides: Sequence[int],
                 conf_thres: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn raw head tensors of one image into candidate faces in input pixels.

    Per anchor the head gives ``[tx, ty, tw, th, obj, 10 landmark values, classes]``.
    With ``s = sigmoid(t)``, grid cell ``(gx, gy)``, level stride and anchor ``(aw, ah)``:
    centre ``(s_xy * 2 - 0.5 + g) * stride``, size ``(s_wh * 2)^2 * anchor``, score
    ``s_obj * max(s_cls)``, landmark ``t_lm * anchor + g * stride`` (the landmark values
    are not squashed; this is upstream's ``Detect`` inference formula).

    Args:
        heads: per level ``(na, ny, nx, 15 + nc)`` float arrays (batch index removed).
        anchors_px: ``(nl, na, 2)`` anchor sizes in input pixels.
        strides: input pixels per grid cell of each level.
        conf_thres: keep candidates whose score exceeds this.

    Returns:
        ``(k, 4)`` xyxy boxes, ``(k,)`` scores, ``(k, 5, 2)`` landmarks, float32.
    """
    boxes, scores, marks = [], [], []
    for level, (head, stride) in enumerate(zip(heads, strides)):
        head = np.asarray(head, dtype=np.float32)
        score = _sigmoid(head[..., 4]) * _sigmoid(head[..., _NON_CLASS_OUTPUTS:]).max(-1)
        a, gy, gx = np.nonzero(score > conf_thres)
        if len(a) == 0:
            continue
        t = head[a, gy, gx]
        anchor = anchors_px[level][a]
        grid = np.stack([gx, gy], 1).astype(np.float32)
        xy = (_sigmoid(t[:, 0:2]) * 2 - 0.5 + grid) * stride
        wh = (_sigmoid(t[:, 2:4]) * 2) ** 2 * anchor
        boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2], 1))
        scores.append(score[a, gy, gx])
        marks.append(t[:, 5:15].reshape(-1, 5, 2) * anchor[:, None, :] + (grid * stride)[:, None, :])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(marks).astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def postprocess(heads: Sequence[np.ndarray], box: Letterbox, anchors_px: np.ndarray, strides: Sequence[int], *,
                conf_thres: float, iou_thres: float, min_face: float = 0, max_faces: int = 1000) -> Detections:
    """Decode, filter, suppress and map one image's head outputs back to its pixels.

    After NMS, faces whose box is narrower or shorter than ``min_face`` original pixels
    are dropped (after, so each face is judged by its best box, not by a weaker, larger
    duplicate); then at most ``max_faces`` of the highest scores are kept. Boxes and
    landmarks are clipped to the image.
    """
    xyxy, score, marks = decode_heads(heads, anchors_px, strides, conf_thres)
    if len(score) == 0:
        return Detections.empty()
    if len(score) > MAX_CANDIDATES:
        top = np.argsort(-score, kind="stable")[:MAX_CANDIDATES]
        xyxy, score, marks = xyxy[top], score[top], marks[top]
    scale = np.array([box.scale_x, box.scale_y], np.float32)
    pad = np.array([box.pad_x, box.pad_y], np.float32)
    xyxy = ((xyxy.reshape(-1, 2, 2) - pad) / scale).reshape(-1, 4)
    marks = (marks - pad) / scale
    keep = nms(xyxy, score, iou_thres)
    if min_face > 0:
        keep = keep[(xyxy[keep, 2:] - xyxy[keep, :2]).min(1) >= min_face]
    keep = keep[:max_faces]
    xyxy, score, marks = xyxy[keep], score[keep], marks[keep]
    limit = np.array([box.width, box.height], np.float32)
    xyxy = np.clip(xyxy.reshape(-1, 2, 2), 0, limit).reshape(-1, 4)
    marks = np.clip(marks, 0, limit)
    return Detections(xyxy, score, marks)


# --------------------------------------------------------------------------------------
# Backends and the detector
# --------------------------------------------------------------------------------------


def fuse_conv_bn(model: YoloV5Face) -> YoloV5Face:
    """A copy of ``model`` with every BatchNorm folded into the conv before it.

    Inference only (BatchNorm in eval mode is an affine map, so it folds exactly up to
    float rounding, about 1e-5 here); saves roughly 15 % of CPU time. The copy's
    state_dict no longer matches upstream's layout, so keep the original for saving.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).float().eval()
    for module in fused.modules():
        if isinstance(module, Conv) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return fused


class SessionRunner:
    """Runs a YOLOv5-face network in a :class:`~facerec.runtime.Session`; returns the raw
    per-level head outputs ``(n, na, h, w, 15 + nc)``, strides ascending.

    Args:
        session: the network on its engine.
        anchors_px: ``(nl, na, 2)`` anchors in input pixels (exports do not hold them).
        model: the PyTorch network where one was loaded (kept as given).
    """

    def __init__(self, session: Session, anchors_px: np.ndarray, model: YoloV5Face | None = None) -> None:
        self.session = session
        self.model = model
        self.anchors_px = anchors_px
        self.fixed_size = session.info.fixed_size
        self.strides: tuple[int, ...] = tuple(int(s) for s in model.stride) if model is not None else ()
        if model is None and self.fixed_size is not None:
            shapes = getattr(session, "output_shapes", None)
            grids = sorted((sh[2] for sh in shapes or () if len(sh) == 5 and sh[2]), reverse=True)
            if len(grids) == len(anchors_px):
                self.strides = tuple(self.fixed_size[0] // g for g in grids)

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        out = sorted(self.session.run(blob), key=lambda h: -h.shape[2])
        if not self.strides or self.fixed_size is None:
            self.strides = tuple(blob.shape[2] // h.shape[2] for h in out)
        return out


def _check_heads(session: Session, anchors_px: np.ndarray, path: Path) -> None:
    shapes = getattr(session, "output_shapes", None)
    if shapes is not None and (len(shapes) != len(anchors_px) or any(len(sh) != 5 for sh in shapes)):
        raise CheckpointError(
            f"{path}: expected {len(anchors_px)} raw head outputs of rank 5 [b, na, h, w, 15 + nc], got "
            + ", ".join(f"{n} {sh}" for n, sh in zip(session.info.output_names, shapes))
        )


class YoloV5FaceDetector:
    """A YOLOv5-face detector implementing :class:`~facerec.detect.Detector`.

    Call it with one ``(H, W, 3)`` uint8 BGR image; get :class:`~facerec.types.Detections`
    in that image's pixels (empty when there is no face). Grey ``(H, W)`` and BGRA
    images are accepted too.

    Attributes:
        name: registry name.
        engine: the engine it runs on (``torch``, ``onnx`` or ``openvino``).
        precision: the arithmetic it runs in (``fp32`` or ``bf16``).
        input_size: long side of the network input in pixels (a fixed-size ONNX model
            uses its own size instead).
        conf_thres: minimum score ``objectness * class`` in [0, 1].
        iou_thres: NMS overlap above which the lower-scored box is dropped.
        min_face: smallest face side kept, original pixels (0 keeps all).
        max_faces: most faces returned per image (highest scores).
    """

    def __init__(self, name: str, runner: SessionRunner, settings: DetectionConfig,
                 weights: Path | None = None) -> None:
        self.name = name
        self.runner = runner
        self.input_size = settings.input_size
        self.conf_thres = settings.conf_thres
        self.iou_thres = settings.iou_thres
        self.min_face = settings.min_face
        self.max_faces = settings.max_faces
        self.weights = weights

    @property
    def engine(self) -> str:
        return self.runner.session.engine

    @property
    def precision(self) -> str:
        return self.runner.session.precision

    @property
    def backend(self) -> str:
        """The old name of :attr:`engine`."""
        return self.engine

    @property
    def model(self) -> YoloV5Face | None:
        """The PyTorch network (``None`` when only an ONNX file was loaded)."""
        return self.runner.model

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox one BGR image into this detector's input blob."""
        size = self.runner.fixed_size or self.input_size
        return letterbox(image, size, max(self.runner.strides or (32,)))

    def raw(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw head outputs for a ``(n, 3, h, w)`` blob, strides ascending."""
        return self.runner(blob)

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in several images; images whose inputs share a shape run as one batch."""
        results: list[Detections] = [Detections.empty()] * len(images)
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray, Letterbox]]] = {}
        for i, image in enumerate(images):
            bgr = as_bgr(image)
            if bgr.shape[0] == 0 or bgr.shape[1] == 0:
                continue
            blob, box = self.preprocess(bgr)
            groups.setdefault(blob.shape, []).append((i, blob, box))
        for members in groups.values():
            heads = self.runner(np.concatenate([m[1] for m in members]))
            for k, (i, _, box) in enumerate(members):
                results[i] = postprocess(
                    [h[k] for h in heads], box, self.runner.anchors_px, self.runner.strides,
                    conf_thres=self.conf_thres, iou_thres=self.iou_thres, min_face=self.min_face,
                    max_faces=self.max_faces,
                )
        return results

    def __repr__(self) -> str:
        return (f"YoloV5FaceDetector({self.name!r}, engine={self.engine!r}, precision={self.precision!r}, "
                f"input_size={self.input_size}, "
                f"conf_thres={self.conf_thres}, iou_thres={self.iou_thres})")


def detector_settings(detection: DetectionConfig | None, runtime: RuntimeConfig | None, overrides: dict[str, Any],
                      name: str) -> tuple[DetectionConfig, RuntimeConfig]:
    """The validated ``detection:`` and ``runtime:`` sections with keyword overrides applied
    (``backend`` is the old name of ``engine``).

    Raises:
        InvalidSettingError: a value out of bounds or an unknown setting (named).
    """
    overrides = dict(overrides)
    backend = overrides.pop("backend", None)
    if backend is not None:
        overrides.setdefault("engine", backend)
    det_keys = {k: overrides.pop(k) for k in list(overrides) if k in DetectionConfig.model_fields}
    unknown = [k for k in overrides if k not in RuntimeConfig.model_fields]
    if unknown:
        raise InvalidSettingError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: "
                                  + ", ".join([*DetectionConfig.model_fields, *RuntimeConfig.model_fields]))
    return (merge_section(DetectionConfig, detection, det_keys, name),
            merge_section(RuntimeConfig, runtime, overrides, name))


def create(name: str, spec: WeightsSpec, *, weights: str | os.PathLike | None = None,
           weights_dir: str | os.PathLike | None = None, detection: DetectionConfig | None = None,
           runtime: RuntimeConfig | None = None, verify: bool = True, model: YoloV5Face | None = None,
           **overrides: Any) -> YoloV5FaceDetector:
    """Build a registered YOLOv5-face detector (the registered constructors call this).

    Args:
        name: registry name (its layer table is the fallback for files without one).
        spec: the model's weights spec.
        weights: explicit weights file (``.pt``, or ``.onnx`` to run that export).
        weights_dir: configured weights directory, searched first.
        detection: the ``detection:`` section (input size, thresholds, face limits).
        runtime: the ``runtime:`` section (engine, precision, threads, cache).
        verify: check the file's sha256 where one is published.
        model: an already built :class:`YoloV5Face` (e.g. random weights for tests and
            benchmarks); no file is read.
        **overrides: single settings of those two sections (``input_size``,
            ``conf_thres``, ``iou_thres``, ``min_face``, ``max_faces``, ``engine``,
            ``precision``, ``threads``, ...), validated by the sections' own models, so
            the defaults are the daemon's.

    With ``engine: onnx`` and a published export (yolov5n-0.5-face), that file is run
    (fixed 640x640: ``input_size`` is then not used). Otherwise the PyTorch network is
    run, or exported once (BatchNorm folded, dynamic batch and size) for ONNX Runtime
    and OpenVINO and cached under ``runtime.cache_dir``.

    Raises:
        InvalidSettingError: invalid settings (a :class:`ConfigError`).
        WeightsNotFoundError: no weights file found.
        WeightsChecksumError: the file's sha256 differs from the published one.
        CheckpointError: the file does not fit the network.
    """
    from facerec.runtime import ModelSource, build_session, resolve_engine
    from facerec.runtime.base import state_sha256

    settings, rt = detector_settings(detection, runtime, overrides, name)
    engine = resolve_engine("yolov5", rt.engine, flag="engine")
    table = MODEL_TABLES[name]()
    anchors = np.asarray(table["anchors"], np.float32).reshape(len(table["anchors"]), -1, 2)
    path: Path | None = None
    onnx_path: Path | None = None
    if model is not None:
        sha = state_sha256(model)
    else:
        explicit_onnx = weights is not None and str(weights).lower().endswith(".onnx")
        pt = None if explicit_onnx else find_weights(spec, weights, weights_dir, "torch")
        if explicit_onnx or use_onnx_export(spec, engine, weights, weights_dir, pt):
            engine = "onnx" if engine == "torch" else engine
            path = onnx_path = resolve_weights(spec, weights, weights_dir, verify=verify, backend="onnx")
        else:
            path = resolve_weights(spec, weights, weights_dir, verify=verify, backend="torch")
            model = load_yolov5_face(path, table)
        sha = sha256_file(path)
    if model is not None:
        model = model.float().eval()
        anchors = model.anchors_px()
    fused = {}

    def network() -> YoloV5Face:
        if "net" not in fused:
            fused["net"] = fuse_conv_bn(model)  # type: ignore[arg-type]
        return fused["net"]

    source = ModelSource(name=name, sha256=sha, input_shape=(None, 3, None, None),
                         output_names=tuple(f"head{i}" for i in range(len(anchors))),
                         module=network if model is not None else None, onnx_path=onnx_path,
                         example_hw=(settings.input_size, settings.input_size), persistent=path is not None,
                         channels_last=True)
    session = build_session(source, engine=engine, precision=rt.precision, threads=rt.threads,
                            hint="latency" if rt.hint == "auto" else rt.hint, cache_dir=rt.cache_dir)
    if onnx_path is not None:
        _check_heads(session, anchors, onnx_path)
    runner = SessionRunner(session, anchors, model)
    if runner.fixed_size is not None and max(runner.fixed_size) != settings.input_size:
        logger.info("%s: the ONNX model has a fixed %dx%d input; input_size=%d is not used",
                    onnx_path.name if onnx_path else name, runner.fixed_size[1], runner.fixed_size[0],
                    settings.input_size)
    logger.debug("%s: %s on %s", name, path or "in-memory model", session)
    return YoloV5FaceDetector(name, runner, settings, weights=path)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

_README = "https://github.com/deepcam-cn/yolov5-face#pretrained-models"
_CLAIM_SOURCE = "deepcam-cn/yolov5-face README, WIDER FACE val (multi-scale test as published)"

#: name -> (file, sha256, aliases, onnx file, onnx sha256, parameters, GFLOPs at 640, WIDER FACE val AP
#: (easy, medium, hard)). Parameter counts are those of the networks built here; they equal
#: the README's rounded figures. GFLOPs and AP are the README's claims.
_MODELS: dict[str, tuple[str, str | None, tuple[str, ...], str | None, str | None, int, float,
                         tuple[float, float, float]]] = {
    "yolov5n-0.5-face": ("yolov5n-0.5-face.pt", "9f7cdbcf5cd63f454c47b18e7400a69630b96a01efb7559367e91b6e962ad3bd",
                         ("yolov5n-0.5.pt",), "yolov5n-0.5-face.onnx",
                         "7da50650e16167e93acf24caf01f15f2922ecf168c884f2825a3c95479f8687d",
                         447_456, 0.571, (90.76, 88.12, 73.82)),
    "yolov5n-face": ("yolov5n-face.pt", None, (), None, None, 1_725_744, 2.111, (93.61, 91.52, 80.53)),
    "yolov5s-face": ("yolov5s-face.pt", None, (), None, None, 7_074_640, 5.751, (94.33, 92.61, 83.15)),
    "yolov5m-face": ("yolov5m-face.pt", None, (), None, None, 21_063_024, 18.146, (95.30, 93.76, 85.28)),
    "yolov5l-face": ("yolov5l-face.pt", None, (), None, None, 46_626_832, 41.607, (95.78, 94.30, 86.13)),
}


#: name -> (direct addresses of the .pt, of the .onnx) for ``facerec weights fetch``: the
#: GitHub copies whose sha256 matches the published one, then the README's Google Drive file.
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
_DOWNLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "yolov5n-0.5-face": (
        ("https://github.com/dominhhieu1019/yolov5-face/raw/29a8e9d80252594c623a54b1e3d492e2e9e9570d/weights/yolov5n-0.5.pt",
         "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/pretrained_model/yolov5n-0.5.pt",
         _GDRIVE + "1XJ8w55Y9Po7Y5WP4X1Kg1a77ok2tL_KY"),
        ("https://github.com/dominhhieu1019/yolov5-face/raw/4413ea44f4edb765b530ab928bd91ba60314915e/weights/yolov5n-0.5.onnx",),
    ),
    "yolov5n-face": ((_GDRIVE + "18oenL6tjFkdR1f5IgpYeQfDFqU4w3jEr",), ()),
    "yolov5s-face": ((_GDRIVE + "1zxaHeLDyID9YU4-hqK7KNepXIwbTkRIO",), ()),
    "yolov5m-face": ((_GDRIVE + "1Sx-KEGXSxvPMS35JhzQKeRBiqC98VDDI",), ()),
    "yolov5l-face": ((_GDRIVE + "16F-3AjdQBn9p3nMhStUxfDNAE_1bOF_r",), ()),
}


def _register(name: str) -> None:
    file, sha, aliases, onnx_file, onnx_sha, params, gflops, (easy, medium, hard) = _MODELS[name]
    urls, onnx_urls = _DOWNLOADS.get(name, ((), ()))
    spec = WeightsSpec(file=file, sha256=sha, url=_README, input_size=(640, 640), channel_order="RGB",
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), license="GPL-3.0", aliases=aliases,
                       onnx_file=onnx_file, onnx_sha256=onnx_sha, urls=urls, onnx_urls=onnx_urls)
    backbone = "ShuffleNetV2" if name.startswith("yolov5n") else "CSP (C3) + SPP(3,5,7)"

    def build(weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, *,
              detection: DetectionConfig | None = None, runtime: RuntimeConfig | None = None,
              verify: bool = True, model: YoloV5Face | None = None, **overrides: Any) -> YoloV5FaceDetector:
        return create(name, spec, weights=weights, weights_dir=weights_dir, detection=detection, runtime=runtime,
                      verify=verify, model=model, **overrides)

    build.__name__ = build.__qualname__ = "build_" + name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"Build ``{name}``; arguments as in :func:`create`."
    DETECTORS.register(
        name, spec,
        architecture=f"YOLOv5-face, {backbone} backbone, PAN neck, 3 levels (strides 8/16/32), 5 landmarks",
        params=params, gflops_640=gflops,
        wider_face_val={"easy": easy, "medium": medium, "hard": hard},
        claimed_by=_CLAIM_SOURCE, upstream="https://github.com/deepcam-cn/yolov5-face",
        landmarks=5, engines=("torch", "onnx", "openvino"),
    )(build)


for _name in _MODELS:
    _register(_name)
