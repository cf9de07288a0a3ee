"""The seed-compatible ``face_embedding/embedding_feat.py`` script and its feature-list format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from face_embedding.embedding_feat import (
    LABEL_MAP_NAME,
    atomic_write,
    read_feat_list,
    read_label_map,
    write_feat_list,
    write_label_map,
)
from facerec.imageio import read_image
from facerec.weights import ENV_VAR

# --- shared data (candidates for conftest.py) ---------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared"
MFN_FILE = "mobilefacenet_foamliu_ms1m.pt"


def _weights_dir() -> Path:
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip() and (Path(part.strip()) / MFN_FILE).is_file():
            return Path(part.strip())
    return SHARED / "models"


WEIGHTS_DIR = _weights_dir()
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "face_embedding" / "embedding_feat.py"
LFW = SHARED / "data" / "lfw"
#: Typical five landmarks of an LFW deep-funneled 250x250 image (see test_embedders.py).
LFW_LANDMARKS = np.array([[104.0, 112.3], [148.5, 112.2], [125.7, 137.0], [107.7, 156.6], [145.6, 156.1]])


@pytest.fixture(scope="module")
def weights() -> Path:
    path = WEIGHTS_DIR / MFN_FILE
    assert path.is_file(), f"real weights not found in {WEIGHTS_DIR} (set {ENV_VAR})"
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """2 persons x 2 aligned crops (one saved at 150 px), plus one corrupt file."""
    from facerec.align import align

    assert LFW.is_dir(), f"{LFW} not found: tests need ../shared beside the checkout"
    root = tmp_path / "preprocessed"
    for person, ids in (("Colin_Powell", ("0038", "0074")), ("Aaron_Peirsol", ("0001", "0002"))):
        (root / person).mkdir(parents=True)
        for i in ids:
            crop = align(read_image(LFW / person / f"{person}_{i}.jpg"), LFW_LANDMARKS).images[0]
            cv2.imwrite(str(root / person / f"{i}.png"), crop)
    big = cv2.resize(cv2.imread(str(root / "Colin_Powell" / "0074.png")), (150, 150))
    cv2.imwrite(str(root / "Colin_Powell" / "0074.png"), big)
    (root / "Aaron_Peirsol" / "0003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script must find its package itself
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# --- the feature-list format -------------------------------------------------------------------


def test_empty_feat_list_round_trip(tmp_path):
    path = tmp_path / "feat.list"
    write_feat_list(path, [], np.zeros((0, 512), np.float32))
    assert path.read_text() == ""
    labels, feats = read_feat_list(path)
    assert labels.shape == (0,) and feats.shape == (0, 0)


def test_feat_list_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    feats = (rng.standard_normal((4, 512)) * 20).astype(np.float32)
    path = tmp_path / "feat.list"
    write_feat_list(path, [0, 0, 3, 1], feats)
    labels, back = read_feat_list(path)
    assert labels.tolist() == [0, 0, 3, 1] and labels.dtype == np.int64
    np.testing.assert_array_equal(back, feats)  # float32 values survive the text exactly
    assert path.read_text().splitlines()[2].split()[0] == "3"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    "text, message",
    [("x 1.0 2.0\n", "not an integer"), ("0\n", "no features"), ("0 1 2\n1 1 2 3\n", "3 features"), ("0 1 abc\n", ":1:")],
)
def test_bad_feat_list_names_the_line(tmp_path, text, message):
    path = tmp_path / "feat.list"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_feat_list(path)


def test_write_feat_list_checks_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_feat_list(tmp_path / "f", [0, 1], np.zeros((3, 4)))
    with pytest.raises(ValueError):
        write_feat_list(tmp_path / "f", [0.5], np.zeros((1, 4)))
    with pytest.raises(ValueError):
        write_feat_list(tmp_path / "f", [0], np.zeros(4))


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "feat.list"
    write_feat_list(path, [1], np.ones((1, 2), np.float32))
    before = path.read_text()

    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("0 0.5 partial")
        raise RuntimeError("disk full")
    assert path.read_text() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_label_map_round_trip(tmp_path):
    write_label_map(tmp_path / LABEL_MAP_NAME, ["Ana", "Zoë"])
    assert json.loads((tmp_path / LABEL_MAP_NAME).read_text(encoding="utf-8")) == {"0": "Ana", "1": "Zoë"}
    assert read_label_map(tmp_path / LABEL_MAP_NAME) == {0: "Ana", 1: "Zoë"}


# --- the script ----------------------------------------------------------------------------------


def test_script_embeds_a_folder(weights, dataset, tmp_path):
    out = tmp_path / "out" / "feat.list"
    out.parent.mkdir()
    res = _run("--backbone", "mobilefacenet", "--resume", str(weights), "--folderdataset_dir", str(dataset),
               "--feat_list", str(out), "--cpu-mode", "--batch_size", "3", "--embedding_size", "128")
    assert res.returncode == 0, res.stderr
    assert "0003.jpg" in res.stderr and "1 unreadable" in res.stderr  # warned, skipped, counted
    assert "embedded 4 of 5 images of 2 persons" in res.stderr
    assert "resizing" in res.stderr and "1 resized" in res.stderr

    lines = out.read_text().splitlines()
    assert len(lines) == 4
    assert all(len(line.split()) == 1 + 128 for line in lines)
    labels, feats = read_feat_list(out)
    # sorted persons: Aaron_Peirsol = 0, Colin_Powell = 1; sorted images within each
    assert labels.tolist() == [0, 0, 1, 1]
    assert json.loads((out.parent / LABEL_MAP_NAME).read_text()) == {"0": "Aaron_Peirsol", "1": "Colin_Powell"}
    norms = np.linalg.norm(feats, axis=1)
    assert np.all(np.abs(norms - 1.0) > 0.1)  # raw features, not unit vectors
    unit = feats / norms[:, None]
    sim = unit @ unit.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]  # same person closer


def test_script_runs_from_another_directory(weights, dataset, tmp_path):
    out = tmp_path / "feat.list"
    res = _run("--backbone", "mobilefacenet", "--resume", str(weights), "--folderdataset_dir", str(dataset),
               "--feat_list", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(read_feat_list(out)[0]) == 4


def test_script_fails_when_nothing_is_embedded(weights, tmp_path):
    root = tmp_path / "ds"
    (root / "someone").mkdir(parents=True)
    (root / "someone" / "a.jpg").write_bytes(b"")
    out = tmp_path / "feat.list"
    out.write_text("0 1 2\n")
    res = _run("--backbone", "mobilefacenet", "--resume", str(weights), "--folderdataset_dir", str(root),
               "--feat_list", str(out))
    assert res.returncode == 1
    assert "no image was embedded" in res.stderr
    assert out.read_text() == "0 1 2\n"  # previous output kept


def test_script_reports_fatal_errors_without_traceback(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    res = _run("--backbone", "iresnet50", "--resume", str(tmp_path / "missing.pth"), "--folderdataset_dir",
               str(root), "--feat_list", str(tmp_path / "f.list"))
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "IrvingMeng/MagFace" in res.stderr
    assert "Traceback" not in res.stderr
