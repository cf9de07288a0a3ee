"""Options every subcommand accepts, and turning them into a validated config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from facerec.config import Config, load_config


def common_parser() -> argparse.ArgumentParser:
    """A parent parser with ``--config``, ``--detector``, ``--embedder`` and friends."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="configuration file (default: the project's config.yaml)")
    g.add_argument("--detector", metavar="NAME", help="detector model (see `facerec weights`)")
    g.add_argument("--embedder", metavar="NAME", help="embedder model (see `facerec weights`)")
    g.add_argument("--backend", choices=("torch", "onnx"), help="inference backend")
    g.add_argument("--weights-dir", metavar="DIR", help="directory searched first for weight files")
    g.add_argument("--data-dir", metavar="DIR", help="gallery root (default: data_recognition)")
    g.add_argument("--threshold", type=float, metavar="COS", help="cosine similarity to accept a match")
    g.add_argument("--flip", action="store_true", default=None, help="flip test-time augmentation")
    g.add_argument("--threads", type=int, metavar="N", help="PyTorch / ONNX Runtime threads")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return p


#: argparse destination -> dotted config key.
_OVERRIDES = {
    "detector": "models.detector",
    "embedder": "models.embedder",
    "backend": "models.backend",
    "weights_dir": "models.weights_dir",
    "data_dir": "gallery.data_dir",
    "threshold": "recognition.threshold",
    "flip": "recognition.flip_tta",
    "threads": "live.threads",
}


def config_from_args(args: argparse.Namespace) -> Config:
    """Load ``--config`` and apply the command-line overrides (validated together)."""
    overrides: dict[str, Any] = {key: getattr(args, dest, None) for dest, key in _OVERRIDES.items()}
    cfg = load_config(getattr(args, "config", None), overrides)
    if cfg.live.threads:
        import torch

        torch.set_num_threads(cfg.live.threads)
    return cfg


def print_json(obj: Any) -> None:
    """One JSON line on stdout, flushed (consumers read line by line)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
