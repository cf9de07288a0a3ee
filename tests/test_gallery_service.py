"""GalleryService on real photos and models: enrollment checks, identification accuracy,
(re-)embedding, crash safety of ``embed``, the seed's feature list."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.align import align
from facerec.config import load_config
from facerec.errors import GalleryError
from facerec.gallery.faces import faces_of
from facerec.gallery.service import GalleryService, detect_faces
from facerec.gallery.store import GalleryStore
from facerec.imageio import list_images, read_image

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_service(root: Path, analyzer, **overrides) -> GalleryService:
    cfg = load_config(None, {"gallery.data_dir": str(root), **overrides})
    return GalleryService(cfg, analyzer)


@pytest.fixture
def service(tmp_path: Path, analyzer):
    with make_service(tmp_path / "gallery", analyzer) as s:
        yield s


def people_photos(data_dir: Path, setname: str) -> dict[str, list[Path]]:
    root = data_dir / "identities" / setname
    return {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith("_")}


def largest(faces: list[dict]) -> dict:
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


# ------------------------------------------------------------------ acceptance on named sets


@pytest.mark.parametrize("setname, people, bar", [
    # measured with yolov5n-0.5-face + MobileFaceNet (torch): 17/17, 49/50, 4/4, 86/88, 48/48
    ("face_recognition_examples", 5, 0.94),
    ("dlib_johns", 5, 0.95),
    ("facenet_pytorch_test_images", 5, 1.0),
    ("five_celebrity_dataset", 5, 0.95),
    ("deepface_tests", 13, 0.97),
])
def test_enroll_one_identify_the_rest(tmp_path, analyzer, data_dir, setname, people, bar):
    """Enroll the first usable photo per person, identify every other photo (largest face)."""
    svc = make_service(tmp_path / setname, analyzer)
    probes = []
    for person, files in people_photos(data_dir, setname).items():
        for i, f in enumerate(files):
            r = svc.enroll_image(person, read_image(f), source_path=str(f))
            if r.ok:
                probes += [(person, g) for g in files[i + 1 :]]
                break
            probes.append((person, f))
    assert len(svc.store.people()) == people
    correct, genuine, stranger = 0, [], []
    for person, f in probes:
        faces = svc.identify_image(read_image(f))
        if not faces:  # a miss of the detector counts as a wrong answer
            continue
        face = largest(faces)
        top = dict(face["top"])
        assert [s for _, s in face["top"]] == sorted(top.values(), reverse=True)
        correct += face["top"][0][0] == person
        genuine.append(top[person])
        stranger.append(max(s for n, s in face["top"] if n != person))
    acc = correct / len(probes)
    print(f"\n{setname}: top-1 {correct}/{len(probes)} = {acc:.3f}; lowest genuine {min(genuine):.3f}, "
          f"highest stranger {max(stranger):.3f}, threshold {svc.threshold:.2f}")
    assert acc >= bar
    svc.close()


def test_tight_crop_needs_padding(analyzer, photo):
    """five_celebrity crops are tight: the padded retry finds faces the plain detector misses."""
    folder = photo("five_celebrity_dataset/ben_afflek")
    missed = found = 0
    for f in list_images(folder)[:6]:
        img = read_image(f)
        if not len(analyzer.detector(img)):
            missed += 1
            found += len(detect_faces(analyzer.detector, img, 0.5)) > 0
    assert missed >= 1 and found == missed


# ------------------------------------------------------------------ enrollment checks


def test_empty_gallery_identifies_unknown(service, photo):
    faces = service.identify_image(read_image(photo("face_recognition_examples/_multi/two_people.jpg")))
    assert len(faces) == 2
    assert all(f["name"] is None and f["top"] == [] for f in faces)


def test_duplicate_and_better_match_warnings(service, photo):
    obama = photo("face_recognition_examples/obama")
    first = service.enroll_paths("obama", [obama / "obama-720p.jpg"])
    assert len(first.done) == 1 and first.warnings == []
    # the same photo at another resolution: a different file, the same face
    r = service.enroll_image("obama", read_image(obama / "obama-1080p.jpg"), source_path="obama-1080p.jpg")
    assert r.ok and any("near-duplicate" in w for w in r.warnings), r.warnings
    # the very same file again: reported as already enrolled, nothing added
    again = service.enroll_paths("obama", [obama / "obama-720p.jpg"])
    assert again.unchanged == [str(obama / "obama-720p.jpg")] and not again.done
    assert len(service.store.samples("obama")) == 2
    assert service.enroll_image("biden", read_image(photo("face_recognition_examples/biden/biden.jpg"))).ok
    # Biden enrolled as Obama: he matches Biden better
    r = service.enroll_image("obama", read_image(photo("face_recognition_examples/biden/biden2.jpg")), source_path="b2")
    assert r.ok and r.check == "closer_to_other" and any("closer to 'biden'" in w for w in r.warnings), r.warnings
    # a new name for a known face
    r = service.enroll_image("Joe", read_image(photo("face_recognition_examples/biden/biden2.jpg")), source_path="b2")
    assert any("looks like the enrolled 'biden'" in w for w in r.warnings), r.warnings


def test_bad_enrollment_photos(service, photo, tmp_path):
    img = read_image(photo("face_recognition_examples/obama/obama.jpg"))
    blank = np.full((400, 400, 3), 127, np.uint8)
    r = service.enroll_image("x", blank, source_path="blank.png")
    assert r.status == "failed" and "no face found" in r.reason and "blank.png" in r.reason
    tiny = cv2.resize(img, (img.shape[1] // 16, img.shape[0] // 16), interpolation=cv2.INTER_AREA)
    r = service.enroll_image("x", tiny, source_path="tiny.jpg")
    assert r.status == "failed" and ("face too small" in r.reason or "no face" in r.reason), r.reason
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    r = service.enroll_image("x", blurred, source_path="blurred.jpg")
    assert r.status == "failed" and "quality too low" in r.reason and "blurred.jpg" in r.reason, r.reason
    assert service.store.people() == []
    with pytest.raises(GalleryError):
        service.enroll_image("../evil", img)
    # batch: unreadable and missing files are counted, nothing written outside the data dir
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    odd = tmp_path / "notes.png"
    odd.write_text("not an image")
    rep = service.enroll_paths("ok person", [bad, odd, photo("face_recognition_examples/obama/obama.jpg")])
    assert len(rep.done) == 1 and len(rep.failed) == 2
    assert all("not a readable image" in reason for _, reason in rep.failed)
    outside = {p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(service.data_dir)}
    assert outside == {bad, odd}


def test_multiple_faces_policy(tmp_path, analyzer, photo):
    img = read_image(photo("face_recognition_examples/_multi/two_people.jpg"))
    with make_service(tmp_path / "largest", analyzer) as s:
        r = s.enroll_image("a", img, source_path="two.jpg")
        assert r.ok and any("2 faces, took the largest" in w for w in r.warnings)
    with make_service(tmp_path / "skip", analyzer, **{"gallery.multiple_faces": "skip"}) as s:
        r = s.enroll_image("a", img, source_path="two.jpg")
        assert r.status == "skipped" and "multiple_faces" in r.reason and s.store.count() == 0


def test_index_follows_store_changes(service, photo):
    img = read_image(photo("face_recognition_examples/kit_harington/john1.jpeg"))
    assert len(service.index()) == 0
    service.enroll_image("kit", img)
    idx = service.index()
    assert idx.people == ["kit"] and service.index() is idx  # cached while nothing changes
    service.store.rename_person("kit", "Kit Harington")
    assert service.index().people == ["Kit Harington"]
    assert service.identify_image(img)[0]["name"] == "Kit Harington"


# ------------------------------------------------------------------ preprocessed/ sync and embedding


@pytest.fixture(scope="module")
def real_crops(detector, data_dir) -> dict[str, list[np.ndarray]]:
    """Aligned crops of two photos each of the five dlib Johns."""
    out: dict[str, list[np.ndarray]] = {}
    for person, files in people_photos(data_dir, "dlib_johns").items():
        for f in files[:2]:
            img = read_image(f)
            det = detect_faces(detector, img, 0.5)
            out.setdefault(person, []).append(align(img, det.largest().landmarks).images[0])
    return out


def write_crops(root: Path, crops: dict[str, list[np.ndarray]], copies: int = 1) -> int:
    """Write crops (and brightness/flip variants, ``copies`` per crop) as preprocessed/<P>/*.png."""
    n = 0
    for person, items in crops.items():
        d = root / "preprocessed" / person
        d.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(items):
            for k in range(copies):
                v = c[:, ::-1] if k % 2 else c
                v = np.clip(v.astype(np.int16) + (k // 2) * 3, 0, 255).astype(np.uint8)
                cv2.imwrite(str(d / f"{i:02d}_{k:02d}.png"), v)
                n += 1
    return n


def test_sync_and_embed(tmp_path, analyzer, embedder, real_crops):
    root = tmp_path / "g"
    n = write_crops(root, real_crops)
    (root / "preprocessed" / "John_Simm" / "notes.txt").write_text("x")
    cv2.imwrite(str(root / "preprocessed" / "John_Simm" / "big.png"), np.zeros((200, 200, 3), np.uint8))
    (root / "preprocessed" / ".cache").mkdir()
    with make_service(root, analyzer) as svc:
        rep = svc.sync_preprocessed()
        assert len(rep.done) == n and {r for _, r in rep.skipped} >= {"not an image (suffix .txt)"}
        assert any("not a 112x112 aligned crop" in r for _, r in rep.skipped)
        assert svc.store.count() == n and svc.store.count(svc.key) == 0
        emb = svc.embed_all(progress=False, batch_size=3)
        assert len(emb.done) == n and svc.store.count(svc.key) == n
        assert len(svc.sync_preprocessed().unchanged) == n
        assert svc.embed_all(progress=False).done == []
        # a changed crop loses its vector and gets a new one; a deleted crop is reported
        files = sorted((root / "preprocessed" / "John_Salley").glob("*.png"))
        cv2.imwrite(str(files[0]), cv2.flip(cv2.imread(str(files[0])), 1))
        files[1].unlink()
        rep = svc.sync_preprocessed()
        assert rep.done == [f"preprocessed/John_Salley/{files[0].name}"]
        assert rep.removed == [f"preprocessed/John_Salley/{files[1].name}"]
        assert svc.store.count() == n  # reported, not deleted
        assert svc.embed_all(progress=False).done != []
        svc.sync_preprocessed(prune=True)
        assert svc.store.count() == n - 1 == svc.store.count(svc.key)
        # the same photo identified against the synced gallery
        assert svc.index().search(svc.embed_faces(np.stack(real_crops["John_Savage"][:1])), 0.3)[0].name == "John_Savage"


def test_new_embedder_gets_its_own_vectors(tmp_path, analyzer, real_crops):
    from face_embedding import create_embedder
    from facerec.analyze import FaceAnalyzer

    root = tmp_path / "g"
    n = write_crops(root, real_crops)
    with make_service(root, analyzer) as torch_svc:
        torch_svc.sync_preprocessed()
        torch_svc.embed_all(progress=False)
        before = torch_svc.store.vectors(torch_svc.key)
    onnx = FaceAnalyzer(analyzer.detector, create_embedder("mobilefacenet", backend="onnx"))
    with make_service(root, onnx) as onnx_svc:
        assert onnx_svc.key != analyzer.embedder.key
        assert len(onnx_svc.store.missing_embeddings(onnx_svc.key)) == n
        assert len(onnx_svc.embed_all(progress=False).done) == n
        after = onnx_svc.store.vectors(analyzer.embedder.key)
        np.testing.assert_array_equal(before[2], after[2])  # the old set untouched
        ids, _, vec_onnx, _ = onnx_svc.store.vectors(onnx_svc.key)
        assert ids.tolist() == before[0].tolist()
        # the two backends of one model agree, yet are kept apart
        assert float(np.min(np.sum(vec_onnx * before[2], axis=1))) > 0.99


def test_feat_list_roundtrip(tmp_path, analyzer, real_crops):
    root = tmp_path / "g"
    n = write_crops(root, real_crops)
    with make_service(root, analyzer) as svc:
        svc.sync_preprocessed()
        svc.embed_all(progress=False)
        out = tmp_path / "feats" / "feat.list"
        assert svc.export_feat_list(out) == (n, 0)
        lines = out.read_text().splitlines()
        assert len(lines) == n and len(lines[0].split()) == 1 + 128
        assert (out.parent / "label_map.json").is_file()
        _, names, vec, _ = svc.store.vectors(svc.key)
        svc.store.delete_embeddings(svc.key)
        assert svc.import_feat_list(out) == n
        _, names2, vec2, _ = svc.store.vectors(svc.key)
        assert names2 == names
        np.testing.assert_allclose(vec2, vec, atol=1e-6)
    # a list made from other crops is refused, not misattributed
    (root / "preprocessed" / "John_Simm" / "00_00.png").unlink()
    with make_service(root, analyzer) as svc:
        with pytest.raises(GalleryError, match="lines but"):
            svc.import_feat_list(out)


# ------------------------------------------------------------------ crash safety

DRIVER = """
import sys, time, torch
torch.set_num_threads(1)
from facerec.config import load_config
from facerec.gallery.service import GalleryService
cfg = load_config(None, {"gallery.data_dir": sys.argv[1], "models.embedder": "mobilefacenet"})
svc = GalleryService(cfg)
embed = svc.embed_faces
def slow(faces):
    time.sleep(0.05)  # widen the window between commits so the kill lands mid-run
    return embed(faces)
svc.embed_faces = slow
svc.embed_all(progress=False, batch_size=4)
"""


def test_embed_killed_midway_keeps_gallery_intact(tmp_path, analyzer, real_crops):
    root = tmp_path / "g"
    n = write_crops(root, real_crops, copies=8)
    assert n >= 60
    with make_service(root, analyzer) as svc:
        svc.sync_preprocessed()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = GalleryStore(root, readonly=True)
    count = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            count = sum(watch.embedder_keys().values())
            if count >= 4:  # the first batch is committed
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
        watch.close()
    assert 4 <= count < n, f"kill landed at {count}/{n}: {proc.stderr.read().decode()[-2000:]}"
    with make_service(root, analyzer) as svc:
        assert svc.store.integrity_check() == []  # SQLite checks, foreign keys, every crop intact
        done = svc.store.count(svc.key)
        assert done % 4 == 0 and 4 <= done < n  # whole batches only
        assert svc.store.count() == n
        rep = svc.embed_all(progress=False)
        assert len(rep.done) == n - done and svc.store.count(svc.key) == n
        assert svc.store.missing_embeddings(svc.key) == []


# ------------------------------------------------------------------ one still-image path, reason codes


def test_analyze_has_the_padding_retry_of_identify(tmp_path, analyzer, photo):
    """``FaceAnalyzer.analyze`` and ``identify_image`` find the same faces with the same
    vectors; a tight crop the plain detector misses is found by both, and a photo the plain
    detector already reads gives exactly what it gave before the retry existed."""
    from facerec.analyze import FaceAnalyzer

    plain = FaceAnalyzer(analyzer.detector, analyzer.embedder, analyzer.flip, analyzer.threshold, pad_retry=0.0)
    folder = photo("five_celebrity_dataset/ben_afflek")
    tight = next(img for img in map(read_image, list_images(folder)[:6]) if not len(analyzer.detector(img)))
    assert len(plain.analyze(tight)) == 0
    with make_service(tmp_path / "g", analyzer) as svc:
        res = analyzer.analyze(tight)
        faces = svc.identify_image(tight)
        assert len(res) == len(faces) >= 1
        assert [round(float(v), 1) for v in res.detections.xyxy[0]] == faces[0]["box"]
        # the same vectors as the service's own path
        _, emb = faces_of(svc.detector, svc.embed_faces, tight, svc.cfg.gallery.pad_retry)
        assert emb is not None
        np.testing.assert_allclose(res.embeddings.vectors, emb.vectors, atol=1e-6)
    normal = read_image(photo("face_recognition_examples/obama/obama.jpg"))
    a, b = analyzer.analyze(normal), plain.analyze(normal)
    assert len(a) == len(b) == 1
    np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
    np.testing.assert_array_equal(a.embeddings.vectors, b.embeddings.vectors)
    blank = np.full((200, 200, 3), 127, np.uint8)
    empty = analyzer.analyze(blank)
    assert len(empty) == 0 and empty.embeddings.vectors.shape[0] == 0


def test_status_comes_from_the_reason_code_not_the_text(tmp_path, analyzer, photo):
    """A file name that contains ``multiple_faces`` or ``already enrolled`` does not make
    a failed photo 'skipped': the status follows the code carried beside the message."""
    obama = read_image(photo("face_recognition_examples/obama/obama.jpg"))
    blank = np.full((300, 300, 3), 127, np.uint8)
    with make_service(tmp_path / "g", analyzer, **{"gallery.multiple_faces": "skip"}) as svc:
        r = svc.enroll_image("x", blank, source_path="multiple_faces already enrolled.png")
        assert (r.status, r.code) == ("failed", "no_face") and "no face found" in r.reason
        r = svc.enroll_image("a", read_image(photo("face_recognition_examples/_multi/two_people.jpg")), source_path="two")
        assert (r.status, r.code) == ("skipped", "multiple_faces")
        assert svc.enroll_image("obama", obama, source_path="o.jpg").code is None
        r = svc.enroll_image("obama", obama, source_path="o.jpg")
        assert (r.status, r.code) == ("skipped", "already_enrolled")
        r = svc.enroll_image("barack", obama, source_path="o.jpg", refuse_conflicts=True)
        assert (r.status, r.code) == ("failed", "enrolled_for_other")
        r = svc.enroll_image("y", cv2.GaussianBlur(obama, (0, 0), 6), source_path="blurred.jpg")
        assert (r.status, r.code) == ("failed", "low_quality")
