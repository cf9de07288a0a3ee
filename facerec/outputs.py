"""Where annotated frames go: a window, a video file, an image folder.

Each is a :class:`FrameOutput`; the daemon wraps them in :class:`~facerec.sinks.OutputSink`
so they get every drawn frame of a camera, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facerec.capture import Frame
from facerec.errors import FacerecError


class FrameOutput(Protocol):
    """Where annotated frames go (a window, a video file, an image folder)."""

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        """Consume one annotated frame; False asks the loop to stop (e.g. 'q' pressed)."""
        ...

    def close(self) -> None: ...


class VideoFileOutput:
    """Writes annotated frames to a video file with the ``mp4v`` codec.

    H.264 cannot be written by the pip OpenCV wheels; mp4v plays in every common player.
    The writer opens on the first frame (its size is the video's size).
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 25.0
        self._writer: Any = None  # a cv2.VideoWriter once the first frame gives the size
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise FacerecError(f"cannot write video {self.path} (is the folder writable? use a .mp4 or .avi name)")
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageFolderOutput:
    """Writes each annotated frame as a JPEG into a folder (for image-folder sources)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        stem = Path(frame.name).stem if frame.name else f"{frame.index:06d}"
        cv2.imwrite(str(self.folder / f"{stem}.jpg"), image)
        self.frames += 1
        return True

    def close(self) -> None:
        pass


class WindowOutput:
    """Shows annotated frames in an OpenCV window; ``q`` or Esc stops the loop."""

    def __init__(self, title: str = "facerec") -> None:
        self.title = title

    def write(self, frame: Frame, image: np.ndarray) -> bool:
        import cv2

        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass

