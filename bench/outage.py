"""Camera outages, measured: ``facerec run`` on a real RTSP camera that dies and hangs.

A GStreamer RTSP server (``tests/rtsp_server.py``, the Debian packages of the README's
install command) plays one talking-head clip in a loop; its person is enrolled from a frame
of the clip. ``facerec run --source rtsp://... --events --tracks --stats`` runs as its own
process with the shipped defaults (``live.read_timeout_s`` 10 s, ``live.reconnect_max_s``
1 s), and this script:

1. lets it stream ``--kill-at`` s (15), SIGKILLs the server, starts it again ``--away`` s
   (10) later on the same port: **resume** = the camera's ``online`` event minus the moment
   the server listened again;
2. after ``--settle`` s (10), SIGSTOPs the server for ``--stop`` s (35), then SIGCONT:
   **stall noticed** = the ``offline`` event minus the SIGSTOP, **recovery** = the ``online``
   event minus the SIGCONT;
3. SIGINTs the daemon: its exit status (130, the CLI's status for an interrupted run
   that stopped cleanly) and its stats file.

Times are wall clock (the events' ``ts``). It also checks what the figures rest on: the
enrolled person named before the kill, after the restart and after the stall; every frame
of the ``--tracks`` file newer than the one before (frame index; ``t``, which that file
keeps to the millisecond, never going back), none stamped
inside an outage (no leftover of the stalled connection processed as new); one log line per
change of state. Run::

    FACEREC_WEIGHTS=../shared/models python bench/outage.py

Prints a table and exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from rtsp_server import RtspServer, write_frames  # noqa: E402

MODELS = ("--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet")
PERSON = "ann"


def _events(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (the last one may be half-written)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _wait(pred, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit(f"outage bench: {what} did not happen within {limit_s:g} s")


def _camera(events: list[dict], state: str, after_ts: float) -> dict | None:
    return next((e for e in events if e["event"] == "camera" and e["state"] == state and e["ts"] >= after_ts), None)


def _named(events: list[dict], after_ts: float, before_ts: float = float("inf")) -> bool:
    return any(e["event"] in ("appeared", "recognized") and e.get("name") == PERSON and after_ts <= e["ts"] < before_ts
               for e in events)


def _outage(begin, end, away_s: float, events_path: Path) -> tuple[float, float]:
    """``begin()`` an outage, ``end()`` it ``away_s`` later, wait for the camera's return;
    returns the wall clock of both ends."""
    begin()
    began = time.time()
    time.sleep(away_s)
    end()
    ended = time.time()
    _wait(lambda: _camera(_events(events_path), "online", ended - 1) is not None, 60, "the camera's return")
    return began, ended


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="lp_driving_d0.mp4", help="clip of ../shared/data/video served by the camera")
    p.add_argument("--kill-at", type=float, default=15.0, help="seconds of streaming before the kill")
    p.add_argument("--away", type=float, default=10.0, help="seconds the killed server stays down")
    p.add_argument("--settle", type=float, default=10.0, help="seconds between the return and the SIGSTOP")
    p.add_argument("--stop", type=float, default=35.0, help="seconds the server stays stopped")
    p.add_argument("--read-timeout", type=float, default=10.0, help="live.read_timeout_s")
    args = p.parse_args()

    from facerec.cli import run as facerec

    data = REPO.parent / "shared" / "data" / "video" / args.clip
    work = Path(tempfile.mkdtemp(prefix="facerec-outage-"))
    frames = work / "frames"
    n = write_frames(data, frames)
    gallery = work / "gallery"
    still = frames / f"{min(60, n - 1):05d}.jpg"
    if facerec(["enroll", "add", PERSON, str(still), "--data-dir", str(gallery), *MODELS]) != 0:
        raise SystemExit("outage bench: enrolling failed")
    conf = work / "config.yaml"
    conf.write_text(f"detection:\n  input_size: 320\nlive:\n  read_timeout_s: {args.read_timeout:g}\n"
                    f"  stats_every_s: 0\ngallery:\n  data_dir: {gallery}\n", encoding="utf-8")
    server = RtspServer(frames, user="viewer", password="bench-pw").start()
    events_path, tracks_path, stats_path, log_path = (work / name for name in ("events.jsonl", "tracks.jsonl",
                                                                        "stats.json", "daemon.log"))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "facerec", "run", "--source", server.url, "--config", str(conf), *MODELS,
           "--events", str(events_path), "--tracks", str(tracks_path), "--stats", str(stats_path)]
    with open(log_path, "w", encoding="utf-8") as log:
        daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    failures: list[str] = []
    try:
        _wait(lambda: _camera(_events(events_path), "online", 0) is not None, 180, "the daemon's start")
        started = time.time()
        time.sleep(args.kill_at)
        named_before = _named(_events(events_path), 0)
        killed, back = _outage(server.kill, server.start, args.away, events_path)
        time.sleep(args.settle)
        named_after_kill = _named(_events(events_path), back)
        stopped, resumed = _outage(server.pause, server.resume, args.stop, events_path)
        time.sleep(args.settle)
        daemon.send_signal(signal.SIGINT)
        rc = daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        server.stop()

    ev = _events(events_path)
    off1, on1 = _camera(ev, "offline", killed - 1), _camera(ev, "online", back - 1)
    off2, on2 = _camera(ev, "offline", stopped - 1), _camera(ev, "online", resumed - 1)
    assert off1 and on1 and off2 and on2
    named_after_stall = _named(ev, resumed)
    tracks = [json.loads(line) for line in tracks_path.read_text(encoding="utf-8").splitlines()]
    # the track log keeps t to the millisecond: two frames of a burst may share it
    ordered = all(b["frame"] > a["frame"] and b["t"] >= a["t"] for a, b in zip(tracks, tracks[1:]))
    inside = [r for r in tracks for off, on in ((off1, on1), (off2, on2)) if off["t"] < r["t"] < on["t"]]
    log_text = log_path.read_text(encoding="utf-8")
    lines = {k: log_text.count(k) for k in ("stream dropped", "stream silent", "reconnected after", "still away")}
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}

    rows = [
        ("kill: drop noticed after", f"{off1['ts'] - killed:.2f} s"),
        ("kill: frames resume after the server is back", f"{on1['ts'] - back:.2f} s"),
        ("SIGSTOP: stall noticed after", f"{off2['ts'] - stopped:.2f} s (read_timeout_s {args.read_timeout:g})"),
        ("SIGSTOP: frames resume after SIGCONT", f"{on2['ts'] - resumed:.2f} s"),
        ("enrolled person named before kill / after return / after stall",
         f"{named_before} / {named_after_kill} / {named_after_stall}"),
        ("frames processed, all newer than the one before", f"{len(tracks)}, {ordered}"),
        ("frames stamped inside an outage", str(len(inside))),
        ("log lines: dropped / silent / reconnected / still away",
         " / ".join(str(lines[k]) for k in ("stream dropped", "stream silent", "reconnected after", "still away"))),
        ("SIGINT: exit status, stats file", f"{rc}, {'written' if stats else 'missing'}"),
        ("stats: outages, reconnects, attempts, offline_s, stale, fps",
         f"{stats.get('outages')}, {stats.get('reconnects')}, {stats.get('reconnect_attempts')}, "
         f"{stats.get('offline_s')}, {stats.get('stale')}, {stats.get('fps')}"),
        ("password in events / log / stats", str(any("bench-pw" in t for t in (events_path.read_text(), log_text,
                                                                              json.dumps(stats))))),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"outage bench: {args.clip}, kill at {args.kill_at:g} s for {args.away:g} s, SIGSTOP {args.stop:g} s "
          f"(stream started {time.strftime('%H:%M:%S', time.localtime(started))})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if on1["ts"] - back > 2.0:
        failures.append("frames resumed more than 2 s after the server was back")
    if off2["ts"] - stopped > args.read_timeout + 2.0:
        failures.append("the stall was noticed later than read_timeout_s + 2 s")
    if on2["ts"] - resumed > 2.0:
        failures.append("frames resumed more than 2 s after SIGCONT")
    if not (named_before and named_after_kill and named_after_stall):
        failures.append("the enrolled person was not named before and after each outage")
    if not ordered or inside:
        failures.append("a frame was not newer than the one before, or was stamped inside an outage")
    if rc not in (0, 130) or not stats:  # 130: stopped by SIGINT, the CLI's status for it
        failures.append("SIGINT did not exit cleanly with a stats file")
    if lines["stream dropped"] != 1 or lines["stream silent"] != 1 or lines["reconnected after"] != 2:
        failures.append("not one log line per change of state")
    for f in failures:
        print(f"  FAILED: {f}")
    print(f"  files: {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
