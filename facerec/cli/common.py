"""Options every subcommand accepts, and turning them into a validated config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import logging

from facerec.config import Config, load_config
from facerec.runtime import ENGINES, PRECISIONS
from facerec.runtime.engines import engine_alias

log = logging.getLogger(__name__)


def _parser(*, detector: bool, embedder: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="configuration file (default: the project's config.yaml)")
    # A command that runs no such model still accepts its flags (scripts pass one set of
    # options to every command) but does not list them: they would do nothing there.
    g.add_argument("--detector", metavar="NAME",
                   help="detector model (see `facerec weights`)" if detector else argparse.SUPPRESS)
    g.add_argument("--embedder", metavar="NAME",
                   help="embedder model (see `facerec weights`)" if embedder else argparse.SUPPRESS)
    g.add_argument("--engine", choices=("auto", *ENGINES),
                   help="inference engine (runtime.engine; auto = the fastest measured per model)")
    g.add_argument("--precision", choices=("auto", *PRECISIONS),
                   help="arithmetic (runtime.precision; auto = bf16 where the CPU has native bf16)")
    g.add_argument("--backend", choices=("torch", "onnx"), help=argparse.SUPPRESS)  # old name of --engine
    g.add_argument("--weights-dir", metavar="DIR", help="directory searched first for weight files")
    g.add_argument("--data-dir", metavar="DIR", help="gallery root (default: data_recognition)")
    g.add_argument("--threshold", type=float, metavar="COS",
                   help="cosine similarity to accept a match" if embedder else argparse.SUPPRESS)
    g.add_argument("--flip", action="store_true", default=None,
                   help="flip test-time augmentation" if embedder else argparse.SUPPRESS)
    g.add_argument("--threads", type=int, metavar="N",
                   help="threads of every engine (runtime.threads; default: the cores available)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    config_flags(p, _OVERRIDES)
    return p


def common_parser() -> argparse.ArgumentParser:
    """A parent parser with ``--config``, ``--detector``, ``--embedder`` and friends: the
    options of commands that run both models."""
    return _parser(detector=True, embedder=True)


def detector_parser() -> argparse.ArgumentParser:
    """The common options of commands that run only the detector (``--embedder``,
    ``--threshold`` and ``--flip`` are accepted but not listed: they would do nothing there)."""
    return _parser(detector=True, embedder=False)


def plain_parser() -> argparse.ArgumentParser:
    """The common options of commands that run no model (the gallery, weights, database
    commands): ``--config``, ``--data-dir``, the runtime flags and ``-v`` are listed; the
    model flags are accepted but not listed."""
    return _parser(detector=False, embedder=False)


#: argparse destination -> dotted config key: the flags of the common parsers, part of every
#: command's table.
_OVERRIDES = {
    "detector": "models.detector",
    "embedder": "models.embedder",
    "engine": "runtime.engine",
    "precision": "runtime.precision",
    "weights_dir": "models.weights_dir",
    "data_dir": "gallery.data_dir",
    "threshold": "recognition.threshold",
    "flip": "recognition.flip_tta",
    "threads": "runtime.threads",
}


def config_flags(parser: argparse.ArgumentParser, table: dict[str, str]) -> None:
    """Declare which options of ``parser`` are config values: argparse destination -> dotted
    config key, added to the table the parser already has (a command inherits the common
    flags' table from its parent parser). :func:`config_from_args` applies the table through
    the config model, so every value is validated and a bad one is reported under its flag.

    Raises:
        KeyError: a destination the parser does not define (a typo in the table).
    """
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    have: dict[str, tuple[str, str]] = parser.get_default("config_flags") or {}
    parser.set_defaults(config_flags={**have, **{dest: (flags[dest], key) for dest, key in table.items()}})


def config_from_args(args: argparse.Namespace) -> Config:
    """Load ``--config`` and apply the command's flag table (see :func:`config_flags`): every
    value given on the command line, validated together with the file.

    Raises:
        ConfigError: a bad file, or one line naming the flag with a bad value.
    """
    table: dict[str, tuple[str, str]] = getattr(args, "config_flags", None) or {
        dest: ("--" + dest.replace("_", "-"), key) for dest, key in _OVERRIDES.items()}
    overrides: dict[str, Any] = {key: getattr(args, dest, None) for dest, (_, key) in table.items()}
    overrides["runtime.engine"] = engine_alias(overrides.get("runtime.engine"), getattr(args, "backend", None),
                                               engine_name="--engine", alias_name="--backend", warn=True)
    flags = {key: flag for flag, key in table.values()}
    return load_config(getattr(args, "config", None), overrides, flags=flags)


def print_json(obj: Any) -> None:
    """One JSON line on stdout, flushed (consumers read line by line)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
