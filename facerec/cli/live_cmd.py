"""``facerec run`` (and ``rec_cam.py``): live recognition on a camera, file, folder or stream."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from facerec.config import Config
from facerec.errors import ConfigError, FacerecError

log = logging.getLogger(__name__)

#: Where ``--save-img`` without a path writes.
DEFAULT_SAVE_DIR = Path("runs") / "live"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run", parents=[common], help="live recognition on a webcam, video file, image folder or stream",
        description="Recognise faces live on --source, or on every enabled camera of cameras: in --config (one "
                    "process, shared models; it exits once every file source has ended). SOURCE is a webcam index (0), a video file, an image folder or an "
                    "rtsp:// / http:// URL. Headless unless --view-img; a file is processed as fast as possible "
                    "(or at its own pace with --realtime) and the program exits at its end. Ctrl-C or SIGTERM "
                    "stop cleanly.",
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)


#: The options of ``facerec run`` that are config values: argparse destination -> dotted key.
RUN_FLAGS = {
    "detect_every": "live.detect_every",
    "input_size": "live.input_size",
    "webhook": "events.webhook_url",
    "camera": "live.camera_name",
    "keep_unknown": "events.keep_unknown_crops",
    "stats_every": "live.stats_every_s",
    "unknowns": "unknowns.enabled",
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``facerec run``; ``rec_cam.py`` uses the same."""
    g = p.add_argument_group("live options")
    g.add_argument("--source", metavar="SRC",
                   help="webcam index, video file, image folder, or rtsp:// / http:// URL (default: every enabled "
                        "camera of cameras: in --config, else 0)")
    g.add_argument("--view-img", action="store_true", help="show the annotated frames in a window (q or Esc quits)")
    g.add_argument("--save-img", nargs="?", const="", default=None, metavar="PATH",
                   help=f"write the annotated video (mp4v) or, for folder sources, annotated images; "
                        f"PATH is a video file or a folder (default: {DEFAULT_SAVE_DIR}/)")
    g.add_argument("--realtime", action="store_true",
                   help="play a file at its own frame rate, dropping frames like a live camera")
    g.add_argument("--loop", action="store_true", help="restart a file or folder at its end (soak tests)")
    g.add_argument("--sequence", action="store_true",
                   help="an image folder holds consecutive video frames: track faces across images "
                        "(default: each photo is recognised on its own)")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    g.add_argument("--detect-every", type=int, metavar="N", help="run the detector on every Nth frame (live.detect_every)")
    g.add_argument("--input-size", "--img-size", dest="input_size", type=int, metavar="PX",
                   help="detector input size in the live loop, a multiple of 32 (live.input_size; with live.adapt, the largest it uses)")
    g.add_argument("--events", metavar="FILE", help="append events as JSON lines to FILE ('-' = stdout)")
    g.add_argument("--webhook", metavar="URL", help="POST each event as JSON to URL (events.webhook_url)")
    g.add_argument("--camera", metavar="NAME", help="camera name written into events (live.camera_name)")
    g.add_argument("--keep-unknown", action="store_true", default=None,
                   help="keep face crops of unknown tracks under DATA_DIR/unknown/ (events.keep_unknown_crops)")
    g.add_argument("--tracks", metavar="FILE",
                   help="write one JSON line per processed frame to FILE ('-' = stdout): frame index, stream "
                        "seconds, and each face's box, track id, name (null until named) and score")
    g.add_argument("--unknowns", action="store_true", default=None,
                   help="keep unknown sightings and group them into candidate people (unknowns.enabled)")
    g.add_argument("--stats", metavar="FILE", help="write run statistics as JSON to FILE on exit")
    g.add_argument("--stats-every", type=float, metavar="S", help="log a stats line every S seconds (0 = never)")
    from facerec.cli.common import config_flags

    config_flags(p, RUN_FLAGS)


