"""The engine table, the one rule choosing a model's file and engine, the ``backend`` alias,
and what the first start says (real weights from ../shared/models)."""

from __future__ import annotations

import logging
from typing import get_args

import pytest

from facerec.config import RuntimeConfig
from facerec.detect import ResizableDetector, create_detector, detector_registry
from facerec.errors import ConfigError
from facerec.runtime import ENGINES, build
from facerec.runtime.build import resolve_model_file
from facerec.runtime.engines import ENGINE_TABLE, EngineName, engine_alias
from facerec.runtime.settings import engine_overrides

DET = "yolov5n-0.5-face"


@pytest.fixture(scope="module")
def spec():
    return detector_registry().get(DET).weights


def test_config_engines_derive_from_the_table():
    assert ENGINES == tuple(ENGINE_TABLE) == get_args(EngineName)
    allowed = get_args(RuntimeConfig.model_fields["engine"].annotation)
    assert allowed == ("auto", *ENGINE_TABLE)
    with pytest.raises(ValueError, match="'auto', 'torch', 'onnx' or 'openvino'"):
        RuntimeConfig(engine="tensorrt")


def test_backend_alias_is_one_rule():
    assert engine_alias(None, None) is None
    assert engine_alias("onnx", None) == "onnx"
    assert engine_alias(None, "torch") == "torch"
    with pytest.raises(ConfigError, match="--backend is the old name of --engine; pass only --engine"):
        engine_alias("onnx", "torch", engine_name="--engine", alias_name="--backend")
    assert engine_overrides({"backend": "onnx", "threads": 1}) == {"engine": "onnx", "threads": 1}
    assert engine_overrides({"threads": 1}) == {"threads": 1}
    with pytest.raises(ConfigError, match="backend is the old name of engine"):
        engine_overrides({"backend": "onnx", "engine": "torch"})


@pytest.mark.parametrize("requested, weights, engine, onnx", [
    ("torch", None, "torch", False),          # the checkpoint, on PyTorch
    ("onnx", None, "onnx", True),             # the published export where one exists
    ("openvino", None, "openvino", False),    # the checkpoint, converted (same key as torch)
    ("torch", "onnx", "onnx", True),          # an explicit .onnx cannot run on PyTorch
    ("openvino", "onnx", "openvino", True),   # ... but OpenVINO runs it
    ("onnx", "pt", "onnx", False),            # an explicit checkpoint is exported, not swapped
])
def test_one_rule_picks_file_and_engine(spec, models_dir, requested, weights, engine, onnx):
    path = {None: None, "onnx": models_dir / spec.onnx_file, "pt": models_dir / spec.file}[weights]
    got = resolve_model_file(spec, "yolov5", requested, weights=path, weights_dir=models_dir)
    assert (got.engine, got.onnx) == (engine, onnx)
    assert got.path is not None and got.path.suffix == (".onnx" if onnx else ".pt")


def test_in_memory_model_resolves_no_file(spec):
    got = resolve_model_file(spec, "yolov5", "torch", in_memory=True)
    assert got.path is None and got.engine == "torch"


def test_precision_auto_on_onnx_says_nothing_about_bf16(models_dir, monkeypatch, caplog):
    import facerec.runtime.base as base

    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)  # auto means bf16 on such a CPU
    monkeypatch.setattr(base, "_warned", set())  # warnings said by earlier tests count again
    with caplog.at_level(logging.WARNING):
        det = create_detector(DET, weights_dir=models_dir, engine="onnx", precision="auto")
    assert det.precision == "fp32"
    assert "bf16" not in caplog.text
    with caplog.at_level(logging.WARNING):
        create_detector(DET, weights_dir=models_dir, engine="onnx", precision="bf16")
    assert "engine onnx runs fp32 only; precision bf16" in caplog.text  # asked for: still said


def test_one_preparing_line_when_the_cache_is_empty(models_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(build, "_said_preparing", [])
    rt = RuntimeConfig(cache_dir=str(tmp_path / "cache"), threads=1)
    with caplog.at_level(logging.WARNING):
        create_detector(DET, weights=models_dir / "yolov5n-0.5-face.pt", engine="onnx", runtime=rt)
        create_detector(DET, weights=models_dir / "yolov5n-0.5-face.pt", engine="openvino", runtime=rt)
    lines = [r.getMessage() for r in caplog.records if "preparing models" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("preparing models (first start only)"), lines
    monkeypatch.setattr(build, "_said_preparing", [])
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a later start: everything comes from the cache
        create_detector(DET, weights=models_dir / "yolov5n-0.5-face.pt", engine="onnx", runtime=rt)
    assert "preparing models" not in caplog.text


def test_a_camera_view_shares_the_network_with_its_own_settings(models_dir):
    det = create_detector(DET, weights_dir=models_dir, engine="torch", input_size=640, min_face=16)
    assert isinstance(det, ResizableDetector) and det.fixed_size is None
    view = det.with_settings(input_size=320, min_face=40)
    assert (view.input_size, view.min_face) == (320, 40)
    assert (det.input_size, det.min_face) == (640, 16), "the shared detector is unchanged"
    assert view.runner is det.runner
    assert det.with_settings().input_size == 640
    fixed = create_detector(DET, weights_dir=models_dir, engine="onnx")
    assert fixed.fixed_size == (640, 640)


def test_the_pacer_resizes_a_camera_view_only(models_dir):
    from facerec.daemon import CameraDetector, SharedModels
    from facerec.pace import can_resize, detector_input_size, set_input_size

    det = create_detector(DET, weights_dir=models_dir, engine="torch", input_size=640)
    cam = CameraDetector(SharedModels(det, embedder=None, slots=1), 320, 24)  # type: ignore[arg-type]
    assert isinstance(cam, ResizableDetector) and can_resize(cam)
    assert (detector_input_size(cam), cam.min_face) == (320, 24)
    assert set_input_size(cam, 256) and detector_input_size(cam) == 256
    assert det.input_size == 640, "the shared detector keeps its size"
    other = cam.with_settings(input_size=480)
    assert (other.input_size, other.min_face, cam.input_size) == (480, 24, 256)
    fixed = CameraDetector(SharedModels(create_detector(DET, weights_dir=models_dir, engine="onnx"), None), 320, 0)  # type: ignore[arg-type]
    assert not can_resize(fixed) and not set_input_size(fixed, 256) and detector_input_size(fixed) == 640
