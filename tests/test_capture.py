"""Capture: every kind of source, bad sources first, and a live MJPEG stream on loopback."""

from __future__ import annotations

import http.server
import logging
import shutil
import socket
import socketserver
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.capture import Capture, SourceKind, classify_source, open_source
from facerec.errors import SourceError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class MjpegServer:
    """A multipart/x-mixed-replace JPEG stream on 127.0.0.1, like an IP camera.

    ``pause()`` keeps connections open but sends nothing (a stalled camera);
    ``kill()`` closes every connection and the listening socket (a camera that died).
    """

    def __init__(self, fps: float = 50.0, size: tuple[int, int] = (160, 120)) -> None:
        self.fps = fps
        self.size = size
        self.sent = 0
        self.requests = 0
        self._paused = threading.Event()
        self._dead = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                w, h = server.size
                try:
                    while not server._dead.is_set():
                        if server._paused.is_set():
                            time.sleep(0.02)
                            continue
                        img = np.full((h, w, 3), server.sent % 256, np.uint8)
                        cv2.putText(img, str(server.sent), (5, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 255), 2)
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                         + jpg + b"\r\n")
                        server.sent += 1
                        time.sleep(1.0 / server.fps)
                except OSError:
                    pass

        self._srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._paused.set()

    def kill(self) -> None:
        self._dead.set()
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc) -> None:
        if not self._dead.is_set():
            self.kill()


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> Path:
    return data_dir / "video" / "lp_driving_d0.mp4"  # 78 frames, 25 fps, 512x512


def _write_avi(path: Path, n: int = 40, size: tuple[int, int] = (96, 64)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), i * 5 % 256, np.uint8))
    w.release()
    return path


# ----------------------------------------------------------------------------- bad sources


def test_nonexistent_source_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source(tmp_path / "missing.mp4")


def test_unsupported_url_scheme() -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        open_source("ftp://127.0.0.1/x.mp4")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="contains no images"):
        open_source(tmp_path)


def test_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="camera 97 cannot be opened"):
        open_source("97")


def test_unreachable_stream_fails_fast() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="cannot be opened"):  # at once, not after reconnect attempts
        open_source(f"http://127.0.0.1:{port}/x.mjpg", read_timeout_s=1.0)


@pytest.mark.parametrize("keep", [0.0, 0.004, 0.5])
def test_truncated_mp4_is_refused_cleanly(clip: Path, tmp_path: Path, keep: float) -> None:
    data = clip.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SourceError, match="truncated.mp4"):
        open_source(bad)


def test_video_truncated_mid_stream_ends_with_a_message(tmp_path: Path) -> None:
    good = _write_avi(tmp_path / "good.avi", n=40)
    bad = tmp_path / "cut.avi"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with open_source(bad) as cap:
        frames = list(cap)
    assert 5 < len(frames) < 40
    assert cap.error and "truncated or corrupt" in cap.error


