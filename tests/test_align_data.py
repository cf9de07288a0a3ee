"""align_data / ``facerec align``: raw/<Person>/* photos -> aligned crops, incrementally."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.gallery.service import MANIFEST_NAME, align_dataset
from facerec.imageio import read_image

REPO = Path(__file__).resolve().parents[1]
UNICODE_NAME = "José Ñúñez Åström"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def raw_tree(tmp_path: Path, photo) -> Path:
    """Two people (one with a unicode name and spaces) plus every kind of bad input."""
    raw = tmp_path / "data" / "raw"
    fr = photo("face_recognition_examples")
    (raw / "biden").mkdir(parents=True)
    shutil.copy(fr / "biden" / "biden.jpg", raw / "biden" / "biden.jpg")
    shutil.copy(fr / "biden" / "biden2.jpg", raw / "biden" / "biden2.jpg")
    (raw / "biden" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (raw / "biden" / "empty.png").write_bytes(b"")
    cv2.imwrite(str(raw / "biden" / "blank.png"), np.full((300, 400, 3), 200, np.uint8))
    (raw / "biden" / "notes.txt").write_text("not a photo")
    big = read_image(fr / "obama" / "obama.jpg")
    cv2.imwrite(str(raw / "biden" / "tiny.jpg"), cv2.resize(big, (big.shape[1] // 14, big.shape[0] // 14)))
    (raw / UNICODE_NAME).mkdir()
    shutil.copy(fr / "rose_leslie" / "img1.jpg", raw / UNICODE_NAME / "img1.jpg")
    shutil.copy(fr / "obama" / "obama_32bit_rgba.png", raw / UNICODE_NAME / "rgba.png")
    (raw / ".hidden").mkdir()
    shutil.copy(fr / "biden" / "biden.jpg", raw / ".hidden" / "x.jpg")
    (raw / "a..b").mkdir()
    shutil.copy(fr / "biden" / "biden.jpg", raw / "a..b" / "x.jpg")
    shutil.copy(fr / "biden" / "biden.jpg", raw / "loose.jpg")
    return raw


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_align_dataset(raw_tree: Path, detector, tmp_path: Path):
    out = tmp_path / "data" / "preprocessed"
    before = all_files(tmp_path)
    rep = align_dataset(raw_tree, out, detector, settings={"detector": "yolov5n-0.5-face"}, progress=False)
    assert sorted(rep.done) == ["José Ñúñez Åström/img1.jpg", "José Ñúñez Åström/rgba.png", "biden/biden.jpg", "biden/biden2.jpg"]
    skipped = dict(rep.skipped)
    failed = dict(rep.failed)
    assert skipped[".hidden"] == "hidden folder refused"
    assert "folder name refused" in skipped["a..b"]
    assert skipped["loose.jpg"] == "not in a person folder"
    assert skipped["biden/notes.txt"].startswith("not an image")
    assert skipped["biden/blank.png"] == "no face found"
    assert skipped["biden/tiny.jpg"].startswith("face too small") or skipped["biden/tiny.jpg"] == "no face found"
    assert set(failed) == {"biden/corrupt.jpg", "biden/empty.png"}
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert crops == ["José Ñúñez Åström/img1.png", "José Ñúñez Åström/rgba.png", "biden/biden.png", "biden/biden2.png"]
    for c in out.rglob("*.png"):
        assert read_image(c).shape == (112, 112, 3)
    # only the crops and the manifest were written, all inside the output folder
    new = all_files(tmp_path) - before
    assert new == set(out.rglob("*.png")) | {out / MANIFEST_NAME}
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["files"]["biden/biden.jpg"]["output"] == "biden/biden.png"

    # rerun: nothing is redone and nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rep2 = align_dataset(raw_tree, out, detector, settings={"detector": "yolov5n-0.5-face"}, progress=False)
    assert rep2.done == [] and sorted(rep2.unchanged) == sorted(rep.done)
    assert {k for k, _ in rep2.failed} == set(failed)  # still reported, not retried
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes

    # a changed photo is redone, a removed one is reported, a deleted crop is rewritten
    shutil.copy(raw_tree / "biden" / "biden2.jpg", raw_tree / "biden" / "biden.jpg")
    (raw_tree / "biden" / "corrupt.jpg").unlink()
    (out / UNICODE_NAME / "rgba.png").unlink()
    rep3 = align_dataset(raw_tree, out, detector, settings={"detector": "yolov5n-0.5-face"}, progress=False)
    assert sorted(rep3.done) == ["José Ñúñez Åström/rgba.png", "biden/biden.jpg"]
    assert rep3.removed == ["biden/corrupt.jpg"]
    # other settings (another detector) redo everything
    rep4 = align_dataset(raw_tree, out, detector, settings={"detector": "other"}, progress=False)
    assert len(rep4.done) == 4


def test_multiple_faces_skip(tmp_path: Path, detector, photo):
    raw = tmp_path / "raw" / "pair"
    raw.mkdir(parents=True)
    shutil.copy(photo("face_recognition_examples/_multi/two_people.jpg"), raw / "two.jpg")
    rep = align_dataset(tmp_path / "raw", tmp_path / "out", detector, multiple_faces="skip", progress=False)
    assert rep.done == [] and "multiple_faces" in dict(rep.skipped)["pair/two.jpg"]
    rep = align_dataset(tmp_path / "raw", tmp_path / "out2", detector, multiple_faces="largest", progress=False)
    assert rep.done == ["pair/two.jpg"] and any("took the largest" in w for w in rep.warnings)


def test_align_data_script(raw_tree: Path, tmp_path: Path):
    """The seed's command line: original flags accepted (the detector follows --weights), exit 0,
    crops where --save_path says."""
    out = tmp_path / "crops"
    cmd = [sys.executable, str(REPO / "align_data.py"), "--folderdataset_dir", str(raw_tree), "--save_path", str(out),
           "--weights", str(REPO.parent / "shared" / "models" / "yolov5n-0.5-face.pt"), "--conf_thres", "0.5",
           "--iou_thres", "0.45", "--cpu-mode", "--threads", "1", "--details"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "4 done" in p.stdout and "biden/corrupt.jpg" in p.stdout
    assert len(list(out.rglob("*.png"))) == 4
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0 and "0 done, 4 unchanged" in p.stdout


def test_nothing_alignable_exits_1(tmp_path: Path):
    from facerec.cli import run

    raw = tmp_path / "raw" / "x"
    raw.mkdir(parents=True)
    (raw / "bad.jpg").write_bytes(b"nope")
    assert run(["align", "--folderdataset_dir", str(tmp_path / "raw"), "--save_path", str(tmp_path / "out"),
                "--detector", "yolov5n-0.5-face", "--no-progress"]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["align", "--folderdataset_dir", str(empty), "--save_path", str(tmp_path / "out2"),
                "--detector", "yolov5n-0.5-face", "--no-progress"]) == 0
