"""One camera's pipeline, built one way for the daemon, the tests and the benchmarks.

:func:`build_camera` takes a camera (:class:`~facerec.daemon.CameraSpec`, every
override already resolved), the daemon's shared models and the configuration, and
returns the :class:`~facerec.pipeline.LivePipeline` that camera runs: a view of the shared
detector at the camera's input size, minimum face and region of interest, the shared
embedder behind the inference slots, the frozen :class:`~facerec.pipeline.PipelineSettings`
and, unless the frames are unrelated photos, a pacer starting from the camera's input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facerec.config import Config
from facerec.pipeline import LivePipeline, PipelineSettings
from facerec.pace import Pacer, can_resize

if TYPE_CHECKING:
    from facerec.daemon import CameraSpec, SharedModels


def camera_settings(spec: CameraSpec, cfg: Config, *, threshold: float, stills: bool = False) -> PipelineSettings:
    """The pipeline settings of one camera: ``tracking:``, ``recognition.flip_tta``, what
    ``events:`` and ``unknowns:`` keep of each track, and the camera's detect interval.

    Args:
        spec: the camera.
        cfg: the configuration.
        threshold: cosine similarity for a match (:func:`~facerec.models.threshold_for`).
        stills: the frames are unrelated photos (each face named on its own).
    """
    return PipelineSettings(
        threshold=threshold, tracking=cfg.tracking, detect_every=spec.detect_every, flip=cfg.recognition.flip_tta,
        keep_crops=cfg.events.keep_unknown_crops or cfg.unknowns.enabled, keep_best=cfg.unknowns.crops_per_sighting,
        stills=stills,
    )


def build_camera(spec: CameraSpec, models: SharedModels, cfg: Config, *, gallery=None,
                 stills: bool = False) -> LivePipeline:
    """The :class:`~facerec.pipeline.LivePipeline` of one camera on the shared models.

    Args:
        spec: the camera (:meth:`~facerec.daemon.CameraSpec.from_config` or
            :meth:`~facerec.daemon.CameraSpec.single`).
        models: the daemon's detector and embedder; the camera gets a view of the
            detector with its own settings, never a copy of the weights.
        cfg: the configuration (``live``, ``tracking``, ``recognition``, ``events``,
            ``unknowns``, and the models' thresholds).
        gallery: the gallery watcher or index every camera searches (``None``: everyone
            is unknown).
        stills: the frames are unrelated photos (an image folder that is not a
            sequence): no tracking and no pacer.
    """
    from facerec.models import threshold_for

    detector = models.detector_for(spec)
    pacer = None
    if cfg.live.adapt and not stills:  # each camera holds its own frame rate
        # from the camera's own interval and input: its overrides are its best setting
        live = cfg.live.model_copy(update={"detect_every": spec.detect_every})
        pacer = Pacer.from_config(live, spec.input_size, None, can_resize(detector))
    settings = camera_settings(spec, cfg, threshold=threshold_for(cfg, models.embedder), stills=stills)
    return LivePipeline(detector, models.shared_embedder, settings, gallery=gallery, pacer=pacer)
