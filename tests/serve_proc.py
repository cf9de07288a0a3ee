"""``facerec serve`` as a real process on a free loopback port (tests and ``bench/``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def facerec_serve(tmp: Path, gallery: Path, token: str, extra: str = "") -> Iterator[int]:
    """Run ``facerec serve --threads 1`` with yolov5n-0.5-face + MobileFaceNet on a gallery
    folder; yields the port once ``/health`` answers, stops the process afterwards.

    Args:
        tmp: where the config file and the server's log go.
        gallery: ``gallery.data_dir``.
        token: ``FACEREC_API_TOKEN`` of the server.
        extra: more YAML appended to the config (whole sections).
    """
    conf = tmp / f"config-{time.monotonic_ns()}.yaml"
    conf.write_text(f"gallery:\n  data_dir: {gallery}\nmodels:\n  detector: yolov5n-0.5-face\n"
                    f"  embedder: mobilefacenet\n{extra}", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEREC_API_TOKEN": token}
    log_path = tmp / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "facerec", "serve", "--config", str(conf), "--port",
                                 str(port), "--threads", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > end:
                        raise RuntimeError("facerec serve did not start:\n" + log_path.read_text(errors="replace"))
                    time.sleep(0.3)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
