"""MobileFaceNet, laid out like foamliu/MobileFaceNet so its released ``mobilefacenet.pt``
loads with exact key checks.

Network (112x112 input, 128-d output): a 3x3 stride-2 stem, a depthwise-separable block,
15 inverted residual blocks (MobileNetV2 style, ReLU6), a 1x1 conv to 512 channels, a 7x7
global depthwise conv (GDConv) and a linear 1x1 projection to 128 with BatchNorm.
Checkpoint keys: ``conv1.{0,1}``, ``dw_conv.{depthwise,pointwise,bn1,bn2}``,
``features.0..14.conv.*``, ``conv2.{0,1}``, ``gdconv.{depthwise,bn}``, ``conv3``, ``bn``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from face_embedding.base import EMBEDDERS, Embedder
from face_embedding.checkpoint import build_embedder, load_strict, tensor_items
from facerec.config import RecognitionConfig, RuntimeConfig
from facerec.weights import IMAGENET_MEAN, IMAGENET_STD, WeightsSpec

EMBEDDING_DIM = 128

#: Inverted residual stages: (expansion t, output channels c, repeats n, first stride s).
STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6; keys ``0`` (conv) and ``1`` (bn)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 and pointwise 1x1 convs, each followed by BatchNorm and ReLU.

    The upstream block uses plain ReLU here (unlike the ReLU6 everywhere else); the
    released ONNX export confirms it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> project 1x1 (linear), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_skip = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            ConvBNReLU6(cin, hidden, kernel=1),
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class GDConv(nn.Module):
    """Global depthwise conv: a 7x7 per-channel filter over the whole 7x7 map, then BN."""

    def __init__(self, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``(n, 3, 112, 112)`` normalised RGB -> ``(n, 128)`` raw features."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU6(3, 64, stride=2)
        self.dw_conv = DepthwiseSeparable(64)
        blocks: list[nn.Module] = []
        cin = 64
        for t, c, n, s in STAGES:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = ConvBNReLU6(cin, 512, kernel=1)
        self.gdconv = GDConv(512)
        self.conv3 = nn.Conv2d(512, embedding_dim, 1)
        self.bn = nn.BatchNorm2d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.dw_conv(self.conv1(x)))
        x = self.bn(self.conv3(self.gdconv(self.conv2(x))))
        return x.flatten(1)


def load_foamliu_state(model: nn.Module, checkpoint: Any, path: Path) -> None:
    """Load foamliu's plain state_dict (or one saved through ``nn.DataParallel``)."""
    state = tensor_items(checkpoint, path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    load_strict(model, state, path)


WEIGHTS = WeightsSpec(
    file="mobilefacenet_foamliu_ms1m.pt",
    sha256="90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    url="https://github.com/foamliu/MobileFaceNet/releases (v1.0/mobilefacenet.pt)",
    input_size=(112, 112),
    channel_order="RGB",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    license="Apache-2.0 (foamliu/MobileFaceNet); trained on MS-Celeb-1M, check that dataset's terms",
    aliases=("mobilefacenet.pt",),
    onnx_file="mobilefacenet_foamliu_ms1m.onnx",
    onnx_sha256="b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
    urls=(
        "https://github.com/foamliu/MobileFaceNet/releases/download/v1.0/mobilefacenet.pt",
        "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/mobilefacenet.pt",
    ),
    onnx_urls=(
        "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/MobileFaceNet.onnx",
    ),
    onnx_page="https://github.com/foamliu/MobileFaceNet (weights/MobileFaceNet.onnx, a contributor's export of the .pt)",
)

#: Cosine threshold for a name, from ``facerec calibrate --pairs pairsDevTrain.txt --far 1e-3``
#: with yolov5n-0.5-face landmarks: 0.3156 gives FAR 9.1e-4 and TAR 98.9% on its 1,100
#: impostor and 1,100 genuine pairs. On pairsDevTest no impostor pair scores above 0.365.
#: Rounded up to 0.32, so the default errs towards "unknown" rather than a wrong name.
DEFAULT_THRESHOLD = 0.32


@EMBEDDERS.register(
    "mobilefacenet",
    WEIGHTS,
    architecture="MobileFaceNet (ReLU6, GDConv 7x7), 0.99 M parameters, 128-d, 112x112 RGB",
    training="ArcFace margin on MS-Celeb-1M refined (85,742 identities)",
    claimed_accuracy="LFW 99.48% (foamliu/MobileFaceNet README)",
    dim=EMBEDDING_DIM,
    default_threshold=DEFAULT_THRESHOLD,
    threshold_note="LFW pairsDevTrain (1,100 impostor pairs): FAR 9.1e-4, TAR 98.9% at 0.316",
)
def build(weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, *,
          runtime: RuntimeConfig | None = None, recognition: RecognitionConfig | None = None,
          verify: bool = True, model: nn.Module | None = None, **overrides: Any) -> Embedder:
    """MobileFaceNet trained by foamliu on MS1M (see :func:`~face_embedding.checkpoint.build_embedder`)."""
    return build_embedder(
        "mobilefacenet", WEIGHTS, MobileFaceNet, load_foamliu_state, EMBEDDING_DIM, family="mobilefacenet",
        weights=weights, weights_dir=weights_dir, verify=verify, model=model, runtime=runtime,
        recognition=recognition, default_threshold=DEFAULT_THRESHOLD, quality_is_norm=False, **overrides,
    )