def test_folder_with_a_corrupt_image_skips_and_counts(tmp_path: Path, photo) -> None:
    src = photo("face_recognition_examples/obama")
    imgs = sorted(p for p in Path(src).iterdir() if p.suffix == ".jpg")[:3]
    for i, p in enumerate(imgs):
        shutil.copy(p, tmp_path / f"{i}_ok.jpg")
    (tmp_path / "1b_broken.jpg").write_bytes(imgs[0].read_bytes()[:200])
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as cap:
        frames = list(cap)
    assert [f.name for f in frames] == ["0_ok.jpg", "1_ok.jpg", "2_ok.jpg"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert cap.stats.skipped == 1


# ----------------------------------------------------------------------------- files


def test_classify_source(tmp_path: Path, clip: Path) -> None:
    assert classify_source("0") == (SourceKind.CAMERA, 0)
    assert classify_source("rtsp://127.0.0.1/cam")[0] is SourceKind.STREAM
    assert classify_source(str(clip))[0] is SourceKind.VIDEO
    assert classify_source(tmp_path)[0] is SourceKind.FOLDER


def test_file_delivers_every_frame_in_order_with_file_time(clip: Path) -> None:
    with open_source(clip, queue_size=2) as cap:
        frames = []
        for f in cap:
            frames.append((f.index, f.t))
            if len(frames) < 5:
                time.sleep(0.05)  # a slow consumer: backpressure, not drops
    assert [i for i, _ in frames] == list(range(78))
    assert frames[-1][1] == pytest.approx(77 / 25.0)
    assert cap.stats.dropped == 0 and cap.stats.delivered == 78


def test_loop_keeps_index_and_time_increasing(tmp_path: Path) -> None:
    avi = _write_avi(tmp_path / "short.avi", n=10)
    with open_source(avi, loop=True) as cap:
        frames = [cap.read(timeout=2) for _ in range(25)]
    idx = [f.index for f in frames]
    ts = [f.t for f in frames]
    assert idx == list(range(25))
    assert all(b > a for a, b in zip(ts, ts[1:]))


def test_realtime_file_starts_its_clock_at_the_first_read(clip: Path) -> None:
    """Models load after the source opened (a second here): the file's first frames
    are still shown, not dropped while nobody was reading."""
    cap = open_source(clip, realtime=True)
    try:
        time.sleep(1.0)
        first = cap.read(timeout=1.0)
        time.sleep(0.1)
        second = cap.read(timeout=1.0)
    finally:
        cap.close()
    assert first is not None and first.index == 0
    assert second is not None and second.index <= 5 and cap.stats.dropped <= 5


def test_realtime_file_newest_frame_wins(clip: Path) -> None:
    """A consumer 3x slower than the clip: frames are dropped, and what it gets is fresh."""
    cap = open_source(clip, realtime=True)
    got = []
    try:
        while True:
            f = cap.read(timeout=1.0)
            if f is None:
                break
            got.append(f.index)
            time.sleep(0.12)
    finally:
        cap.close()
    assert cap.stats.dropped > 20
    assert cap.stats.read == 78
    # lag never builds up: frames skip ahead rather than queue, and the last one read is
    # the clip's end
    assert got == sorted(set(got)) and len(got) + cap.stats.dropped <= 78 and got[-1] >= 75, got


def _close_or_fail(cap, guard_s: float = 60.0) -> None:
    """Close ``cap``; a close that never returns fails the test (a hang guard, not a speed
    bound: the machine is shared)."""
    th = threading.Thread(target=cap.close, daemon=True)
    th.start()
    th.join(guard_s)
    assert not th.is_alive(), f"close() still blocked after {guard_s:g} s"


def test_close_is_prompt_while_the_reader_is_blocked(clip: Path) -> None:
    cap = open_source(clip, loop=True, queue_size=1)
    time.sleep(0.2)  # the reader is now blocked on a full queue
    _close_or_fail(cap)
    assert cap.read(timeout=0.1) is None or cap.ended


# ----------------------------------------------------------------------------- streams


def test_mjpeg_stream_frames_are_read_and_slow_consumer_drops() -> None:
    with MjpegServer(fps=60) as srv, open_source(srv.url) as cap:
        assert cap.kind is SourceKind.STREAM and cap.live
        got = []
        t0 = time.monotonic()
        while len(got) < 8 and time.monotonic() - t0 < 10:
            f = cap.read(timeout=1.0)
            if f is not None:
                got.append(f)
                time.sleep(0.1)
        assert len(got) == 8
        assert got[0].image.shape == (120, 160, 3)
        assert all(b.index > a.index for a, b in zip(got, got[1:]))
        assert cap.stats.dropped > 0


def test_stream_killed_mid_run_reconnects_then_stops_when_asked(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="facerec.capture")
    srv = MjpegServer(fps=30)
    cap = open_source(srv.url, reconnect_max_s=0.5, read_timeout_s=1.0, camera="door")
    try:
        assert cap.read(timeout=5) is not None
        srv.kill()
        t0 = time.monotonic()
        while cap.stats.attempts < 3 and time.monotonic() - t0 < 10:
            cap.read(timeout=0.2)
        assert cap.stats.attempts >= 3 and cap.stats.reconnects == 0 and not cap.online
        assert not cap.ended  # still trying: a camera that comes back is picked up again
        said = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
        # one line for the outage, however many attempts, with the cause the server gave
        assert len(said) == 1 and said[0].startswith(f"camera door: {cap.description}: stream dropped"), said
        assert "refused the connection" in said[0]
    finally:
        _close_or_fail(cap)
    assert cap.ended


def test_stalled_stream_is_reconnected_and_recovers() -> None:
    with MjpegServer(fps=30) as srv:
        cap = open_source(srv.url, reconnect_max_s=0.5, read_timeout_s=1.0)
        try:
            assert cap.read(timeout=5) is not None
            srv.pause()
            t0 = time.monotonic()
            while cap.stats.attempts == 0 and time.monotonic() - t0 < 8:
                cap.read(timeout=0.2)
            assert cap.stats.attempts >= 1, "a silent stream must be reopened"
            srv._paused.clear()
            f = None
            t0 = time.monotonic()
            while f is None and time.monotonic() - t0 < 8:
                f = cap.read(timeout=0.5)
            assert f is not None and srv.requests >= 2
        finally:
            cap.close()


def test_capture_as_iterator_stops_on_close(clip: Path) -> None:
    cap = Capture(clip, loop=True).start()
    n = 0
    for _ in cap:
        n += 1
        if n == 5:
            cap.close()
    assert n >= 5
