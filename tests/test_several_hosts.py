"""Several hosts, simulated (issue 12 acceptance): one ``facerec serve`` and two live
daemons (``rec_cam.py --config FILE --source SRC --realtime --loop --max-frames N``) on two
real clips of the same woman (Intel's head-pose demos: alone, and beside a man), all on one
real PostgreSQL server and one partial config file.

A person enrolled with ``POST /api/people`` is named by both daemons without a restart;
a rename and a delete reach both. The latency from the API's answer to each daemon's index
update (the ``gallery updated`` line of its log, read as it is written) is printed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hosts-token-0123456789-abcdefghij"
CLIPS = ("intel_head-pose-face-detection-female.gif", "intel_head-pose-face-detection-female-and-male.gif")
UPDATED = re.compile(r"gallery (loaded|updated): (\d+) people \(version (\d+)\)")


class Proc:
    """A child process whose stderr lines are collected with the wall time they arrived."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.p = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.lines.put((time.time(), line.rstrip()))

    def wait_line(self, pattern: re.Pattern, timeout: float, where=lambda m: True) -> tuple[float, re.Match]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                at, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.p.poll() is not None:
                    break
                continue
            self.log.append(line)
            m = pattern.search(line)
            if m and where(m):
                return at, m
        raise AssertionError(f"{self.name}: no line matching {pattern.pattern} within {timeout} s "
                             f"(exit {self.p.poll()}); last lines:\n" + "\n".join(self.log[-15:]))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


def wait_named(path: Path, name: str, since: float, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hits = [e for e in events(path) if e.get("name") == name and e.get("ts", 0) >= since]
        if hits:
            return hits[0]
        time.sleep(0.2)
    seen = sorted({(e.get("event"), e.get("name")) for e in events(path)}, key=str)
    raise AssertionError(f"{path.name}: {name!r} not named within {timeout} s; events seen: {seen}")


def api(base: str, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[float, dict]:
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", **({"Content-Type": ctype} if ctype else {})})
    with urllib.request.urlopen(req, timeout=60) as r:
        data = json.loads(r.read())
    return time.time(), data


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for k, (fname, data) in files.items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{fname}"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_daemons_and_a_server_share_one_postgres_gallery(tmp_path: Path, pg_server, data_dir: Path):
    t0 = time.monotonic()
    clips = [data_dir / "video" / c for c in CLIPS]
    cap = cv2.VideoCapture(str(clips[0]))
    frames = []
    while len(frames) < 12:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) >= 12, f"could not read {clips[0]}"
    ok, photo = cv2.imencode(".jpg", frames[11])  # she faces the camera here
    assert ok

    dsn = pg_server.create_db()
    conf = tmp_path / "config.yaml"  # a partial config: the gallery keys and the models
    conf.write_text(f"gallery:\n  backend: postgres\n  dsn: {dsn}\n  data_dir: {tmp_path / 'data'}\n"
                    "models:\n  detector: yolov5n-0.5-face\n  embedder: mobilefacenet\n"
                    "detection:\n  input_size: 480\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEREC_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[Proc] = []
    try:
        serve = Proc("serve", [sys.executable, "-c", "from facerec.cli import main; main()", "serve", "--config",
                               str(conf), "--port", str(port), "--threads", "1"], env)
        procs.append(serve)
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < end and serve.p.poll() is None, "facerec serve did not start:\n" + "\n".join(
                    serve.log + [serve.lines.get()[1] for _ in range(serve.lines.qsize())])
                time.sleep(0.3)
        ev = [tmp_path / f"events-{i}.jsonl" for i in range(2)]
        daemons = [Proc(f"daemon {i}", [sys.executable, "rec_cam.py", "--config", str(conf), "--source", str(clips[i]),
                                        "--realtime", "--loop", "--max-frames", "100000", "--events", str(ev[i]),
                                        "--camera", f"host{i}", "--threads", "1", "--stats-every", "0", "-v"], env)
                   for i in range(2)]
        procs += daemons
        for d in daemons:
            d.wait_line(UPDATED, 60)
        print(f"\nstarted: serve and two daemons in {time.monotonic() - t0:.1f} s", flush=True)

        latencies: dict[str, list[float]] = {}

        def reached(what: str, answered: float, people: int) -> None:
            lat = []
            for d in daemons:
                at, m = d.wait_line(UPDATED, 20, where=lambda m: m.group(1) == "updated" and int(m.group(2)) == people)
                lat.append((at - answered) * 1000)
            latencies[what] = lat
            print(f"{what}: index updated {lat[0]:.0f} ms / {lat[1]:.0f} ms after the API answered", flush=True)

        body, ctype = multipart({"name": "Eve"}, {"files": ("eve.jpg", photo.tobytes())})
        answered, data = api(base, "POST", "/api/people", body, ctype)
        assert data["person"] == "Eve" and len(data["added"]) == 1, data
        reached("enroll", answered, 1)
        for i in range(2):
            e = wait_named(ev[i], "Eve", answered, 30)
            print(f"daemon {i} named Eve {e['ts'] - answered:.1f} s after the API answered", flush=True)

        answered, data = api(base, "PATCH", "/api/people/Eve", json.dumps({"name": "Eva"}).encode(), "application/json")
        assert data == {"name": "Eva", "previous": "Eve"}
        reached("rename", answered, 1)
        for i in range(2):
            wait_named(ev[i], "Eva", answered, 30)

        answered, data = api(base, "DELETE", "/api/people/Eva")
        assert data["deleted"] == "Eva"
        reached("delete", answered, 0)
        time.sleep(1.0)
        for i in range(2):  # nobody is named after the delete reached the daemon
            assert not [e for e in events(ev[i]) if e["event"] == "recognized" and e.get("ts", 0) > answered + 1.0]
        for p in procs:
            assert p.p.poll() is None, f"{p.name} exited early: " + "\n".join(p.log[-10:])
        data = tmp_path / "data"  # nothing of the gallery under the data dir with this backend
        assert not (data / "gallery.db").exists() and not (data / "preprocessed").exists()
        print(f"several hosts: {json.dumps({k: [round(x) for x in v] for k, v in latencies.items()})} ms "
              f"(total {time.monotonic() - t0:.1f} s)", flush=True)
    finally:
        for p in procs:
            p.stop()


def test_calibrate_reads_a_postgres_gallery(tmp_path: Path, pg_dsn: str, data_dir: Path, analyzer, capsys):
    """Another host calibrates the threshold on the shared gallery (the config names no data dir)."""
    from facerec.cli import run
    from facerec.config import load_config
    from facerec.gallery.service import GalleryService

    conf = tmp_path / "config.yaml"
    conf.write_text(f"gallery:\n  backend: postgres\n  dsn: {pg_dsn}\n  data_dir: {tmp_path / 'data'}\n"
                    "models:\n  detector: yolov5n-0.5-face\n  embedder: mobilefacenet\n", encoding="utf-8")
    fr = data_dir / "identities" / "face_recognition_examples"
    with GalleryService(load_config(conf), analyzer) as svc:
        svc.enroll_paths("obama", [fr / "obama" / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")])
        svc.enroll_paths("biden", [fr / "biden" / f for f in ("biden.jpg", "biden2.jpg")])
    rc = run(["calibrate", "--far", "0.2", "--config", str(conf), "--json", "--dry-run"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["genuine"], out["impostor"]) == (5, 5)  # leave-one-out: 3 + 2 genuine, 5 x 1 impostor
    assert not (tmp_path / "data").exists()
