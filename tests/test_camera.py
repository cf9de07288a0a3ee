"""build_camera: the one way a camera's pipeline is made (the daemon, the tests and
bench/live.py all call it). Each camera gets its own settings on a view of the shared
real models; the shared detector is never changed; photo folders keep the camera's input
size and run without a pacer."""

from __future__ import annotations

import dataclasses

import pytest

from facerec.camera import build_camera
from facerec.config import CameraConfig, load_config
from facerec.daemon import CameraSpec, SharedModels
from facerec.live import PipelineSettings
from facerec.models import threshold_for
from facerec.pace import PaceSetting


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, {"gallery.data_dir": str(tmp_path / "g"), "recognition.flip_tta": True,
                              "events.keep_unknown_crops": True, "unknowns.crops_per_sighting": 4,
                              "tracking.min_hits": 3})


def test_a_camera_gets_its_own_settings_on_the_shared_models(cfg, detector, embedder) -> None:
    spec = CameraSpec.from_config(CameraConfig(name="door", source="door.mp4", input_size=256, min_face=30,
                                               detect_every=2), cfg)
    models = SharedModels(detector, embedder, slots=1)
    pipe = build_camera(spec, models, cfg)
    assert pipe.settings == PipelineSettings(threshold=threshold_for(cfg, embedder), tracking=cfg.tracking,
                                             detect_every=2, flip=True, keep_crops=True, keep_best=4, stills=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pipe.settings.threshold = 0.0  # type: ignore[misc]
    assert pipe.input_size == 256 and pipe.detector.min_face == 30
    assert detector.input_size == 640, "the shared detector is left as it was"
    assert pipe.pacer is not None
    pipe.pacer.start(25.0)  # as run_live does: the pacer's best setting is the camera's own
    assert pipe.pacer.setting == PaceSetting(2, 256), pipe.pacer.bounds
    pipe.warmup()  # both models run behind the shared inference slots
    assert (models.use.detect_calls, models.use.embed_calls) == (1, 1)
    # another camera on the same models keeps the shipped settings
    other = build_camera(CameraSpec.single("hall.mp4", cfg), models, cfg)
    assert other.input_size == cfg.live.live_input_size(cfg.detection) and pipe.input_size == 256
    other.apply(PaceSetting(3, 192))
    assert other.input_size == 192 and pipe.input_size == 256, "the pacer of one camera moves only its own view"


def test_photo_folders_keep_the_camera_input_and_run_without_a_pacer(cfg, detector, embedder) -> None:
    spec = CameraSpec.single("photos/", cfg)
    pipe = build_camera(spec, SharedModels(detector, embedder, slots=1), cfg, stills=True)
    assert pipe.stills and pipe.settings.stills and pipe.pacer is None
    assert pipe.input_size == spec.input_size == cfg.live.live_input_size(cfg.detection)


def test_no_pacer_when_adapt_is_off(cfg, detector, embedder) -> None:
    cfg.live.adapt = False
    pipe = build_camera(CameraSpec.single("door.mp4", cfg), SharedModels(detector, embedder, slots=1), cfg)
    assert pipe.pacer is None and pipe.detect_every == cfg.live.detect_every
