"""``--tracks FILE`` (rec_cam.py and ``facerec run``): one JSON line per processed frame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

from facerec.config import Config
from conftest import MODEL_FLAGS

REPO = Path(__file__).resolve().parents[1]
MODELS = (*MODEL_FLAGS, "--input-size", "320", "--threads", "1")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "rec_cam.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=240, env=dict(os.environ))


def _enroll(data_dir: Path, gallery: Path, analyzer, clip: str, name: str, frames=(200, 250, 300)) -> None:
    from facerec.gallery.service import GalleryService

    cfg = Config()
    cfg.gallery.data_dir = str(gallery)
    cap = cv2.VideoCapture(str(data_dir / "video" / clip))
    try:
        with GalleryService(cfg, analyzer) as service:
            for i in frames:
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                ok, img = cap.read()
                assert ok and service.enroll_image(name, img).ok
    finally:
        cap.release()


def test_tracks_file_has_one_line_per_frame_with_the_contract_fields(tmp_path, data_dir, analyzer) -> None:
    gallery, tracks = tmp_path / "gallery", tmp_path / "tracks.jsonl"
    _enroll(data_dir, gallery, analyzer, "lp_driving_d3.mp4", "Anna")
    proc = _run("--source", str(data_dir / "video" / "lp_driving_d3.mp4"), *MODELS, "--max-frames", "12",
                "--data-dir", str(gallery), "--tracks", str(tracks))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in tracks.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(12))
    assert all(set(r) == {"frame", "t", "faces"} for r in rows)
    assert [round(r["t"] * 30) for r in rows] == list(range(12))  # a 30 fps file
    faces = [f for r in rows for f in r["faces"]]
    assert len(faces) >= 10
    for f in faces:
        assert set(f) == {"box", "track_id", "name", "score"}
        assert len(f["box"]) == 4 and f["box"][0] < f["box"][2] and f["box"][1] < f["box"][3]
        assert isinstance(f["track_id"], int) and isinstance(f["score"], float)
    assert rows[0]["faces"] == []  # a new face gets its track on its second sighting
    assert {f["name"] for f in faces} == {"Anna"}
    assert len({f["track_id"] for f in faces}) == 1


def test_stranger_has_null_name_on_every_frame(tmp_path, data_dir, analyzer) -> None:
    gallery, tracks = tmp_path / "gallery", tmp_path / "tracks.jsonl"
    _enroll(data_dir, gallery, analyzer, "lp_driving_d3.mp4", "Anna")
    proc = _run("--source", str(data_dir / "video" / "lp_driving_d0.mp4"), *MODELS, "--max-frames", "8",
                "--data-dir", str(gallery), "--tracks", str(tracks))
    assert proc.returncode == 0, proc.stderr
    faces = [f for line in tracks.read_text().splitlines() for f in json.loads(line)["faces"]]
    assert faces and all(f["name"] is None for f in faces)
    assert all(f["score"] < 0.32 for f in faces)


def test_tracks_into_a_missing_folder_is_a_clear_error(tmp_path, data_dir) -> None:
    proc = _run("--source", str(data_dir / "video" / "lp_driving_d0.mp4"), *MODELS, "--max-frames", "2",
                "--data-dir", str(tmp_path / "g"), "--tracks", str(tmp_path / "nope" / "t.jsonl"))
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "nope").exists()
