from __future__ import annotations

import pytest

from facerec.config import Config, load_config
from facerec.errors import ConfigError
from facerec.weights import PROJECT_ROOT


def test_shipped_config_equals_schema_defaults():
    """config.yaml documents the defaults; the two must not drift apart."""
    assert load_config(PROJECT_ROOT / "config.yaml") == Config()


def test_every_schema_key_is_documented_in_config_yaml():
    text = (PROJECT_ROOT / "config.yaml").read_text()
    import typing

    for section, model in Config.model_fields.items():
        assert f"\n{section}:" in "\n" + text
        ann = model.annotation
        if typing.get_origin(ann) is list:  # cameras: a list of sections, documented by example
            for key in typing.get_args(ann)[0].model_fields:
                assert f"{key}" in text, f"{section}[].{key} missing from config.yaml"
            continue
        for key in ann.model_fields:
            assert f"  {key}:" in text, f"{section}.{key} missing from config.yaml"


def test_partial_file_with_only_cameras_and_mqtt(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cameras:\n  - {name: door, source: a.mp4, input_size: 320, roi: [0, 0, 100, 100]}\n"
                 "  - {name: yard, source: '0', enabled: false}\nmqtt:\n  enabled: true\n  host: broker\n")
    cfg = load_config(p)
    assert [c.name for c in cfg.cameras] == ["door", "yard"] and cfg.cameras[0].roi == (0, 0, 100, 100)
    assert cfg.mqtt.host == "broker" and cfg.mqtt.topic_prefix == "facerec" and cfg.detection == Config().detection
    p.write_text("cameras:\n  - {name: 'a/b', source: x}\n")
    with pytest.raises(ConfigError, match=r"cameras\.0\.name"):
        load_config(p)


def test_empty_file_gives_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("")
    assert load_config(p) == Config()


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("detection:\n  conf_thresh: 0.3\n")
    with pytest.raises(ConfigError, match=r"detection\.conf_thresh: unknown key"):
        load_config(p)


def test_out_of_range_value_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("detection:\n  conf_thres: 1.5\n")
    with pytest.raises(ConfigError, match=r"detection\.conf_thres"):
        load_config(p)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_overrides_apply_and_validate(tmp_path):
    cfg = load_config(None, {"models.detector": "yolov5n-0.5-face", "recognition.threshold": 0.3,
                             "gallery.data_dir": None})
    assert cfg.models.detector == "yolov5n-0.5-face" and cfg.recognition.threshold == 0.3
    with pytest.raises(ConfigError, match="recognition.threshold"):
        load_config(None, {"recognition.threshold": 7})
