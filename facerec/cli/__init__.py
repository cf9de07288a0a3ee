"""The ``facerec`` command: one subcommand per job, each in its own module.

Each module in :data:`_MODULES` exposes ``register(subparsers, common)`` which adds its
subcommands with ``set_defaults(func=...)``; ``func(args, cfg)`` returns the exit code.
Errors a user can fix (:class:`~facerec.errors.FacerecError`) are printed as one message,
never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from facerec import __version__
from facerec.cli.common import common_parser, config_from_args
from facerec.errors import FacerecError

_MODULES = (
    "facerec.cli.weights_cmd",
    "facerec.cli.core",
    "facerec.cli.gallery_cmd",
    "facerec.cli.db_cmd",
    "facerec.cli.eval_cmd",
    "facerec.cli.live_cmd",
    "facerec.cli.serve_cmd",
    "facerec.cli.unknowns_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerec", description="Real-time face recognition: detect, align, embed, match.",
    )
    parser.add_argument("--version", action="version", version=f"facerec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    for mod in _MODULES:
        importlib.import_module(mod).register(sub, common)
    return parser


def run(argv: list[str] | None = None, prog_args: argparse.Namespace | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = prog_args or parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", 0) > 1 else logging.INFO if getattr(args, "verbose", 0) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = config_from_args(args)
        return int(args.func(args, cfg) or 0)
    except FacerecError as e:
        print(f"facerec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facerec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def main() -> None:
    sys.exit(run())
