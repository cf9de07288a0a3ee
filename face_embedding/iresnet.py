"""MagFace's iResNet backbones (18/34/50/100 layers), named like the official code so the
released MagFace checkpoints load with exact key checks.

The architecture follows ``models/iresnet.py`` of IrvingMeng/MagFace (Apache-2.0): a
3x3 stem at full resolution with BN + PReLU, four stages of pre-activation "improved"
basic blocks (BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a 1x1 conv + BN
shortcut on the first block of each stage), then BN -> dropout -> flatten ->
``Linear(512*7*7, 512)`` -> ``BatchNorm1d(512)``. Every BatchNorm uses ``eps=2e-5`` (as in
insightface's MXNet iResNets these follow); the final ``features`` BatchNorm1d
has learnable affine parameters. Dropout is inactive at inference.

MagFace trains the *magnitude* of the raw 512-d feature to grow with face quality, so the
embedder keeps the raw norm (``Embeddings.norm``) as the quality score.

Input: aligned 112x112 crops, **BGR**, scaled to [0, 1] with no mean/std, exactly as
MagFace's ``inference/gen_feat.py`` (``cv2.imread`` + ``ToTensor``) feeds them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from face_embedding.base import EMBEDDERS, Embedder
from face_embedding.checkpoint import build_embedder, load_strict, tensor_items
from facerec.config import RecognitionConfig, RuntimeConfig
from facerec.errors import CheckpointError
from facerec.weights import WeightsSpec

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 512
BN_EPS = 2e-5
#: Blocks per stage for each depth.
LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}

#: Checkpoint wrappers around the backbone written by MagFace's training code:
#: ``features.module.`` when the backbone was wrapped in DistributedDataParallel inside
#: the MagFace builder, ``module.features.`` when the whole builder was wrapped in
#: DataParallel.
DDP_PREFIX = "features.module."
DP_PREFIX = "module.features."
#: Modules of the MagFace builder outside the backbone: the margin classifier over the
#: training identities (``fc`` in the single-process trainer, ``parallel_fc`` in the
#: distributed one). They are not needed for embedding and are dropped by name.
HEAD_MODULES = ("fc", "parallel_fc")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv, BN, PReLU, conv (stride), BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """iResNet backbone: ``(n, 3, 112, 112)`` in [0, 1] BGR -> ``(n, 512)`` raw features.

    Args:
        layers: blocks in each of the four stages (see :data:`LAYERS`).
        embedding_dim: output dimension (512 for every released MagFace model).
    """

    #: Spatial size after four stride-2 stages on a 112x112 input (112 / 16).
    FEATURE_MAP = 7

    def __init__(self, layers: tuple[int, int, int, int], embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{i}", self._stage(cin, width, blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=BN_EPS)
        self.dropout = nn.Dropout2d(p=0.4)
        self.fc = nn.Linear(512 * self.FEATURE_MAP * self.FEATURE_MAP, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS))
        return nn.Sequential(IBasicBlock(cin, cout, 2, downsample), *(IBasicBlock(cout, cout) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        return self.features(self.fc(x.flatten(1)))


def iresnet(depth: int, embedding_dim: int = EMBEDDING_DIM) -> IResNet:
    """An iResNet of ``depth`` layers (18, 34, 50 or 100) with random weights."""
    if depth not in LAYERS:
        raise ValueError(f"iResNet depth must be one of {sorted(LAYERS)}, got {depth}")
    return IResNet(LAYERS[depth], embedding_dim)


def magface_backbone_state(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a MagFace training state_dict.

    Recognised layouts:

    * ``features.module.<backbone key>`` (distributed training) and
      ``module.features.<backbone key>`` (DataParallel): the prefix is stripped and the
      margin head (:data:`HEAD_MODULES`) is dropped by name.
    * a bare backbone state_dict, optionally with every key under ``module.``.

    Any other key is kept under its original name, so the strict load that follows
    reports it as unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith(DDP_PREFIX) for k in state):
        prefix, outer = DDP_PREFIX, ""
    elif any(k.startswith(DP_PREFIX) for k in state):
        prefix, outer = DP_PREFIX, "module."
    else:
        if all(k.startswith("module.") for k in state):
            return {k[len("module."):]: v for k, v in state.items()}
        return dict(state)
    dropped = []
    for k, v in state.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
        elif k.startswith(outer) and k[len(outer):].split(".", 1)[0] in HEAD_MODULES:
            dropped.append(k)
        else:
            out[k] = v
    logger.debug("%s: backbone under %r; margin head dropped: %s", path, prefix, dropped)
    return out


def load_magface_state(model: nn.Module, checkpoint: Any, path: Path) -> None:
    """Load a MagFace checkpoint (``{'state_dict': ..., 'epoch': ...}`` or a bare state_dict)."""
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    state = tensor_items(checkpoint, path)
    backbone = magface_backbone_state(state, path)
    if not backbone:
        raise CheckpointError(f"{path}: holds no backbone tensors (only the margin head)")
    load_strict(model, backbone, path)


_URL = "https://github.com/IrvingMeng/MagFace (README model zoo: Google Drive / Baidu links)"
_LICENSE = "Apache-2.0 (IrvingMeng/MagFace); trained on MS1MV2 or CASIA-WebFace, check those datasets' terms"

#: Provisional cosine threshold until calibrated on LFW. MagFace is an ArcFace-family
#: loss; verification thresholds for such 512-d models usually lie near 0.3.
DEFAULT_THRESHOLD = 0.3


def _spec(file: str, aliases: tuple[str, ...]) -> WeightsSpec:
    return WeightsSpec(
        file=file,
        sha256=None,  # MagFace publishes no hashes
        url=_URL,
        input_size=(112, 112),
        channel_order="BGR",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        license=_LICENSE,
        aliases=aliases,
    )


#: Registry name -> (depth, weights spec, facts shown by ``facerec weights``).
MODELS: dict[str, tuple[int, WeightsSpec, dict[str, Any]]] = {
    "magface-iresnet18": (18, _spec("magface_iresnet18_casia_dp.pth", ("magface-iresnet18.pth",)), {
        "training": "MagFace loss, CASIA-WebFace, DataParallel (README model zoo)",
    }),
    "magface-iresnet34": (34, _spec("magface-iresnet34.pth", ()), {
        "training": "no official MagFace release; for checkpoints you train yourself",
    }),
    "magface-iresnet50": (50, _spec("magface_iresnet50_MS1MV2_ddp_fp32.pth",
                                    ("magface_iresnet50_MS1MV2_dp.pth", "magface-iresnet50.pth")), {
        "training": "MagFace loss, MS1MV2, DDP with split FC (README model zoo; the DP release also loads)",
    }),
    "magface-iresnet100": (100, _spec("magface_epoch_00025.pth", ("magface-iresnet100.pth",)), {
        "training": "MagFace loss, MS1MV2, DDP (README model zoo: 'trained by original codes')",
        "claimed_accuracy": "LFW 99.83% (MagFace paper, CVPR 2021, arXiv:2103.06627)",
        "third_party_sha256": "cfeba792dada6f1f30d1e118aff077d493dd95dd76c77c30f57f90fd0164ad58 "
                              "(recorded by the fiqat toolkit docs, not by MagFace)",
    }),
}


def _register(name: str, depth: int, spec: WeightsSpec, facts: dict[str, Any]) -> None:
    @EMBEDDERS.register(
        name, spec,
        architecture=f"iResNet-{depth} (MagFace), 512-d, 112x112 BGR in [0, 1]",
        dim=EMBEDDING_DIM,
        default_threshold=DEFAULT_THRESHOLD,
        threshold_note="provisional; calibrate on LFW with `facerec eval`",
        quality="raw feature norm (MagFace magnitude)",
        **facts,
    )
    def build(weights: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, *,
              runtime: RuntimeConfig | None = None, recognition: RecognitionConfig | None = None,
              verify: bool = True, model: nn.Module | None = None, **overrides: Any) -> Embedder:
        return build_embedder(
            name, spec, lambda: iresnet(depth), load_magface_state, EMBEDDING_DIM, family="iresnet",
            weights=weights, weights_dir=weights_dir, verify=verify, model=model, runtime=runtime,
            recognition=recognition, default_threshold=DEFAULT_THRESHOLD, quality_is_norm=True, **overrides,
        )

    build.__doc__ = f"MagFace iResNet-{depth} (see :func:`~face_embedding.checkpoint.build_embedder`)."
    build.__name__ = build.__qualname__ = f"build_{name.replace('-', '_')}"


for _name, (_depth, _spec_, _facts) in MODELS.items():
    _register(_name, _depth, _spec_, _facts)
