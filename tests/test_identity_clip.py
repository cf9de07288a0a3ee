"""Acceptance: names you can trust on a clip of hard cuts between talking heads.

The clip (tests/identity_clip.py) joins six 1.5 s segments: Anna, a stranger, Wei,
another stranger, Anna again, Wei again, each filling the same 480x480 frame, so a box
tracker keeps one track across every cut. Anna and Wei are enrolled from frames of their
own clips that are not in the clip. ``facerec run --tracks`` runs on it twice: every frame
decoded, and ``--realtime`` (the file played at its own rate, frames dropped like a live
camera). From the tracks: no face-frame may carry another person's name, and each
appearance of an enrolled person must be named within 0.5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facerec.config import Config
from identity_clip import CUT_SEGMENTS, SEGMENT, enroll_images, score, write_cut_clip
from conftest import MODEL_FLAGS

REPO = Path(__file__).resolve().parents[1]
MODELS = (*MODEL_FLAGS, "--input-size", "320", "--threads", "1")
RUN = "import sys; from facerec.cli import main; sys.argv[0] = 'facerec'; main()"


@pytest.fixture(scope="module")
def clip_and_gallery(tmp_path_factory, data_dir, analyzer):
    from facerec.gallery.service import GalleryService

    root = tmp_path_factory.mktemp("identity_clip")
    truth = write_cut_clip(root / "cuts.mp4", data_dir / "video")
    cfg = Config()
    cfg.gallery.data_dir = str(root / "gallery")
    with GalleryService(cfg, analyzer) as service:
        for name, images in enroll_images(data_dir / "video").items():
            assert sum(service.enroll_image(name, img).ok for img in images) == len(images), name
    return root, truth


@pytest.mark.parametrize("realtime", [False, True], ids=["every-frame", "realtime-drops"])
def test_no_wrong_name_and_named_within_half_a_second(clip_and_gallery, progress, realtime) -> None:
    root, truth = clip_and_gallery
    tracks = root / f"tracks-{realtime}.jsonl"
    progress(f"identity clip: facerec run {'--realtime ' if realtime else ''}on {len(truth.people)} frames "
             f"({len(CUT_SEGMENTS)} segments)")
    cmd = [sys.executable, "-c", RUN, "run", "--source", str(root / "cuts.mp4"), *MODELS,
           "--data-dir", str(root / "gallery"), "--tracks", str(tracks), "--stats", str(root / "stats.json"),
           *(["--realtime"] if realtime else [])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in tracks.read_text().splitlines()]
    stats = json.loads((root / "stats.json").read_text())
    s = score(rows, truth)
    progress(f"identity clip: {len(rows)} frames processed, {stats['dropped']} dropped; face-frames {s.face_frames}, "
             f"wrong names {s.wrong}, unnamed {s.unsure}, latency s {[round(x, 2) for x in s.latency_s]}")
    if realtime:
        assert stats["dropped"] > 0 or len(rows) == len(truth.people)
        assert [r["frame"] for r in rows] == sorted({r["frame"] for r in rows})
    else:
        assert [r["frame"] for r in rows] == list(range(len(truth.people)))
    assert s.face_frames >= 0.8 * len(rows)
    assert s.wrong == 0, f"{s.wrong} face-frames with another person's name"
    assert len(s.latency_s) == 4 and s.worst_latency_s <= 0.5, s.latency_s
    # the same id never spans a cut: each segment's faces have tracks of their own
    ids = [{f["track_id"] for r in rows if r["frame"] // SEGMENT == k for f in r["faces"]}
           for k in range(len(CUT_SEGMENTS))]
    assert all(ids[k].isdisjoint(ids[k + 1]) for k in range(len(ids) - 1)), ids
