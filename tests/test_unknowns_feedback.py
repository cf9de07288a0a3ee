"""Negative feedback ("that's not X") in the matcher, and purging a person, on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.cli import run
from facerec.config import load_config
from facerec.errors import GalleryError
from facerec.gallery.search import GalleryIndex
from facerec.gallery.service import GalleryService
from facerec.gallery.backend import open_backend
from facerec.imageio import read_image
from facerec.unknowns import mark_not, purge_person

EX = "face_recognition_examples"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_index_negatives_edge_cases():
    a, b = np.eye(4, dtype=np.float32)[:2]
    idx = GalleryIndex(["x", "y"], np.stack([a, b]))
    q = np.array([[0.8, 0.6, 0, 0]], np.float32)
    assert idx.search(q, 0.5)[0].name == "x"
    idx.set_negatives([], np.zeros((0, 4), np.float32))
    assert idx.search(q, 0.5)[0].name == "x"
    with pytest.raises(GalleryError, match="dimensions"):
        idx.set_negatives(["x"], np.ones((1, 3), np.float32))
    with pytest.raises(GalleryError, match="names"):
        idx.set_negatives(["x", "y"], np.ones((1, 4), np.float32))
    # a negative of x closer to the face than x: x is skipped, y (above threshold) is named
    idx.set_negatives(["x"], np.array([[0.7, 0.7, 0, 0]], np.float32))
    m = idx.search(q, 0.5)[0]
    assert m.name == "y" and m.top[0][0] == "x"  # the candidates are still reported
    # nobody left above the threshold: unknown
    assert idx.search(q, 0.7)[0].name is None
    # a face far from the negative is still x
    assert idx.search(np.array([[1, -0.2, 0, 0]], np.float32), 0.5)[0].name == "x"


@pytest.fixture
def gallery(analyzer, photo, tmp_path):
    """Obama, Biden and Kit enrolled (one photo each) at a permissive threshold, 0.08
    (MobileFaceNet's own is 0.32): both photos of Rose Leslie, who is not enrolled, come
    out as Biden (cosine 0.093 and 0.086)."""
    cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "g"), "recognition.threshold": 0.08})
    svc = GalleryService(cfg, analyzer=analyzer)
    for name, rel in (("obama", "obama/obama.jpg"), ("biden", "biden/biden.jpg"), ("kit", "kit_harington/john1.jpeg")):
        assert svc.enroll_image(name, read_image(photo(f"{EX}/{rel}"))).ok
    yield svc
    svc.close()


PROBES = ["obama/obama2.jpg", "obama/test_obama1.jpg", "biden/biden2.jpg", "kit_harington/john2.jpeg",
          "kit_harington/test_johnsnow_test1.jpg", "rose_leslie/img1.jpg", "rose_leslie/img2.jpg",
          "alex_lacamoire/train_img1.jpg", "alex_lacamoire/test_alex_lacamoire1.jpg"]


def names(svc, photo) -> dict[str, str | None]:
    return {p: svc.identify_image(read_image(photo(f"{EX}/{p}")))[0]["name"] for p in PROBES}


def test_not_x_stops_a_wrong_name_and_changes_nobody_else(gallery, photo):
    before = names(gallery, photo)
    assert before == {
        "obama/obama2.jpg": "obama", "obama/test_obama1.jpg": "obama", "biden/biden2.jpg": "biden",
        "kit_harington/john2.jpeg": "kit", "kit_harington/test_johnsnow_test1.jpg": "kit",
        "rose_leslie/img1.jpg": "biden", "rose_leslie/img2.jpg": "biden",  # wrong: Rose is not enrolled
        "alex_lacamoire/train_img1.jpg": None, "alex_lacamoire/test_alex_lacamoire1.jpg": "obama",  # wrong too
    }
    # one photo of Rose is marked "not biden"
    r = mark_not(gallery, "biden", read_image(photo(f"{EX}/rose_leslie/img1.jpg")), interface="test", source="img1")
    assert r["person"] == "biden" and r["similarity"] == pytest.approx(0.093, abs=0.01)
    after = names(gallery, photo)
    # neither that photo nor her other one, never marked, is named biden any more
    assert after["rose_leslie/img1.jpg"] is None and after["rose_leslie/img2.jpg"] is None
    # everybody else's result is unchanged (Alex's own wrong name included: nobody marked it)
    for p in PROBES:
        if not p.startswith("rose_leslie/"):
            assert after[p] == before[p], (p, before[p], after[p])
    print(f"before {before}\nafter  {after}")


def test_feedback_cli_and_purge(gallery, photo, capsys):
    d = ["--data-dir", gallery.cfg.gallery.data_dir, "--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet"]
    rose = str(photo(f"{EX}/rose_leslie/img1.jpg"))
    assert run(["feedback", "not", "nobody", rose, *d]) == 2
    assert "no enrolled person" in capsys.readouterr().err
    assert run(["feedback", "not", "kit", rose, "--face", "5", *d]) == 2
    assert "face 5" in capsys.readouterr().err
    assert run(["feedback", "not", "kit", rose, "--json", *d]) == 0
    with open_backend(gallery.cfg.gallery) as store:
        assert store.negative_counts() == {"kit": 1}
    # deleting the person takes their samples and negatives; the audit log says so
    r = purge_person(gallery, "kit", interface="test")
    assert r == {"deleted": "kit", "samples": 1, "negatives": 1}
    with open_backend(gallery.cfg.gallery) as store:
        assert store.negative_counts() == {}
        log = [(e.interface, e.action, e.subject) for e in store.audit_log()]
    assert log[:2] == [("test", "person.delete", "kit"), ("cli", "negative.add", "kit")]
    # before that, the fixture's three enrollments through the service (interface cli)
    assert log[2:] == [("cli", "samples.add", n) for n in ("kit", "biden", "obama")]
    assert not gallery.store.has_person("kit")
