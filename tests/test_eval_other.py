"""``facerec eval identify|gallery|detect``: matching rules on tiny hand-made cases, then the
real models on small real sets from ../shared/data (numbers measured with yolov5n-0.5-face
+ MobileFaceNet, torch backend)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facerec.cli import run
from facerec.evaluate.detect_eval import (
    GtBox,
    ImageMatch,
    iou_matrix,
    match_image,
    read_gt,
)
from facerec.evaluate.gallery_eval import check_gallery, loo_scores
from facerec.evaluate.identify import score_people
from conftest import MODEL_FLAGS

MODELS = (*MODEL_FLAGS, "--engine", "torch", "--threads", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _link(src: Path, dst_dir: Path) -> None:
    """Reference a shared photo from a temporary folder layout without copying it."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / src.name).symlink_to(src)


# --------------------------------------------------------------------------------------
# detection matching (edge cases first)


def test_iou_matrix():
    assert iou_matrix(np.zeros((0, 4)), np.zeros((2, 4))).shape == (0, 2)
    m = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(m, [[1.0, 50 / 150, 0.0, 0.0]])


def test_match_no_detections_and_no_gt():
    assert match_image(np.zeros((0, 4)), np.zeros(0), []) == ImageMatch(0, 0, 0, 0)
    m = match_image(np.zeros((0, 4)), np.zeros(0), [GtBox((0, 0, 10, 10))])
    assert (m.tp, m.fp, m.gt) == (0, 0, 1)
    m = match_image([[0, 0, 10, 10]], [0.9], [])
    assert (m.tp, m.fp, m.gt) == (0, 1, 0)


def test_match_duplicates_ignored_boxes_and_score_order():
    gt = [GtBox((0, 0, 10, 10)), GtBox((50, 50, 60, 60), ignore=True)]
    boxes = [[1, 0, 11, 10],    # low score, overlaps the face: visited second -> duplicate -> FP
             [0, 0, 10, 10],    # high score, exact: TP
             [50, 50, 60, 61],  # on the ignored face: neither
             [100, 100, 110, 110]]  # nothing there: FP
    m = match_image(boxes, [0.6, 0.95, 0.9, 0.7], gt)
    assert (m.tp, m.fp, m.ignored, m.gt) == (1, 2, 1, 1)


def test_read_gt_rejects_bad_files(tmp_path):
    from facerec.errors import FacerecError

    p = tmp_path / "gt.csv"
    p.write_text("file,x,y\na.jpg,1,2\n")
    with pytest.raises(FacerecError, match="expected the columns"):
        read_gt(p)
    p.write_text("split,file,x,y,w,h,ignore\ntraining,a.jpg,1,2,x,4,0\n")
    with pytest.raises(FacerecError, match=":2: malformed"):
        read_gt(p)


def test_read_gt_dlib_faces(data_dir):
    gt = read_gt(data_dir / "detection" / "dlib_faces" / "gt_boxes.csv")
    assert len(gt) == 9 and sum(len(v) for v in gt.values()) == 43
    assert sum(len(v) for v in read_gt(data_dir / "detection" / "dlib_faces" / "gt_boxes.csv", "testing").values()) == 25
    assert gt["2007_007763.jpg"][0].xyxy == (194.0, 90.0, 231.0, 127.0)


def test_eval_detect_dlib_faces(data_dir, capsys):
    det = data_dir / "detection"
    rc = run(["eval", "detect", "--images", str(det / "dlib_faces"), "--gt", str(det / "dlib_faces" / "gt_boxes.csv"),
              "--also-iou", "0.3", "--negatives", str(det / "unannotated" / "dlib_dogs_no_human_faces.jpg"),
              "--json", "--no-progress", *MODELS])
    assert rc == 0
    out = _last_json(capsys.readouterr().out)
    # measured: one face is found with a box that overlaps dlib's tight box by less than 0.5
    assert (out["gt"], out["tp"], out["fp"]) == (43, 42, 1)
    assert out["recall_iou_0.3"] == 1.0 and out["precision_iou_0.3"] == 1.0
    assert out["negative_images"] == 1 and out["negative_fp"] == 1


# --------------------------------------------------------------------------------------
# leave-one-out gallery checks on hand-made vectors


def test_gallery_check_edge_cases():
    empty = check_gallery(np.zeros((0, 2)), [], [])
    assert empty.samples == 0 and empty.separable is None
    one = check_gallery(np.array([[1.0, 0.0]]), ["a"], ["s1"])
    assert one.lowest_genuine is None and one.closest_people is None and one.separable is None
    with pytest.raises(ValueError, match="same length"):
        check_gallery(np.zeros((2, 2)), ["a"], ["s1", "s2"])


def test_gallery_check_hand_computed():
    s = np.sqrt(0.5)
    v = np.array([[1, 0], [s, s], [0, 1], [-1, 0]], np.float64)
    # a: samples 0 and 1; b: sample 2 and the mislabelled-looking sample 3 (opposite of a)
    people, sc, own = loo_scores(v, ["a", "a", "b", "b"])
    assert people == ["a", "b"] and own.tolist() == [0, 0, 1, 1]
    assert sc[0, 0] == pytest.approx(s)    # sample 0 vs sample 1 alone
    assert sc[3, 1] == pytest.approx(0.0)  # sample 3 vs sample 2 alone
    chk = check_gallery(v, ["a", "a", "b", "b"], ["s0", "s1", "s2", "s3"])
    assert chk.lowest_genuine.sample in ("s2", "s3") and chk.lowest_genuine.genuine == pytest.approx(0.0)
    assert chk.separable is False
    # the template of b is (-1, 1)/sqrt2: a's template (1+s, s)/|.| is closest to it at about -0.38
    assert chk.closest_people[:2] == ("a", "b")
    assert [c.sample for c in chk.suspects] == ["s2"]  # s2 (0,1) is nearer a's template than s3 alone


