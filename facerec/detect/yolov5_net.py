"""The YOLOv5-face network: upstream's layer tables and the blocks they name, in PyTorch.

A re-implementation of deepcam-cn/yolov5-face's model (nothing of upstream's code is used
or imported): StemBlock, ShuffleV2Block, Conv, C3, Bottleneck, SPP, SPPF, Focus, Concat,
Upsample and the Detect head with landmarks, built from the layer table that upstream
stores in its checkpoints (``model.yaml``), with parameter names equal to upstream's so
the weights load with ``strict=True``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from facerec.errors import ConfigError

#: Outputs per anchor: box (4), objectness (1), five landmarks (10), then the classes.
NON_CLASS_OUTPUTS = 15

#: Anchor boxes in input pixels, (w, h) pairs per level: P3/8, P4/16, P5/32.
DEFAULT_ANCHORS = [[4, 5, 8, 10, 13, 16], [23, 29, 43, 55, 73, 105], [146, 217, 231, 300, 335, 433]]

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

    anchors: torch.Tensor
    anchor_grid: torch.Tensor

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]] | int, ch: Sequence[int],
                 strides: Sequence[int] | None = None) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + NON_CLASS_OUTPUTS
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
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return fused
