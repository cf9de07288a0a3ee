"""Unknown people over the HTTP API and on the page (real models, real Chromium).

Sightings are made from real photos the way the daemon makes them from tracks: the
largest face, aligned, embedded, stored with its crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facerec.align import align
from facerec.gallery.backend import open_backend
from facerec.imageio import read_image
from facerec.serve.app import create_app
from facerec.unknowns import encode_jpeg
from test_serve_e2e import TOKEN, log_in, page, screenshots, serving  # noqa: F401  (page: the Chromium fixture)

EX = "face_recognition_examples"
H = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def add_sightings(analyzer, store, camera: str, paths: list[Path]) -> list[int]:
    """One sighting per photo (its largest face), as a finished unknown track would be."""
    ids = []
    for i, p in enumerate(paths):
        img = read_image(p)
        det = analyzer.detector(img).largest()
        faces = align(img, det.landmarks)
        emb = analyzer.embed_faces(faces)
        ids.append(store.add_sighting(camera, 100 + i, 1_700_000_000.0 + 60 * i, 1_700_000_005.0 + 60 * i,
                                      str(analyzer.embedder.key), emb.vectors[0],
                                      [(encode_jpeg(faces.images[0]), float(det.score[0]))]))
    return ids


@pytest.fixture
def seeded(service, analyzer, photo):
    """Kit enrolled from one photo; unknown sightings of Obama (3), Kit (2) and Alex (3)."""
    assert service.enroll_image("Kit", read_image(photo(f"{EX}/kit_harington/john1.jpeg"))).ok
    with open_backend(service.cfg.gallery) as store:
        add_sightings(analyzer, store, "door", [photo(f"{EX}/obama/{f}") for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")])
        add_sightings(analyzer, store, "yard", [photo(f"{EX}/kit_harington/{f}") for f in ("john2.jpeg", "test_johnsnow_test1.jpg")])
        add_sightings(analyzer, store, "door", [photo(f"{EX}/alex_lacamoire/{f}") for f in
                                                ("alex-lacamoire.png", "test_alex_lacamoire1.jpg", "train_img1.jpg")])
    return service


def test_unknowns_api(seeded):
    with TestClient(create_app(seeded.cfg, seeded, token=TOKEN)) as c:
        assert c.get("/api/unknowns").status_code == 401
        d = c.get("/api/unknowns", headers=H).json()
        cands = d["candidates"]
        # three people, the most sighted first; each card has its crops and cameras
        assert [x["sightings"] for x in cands] == [3, 3, 2] and d["stats"]["sightings"] == 8
        assert cands[2]["cameras"] == ["yard"]
        obama, alex, kit = cands
        assert obama["first_seen"] < obama["last_seen"]
        r = c.get(obama["crop_urls"][0], headers=H)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
        assert c.get(f"/api/unknowns/{obama['id']}", headers=H).json()["sightings"] == 3
        assert c.get("/api/unknowns/99999", headers=H).status_code == 404
        # name: a taken name is refused, a new one enrolls every crop at once
        assert c.post(f"/api/unknowns/{obama['id']}/name", json={"name": "Kit"}, headers=H).status_code == 409
        r = c.post(f"/api/unknowns/{obama['id']}/name", json={"name": "Barack Obama"}, headers=H)
        assert r.status_code == 201 and r.json()["added"] == 3
        people = {p["name"]: p["sample_count"] for p in c.get("/api/people", headers=H).json()["people"]}
        assert people == {"Barack Obama": 3, "Kit": 1}
        # merge into nobody is refused; into Kit adds the two crops
        assert c.post(f"/api/unknowns/{kit['id']}/merge", json={"into": "Nobody"}, headers=H).status_code == 404
        assert c.post(f"/api/unknowns/{kit['id']}/merge", json={"into": "Kit"}, headers=H).json()["added"] == 2
        # dismiss deletes the sightings and their crops
        assert c.delete(f"/api/unknowns/{alex['id']}", headers=H).json()["deleted"] == 3
        assert c.get(alex["crop_urls"][0], headers=H).status_code == 404
        d = c.get("/api/unknowns?all=true", headers=H).json()
        assert d["candidates"] == [] and d["stats"]["sightings"] == 0
        # other gallery changes are logged too; deleting a person reports their negatives
        assert c.patch("/api/people/Kit", json={"name": "Kit H"}, headers=H).status_code == 200
        assert c.delete("/api/people/Kit H", headers=H).json() == {"deleted": "Kit H", "samples": 3, "negatives": 0}
        # every change is in the audit log, with the interface it came through
        entries = c.get("/api/audit", headers=H).json()["entries"]
        assert [(e["interface"], e["action"], e["subject"]) for e in entries if e["action"] != "samples.add"] == [
            ("api", "person.delete", "Kit H"), ("api", "person.rename", "Kit H"),
            ("api", "unknown.dismiss", f"candidate {alex['id']}"), ("api", "unknown.merge", "Kit"),
            ("api", "unknown.name", "Barack Obama")]
        assert entries[1]["detail"] == {"previous": "Kit", "negatives": 0}
        # each crop enrolled from a candidate is a change of its own, logged in its transaction
        added = [(e["interface"], e["subject"]) for e in entries if e["action"] == "samples.add"]
        assert added.count(("api", "Barack Obama")) == 3 and added.count(("api", "Kit")) == 2
        assert ("cli", "Kit") in added


def test_unknown_people_view_in_chromium(seeded, analyzer, page, photo, tmp_path):
    from playwright.sync_api import expect

    shots, shot = screenshots(page, tmp_path)
    with open_backend(seeded.cfg.gallery) as store:  # a stranger seen once: no group of their own
        add_sightings(analyzer, store, "gate", [photo(f"{EX}/biden/biden.jpg")])
    with serving(create_app(seeded.cfg, seeded, token=TOKEN)) as url:
        log_in(page, url)
        cards = page.get_by_test_id("unknown")
        expect(cards).to_have_count(3)
        expect(page.get_by_test_id("unknowns-count")).to_have_text("(3)")
        page.get_by_test_id("unknowns-all").check()  # seen-once strangers on request
        expect(cards).to_have_count(4)
        expect(page.locator('[data-testid="unknown"]', has_text="gate")).to_contain_text("1 sighting")
        page.get_by_test_id("unknowns-all").uncheck()
        expect(cards).to_have_count(3)
        # "Add to person" starts with nobody chosen: a click alone merges nothing
        for i in range(3):
            expect(cards.nth(i).get_by_test_id("unknown-merge-select")).to_have_value("")
        cards.nth(0).get_by_test_id("unknown-merge").click()
        expect(cards).to_have_count(3)
        first = cards.nth(0)
        expect(first.get_by_test_id("unknown-facts")).to_contain_text("3 sightings")
        expect(first.get_by_test_id("unknown-facts")).to_contain_text("door")
        expect(first.get_by_test_id("unknown-crop")).to_have_count(3)
        # every crop image was fetched with the token and decoded
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=unknown-crop]')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")
        page.locator("#unknowns").scroll_into_view_if_needed()
        shot("unknowns")

        first.get_by_test_id("unknown-name-input").fill("Barack Obama")
        first.get_by_test_id("unknown-name").click()
        expect(page.get_by_test_id("message")).to_contain_text("Enrolled Barack Obama: 3 crops: 3 enrolled")
        expect(page.locator('[data-testid="person"][data-name="Barack Obama"]')).to_be_visible()
        expect(cards).to_have_count(2)
        shot("named")

        kit = page.locator('[data-testid="unknown"]', has_text="yard")
        kit.get_by_test_id("unknown-merge-select").select_option("Kit")
        kit.get_by_test_id("unknown-merge").click()
        expect(page.get_by_test_id("message")).to_contain_text("Added to Kit: 2 crops: 2 enrolled")
        expect(cards).to_have_count(1)
        expect(page.locator('[data-testid="person"][data-name="Kit"]')).to_contain_text("3 samples")
        shot("merged")

        # "not X" on an identified photo: Alex is closest to Obama among the enrolled
        page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EX}/alex_lacamoire/test_alex_lacamoire1.jpg")))
        face = page.get_by_test_id("face").first
        face.get_by_test_id("not-person").click()
        expect(page.get_by_test_id("message")).to_contain_text("kept as a wrong match of")
        shot("not-x")

        cards.nth(0).get_by_test_id("unknown-dismiss").click()
        expect(page.get_by_test_id("message")).to_contain_text("3 sightings deleted")
        expect(page.get_by_test_id("unknowns-empty")).to_be_visible()
        shot("dismissed")
    assert len(shots) == 5 and all(p.stat().st_size > 10_000 for p in shots)
    print("screenshots:", *shots, sep="\n  ")
    with open_backend(seeded.cfg.gallery) as store:
        # the seen-once stranger stays until dismissed on its own
        assert store.unknowns_stats()["sightings"] == 1 and sum(store.negative_counts().values()) == 1
        assert [e.action for e in store.audit_log() if e.action != "samples.add"] == [
            "unknown.dismiss", "negative.add", "unknown.merge", "unknown.name"]
