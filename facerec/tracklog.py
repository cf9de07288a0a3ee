"""``--tracks FILE``: one JSON line per processed frame, to audit what a run showed.

Each line is::

    {"frame": 412, "t": 13.733, "faces": [{"box": [x1, y1, x2, y2], "track_id": 7,
                                           "name": "alice", "score": 0.6123}]}

* ``frame``: the frame's index in the source, counting frames that were dropped (a slow
  consumer of a live source, or ``--realtime``), so gaps show where frames were skipped;
* ``t``: stream seconds (file position, or wall time since the start for live sources);
* ``box``: pixels of the source frame, ``xyxy``, rounded to 0.1 px;
* ``name``: the name shown on the face, ``null`` while the track has not earned one
  (undecided, "?") and for unknown faces;
* ``score``: the match similarity behind that name (the best candidate's when unknown),
  as in the events.

A frame without faces is still written (``"faces": []``), so every processed frame has
its line. A daemon running several cameras writes them all to one file and adds
``"camera": <name>`` to each line (one camera: exactly the fields above). This is a contract other tools rely on: keep the names and formats.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import IO

import numpy as np

from facerec.errors import FacerecError
from facerec.sinks import FrameSinkBase


def frame_record(result) -> dict:
    """The JSON object of one :class:`~facerec.live.FrameResult`."""
    return {
        "frame": int(result.frame.index),
        "t": round(float(result.frame.t), 3),
        "faces": [
            {
                "box": [round(float(v), 1) for v in face.xyxy],
                "track_id": int(face.track_id),
                "name": face.name if face.decided else None,
                "score": round(float(face.similarity), 4),
            }
            for face in result.faces
        ],
    }


class TrackLog:
    """Writes :func:`frame_record` lines to a file (replacing it) or to stdout (``"-"``).

    Called with each frame's result (:meth:`for_camera` gives a frame sink); lines are flushed as
    they are written, so ``tail -f`` follows a running daemon.

    Args:
        path: the file; its folder must exist (a typo in it is an error, not a new tree).
        with_camera: add ``"camera"`` to every line (several cameras share the file).

    Raises:
        FacerecError: the file cannot be opened for writing.
    """

    def __init__(self, path: str | os.PathLike, *, with_camera: bool = False) -> None:
        self.path = os.fspath(path)
        self.with_camera = with_camera
        self._lock = threading.Lock()  # camera threads share the file
        self._own = self.path != "-"
        self.lines = 0
        if self._own:
            folder = Path(self.path).resolve().parent
            if not folder.is_dir():
                raise FacerecError(f"--tracks {self.path}: folder {folder} does not exist (create it first)")
            try:
                self._fh: IO[str] = open(self.path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as e:
                raise FacerecError(f"--tracks {self.path}: cannot write ({e.strerror or e})") from None
        else:
            self._fh = sys.stdout

    def __call__(self, result, camera: str | None = None) -> None:
        record = frame_record(result)
        if self.with_camera and camera is not None:
            record["camera"] = camera
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self.lines += 1

    def for_camera(self, camera: str) -> TrackLogSink:
        """The frame sink one camera's loop calls with each of its frames."""
        return TrackLogSink(self, camera)

    def close(self) -> None:
        if self._own and not self._fh.closed:
            self._fh.close()
        elif not self._own:
            self._fh.flush()


class TrackLogSink(FrameSinkBase):
    """One camera's frames into a :class:`TrackLog` (the file is the log's to close)."""

    def __init__(self, tracklog: TrackLog, camera: str) -> None:
        self.tracklog = tracklog
        self.camera = camera

    def on_frame(self, result, image: np.ndarray | None) -> bool:
        self.tracklog(result, self.camera)
        return True