def test_single_sample_people_are_impostors_only():
    v = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    chk = check_gallery(v, ["a", "a", "b"], ["x", "y", "z"])
    assert chk.checks[2].genuine is None and chk.checks[2].nearest_other == "a"
    assert chk.separable is True and chk.threshold_low < chk.threshold_high


def test_score_people_templates():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    people, sc = score_people(np.array([[1.0, 0.0], [0.0, 1.0]]), v, ["a", "b", "b"], template="max")
    assert people == ["a", "b"]
    np.testing.assert_allclose(sc, [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="unknown template"):
        score_people(v, v, ["a", "b", "b"], template="median")


# --------------------------------------------------------------------------------------
# real photos


@pytest.fixture
def id_folders(tmp_path, data_dir):
    """Five enrolled people (face_recognition examples) and probes with two strangers."""
    fr = data_dir / "identities" / "face_recognition_examples"
    g, p = tmp_path / "gallery", tmp_path / "probes"
    plan = {
        "alex_lacamoire": (["train_img1.jpg", "alex-lacamoire.png"], ["test_alex_lacamoire1.jpg"]),
        "biden": (["biden.jpg"], ["biden2.jpg"]),
        "kit_harington": (["john1.jpeg", "john2.jpeg"], ["test_johnsnow_test1.jpg"]),
        "obama": (["obama.jpg", "obama2.jpg"], ["obama3.jpg", "test_obama1.jpg"]),
        "rose_leslie": (["img1.jpg"], ["img2.jpg"]),
    }
    for person, (gal, prb) in plan.items():
        for f in gal:
            _link(fr / person / f, g / person)
        for f in prb:
            _link(fr / person / f, p / person)
    for stranger in ("John_Salley", "John_Savage"):
        for f in sorted((data_dir / "identities" / "dlib_johns" / stranger).iterdir())[:3]:
            _link(f, p / stranger)
    return g, p


def test_eval_identify_tiny_real_folder(id_folders, tmp_path, capsys):
    g, p = id_folders
    plot = tmp_path / "det.png"
    rc = run(["eval", "identify", "--gallery", str(g), "--probes", str(p), "--json", "--plot", str(plot),
              "--no-progress", *MODELS])
    assert rc == 0
    out = _last_json(capsys.readouterr().out)
    assert (out["identities"], out["gallery_photos"], out["mated"], out["nonmated"], out["skipped"]) == (5, 8, 6, 6, 0)
    assert out["top1"] == 1.0 and out["top5"] == 1.0
    # measured: every enrolled probe scores above every stranger
    assert out["fnir_at_fpir_0.1"] == 0.0
    assert plot.is_file()


def test_eval_identify_empty_gallery_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "p" / "x").mkdir(parents=True)
    rc = run(["eval", "identify", "--gallery", str(tmp_path / "g"), "--probes", str(tmp_path / "p"), *MODELS])
    assert rc == 2
    assert "no <person> sub-folders" in capsys.readouterr().err


def test_eval_gallery_root_photos(data_dir, capsys):
    rc = run(["eval", "gallery", "--root", str(data_dir / "identities" / "facenet_pytorch_test_images"), "--json",
              "--no-progress", *MODELS])
    assert rc == 0
    out = _last_json(capsys.readouterr().out)
    assert (out["people"], out["samples"], out["skipped"]) == (5, 9, 0)
    # measured: separable in about (0.462, 0.594]; the two actresses are the closest people
    assert out["separable"] is True
    assert out["threshold_low"] == pytest.approx(0.462, abs=0.03)
    assert out["threshold_high"] == pytest.approx(0.594, abs=0.03)
    assert out["closest_people"][:2] == ["angelina_jolie", "kate_siegel"]
    assert out["suspects"] == []


def test_eval_gallery_store_flags_a_mislabelled_sample(tmp_path, data_dir, analyzer, capsys):
    from facerec.config import load_config
    from facerec.gallery.service import GalleryService

    fr = data_dir / "identities" / "face_recognition_examples"
    cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "g"), "models.embedder": "mobilefacenet",
                             "models.detector": "yolov5n-0.5-face"})
    with GalleryService(cfg, analyzer) as svc:
        svc.enroll_paths("obama", [fr / "obama" / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")])
        svc.enroll_paths("alex", [fr / "alex_lacamoire" / f for f in ("train_img1.jpg", "test_alex_lacamoire1.jpg")])
        # Biden's photo filed under Obama by mistake
        svc.enroll_paths("obama", [fr / "biden" / "biden.jpg"])
        svc.enroll_paths("biden", [fr / "biden" / "biden2.jpg"])
    rc = run(["eval", "gallery", "--data-dir", str(tmp_path / "g"), "--json", *MODELS])
    assert rc == 0
    out = _last_json(capsys.readouterr().out)
    assert (out["people"], out["samples"]) == (3, 7)
    assert [s["sample"].split()[-1] for s in out["suspects"]] == ["biden.jpg"]
    assert out["suspects"][0]["nearest_other"] == "biden"
    assert out["separable"] is False


def test_eval_gallery_without_vectors_is_a_clear_error(tmp_path, capsys):
    from facerec.gallery.store import GalleryStore

    GalleryStore(tmp_path / "g").close()
    rc = run(["eval", "gallery", "--data-dir", str(tmp_path / "g"), *MODELS])
    assert rc == 2
    assert "has no vectors" in capsys.readouterr().err