def main(argv: list[str] | None = None, prog: str = "rec_cam.py") -> int:
    """``rec_cam.py``: the ``run`` command on its own (no other subcommand is imported).

    Same exit codes as ``facerec``: 0 done, 1 the source ended with an error, 2 a
    problem the message explains, 130 interrupted.
    """
    from facerec.cli.common import common_parser, config_from_args

    parser = argparse.ArgumentParser(
        prog=prog, parents=[common_parser()],
        description="Recognise faces live on a webcam index, video file, image folder or rtsp:// / http:// stream. "
                    "Same as `facerec run`.",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    verbose = args.verbose
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_run(args, config_from_args(args))
    except FacerecError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def gui_problem() -> str | None:
    """Why an OpenCV window cannot be opened here, or ``None`` when it can."""
    import cv2

    gui = ""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("", "NONE", "NO"):
        return ("--view-img: this OpenCV build has no GUI support (opencv-python-headless?). Install the GUI "
                "build (pip install opencv-python) or run headless with --save-img")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("--view-img: no display (DISPLAY and WAYLAND_DISPLAY are unset); run headless, with --save-img "
                "to keep the annotated output, or from a desktop session")
    return None


def _check_options(args: argparse.Namespace, cfg: Config) -> None:
    """Check the options that are not config values (the config ones came through
    :data:`RUN_FLAGS`)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")


def check_save_path(save: str | None) -> None:
    """Refuse a ``--save-img`` path that ends in an extension no writer here makes.

    A video goes to a file ending in one of :data:`VIDEO_SUFFIXES`; anything else is a
    folder. ``x.gif`` would otherwise become a folder named ``x.gif``. An existing folder
    is taken whatever its name.

    Raises:
        ConfigError: the path ends in another extension.
    """
    if not save:
        return
    suffix = Path(save).suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES and suffix[1:].isalnum() and not Path(save).is_dir():
        raise ConfigError(f"--save-img {save}: cannot write {suffix} files; give a video file ending in "
                          f"{', '.join(VIDEO_SUFFIXES)}, or a folder (annotated images, or one video per camera)")


def save_target(save: str, capture) -> tuple[str, Path]:
    """``("video" | "images", path)`` for ``--save-img [PATH]``."""
    from facerec.capture import SourceKind

    stem = Path(str(capture.spec).rstrip("/")).stem or "camera"
    if capture.kind in (SourceKind.CAMERA, SourceKind.STREAM):
        stem = "camera%s" % capture.spec if capture.kind is SourceKind.CAMERA else "stream"
    images = capture.kind in (SourceKind.FOLDER, SourceKind.IMAGE)
    base = Path(save) if save else DEFAULT_SAVE_DIR
    if images:
        return "images", base if save else base / stem
    if base.suffix.lower() in VIDEO_SUFFIXES:
        return "video", base
    return "video", base / f"{stem}.mp4"


class _StopOnSignal:
    """SIGINT/SIGTERM set ``stop``; a second signal interrupts at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        self.stop.set()

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _quiet_opencv(verbose: int) -> None:
    """OpenCV and FFmpeg print warnings for every failed read; our own messages say more."""
    if verbose > 1:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging module
        pass


def _outputs(args: argparse.Namespace, many: bool):
    """The frame outputs of one camera for ``--save-img`` / ``--view-img``.

    With several cameras ``--save-img PATH`` is a folder holding one video (or image
    folder) per camera, named after the camera.
    """
    from facerec.live import ImageFolderOutput, VideoFileOutput, WindowOutput

    def make(spec, capture) -> list:
        outputs: list = []
        if args.save_img is not None:
            if many:
                base = Path(args.save_img) if args.save_img else DEFAULT_SAVE_DIR
                kind, path = save_target(str(base / spec.name), capture)
                if kind == "video" and path.suffix.lower() not in VIDEO_SUFFIXES:
                    path = path.with_suffix(".mp4")
            else:
                kind, path = save_target(args.save_img, capture)
            outputs.append(ImageFolderOutput(path) if kind == "images" else VideoFileOutput(path, capture.fps))
            print(f"[{spec.name}] saving annotated {'images to' if kind == 'images' else 'video to'} {path}",
                  file=sys.stderr)
        if args.view_img:
            outputs.append(WindowOutput(f"facerec: {spec.name}"))
        return outputs

    return make


def cameras_for(args: argparse.Namespace, cfg: Config):
    """``--source`` as one camera; without it every enabled camera of ``cameras:``
    (webcam 0 when the config lists none), ``--realtime`` / ``--loop`` applied to each
    one that reads files."""
    from facerec.daemon import CameraSpec, cameras_from_config, with_file_flags

    if args.source is None and cfg.cameras:
        return with_file_flags(cameras_from_config(cfg), realtime=args.realtime or None, loop=args.loop or None)
    return [CameraSpec.single(args.source if args.source is not None else "0", cfg,
                              realtime=args.realtime, loop=args.loop)]


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.daemon import Daemon, stats_lines

    _quiet_opencv(getattr(args, "verbose", 0))
    _check_options(args, cfg)
    check_save_path(args.save_img)
    if args.view_img and (problem := gui_problem()):
        raise ConfigError(problem)
    if getattr(args, "verbose", 0) == 0 and cfg.live.stats_every_s:
        logging.getLogger("facerec.live").setLevel(logging.INFO)

    cameras = cameras_for(args, cfg)
    daemon = Daemon(cfg, cameras, events_path=args.events, outputs=_outputs(args, len(cameras) > 1),
                    max_frames=args.max_frames, sequence=args.sequence, tracks_path=args.tracks)
    with _StopOnSignal(daemon.stop_event) as sig:
        try:
            daemon.start()
            daemon.wait()
        finally:
            daemon.close()
    stats = daemon.stats()

    if args.stats:
        try:
            Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
            Path(args.stats).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise FacerecError(f"cannot write --stats file {args.stats}: {e.strerror or e}") from None
    for line in stats_lines(stats):
        print(f"facerec run: {line}", file=sys.stderr)
    errors = daemon.errors
    for name, msg in errors.items():
        print(f"facerec run: warning: {name}: {msg}" if len(cameras) > 1 else f"facerec run: warning: {msg}",
              file=sys.stderr)
    if sig.received == signal.SIGINT:
        return 130
    return 1 if errors and not sig.received else 0
