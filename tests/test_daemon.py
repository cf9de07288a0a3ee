"""Several cameras in one daemon, end to end: real clips, real models, a real Mosquitto
broker and a real subscriber (tests/mqtt_broker.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from mqtt_broker import Broker, Subscriber
from pydantic import ValidationError

from facerec.config import load_config
from facerec.daemon import CameraSpec, Daemon, cameras_from_config
from facerec.errors import ConfigError
from facerec.events import CallbackSink
from facerec.mqtt import object_id
from conftest import MODEL_FLAGS

REPO = Path(__file__).resolve().parents[1]
#: camera -> (clip, person filmed in it)
CLIPS = {"porch": ("lp_driving_d0.mp4", "ann"), "garage": ("lp_driving_d3.mp4", "ben"),
         "hall": ("lp_driving_d6.mp4", "cat")}
FRAMES = 25  # per camera


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _frame(clip: Path, index: int) -> object:
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {clip}"
    return image


def _enroll_from_clips(tmp_path: Path, data_dir: Path, gallery: Path) -> None:
    """Each person enrolled from one frame of their own clip, later than the frames the
    daemon will process (so recognition is not of the very same image)."""
    from facerec.cli import run

    for clip, person in CLIPS.values():
        still = tmp_path / f"{person}.jpg"
        cv2.imwrite(str(still), _frame(data_dir / "video" / clip, 60))
        assert run(["enroll", "add", person, str(still), "--data-dir", str(gallery), *MODEL_FLAGS]) == 0


def _config(tmp_path: Path, data_dir: Path, gallery: Path, port: int, cameras: dict[str, object], **mqtt) -> Path:
    """A config file with the small models, MQTT on ``port`` and ``cameras`` (name ->
    source, or name -> ``{source: ..., other keys}``)."""
    lines = ["models:\n  detector: yolov5n-0.5-face\n  embedder: mobilefacenet",
             "detection:\n  input_size: 320", "live:\n  stats_every_s: 0",
             f"gallery:\n  data_dir: {gallery}",
             "mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: %d\n  keepalive_s: 5\n  reconnect_max_s: 1" % port]
    lines[-1] += "".join(f"\n  {k}: {v}" for k, v in mqtt.items())
    entries = []
    for name, cam in cameras.items():
        keys = cam if isinstance(cam, dict) else {"source": cam}
        entries.append(f"\n  - name: {name}" + "".join(f"\n    {k}: {str(v).lower() if isinstance(v, bool) else v}"
                                                       for k, v in keys.items()))
    lines.append("cameras:" + "".join(entries))
    conf = tmp_path / "config.yaml"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return conf


def test_camera_overrides_and_bad_camera_lists() -> None:
    cfg = load_config(None, {"live.detect_every": 2, "live.input_size": 640})
    cfg.cameras = [{"name": "a", "source": "x.mp4", "input_size": 320, "min_face": 0},
                   {"name": "b", "source": "y.mp4", "enabled": False}, {"name": "c", "source": "z.mp4"}]
    specs = cameras_from_config(cfg)
    assert [(s.name, s.detect_every, s.input_size, s.min_face) for s in specs] == [
        ("a", 2, 320, 0), ("c", 2, 640, cfg.detection.min_face)]
    cfg.cameras = [{"name": "a", "source": "x.mp4", "enabled": False}]
    with pytest.raises(ConfigError, match="no camera is enabled"):
        cameras_from_config(cfg)
    # the rules of the config model refuse these as soon as they are set (or a file loads)
    with pytest.raises(ValidationError, match="'a' is used twice"):
        cfg.cameras = [{"name": "a", "source": "x.mp4"}, {"name": "a", "source": "y.mp4"}]
    with pytest.raises(ValidationError, match="x2 > x1"):
        cfg.cameras = [{"name": "a", "source": "x.mp4", "roi": [100, 0, 50, 10]}]
    assert CameraSpec.single("/v/clip.mp4", cfg).name == "clip"  # a slug of the source


def test_three_cameras_one_daemon_over_mqtt(tmp_path: Path, data_dir: Path, broker: Broker) -> None:
    """Acceptance: three clips, three people, one daemon with shared models: each person is
    named only on their own camera, every event carries its camera, Home Assistant gets
    discovery, events and retained presence; presence clears after the timeout."""
    gallery = tmp_path / "gallery"
    _enroll_from_clips(tmp_path, data_dir, gallery)
    print("enrolled ann, ben, cat", flush=True)
    conf = _config(tmp_path, data_dir, gallery, broker.port,
                   {cam: data_dir / "video" / clip for cam, (clip, _) in CLIPS.items()}, presence_timeout_s=1.5)
    cfg = load_config(conf)
    sub = Subscriber(broker.port)
    seen: list = []
    daemon = Daemon(cfg, cameras_from_config(cfg), sinks=[CallbackSink(seen.append)], max_frames=FRAMES)
    try:
        daemon.start()
        assert daemon.models is not None and len({id(r.pipeline.embedder) for r in daemon.cameras.values()}) == 1
        assert daemon.wait(120), "the cameras did not finish their frames"
        ended = time.monotonic()
        stats = daemon.stats()
        print({n: (s["frames"], s["fps"]) for n, s in stats["cameras"].items()}, flush=True)
        assert {n: s["frames"] for n, s in stats["cameras"].items()} == dict.fromkeys(CLIPS, FRAMES)
        assert stats["frames"] == 3 * FRAMES and stats["models"]["detect_calls"] >= 3 * FRAMES // cfg.live.detect_every

        # events: the right camera on every one, each person named only where they are
        assert daemon.bus.flush(5)
        for cam, run in daemon.cameras.items():
            assert run.events.published == sum(1 for e in seen if e.camera == cam) > 0
        owner = {cam: person for cam, (_, person) in CLIPS.items()}
        named = {(e.camera, e.name) for e in seen if e.name is not None}
        assert named == set(owner.items()), named
        assert {e.camera for e in seen if e.event == "left"} == set(CLIPS), "every camera's face left"

        # the broker: discovery for 3 cameras x 3 entities and 3 people x 2, events, presence
        disc = [t for t, p, _ in sub.all(prefix="homeassistant/") if p]
        assert sub.wait(lambda: len({t for t, p, _ in sub.all(prefix="homeassistant/") if p}) >= 15), disc
        for cam in CLIPS:
            assert sub.json(f"homeassistant/sensor/facerec/{object_id('camera', cam)}_faces/config")
        assert sub.wait(lambda: len(sub.json("facerec/events")) == len(seen)), (len(sub.json("facerec/events")), len(seen))
        by_topic = {cam: sub.json(f"facerec/{cam}/events") for cam in CLIPS}
        assert all(e["camera"] == cam for cam, evs in by_topic.items() for e in evs)
        for cam, person in owner.items():
            faces = sub.json(f"facerec/{cam}/faces")
            assert faces and {f["name"] for f in faces} <= {person, None}
            assert all(f["camera"] == cam and f["type"] == "face" for f in faces)
            states = sub.json(f"facerec/people/{person}")
            assert any(s["present"] and s["camera"] == cam for s in states), states
        # presence clears presence_timeout_s after the person's last track left
        assert sub.wait(lambda: all(sub.json(f"facerec/people/{p}")[-1]["present"] is False
                                    for p in owner.values()), 10)
        waited = time.monotonic() - ended
        print(f"presence cleared {waited:.2f} s after the last camera ended (timeout 1.5 s)", flush=True)
        retained = Subscriber(broker.port, "facerec/people/+")
        try:
            assert retained.wait(lambda: len(retained.all()) == 3)
            msgs = retained.all()
            assert all(r for _, _, r in msgs), "presence is retained"
            assert {json.loads(p)["name"]: json.loads(p)["present"] for _, p, _ in msgs} == dict.fromkeys(owner.values(), False)
        finally:
            retained.close()
    finally:
        daemon.close()
        sub.close()
    assert daemon.stats()["mqtt"]["dropped"] == 0


def _still_folder(tmp_path: Path, photo) -> Path:
    """A folder of real photos: as unrelated stills every face is an event on every frame,
    so messages keep flowing through an outage."""
    import shutil

    folder = tmp_path / "stills"
    folder.mkdir()
    for i, rel in enumerate(["face_recognition_examples/obama/obama.jpg", "face_recognition_examples/biden/biden.jpg"]):
        shutil.copy(photo(rel), folder / f"{i:02d}.jpg")
    return folder


def test_broker_outage_and_last_will(tmp_path: Path, data_dir: Path, photo, broker: Broker) -> None:
    """Acceptance: the broker dies mid-run and comes back: the cameras keep going, the sink
    reconnects and republishes availability and discovery, the stats count what was
    dropped. Then ``facerec run --config`` is SIGKILLed: the Last Will says ``offline``."""
    gallery = tmp_path / "gallery"
    stills = _still_folder(tmp_path, photo)
    conf = _config(tmp_path, data_dir, gallery, broker.port, {"desk": {"source": stills, "loop": True}})
    cfg = load_config(conf)
    sub = Subscriber(broker.port)
    daemon = Daemon(cfg, cameras_from_config(cfg))
    try:
        daemon.start()
        run = daemon.cameras["desk"]
        assert sub.wait(lambda: len(sub.json("facerec/events")) >= 4, 30)
        f0, t0 = run.pipeline.frames, time.monotonic()
        time.sleep(1.0)
        before = (run.pipeline.frames - f0) / (time.monotonic() - t0)
        sub.close()
        broker.stop()
        assert sub.wait(lambda: not daemon.mqtt.stats.connected, 10)
        f1, t1 = run.pipeline.frames, time.monotonic()
        assert sub.wait(lambda: daemon.mqtt.stats.dropped >= 10, 20), daemon.mqtt.stats.to_json()
        during = (run.pipeline.frames - f1) / (time.monotonic() - t1)
        print(f"frames/s before the outage {before:.1f}, during it {during:.1f}", flush=True)
        assert run.pipeline.frames > f1 and daemon.running, "the camera stopped with the broker"
        broker.start()
        s2 = Subscriber(broker.port)
        try:
            assert s2.wait(lambda: daemon.mqtt.stats.connects >= 2, 20), daemon.mqtt.stats.to_json()
            assert s2.wait(lambda: b"online" in s2.payloads("facerec/available"), 5)
            assert s2.wait(lambda: len(s2.all(prefix="homeassistant/sensor/")) >= 2, 5), "discovery republished"
            assert s2.wait(lambda: any(e["camera"] == "desk" for e in s2.json("facerec/events")), 10)
        finally:
            s2.close()
        stats = daemon.stats()
        assert stats["mqtt"]["dropped"] >= 10 and stats["mqtt"]["reconnects"] >= 1
    finally:
        daemon.close()

    # the same config through the CLI, killed without a word
    sub = Subscriber(broker.port)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = "import sys; from facerec.cli import main; sys.argv[0] = 'facerec'; main()"
    proc = subprocess.Popen([sys.executable, "-c", cli, "run", "--config", str(conf), "--data-dir", str(gallery)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"online"], 60), \
            proc.stderr.read().decode() if proc.poll() is not None else "no online"
        assert sub.wait(lambda: len(sub.json("facerec/events")) >= 2, 30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert sub.wait(lambda: sub.payloads("facerec/available")[-1:] == [b"offline"], 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()


def test_run_config_runs_every_camera_and_exits_at_the_end(tmp_path: Path, data_dir: Path) -> None:
    """``facerec run --config FILE --data-dir DIR``: every enabled camera (a disabled one is
    not opened), exit 0 once both files ended, per-camera stats and events."""
    from facerec.cli import run

    conf = tmp_path / "cams.yaml"
    video = data_dir / "video"
    conf.write_text("detection:\n  input_size: 320\nlive:\n  stats_every_s: 0\ncameras:\n"
                    f"  - {{name: a, source: {video / 'lp_driving_d0.mp4'}}}\n"
                    f"  - {{name: b, source: {video / 'lp_source_s13.mp4'}, detect_every: 3, "
                    "roi: [0, 0, 4000, 4000]}\n"
                    f"  - {{name: spare, source: {tmp_path / 'missing.mp4'}, enabled: false}}\n", encoding="utf-8")
    stats, events = tmp_path / "stats.json", tmp_path / "events.jsonl"
    rc = run(["run", "--config", str(conf), "--data-dir", str(tmp_path / "g"), *MODEL_FLAGS, "--max-frames", "12",
              "--stats", str(stats), "--events", str(events)])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert set(s["cameras"]) == {"a", "b"} and s["frames"] == 24
    assert s["cameras"]["b"]["detect_every"] == 3 and s["fps"] > 0
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert {r["camera"] for r in rows} == {"a", "b"} and {r["event"] for r in rows} >= {"appeared", "left"}


def test_periodic_log_lines_name_their_camera(tmp_path: Path, data_dir: Path, detector, embedder, caplog) -> None:
    """Two cameras on the same clip in one daemon: each camera's periodic stats line says
    which camera it is about (the source alone could not tell them apart)."""
    from facerec.daemon import SharedModels

    clip = str(data_dir / "video" / "lp_driving_d0.mp4")
    cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "g"), "detection.input_size": 320,
                             "live.stats_every_s": 0.001})
    cfg.cameras = [{"name": "porch", "source": clip}, {"name": "garage", "source": clip}]
    caplog.set_level(logging.INFO, logger="facerec")
    daemon = Daemon(cfg, cameras_from_config(cfg), models=SharedModels(detector, embedder), max_frames=4)
    try:
        daemon.start()
        assert daemon.wait(60), "the cameras did not finish their frames"
    finally:
        daemon.close()
    said = [r.getMessage() for r in caplog.records]
    for cam in ("porch", "garage"):
        assert any(m.startswith(f"camera {cam}: frames=") for m in said), said
        assert f"camera {cam} ended" in said
    assert not any(m.startswith("frames=") for m in said), "a stats line without its camera"


def test_camera_detector_roi_min_face_and_shared_weights(detector, photo) -> None:
    """A camera's view of the shared detector: its ROI searches only that part of the frame
    (boxes back in frame pixels), its min_face and input size never touch the shared one."""
    from facerec.daemon import CameraDetector, SharedModels

    image = cv2.imread(str(photo("face_recognition_examples/obama/obama.jpg")))
    h, w = image.shape[:2]
    size, min_face = detector.input_size, detector.min_face
    models = SharedModels(detector, embedder=None)
    assert len(CameraDetector(models, 320, 0, (w + 10, 0, w + 100, h))(image)) == 0, "ROI outside the frame"
    full = CameraDetector(models, 640, 0)(image)
    assert len(full) == 1
    x1, y1, x2, y2 = (int(v) for v in full.xyxy[0])
    pad = (x2 - x1) // 2
    roi = (max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad))
    inside = CameraDetector(models, 320, 0, roi)(image)
    assert len(inside) == 1
    a, b = inside.xyxy[0], full.xyxy[0]
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    assert inter / union > 0.8, (a, b)
    assert (inside.landmarks[0] >= a[:2] - 5).all() and (inside.landmarks[0] <= a[2:] + 5).all()
    assert x1 > 40, "the photo has room left of the face"
    assert len(CameraDetector(models, 320, 0, (0, 0, x1 - 5, h))(image)) == 0, "no face left of the face"
    assert len(CameraDetector(models, 640, 10_000)(image)) == 0, "min_face override"
    assert (detector.input_size, detector.min_face) == (size, min_face), "the shared detector is unchanged"
    assert models.use.detect_calls == 5


def test_concurrent_calls_on_the_shared_models_match_sequential_ones(detector, embedder, photo) -> None:
    """Cameras call the same weights from several threads at once (two slots here): every
    result equals the one a lone call gives."""
    import threading

    import numpy as np

    from facerec.align import align
    from facerec.daemon import CameraDetector, SharedModels

    images = [cv2.imread(str(photo(f"face_recognition_examples/{p}"))) for p in
              ("obama/obama.jpg", "biden/biden.jpg", "_multi/" + sorted(
                  q.name for q in photo("face_recognition_examples/_multi").glob("*.jpg"))[0])]
    models = SharedModels(detector, embedder, slots=2)
    det = CameraDetector(models, 320, 0)
    alone = [det(im) for im in images]
    crops = [align(im, d.landmarks) for im, d in zip(images, alone)]
    alone_emb = [models.shared_embedder.embed(c).vectors for c in crops]
    got: dict[tuple[int, int], tuple] = {}

    def camera(k: int) -> None:
        for r in range(4):
            i = (k + r) % len(images)
            d = det(images[i])
            got[(k, r)] = (i, d, models.shared_embedder.embed(align(images[i], d.landmarks)).vectors)

    threads = [threading.Thread(target=camera, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 12
    for i, d, vec in got.values():
        np.testing.assert_allclose(d.xyxy, alone[i].xyxy, atol=1e-3)
        np.testing.assert_allclose(vec, alone_emb[i], atol=1e-4)
    assert models.use.detect_calls == 15 and models.use.embed_calls == 15
