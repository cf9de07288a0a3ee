"""The enrollment gate on the stranger paths: naming or merging a group of unknown sightings
keeps only crops that pass the floors and the check's rule, and says what it left out."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facerec.align import align
from facerec.cli import run
from facerec.gallery.backend import open_backend
from facerec.imageio import read_image
from facerec.serve.app import create_app
from facerec.unknowns import encode_jpeg

EX = "face_recognition_examples"
TOKEN = "gate-token-0123456789-abcdefghij"
H = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(crop: np.ndarray, px: int = 17) -> np.ndarray:
    """What alignment makes of a face ``px`` pixels wide: the crop size, without the detail."""
    small = cv2.resize(crop, (px, px), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def add_sightings(analyzer, store, paths: list[Path], shrink: bool) -> None:
    """One sighting per photo (its largest face); with ``shrink`` its kept crop is the tiny
    face's (the group is formed from the sharp vector, so the test is about the crops)."""
    for i, p in enumerate(paths):
        img = read_image(p)
        det = analyzer.detector(img).largest()
        crop = align(img, det.landmarks).images[0]
        emb = analyzer.embed_faces(crop[None])
        if shrink:
            crop = tiny(crop)
        store.add_sighting("door", 100 + i + 10 * shrink, 1_700_000_000.0 + 60 * i, 1_700_000_005.0 + 60 * i,
                           str(analyzer.embedder.key), emb.vectors[0], [(encode_jpeg(crop), float(det.score[0]))])


def candidate_ids(client: TestClient) -> list[dict]:
    return client.get("/api/unknowns", headers=H).json()["candidates"]


def test_a_group_of_tiny_faces_is_refused_and_a_mixed_one_is_counted(service, analyzer, photo):
    obama = [photo(f"{EX}/obama/{f}") for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    with open_backend(service.cfg.gallery) as store:
        add_sightings(analyzer, store, obama, shrink=True)
    with TestClient(create_app(service.cfg, service, token=TOKEN)) as c:
        (cand,) = candidate_ids(c)
        r = c.post(f"/api/unknowns/{cand['id']}/name", json={"name": "Corridor Man"}, headers=H)
        assert r.status_code == 400 and "none of its 3 crops is usable" in r.json()["detail"], r.text
        assert service.store.people() == []  # nothing enrolled, the sightings are still there
        assert candidate_ids(c)[0]["sightings"] == 3
        with open_backend(service.cfg.gallery) as store:
            add_sightings(analyzer, store, obama[:2], shrink=False)
        (cand,) = candidate_ids(c)
        r = c.post(f"/api/unknowns/{cand['id']}/name", json={"name": "Barack Obama"}, headers=H)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["added"] == 2 and body["summary"] == "5 crops: 2 enrolled, 3 too small or blurry", body
        floor = service.quality_floor[0]
        assert all(s.quality >= floor for s in service.store.samples("Barack Obama"))


def test_cli_name_says_what_it_left_out(service, analyzer, photo, capsys):
    kit = [photo(f"{EX}/kit_harington/{f}") for f in ("john1.jpeg", "john2.jpeg")]
    with open_backend(service.cfg.gallery) as store:
        add_sightings(analyzer, store, kit, shrink=False)
        add_sightings(analyzer, store, kit[:1], shrink=True)
    d = ["--data-dir", service.cfg.gallery.data_dir]
    assert run(["unknowns", "list", "--json", *d]) == 0
    cands = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    code = run(["unknowns", "name", str(cands[0]["id"]), "Kit", *d])
    out = capsys.readouterr().out
    assert code == 0 and "3 crops: 2 enrolled, 1 too small or blurry" in out, out


def test_folder_sync_applies_the_quality_floor(service, analyzer, photo):
    """Crops dropped into preprocessed/<Person>/ (facerec embed) meet the enroll add floor."""
    img = read_image(photo(f"{EX}/obama/obama.jpg"))
    crop = align(img, analyzer.detector(img).largest().landmarks).images[0]
    folder = service.data_dir / "preprocessed" / "Obama"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "sharp.png"), crop)
    cv2.imwrite(str(folder / "tiny.png"), tiny(crop))
    sync, embedded = service.embed(progress=False)
    assert sync.done == ["preprocessed/Obama/sharp.png"] and len(embedded.done) == 1
    (item, why), = sync.skipped
    assert item == "preprocessed/Obama/tiny.png" and why.startswith("quality too low: sharpness"), why
    assert [s.crop_path.endswith("sharp.png") for s in service.store.samples("Obama")] == [True]
