"""``facerec calibrate``: threshold choice, the textual config edit, backup and errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from facerec.cli import run
from facerec.config import DEFAULT_CONFIG, load_config
from facerec.evaluate.calibrate import (
    CalibrationError,
    calibrate_scores,
    check_far,
    format_threshold,
    gallery_comparisons,
    set_threshold_text,
    write_threshold,
)
from conftest import MODEL_FLAGS

MODELS = (*MODEL_FLAGS, "--engine", "torch", "--threads", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def config_file(tmp_path):
    """A copy of the project's documented config.yaml (comments included)."""
    p = tmp_path / "config.yaml"
    shutil.copyfile(DEFAULT_CONFIG, p)
    return p


# --------------------------------------------------------------------------------------
# target and scores (edge cases first)


@pytest.mark.parametrize("bad", ["0", "1", "-1e-3", "2", "nan", "abc", "", None])
def test_bad_target_far_is_a_clear_error(bad):
    with pytest.raises(CalibrationError, match="target FAR must be"):
        check_far(bad)


def test_one_class_cannot_be_calibrated():
    with pytest.raises(CalibrationError, match="needs impostor pairs"):
        calibrate_scores([0.5, 0.6], [True, True], 1e-3)
    with pytest.raises(CalibrationError, match="NaN"):
        calibrate_scores([0.5, np.nan], [True, False], 1e-3)


def test_threshold_sits_mid_gap_and_keeps_the_far():
    # 1000 impostors: 998 in [0, 0.3], then 0.41237 and 0.5; genuine 0.45, 0.55, 0.7, 0.9
    imp = np.r_[np.linspace(0.0, 0.3, 998), 0.41237, 0.5]
    gen = np.array([0.45, 0.55, 0.7, 0.9])
    s, y = np.r_[gen, imp], np.r_[np.ones(4, bool), np.zeros(1000, bool)]
    # FAR 1e-3 allows one impostor (0.5): accept down to 0.45, reject 0.41237 -> mid-gap 0.4312
    cal = calibrate_scores(s, y, 1e-3)
    assert (cal.threshold, cal.tar, cal.resolvable) == (0.4312, 1.0, True)
    assert cal.far == pytest.approx(1e-3)
    # FAR 2e-3 allows 0.41237 as well: the gap is (0.3, 0.41237]
    cal = calibrate_scores(s, y, 2e-3)
    assert cal.threshold == 0.3562 and cal.far == pytest.approx(2e-3) and cal.tar == 1.0
    # FAR 5e-4 allows no impostor: only the genuine scores above 0.5 pass
    cal = calibrate_scores(s, y, 5e-4)
    assert (cal.threshold, cal.far, cal.tar, cal.resolvable) == (0.525, 0.0, 0.75, False)


def test_narrow_gap_gets_more_decimals():
    cal = calibrate_scores([0.40001, 0.4], [True, False], 1e-3)
    assert 0.4 < cal.threshold <= 0.40001 and (cal.far, cal.tar) == (0.0, 1.0)
    assert format_threshold(cal.threshold) == "0.400005"
    assert format_threshold(0.5) == "0.5000" and format_threshold(-0.25) == "-0.2500"


def test_nothing_acceptable_means_just_above_the_top_score():
    # the best impostor outscores every genuine pair: only "accept nothing" keeps FAR 0
    cal = calibrate_scores([0.3, 0.6], [True, False], 1e-3)
    assert cal.threshold == 0.6001 and cal.tar == 0.0
    with pytest.raises(CalibrationError, match="no cosine threshold <= 1"):
        calibrate_scores([0.3, 1.0], [True, False], 1e-3)


def test_too_few_impostors_is_flagged_not_hidden():
    cal = calibrate_scores([0.9, 0.8, 0.3, 0.1], [True, True, False, False], 1e-3)
    assert not cal.resolvable and cal.far == 0.0 and cal.threshold == 0.55


def test_gallery_comparisons_counts():
    v = np.eye(3)[[0, 0, 1, 1, 2]]  # people a, a, b, b, c
    _, y = gallery_comparisons(v, ["a", "a", "b", "b", "c"])
    # genuine: 4 leave-one-out scores (c has one sample); impostor: 5 samples x 2 other people
    assert y.sum() == 4 and (~y).sum() == 10
    with pytest.raises(CalibrationError, match="two enrolled people"):
        gallery_comparisons(v[:2], ["a", "a"])
    with pytest.raises(CalibrationError, match="at least two samples"):
        gallery_comparisons(np.eye(2), ["a", "b"])


# --------------------------------------------------------------------------------------
# editing the file


