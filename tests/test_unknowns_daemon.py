"""Acceptance: a daemon with an empty gallery turns strangers into candidate people; naming
one enrolls it, and the next run names that person on their clip.

Real clips (``lp_*.mp4``, one person each), real models, the ``rec_cam.py`` entry point.
Each clip is played twice (the same person passing the camera twice), so every person has
the two sightings ``unknowns.min_faces`` (2) asks for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from facerec.cli import run
from facerec.cli.live_cmd import main as rec_cam
from conftest import MODEL_FLAGS

CLIPS = ("lp_driving_d0.mp4", "lp_driving_d12.mp4")
MODELS = (*MODEL_FLAGS, "--threads", "1")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_strangers_become_people(data_dir, tmp_path: Path, capsys):
    t0 = time.monotonic()
    gal = ["--data-dir", str(tmp_path / "g")]
    # the feature off (the default): nothing is kept
    assert rec_cam(["--source", str(data_dir / "video" / CLIPS[0]), "--max-frames", "20", "--stats-every", "0",
                    *gal, *MODELS]) == 0
    assert not (tmp_path / "g" / "gallery.db").exists()  # not even opened for writing
    for rep in range(2):
        for clip in CLIPS:
            cam = clip.split("_")[-1].removesuffix(".mp4")
            rc = rec_cam(["--source", str(data_dir / "video" / clip), "--unknowns", "--camera", cam,
                          "--max-frames", "40", "--stats-every", "0", *gal, *MODELS])
            assert rc == 0
            print(f"run {rep + 1} {clip}: {time.monotonic() - t0:.0f} s", flush=True)
    capsys.readouterr()
    assert run(["unknowns", "list", "--json", *gal]) == 0
    cands = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # one candidate per clip's person, each seen twice on its own camera
    assert sorted((c["cameras"], c["sightings"]) for c in cands) == [(["d0"], 2), (["d12"], 2)], cands
    d0 = next(c for c in cands if c["cameras"] == ["d0"])
    assert run(["unknowns", "show", str(d0["id"]), "--crops", str(tmp_path / "crops"), *gal]) == 0
    assert len(list((tmp_path / "crops").glob("*.jpg"))) >= 2

    assert run(["unknowns", "name", str(d0["id"]), "Driver Zero", "--json", *gal, *MODELS]) == 0
    named = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert named["person"] == "Driver Zero" and named["added"] >= 2
    assert run(["unknowns", "list", "--json", *gal]) == 0
    left = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["cameras"] for c in left] == [["d12"]]

    # the next run names them on their clip, and nobody else on the other one
    for clip, expected in ((CLIPS[0], {"Driver Zero"}), (CLIPS[1], set())):
        ev = tmp_path / f"events_{clip}.jsonl"
        assert rec_cam(["--source", str(data_dir / "video" / clip), "--events", str(ev), "--max-frames", "40",
                        "--stats-every", "0", *gal, *MODELS]) == 0
        events = [json.loads(line) for line in ev.read_text().splitlines()]
        named = {e["name"] for e in events if e["event"] in ("appeared", "recognized") and e["name"]}
        assert named == expected, events
    print(f"total {time.monotonic() - t0:.0f} s")
