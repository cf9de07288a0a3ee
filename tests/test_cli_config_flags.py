"""Command-line flags that meet a config file or a busy port: ``--loop`` / ``--realtime``
reach every file camera of ``cameras:`` (``facerec run`` and ``facerec serve``), and a
busy ``--port`` is the first and only thing ``facerec serve`` says."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from facerec.cli import build_parser, run
from facerec.cli.common import config_from_args
from facerec.errors import ConfigError
from facerec.serve.auth import TOKEN_ENV


def _conf(tmp_path: Path, cameras: dict[str, str]) -> Path:
    conf = tmp_path / "cams.yaml"
    conf.write_text("cameras:\n" + "".join(f"  - {{name: {n}, source: '{s}'}}\n" for n, s in cameras.items()),
                    encoding="utf-8")
    return conf


def test_loop_and_realtime_reach_every_file_camera_of_run_and_serve(tmp_path: Path, data_dir: Path) -> None:
    from facerec.cli.live_cmd import cameras_for
    from facerec.cli.serve_cmd import DaemonFeed

    clip, folder = data_dir / "video" / "lp_driving_d0.mp4", tmp_path / "stills"
    folder.mkdir()
    conf = _conf(tmp_path, {"clip": str(clip), "stills": str(folder), "porch": "rtsp://127.0.0.1:9/cam"})
    parser = build_parser()

    args = parser.parse_args(["run", "--config", str(conf)])
    plain = {s.name: (s.loop, s.realtime) for s in cameras_for(args, config_from_args(args))}
    assert plain == dict.fromkeys(["clip", "stills", "porch"], (False, False))
    args = parser.parse_args(["run", "--config", str(conf), "--loop", "--realtime"])
    specs = {s.name: (s.loop, s.realtime) for s in cameras_for(args, config_from_args(args))}
    assert specs == {"clip": (True, True), "stills": (True, True), "porch": (False, False)}

    args = parser.parse_args(["serve", "--config", str(conf), "--loop"])
    feed = DaemonFeed(None, config_from_args(args), realtime=True, loop=True)
    assert {s.name: s.loop for s in feed.daemon.specs} == {"clip": True, "stills": True, "porch": False}
    feed = DaemonFeed(None, config_from_args(args), realtime=False, loop=False)  # --as-fast-as-possible
    assert {s.name: (s.loop, s.realtime) for s in feed.daemon.specs} == dict.fromkeys(["clip", "stills", "porch"],
                                                                                      (False, False))


def test_loop_with_only_live_cameras_is_refused(tmp_path: Path) -> None:
    from facerec.cli.live_cmd import cameras_for

    conf = _conf(tmp_path, {"porch": "rtsp://127.0.0.1:9/cam", "desk": "0"})
    args = build_parser().parse_args(["run", "--config", str(conf), "--loop"])
    with pytest.raises(ConfigError, match="--loop: no camera reads a file"):
        cameras_for(args, config_from_args(args))


def test_serve_on_a_busy_port_says_so_first(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = run(["serve", "--port", str(port), "--data-dir", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"facerec: error: cannot listen on 127.0.0.1:{port}: "), err
    assert "--port" in err and "API token" not in err and "http://" not in err, err
    assert not (tmp_path / "g").exists(), "refused before the gallery was opened"
