"""A real RTSP server on 127.0.0.1 for the tests: GStreamer's ``gst-rtsp-server``.

The server plays a clip of ../shared/data/video in a loop as H.264 over RTSP, like an IP
camera. It runs as its own process under the system Python, which has the GObject
bindings (``python3-gi``); the venv's OpenCV decodes the clip into JPEG frames first (the
Debian GStreamer plugins named in the README's install command read JPEG but not MP4's
H.264 without ``gst-libav``). The tests kill it, stop it (SIGSTOP / SIGCONT) and start it
again on the same port.

Without the Debian packages the tests fail with that instruction, never skip.

Run directly (system Python)::

    /usr/bin/python3 tests/rtsp_server.py --frames DIR --port 8554 --fps 25
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script too
from mqtt_broker import free_port  # noqa: E402

#: The Python that has ``gi`` (Debian's python3-gi).
SYSTEM_PYTHON = "/usr/bin/python3"
#: The stream's path on the server.
MOUNT = "/cam"
PACKAGES = ("gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-ugly")


def write_frames(clip: Path, folder: Path, max_frames: int = 250, side: int | None = 320) -> int:
    """Decode ``clip`` into ``folder/00000.jpg``... (resized so its long side is ``side``);
    returns the number of frames."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(clip))
    n = 0
    try:
        while n < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            if side is not None:
                h, w = img.shape[:2]
                scale = side / max(h, w)
                # x264 wants even sides
                size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise AssertionError(f"{clip}: no frame could be decoded")
    return n


class RtspServer:
    """``gst-rtsp-server`` serving ``frames`` (JPEG files) in a loop at ``fps`` on
    ``rtsp://127.0.0.1:<port>/cam``.

    Args:
        frames: folder of ``%05d.jpg`` frames (:func:`write_frames`).
        port: TCP port (default: a free one); kept across :meth:`kill` / :meth:`start`.
        fps: frame rate of the stream.
        user, password: required credentials (basic auth), or ``None`` for none.
    """

    def __init__(self, frames: Path, port: int | None = None, fps: float = 25.0,
                 user: str | None = None, password: str | None = None) -> None:
        if not Path(SYSTEM_PYTHON).exists():
            raise AssertionError(f"{SYSTEM_PYTHON} not found: apt-get install -y {PACKAGES}")
        self.frames = Path(frames)
        self.port = port or free_port()
        self.fps = fps
        self.user, self.password = user, password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{MOUNT}"

    def start(self, timeout: float = 15.0) -> RtspServer:
        """Start the server and wait until it accepts connections."""
        cmd = [SYSTEM_PYTHON, __file__, "--frames", str(self.frames), "--port", str(self.port),
               "--fps", f"{self.fps:g}"]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password or ""]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"the RTSP server exited ({err.strip()}); install: apt-get install -y {PACKAGES}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the RTSP server did not listen on port {self.port} within {timeout:g} s")

    def kill(self) -> None:
        """SIGKILL: every connection drops at once, as when a camera loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but no byte arrives (a hung camera)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the server (it keeps nothing worth a graceful shutdown)."""
        self.kill()


def _serve(frames: str, port: int, fps: float, user: str | None, password: str | None) -> None:
    """The server itself (system Python with ``gi``)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    rate = f"{round(fps * 1000)}/1000"
    location = os.path.join(frames, "%05d.jpg")
    factory.set_launch(
        f'( multifilesrc location="{location}" index=0 loop=true caps="image/jpeg,framerate={rate}" '
        f"! jpegdec ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={max(1, round(fps))} bframes=0 threads=1 "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda *_: loop.quit() or False)
    loop.run()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()
    _serve(a.frames, a.port, a.fps, a.user, a.password)
