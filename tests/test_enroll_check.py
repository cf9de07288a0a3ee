"""``facerec enroll check`` and the enrollment gate on real LFW photos with injected wrong
photos, on both gallery backends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facerec.config import load_config
from facerec.gallery.backend import open_backend
from facerec.gallery.service import GalleryService
from facerec.imageio import read_image

from test_serve_e2e import page  # noqa: F401  (the Chromium page fixture)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PEOPLE = 24  # enough people for the gallery's mean face (not_a_face needs 20)


def lfw_people(data_dir: Path) -> tuple[list[tuple[str, list[Path]]], list[Path]]:
    """People with at least six photos (name, photos) and one photo each of single-photo people."""
    root = data_dir / "lfw"
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    many = [(d.name, sorted(d.iterdir())) for d in dirs if len(list(d.iterdir())) >= 6]
    single = [sorted(d.iterdir())[0] for d in dirs if len(list(d.iterdir())) == 1]
    return many[:: max(1, len(many) // PEOPLE)][:PEOPLE], single[::97][:2]


@pytest.fixture(scope="module")
def built(tmp_path_factory, analyzer, data_dir: Path):
    """A SQLite gallery of 24 people x 3 photos enrolled with --force, where four people
    also got a wrong photo (two of enrolled people, two of strangers), a dog under a name
    and one photo enrolled twice under two names."""
    root = tmp_path_factory.mktemp("check")
    cfg = load_config(None, {"gallery.data_dir": str(root / "gallery")})
    people, strangers = lfw_people(data_dir)
    wrong: set[str] = set()
    with GalleryService(cfg, analyzer) as s:
        spare: dict[str, list[Path]] = {}
        for name, photos in people:  # the first three photos that pass the quality floor
            done = 0
            for i, p in enumerate(photos):
                done += s.enroll_image(name, read_image(p), source_path=str(p)).ok
                if done == 3:
                    spare[name] = photos[i + 1:]
                    break
        victims = [n for n, _ in people[-4:]]
        injected = [spare[people[0][0]][0], spare[people[1][0]][0], *strangers]
        for victim, p in zip(victims, injected):
            r = s.enroll_image(victim, read_image(p), source_path=str(p))
            assert r.ok, r.reason
            wrong.add(str(p))
        dog = data_dir / "detection/unannotated/dlib_dogs_no_human_faces.jpg"
        r = s.enroll_image("Rex", read_image(dog), source_path=str(dog))
        assert r.ok and r.check == "not_a_face", (r.check, r.warnings)
        twice = Path(s.store.samples(people[2][0])[0].source_path or "")
        assert s.enroll_image(people[3][0], read_image(twice), source_path=str(twice)).ok
    return cfg, wrong, str(dog), str(twice), spare


@pytest.fixture(params=["sqlite", "postgres"])
def gallery(request, built, analyzer, tmp_path):
    """A copy of the built gallery as a service on each backend."""
    cfg, *rest = built
    if request.param == "sqlite":  # a copy, so a test that enrolls leaves the module's gallery alone
        shutil.copytree(cfg.gallery.data_dir, tmp_path / "copy")
        with GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "copy")}), analyzer) as s:
            yield s, *rest
        return
    pg_cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "pg"), "gallery.backend": "postgres",
                                "gallery.dsn": request.getfixturevalue("pg_dsn")})
    src = open_backend(cfg.gallery, readonly=True)
    dst = open_backend(pg_cfg.gallery)
    dst.add_dumped(*src.dump())
    src.close()
    with GalleryService(pg_cfg, analyzer, store=dst) as s:
        yield s, *rest


def test_check_finds_the_wrong_photos(gallery):
    s, wrong, dog, twice, _ = gallery
    report = s.check()
    assert report.people == PEOPLE + 1 and report.samples == PEOPLE * 3 + 4 + 2
    by_path: dict[str | None, list] = {}
    for f in report.flagged:
        by_path.setdefault(f.source_path, []).append(f)
    caught = {p for p in wrong if p in by_path}
    assert caught == wrong, [f.describe() for f in report.flagged]
    assert all(f.reason in ("outlier", "closer_to_other") for p in wrong for f in by_path[p])
    # the two wrong photos of enrolled people name the person they show
    assert sum(f.reason == "closer_to_other" and f.closest_person is not None for p in wrong for f in by_path[p]) >= 2
    # the dog entered with --force, as not_a_face; the check has only the stored crop (its
    # detector score is not stored), whose re-detection scores like a face: not flagged as
    # outlier or closer_to_other, the checks a single sample cannot have
    assert {f.reason for f in by_path.get(dog, [])} <= {"not_a_face", "low_quality"}
    # the same photo under a second name: the copy is flagged (closer to the first owner
    # outranks duplicate), and the pair is reported as duplicates
    copies = by_path[twice]
    assert {f.reason for f in copies} <= {"duplicate", "closer_to_other"} and len(copies) >= 1
    assert any(f.reason == "duplicate" and f.score >= 0.999 for f in copies) or len(copies) == 2
    good = [f for f in report.flagged if f.source_path not in wrong | {dog, str(twice)}]
    assert len(good) <= 1, [f.describe() for f in good]  # <= 2 % of the 72 good photos


def test_single_sample_person_only_gets_checks_that_make_sense(gallery):
    s, _, dog, _, _ = gallery
    rex = [f for f in s.check().flagged if f.person == "Rex"]
    assert {f.reason for f in rex} <= {"not_a_face", "low_quality"}  # no other sample of Rex to compare with


@pytest.mark.parametrize("block_floats", [1 << 24, 256])  # one block; 16-sample blocks and 2-pair chunks
def test_one_pass_scan_equals_all_pairs(gallery, block_floats, monkeypatch):
    """The template pass with the triangle-inequality bound finds exactly what comparing
    every pair of samples finds: the nearest other person and, per sample, the most similar
    sample of another person at or above the duplicate threshold, down to thresholds where
    most people become candidates."""
    import numpy as np

    from facerec.gallery import check

    monkeypatch.setattr(check, "BLOCK_FLOATS", block_floats)
    s, *_ = gallery
    _, names, vec, _ = s.store.vectors(s.key)
    vec = np.asarray(vec, np.float32)
    prof = check.Profile(names, vec)
    same = prof.inverse[:, None] == prof.inverse[None, :]
    pairs = np.where(same, -np.inf, vec @ vec.T)
    people = np.where(prof.inverse[:, None] == np.arange(len(prof.people))[None, :], -np.inf, vec @ prof.templates.T)
    for threshold in (0.98, 0.6, 0.4, 0.2, -1.0):
        scan = check._scan(prof, vec, threshold)
        assert scan.other.tolist() == np.argmax(people, axis=1).tolist()
        np.testing.assert_allclose(scan.other_sim, people.max(1), atol=1e-5)
        best = np.argmax(pairs, axis=1)
        hit = pairs[np.arange(len(vec)), best] >= threshold
        assert scan.dup.tolist() == np.where(hit, best, -1).tolist(), threshold
        np.testing.assert_allclose(scan.dup_sim[hit], pairs.max(1)[hit], atol=1e-5)
    assert (check._scan(prof, vec, 0.98).dup >= 0).sum() >= 2  # the photo enrolled under two names


def test_gate_refuses_what_check_would_flag(gallery, data_dir: Path):
    s, wrong, dog, _, spare = gallery
    people, strangers = lfw_people(data_dir)
    # a spare photo of person 0 under person 5's name: closer to person 0
    p = spare[people[0][0]][1]
    r = s.enroll_image(people[5][0], read_image(p), source_path=str(p), refuse_conflicts=True)
    assert r.status == "failed" and r.check == "closer_to_other" and "--force" in r.reason, r.reason
    # (the dog photo was judged not_a_face when the fixture added it with --force)
    # a good fourth photo of their own enters
    p = spare[people[6][0]][0]
    r = s.enroll_image(people[6][0], read_image(p), source_path=str(p), refuse_conflicts=True)
    assert r.ok and r.check is None, r.reason


def test_cli_json_contract(built, tmp_path):
    cfg, wrong, dog, twice, _ = built
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "facerec", "enroll", "check", "--json",
                          "--data-dir", cfg.gallery.data_dir], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(doc) == {"people", "samples", "flagged"} and doc["people"] == PEOPLE + 1
    for f in doc["flagged"]:
        assert set(f) == {"person", "sample_id", "source_path", "reason", "closest_person", "score"}
        assert isinstance(f["sample_id"], int) and isinstance(f["score"], float)
    assert wrong <= {f["source_path"] for f in doc["flagged"]}
    text = subprocess.run([sys.executable, "-m", "facerec", "enroll", "check", "--data-dir", cfg.gallery.data_dir],
                          capture_output=True, text=True, env=env, timeout=600)
    assert text.returncode == 0 and f"{len(doc['flagged'])} flagged" in text.stdout
    empty = subprocess.run([sys.executable, "-m", "facerec", "enroll", "check", "--json",
                            "--data-dir", str(tmp_path / "none")], capture_output=True, text=True, env=env, timeout=600)
    # no gallery at all is a user error with one line saying what to do, not an empty report
    assert empty.returncode == 2 and "no gallery at" in empty.stderr and "Traceback" not in empty.stderr


def test_http_check_and_moving_a_flagged_sample(built, analyzer, tmp_path):
    from fastapi.testclient import TestClient

    from facerec.serve.app import create_app

    cfg, wrong, *_ = built
    shutil.copytree(cfg.gallery.data_dir, tmp_path / "copy")
    token = "check-token-0123456789abcdef"
    auth = {"Authorization": f"Bearer {token}"}
    with GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "copy")}), analyzer) as s, \
            TestClient(create_app(s.cfg, s, token=token)) as client:
        assert client.get("/api/check").status_code == 401
        doc = client.get("/api/check", headers=auth).json()
        assert doc == s.check().to_json()
        moved = next(f for f in doc["flagged"] if f["source_path"] in wrong and f["reason"] == "closer_to_other")
        page = client.get(f"/api/people/{moved['person']}/check", headers=auth).json()
        flags = {x["id"]: x["flag"] for x in page["samples"]}
        assert flags[moved["sample_id"]]["reason"] == "closer_to_other" and len(flags) == 4
        assert sum(f is None for f in flags.values()) >= 2
        assert client.get("/api/people/nobody/check", headers=auth).status_code == 404
        # one click on the page: give the sample to the person it resembles; the flag goes
        r = client.post(f"/api/samples/{moved['sample_id']}/move", headers=auth,
                        json={"person": moved["closest_person"]})
        assert r.status_code == 200, r.text
        after = client.get("/api/check", headers=auth).json()
        assert moved["sample_id"] not in {f["sample_id"] for f in after["flagged"]}


def test_person_page_marks_and_moves_a_flagged_sample(built, analyzer, tmp_path, page):
    """In Chromium: the person page lists every sample, marks the wrong one with its reason,
    and one click moves it to the person it resembles."""
    from playwright.sync_api import expect
    from test_serve_e2e import TOKEN, log_in, serving

    from facerec.serve.app import create_app

    cfg, wrong, *_ = built
    shutil.copytree(cfg.gallery.data_dir, tmp_path / "copy")
    with GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "copy")}), analyzer) as s:
        flag = next(f for f in s.check().flagged if f.source_path in wrong and f.reason == "closer_to_other")
        with serving(create_app(s.cfg, s, token=TOKEN)) as url:
            log_in(page, url)
            card = page.locator(f'[data-testid="person"][data-name="{flag.person}"]')
            card.get_by_test_id("check-open").click()
            person_page = card.get_by_test_id("person-page")
            expect(person_page.get_by_test_id("check-sample")).to_have_count(4)
            marked = person_page.locator(f'[data-testid="check-sample"][data-sample="{flag.sample_id}"]')
            expect(marked.get_by_test_id("check-flag")).to_contain_text("closer_to_other")
            expect(marked.get_by_test_id("check-flag")).to_contain_text(str(flag.closest_person))
            page.screenshot(path=str(tmp_path / "person-page.png"), full_page=True)
            marked.get_by_test_id("check-move").click()
            expect(card.get_by_test_id("person-page").get_by_test_id("check-sample")).to_have_count(3)
            expect(page.get_by_test_id("message")).to_contain_text("Moving sample")
        assert s.store.sample(flag.sample_id).person == flag.closest_person


def test_an_imported_archive_keeps_everything_and_check_flags_it(built, analyzer, tmp_path):
    cfg, wrong, *_ = built
    with GalleryService(cfg, analyzer) as s:
        s.export_archive(tmp_path / "g.zip")
        before = s.store.count()
    with GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "new")}), analyzer) as s:
        assert s.import_archive(tmp_path / "g.zip") == before  # nothing gated away
        assert wrong <= {f.source_path for f in s.check().flagged}


def test_own_photos_enter_after_one_went_to_someone_else_first(gallery, data_dir: Path):
    """The order trap of the old 'looks like' test: X's photo was forced into another person
    before X was enrolled; X's own photos must still enter without --force."""
    s, *_ = gallery
    taken = {p.name for p in (data_dir / "lfw").iterdir() if s.store.has_person(p.name)}
    x = next(d for d in sorted((data_dir / "lfw").iterdir())
             if d.is_dir() and d.name not in taken and len(list(d.iterdir())) >= 5)
    photos = sorted(x.iterdir())
    people = sorted(taken)
    assert s.enroll_image(people[0], read_image(photos[0]), source_path=str(photos[0])).ok  # --force
    results = [s.enroll_image(x.name, read_image(p), source_path=str(p), refuse_conflicts=True) for p in photos[1:]]
    refused = [r.reason for r in results if r.status == "failed" and "--force" in r.reason]
    assert not refused and sum(r.ok for r in results) >= 2, [r.reason for r in results]
