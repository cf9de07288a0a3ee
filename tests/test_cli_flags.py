"""Which common options each command offers: the runtime flags everywhere (a contract),
the model flags only where a model runs."""

from __future__ import annotations

import argparse

import pytest

from facerec.cli import build_parser


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command as (path, parser), subcommands included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path and not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def test_every_command_takes_the_runtime_flags() -> None:
    leaves = list(_leaf_parsers(build_parser()))
    assert len(leaves) > 30
    for path, parser in leaves:
        missing = {"--engine", "--precision", "--threads", "--config"} - _options(parser)
        assert not missing, f"facerec {' '.join(path)} lacks {missing}"


@pytest.mark.parametrize("argv", [
    ["db", "check", "--threshold", "0.3"],
    ["enroll", "delete", "Ann", "--embedder", "mobilefacenet"],
    ["weights", "--flip"],
    ["unknowns", "list", "--detector", "yolov5n-0.5-face"],
    ["detect", "a.jpg", "--embedder", "mobilefacenet"],
    ["eval", "detect", "--images", "d", "--gt", "g.txt", "--threshold", "0.3"],
])
def test_model_flags_are_refused_where_no_such_model_runs(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_model_flags_remain_where_models_run() -> None:
    p = build_parser()
    args = p.parse_args(["identify", "a.jpg", "--threshold", "0.3", "--embedder", "mobilefacenet", "--flip"])
    assert (args.threshold, args.embedder, args.flip) == (0.3, "mobilefacenet", True)
    assert p.parse_args(["detect", "a.jpg", "--detector", "yolov5n-0.5-face"]).detector == "yolov5n-0.5-face"
