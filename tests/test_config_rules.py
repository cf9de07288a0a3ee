"""Bad values given by flag or file: one line naming the flag or key, exit 2, at load time for
every command; and the flags that were silently ignored or misread.

The commands run in-process (``facerec.cli.run``) on the real models and a real photo.
"""

from __future__ import annotations

import json

import pytest

from facerec.cli import run
from facerec.config import load_config
from facerec.errors import ConfigError

PHOTO = "face_recognition_examples/obama/obama.jpg"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "pydantic" not in err and "errors.pydantic.dev" not in err
    return lines[0]


# ---- flags -------------------------------------------------------------------------------------


def test_input_size_flag_sets_the_live_loop_input(photo, tmp_path, capsys):
    """``--input-size`` on ``facerec run`` reaches the detector of the live loop (it used to
    set detection.input_size, which the live loop does not read: the run stayed at 320)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("live:\n  adapt: false\n")
    stats = tmp_path / "s.json"
    rc = run(["run", "--config", str(cfg), "--source", str(photo(PHOTO)), "--input-size", "256",
              "--stats", str(stats), "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    got = json.loads(stats.read_text())
    assert got["input_size"] == 256 and got["faces_seen"] >= 1


@pytest.mark.parametrize("argv,flag", [
    (["align", "--conf_thres", "1.5"], "--conf_thres 1.5"),
    (["align", "--iou_thres", "0"], "--iou_thres 0.0"),
    (["run", "--source", "x.jpg", "--input-size", "100"], "--input-size 100"),
    (["run", "--source", "x.jpg", "--webhook", "not-a-url"], "--webhook 'not-a-url'"),
    (["run", "--source", "x.jpg", "--webhook", "ftp://host/hook"], "--webhook 'ftp://host/hook'"),
])
def test_bad_flag_value_is_one_line_naming_the_flag(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    assert run(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"facerec: error: {flag}")
    assert list(tmp_path.iterdir()) == []


def test_save_img_with_an_unsupported_extension_is_refused(photo, tmp_path, monkeypatch, capsys):
    """``--save-img x.gif`` used to create a folder named x.gif."""
    monkeypatch.chdir(tmp_path)
    assert run(["run", "--source", str(photo(PHOTO)), "--save-img", "x.gif"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--save-img x.gif" in line and ".mp4" in line
    assert not (tmp_path / "x.gif").exists()


def test_save_img_video_and_folder_paths_still_accepted():
    from facerec.cli.live_cmd import check_save_path

    for ok in (None, "", "out.mp4", "runs/out.MKV", "annotated", "runs/annotated/"):
        check_save_path(ok)
    with pytest.raises(ConfigError, match="cannot write .png"):
        check_save_path("frame.png")


# ---- rules of the file, checked at load ----------------------------------------------------------


@pytest.mark.parametrize("yaml_text,key,words", [
    ("cameras:\n  - {name: a, source: x.mp4, roi: [100, 0, 50, 80]}\n", "cameras.0.roi", "x2 > x1"),
    ("cameras:\n  - {name: a, source: x.mp4, roi: [0, 90, 50, 80]}\n", "cameras.0.roi", "y2 > y1"),
    ("cameras:\n  - {name: a, source: x.mp4}\n  - {name: a, source: y.mp4, enabled: false}\n", "cameras",
     "'a' is used twice"),
    ("cameras:\n  - {name: a, source: 'ftp://cam/stream'}\n", "cameras.0.source", "unsupported URL scheme"),
    ("events:\n  webhook_url: example.com/hook\n", "events.webhook_url", "not an http:// or https:// URL"),
    # a refused URL is shown without its user and password
    ("cameras:\n  - {name: a, source: 'gopher://bob:s3cret@cam/x'}\n", "cameras.0.source", "'gopher://***@cam/x'"),
    ("events:\n  webhook_url: 'ftp://bob:s3cret@hook/x'\n", "events.webhook_url", "'ftp://***@hook/x'"),
])
def test_cross_field_rules_fail_at_load(yaml_text, key, words, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg and f"in {p}: {key}: " in msg and words in msg
    assert "s3cret" not in msg and "bob" not in msg


def test_a_bad_config_file_stops_every_command(tmp_path, capsys):
    """Even a command that runs no camera (``facerec weights``) refuses the file at once."""
    p = tmp_path / "c.yaml"
    p.write_text("cameras:\n  - {name: door, source: 'rtsp://cam/1', roi: [10, 10, 5, 20]}\n")
    for argv in (["weights"], ["enroll", "list"], ["run"]):
        assert run([*argv, "--config", str(p)]) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert "cameras.0.roi" in line and str(p) in line


def test_good_cameras_and_urls_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("events:\n  webhook_url: https://ha.local:8123/api/webhook/x\n"
                 "cameras:\n  - {name: a, source: 'rtsp://u:p@cam/1', roi: [0, 0, 640, 480]}\n"
                 "  - {name: b, source: 'file:///tmp/x.mp4'}\n  - {name: c, source: '0'}\n"
                 "  - {name: d, source: 1}\n")  # a webcam index written as a number, as the README does
    cfg = load_config(p)
    assert [c.name for c in cfg.cameras] == ["a", "b", "c", "d"] and cfg.cameras[0].roi == (0, 0, 640, 480)
    assert cfg.cameras[3].source == "1"


def test_yaml_error_names_the_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("events:\n  webhook_url: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f'in "{p}", line' in str(e.value) and "<unicode string>" not in str(e.value)


def test_descriptions_say_what_the_code_does():
    from facerec.config import CameraConfig, EventsConfig

    def desc(model: type, key: str) -> str:
        return str(model.model_fields[key].description)

    assert "'recognized'" in desc(EventsConfig, "cooldown_s") and "appeared" in desc(EventsConfig, "cooldown_s")
    assert "event bus" in desc(EventsConfig, "queue_size")
    assert "live.input_size" in desc(CameraConfig, "input_size")
