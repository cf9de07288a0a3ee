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


@pytest.mark.parametrize("argv, hidden", [
    (["db", "check"], ("--threshold", "--flip", "--embedder", "--detector")),
    (["enroll", "delete"], ("--threshold", "--flip", "--embedder", "--detector")),
    (["weights"], ("--threshold", "--flip", "--embedder", "--detector")),
    (["unknowns", "list"], ("--threshold", "--flip", "--embedder", "--detector")),
    (["detect"], ("--threshold", "--flip", "--embedder")),
    (["eval", "detect"], ("--threshold", "--flip", "--embedder")),
])
def test_model_flags_are_not_listed_where_no_such_model_runs(argv: list[str], hidden, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--engine" in text and "--threads" in text
    assert not [flag for flag in hidden if flag in text], text


def test_hidden_model_flags_are_still_accepted() -> None:
    """Scripts pass one set of options to every command; a command that ignores a model
    flag must not fail on it."""
    args = build_parser().parse_args(["enroll", "delete", "Ann", "--embedder", "mobilefacenet", "--threshold", "0.3"])
    assert (args.embedder, args.threshold) == ("mobilefacenet", 0.3)


def test_model_flags_remain_where_models_run() -> None:
    p = build_parser()
    args = p.parse_args(["identify", "a.jpg", "--threshold", "0.3", "--embedder", "mobilefacenet", "--flip"])
    assert (args.threshold, args.embedder, args.flip) == (0.3, "mobilefacenet", True)
    assert p.parse_args(["detect", "a.jpg", "--detector", "yolov5n-0.5-face"]).detector == "yolov5n-0.5-face"