def test_set_threshold_text_keeps_everything_else(config_file):
    text = config_file.read_text()
    new, old = set_threshold_text(text, 0.41234)
    assert old == "null"
    diff = [(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert diff == [("  threshold: null", "  threshold: 0.41234")]
    assert len(new.splitlines()) == len(text.splitlines())


@pytest.mark.parametrize("text, expect", [
    ("", "recognition:\n  threshold: 0.3000\n"),
    ("models:\n  backend: torch\n", "models:\n  backend: torch\nrecognition:\n  threshold: 0.3000\n"),
    ("recognition:\n    top_k: 3\n", "recognition:\n    threshold: 0.3000\n    top_k: 3\n"),
    ("recognition:  # section\n  threshold: 0.5   # tuned\n  flip_tta: true\n",
     "recognition:  # section\n  threshold: 0.3000   # tuned\n  flip_tta: true\n"),
    ("recognition:\r\n  threshold:\r\n", "recognition:\r\n  threshold: 0.3000\r\n"),
    ("serve:\n  threshold: 0.9\nrecognition:\n  top_k: 2\n",
     "serve:\n  threshold: 0.9\nrecognition:\n  threshold: 0.3000\n  top_k: 2\n"),
])
def test_set_threshold_text_cases(text, expect):
    assert set_threshold_text(text, 0.3)[0] == expect


def test_flow_style_section_is_refused():
    with pytest.raises(CalibrationError, match="block style"):
        set_threshold_text("recognition: {threshold: 0.4}\n", 0.3)


def test_write_threshold_backup_and_validation(config_file):
    original = config_file.read_text()
    change = write_threshold(config_file, 0.3712)
    assert change.written and change.old == "null" and change.new == "0.3712"
    assert change.backup.read_text() == original
    assert change.backup.name.startswith("config.yaml.bak-")
    assert load_config(config_file).recognition.threshold == pytest.approx(0.3712)
    assert "# Cosine similarity a face needs to be given a name" in config_file.read_text()
    # a second change keeps a second backup, never overwriting the first
    again = write_threshold(config_file, 0.25)
    assert again.old == "0.3712" and again.backup != change.backup and again.backup.exists()
    with pytest.raises(CalibrationError, match=r"in \[-1, 1\]"):
        write_threshold(config_file, 1.5)


def test_invalid_config_is_left_untouched(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("recognition:\n  threshold: null\n  top_k: 0\n")  # top_k out of range
    with pytest.raises(CalibrationError, match="would not be valid"):
        write_threshold(p, 0.3)
    assert p.read_text() == "recognition:\n  threshold: null\n  top_k: 0\n"
    assert list(tmp_path.iterdir()) == [p]  # no backup, no temporary file left


def test_dry_run_writes_nothing(config_file):
    before = config_file.read_text()
    change = write_threshold(config_file, 0.3, dry_run=True)
    assert not change.written and change.backup is None
    assert config_file.read_text() == before


# --------------------------------------------------------------------------------------
# the command


def test_cli_bad_far_fails_before_loading_models(config_file, capsys):
    rc = run(["calibrate", "--pairs", "x.txt", "--far", "5", "--config", str(config_file)])
    assert rc == 2
    assert "target FAR must be between 0 and 1" in capsys.readouterr().err


def test_cli_needs_data(config_file, capsys):
    rc = run(["calibrate", "--far", "1e-3", "--config", str(config_file)])
    assert rc == 2
    assert "--pairs FILE" in capsys.readouterr().err


def test_cli_calibrate_on_lfw_pairs(config_file, data_dir, capsys):
    rc = run(["calibrate", "--pairs", str(data_dir / "lfw" / "pairsDevTest.txt"), "--limit", "40", "--far", "0.05",
              "--config", str(config_file), "--json", "--no-progress", *MODELS])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["written"] and out["old"] == "null"
    assert (out["genuine"], out["impostor"]) == (20, 20)
    assert out["far"] <= 0.05 and out["tar"] >= 0.9
    assert "recognition.threshold changed null -> " in captured.out
    written = yaml.safe_load(config_file.read_text())["recognition"]["threshold"]
    assert written == pytest.approx(out["threshold"])
    assert out["backup"] and (config_file.parent / out["backup"].split("/")[-1]).exists()


def test_cli_calibrate_on_a_gallery(config_file, tmp_path, data_dir, analyzer, capsys):
    from facerec.gallery.service import GalleryService

    fr = data_dir / "identities" / "face_recognition_examples"
    cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "g"), "models.embedder": "mobilefacenet",
                             "models.detector": "yolov5n-0.5-face"})
    with GalleryService(cfg, analyzer) as svc:
        svc.enroll_paths("obama", [fr / "obama" / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")])
        svc.enroll_paths("alex", [fr / "alex_lacamoire" / f for f in ("train_img1.jpg", "test_alex_lacamoire1.jpg")])
        svc.enroll_paths("biden", [fr / "biden" / f for f in ("biden.jpg", "biden2.jpg")])
    rc = run(["calibrate", "--data-dir", str(tmp_path / "g"), "--far", "0.1", "--config", str(config_file), "--json",
              *MODELS])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 7 leave-one-out genuine scores, 7 samples x 2 other people = 14 impostor scores
    assert (out["genuine"], out["impostor"]) == (7, 14)
    assert out["far"] <= 0.1 and out["tar"] == 1.0 and out["resolvable"]
    assert load_config(config_file).recognition.threshold == pytest.approx(out["threshold"])
