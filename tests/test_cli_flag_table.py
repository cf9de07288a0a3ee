"""Every flag that sets a config value goes through one table per command and the config model:
a bad value is one line naming the flag, exit 2, for every command; a good value reaches the
config the command runs with; every table names real keys.

The commands run in-process (``facerec.cli.run``); a bad value is refused before any model,
gallery or socket is opened, so nothing here needs weights.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from facerec.cli import build_parser, run
from facerec.cli.common import config_from_args
from facerec.cli.live_cmd import main as rec_cam
from facerec.config import Config


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "pydantic" not in err
    return lines[0]


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# command words + the required options of that command, flag, bad value, config key
BAD = [
    (["align"], "--conf_thres", "1.5", "detection.conf_thres"),
    (["align"], "--iou_thres", "0", "detection.iou_thres"),
    (["run", "--source", "x.jpg"], "--input-size", "100", "live.input_size"),
    (["run", "--source", "x.jpg"], "--detect-every", "0", "live.detect_every"),
    (["run", "--source", "x.jpg"], "--stats-every", "-1", "live.stats_every_s"),
    (["run", "--source", "x.jpg"], "--webhook", "not-a-url", "events.webhook_url"),
    (["serve"], "--port", "70000", "serve.port"),
    (["eval", "cluster", "--root", "x"], "--max-distance", "3", "unknowns.max_distance"),
    (["eval", "cluster", "--root", "x"], "--min-faces", "0", "unknowns.min_faces"),
    (["detect", "x.jpg"], "--threads", "0", "runtime.threads"),
    (["enroll", "list"], "--threads", "0", "runtime.threads"),
    (["identify", "x.jpg"], "--threshold", "2", "recognition.threshold"),
]


@pytest.mark.parametrize("argv,flag,value,key", BAD, ids=[f"{' '.join(b[0][:2])} {b[1]}" for b in BAD])
def test_bad_value_is_one_line_naming_the_flag(argv, flag, value, key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    assert run([*argv, flag, value]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"facerec: error: {flag} "), line
    assert value in line and key in line, line
    assert list(tmp_path.iterdir()) == []


def test_rec_cam_names_the_flag_too(capsys):
    assert rec_cam(["--source", "x.jpg", "--input-size", "100"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("rec_cam.py: error: --input-size 100"), line


RUN = ["run", "--source", "x.jpg"]
CLUSTER = ["eval", "cluster", "--root", "x"]
# command words + required options, the flag under test (with its value), config key, value
GOOD = [
    (RUN, ["--input-size", "256"], "live.input_size", 256),
    (RUN, ["--img-size", "224"], "live.input_size", 224),
    (RUN, ["--detect-every", "2"], "live.detect_every", 2),
    (RUN, ["--camera", "door"], "live.camera_name", "door"),
    (RUN, ["--keep-unknown"], "events.keep_unknown_crops", True),
    (RUN, ["--unknowns"], "unknowns.enabled", True),
    (RUN, ["--stats-every", "0"], "live.stats_every_s", 0.0),
    (RUN, ["--webhook", "http://127.0.0.1:9/hook"], "events.webhook_url", "http://127.0.0.1:9/hook"),
    (["align"], ["--conf_thres", "0.6"], "detection.conf_thres", 0.6),
    (["align"], ["--iou_thres", "0.4"], "detection.iou_thres", 0.4),
    (["align"], ["--weights", "w.pt"], "models.detector_weights", "w.pt"),
    (CLUSTER, ["--max-distance", "0.3"], "unknowns.max_distance", 0.3),
    (CLUSTER, ["--min-faces", "3"], "unknowns.min_faces", 3),
    (["eval", "identify", "--gallery", "g", "--probes", "p"], ["--template", "max"], "gallery.template", "max"),
    (["eval", "gallery"], ["--template", "quality_mean"], "gallery.template", "quality_mean"),
    (["serve"], ["--port", "8123"], "serve.port", 8123),
    (["serve"], ["--host", "0.0.0.0"], "serve.host", "0.0.0.0"),
    (["detect", "x.jpg"], ["--threads", "1"], "runtime.threads", 1),
    (["enroll", "list"], ["--data-dir", "gal"], "gallery.data_dir", "gal"),
    (["detect", "x.jpg"], ["--backend", "onnx"], "runtime.engine", "onnx"),  # the old name of --engine
]


@pytest.mark.parametrize("argv,flag,key,value", GOOD, ids=[f"{g[0][0]} {g[1][0]}" for g in GOOD])
def test_good_value_reaches_the_config(argv, flag, key, value, tmp_path):
    empty = tmp_path / "c.yaml"
    empty.write_text("{}\n")
    parser = build_parser()
    default = _get(config_from_args(parser.parse_args([*argv, "--config", str(empty)])), key)
    assert default != value  # the flag, not the default, put it there
    assert _get(config_from_args(parser.parse_args([*argv, *flag, "--config", str(empty)])), key) == value


def test_every_table_names_real_keys():
    """A table with a typo would only fail when someone passes that flag."""
    seen = 0
    for words, parser in _subparsers(build_parser()):
        table = parser.get_default("config_flags") or {}
        for dest, (flag, key) in table.items():
            _get(Config(), key)  # AttributeError names a key the config does not have
            assert flag in parser._option_string_actions, (words, flag)
            assert parser._option_string_actions[flag].dest == dest
            seen += 1
        if "--threads" in parser._option_string_actions:  # the common flags are in every command's table
            assert table.get("threads") == ("--threads", "runtime.threads"), words
    assert seen >= 14
