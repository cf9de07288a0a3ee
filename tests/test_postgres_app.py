"""The CLI and the web app on the PostgreSQL backend with the real models and a real server:
enrollment, ``facerec db copy`` both ways (lossless), ``db upgrade`` / ``db check``, and
HTTP 503 with nothing half-written while the database is down."""

from __future__ import annotations

from pathlib import Path

import time

import pytest
import yaml
from fastapi.testclient import TestClient

from facerec.cli import run
from facerec.config import load_config
from facerec.gallery.backend import open_backend
from facerec.gallery.service import GalleryService
from facerec.serve.app import create_app
from facerec.types import EmbedderKey
from conftest import MODEL_FLAGS

TOKEN = "test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config_file(tmp_path: Path, dsn: str) -> Path:
    """A partial config with only the backend keys (valid by the defaults of the rest)."""
    p = tmp_path / "pg.yaml"
    p.write_text(yaml.safe_dump({"gallery": {"backend": "postgres", "dsn": dsn}}))
    return p


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def state(cfg_gallery) -> tuple:
    b = open_backend(cfg_gallery, readonly=True)
    try:
        people = [(p.name, p.samples) for p in b.people()]
        crops = sorted(b.crop_png(s.id) for s in b.samples())
        vecs = {k: b.vectors(EmbedderKey.parse(k)) for k in b.embedder_keys()}
        return people, crops, {k: (v[1], v[2].round(6).tolist(), v[3].tolist()) for k, v in vecs.items()}
    finally:
        b.close()


def test_cli_enroll_and_db_copy_both_ways(tmp_path: Path, capsys, photo, pg_server, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data_dir defaults to ./data_recognition: it must stay absent
    dsn = pg_server.create_db()
    cfg_path = config_file(tmp_path, dsn)
    fr = photo("face_recognition_examples")
    code, out, err = cli(capsys, "db", "upgrade", "--config", str(cfg_path))
    assert code == 0 and "schema 0 -> 2" in out, err
    code, out, _ = cli(capsys, "db", "upgrade", "--config", str(cfg_path))
    assert code == 0 and "up to date" in out
    code, out, err = cli(capsys, "enroll", "add", "Barack Obama", str(fr / "obama"), "--no-progress",
                         "--config", str(cfg_path), *MODEL_FLAGS)
    assert code == 0 and "added" in out, err
    code, out, err = cli(capsys, "enroll", "add", "biden", str(fr / "biden"), "--no-progress",
                         "--config", str(cfg_path), *MODEL_FLAGS)
    assert code == 0, err
    code, out, _ = cli(capsys, "enroll", "rename", "biden", "Joe Biden", "--config", str(cfg_path))
    assert code == 0
    code, out, _ = cli(capsys, "identify", str(fr / "obama" / "obama.jpg"), "--config", str(cfg_path), *MODEL_FLAGS)
    assert code == 0 and "Barack Obama" in out
    assert not (tmp_path / "data_recognition").exists()  # nothing of the gallery under the data dir

    cfg = load_config(cfg_path)
    before = state(cfg.gallery)
    assert [n for n, _ in before[0]] == ["Barack Obama", "Joe Biden"] and before[2]
    # postgres -> sqlite -> another postgres database: the same people, crops, vectors
    lite = tmp_path / "lite"
    code, out, err = cli(capsys, "db", "copy", "--config", str(cfg_path), "--to", str(lite))
    assert code == 0 and "copied 2 people" in out, err
    dsn2 = pg_server.create_db()
    code, out, err = cli(capsys, "db", "copy", "--from", str(lite), "--to", dsn2)
    assert code == 0, err
    lite_cfg = cfg.gallery.model_copy(update={"backend": "sqlite", "data_dir": str(lite)})
    assert state(lite_cfg) == before
    assert state(cfg.gallery.model_copy(update={"dsn": dsn2})) == before
    code, out, _ = cli(capsys, "db", "check", "--config", str(config_file(tmp_path, dsn2)))
    assert code == 0 and "no problem found" in out
    # the destination must be empty: nothing is merged by accident
    code, out, err = cli(capsys, "db", "copy", "--from", str(lite), "--to", dsn2)
    assert code != 0 and "not empty" in err
    # a gallery copied into SQLite works with the SQLite CLI
    code, out, _ = cli(capsys, "identify", str(fr / "biden" / "biden.jpg"), "--data-dir", str(lite), *MODEL_FLAGS)
    assert code == 0 and "Joe Biden" in out


def test_web_app_on_postgres_and_503_while_it_is_down(analyzer, photo, tmp_path: Path):
    from pg_server import PgServer

    server = PgServer().init().start()
    try:
        dsn = server.create_db("gal")
        cfg = load_config(None, {"gallery.backend": "postgres", "gallery.dsn": dsn,
                                 "gallery.data_dir": str(tmp_path / "unused")})
        svc = GalleryService(cfg, analyzer=analyzer)
        fr = photo("face_recognition_examples")
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (fr / "obama").iterdir()]
        with TestClient(create_app(cfg, svc, token=TOKEN), raise_server_exceptions=False) as c:
            r = c.post("/api/people", data={"name": "Obama"}, files=files, headers=AUTH)
            assert r.status_code == 201, r.text
            sid = r.json()["added"][0]["sample_id"]
            img = c.get(f"/api/samples/{sid}/image", headers=AUTH)
            assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
            r = c.get("/api/export", headers=AUTH)
            assert r.status_code == 200 and r.content[:2] == b"PK"
            before = c.get("/api/people", headers=AUTH).json()
            server.stop("immediate")
            for call in (lambda: c.get("/api/people", headers=AUTH),
                         lambda: c.patch("/api/people/Obama", json={"name": "Barack"}, headers=AUTH),
                         lambda: c.delete("/api/people/Obama", headers=AUTH),
                         lambda: c.post("/api/people/Obama/samples", files=files[:1], headers=AUTH)):
                r = call()
                assert r.status_code == 503, r.text
                assert "cannot be reached" in r.json()["detail"] and "nothing was changed" in r.json()["detail"]
            server.start()
            deadline = time.monotonic() + 30
            while True:
                r = c.get("/api/people", headers=AUTH)
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
            assert r.status_code == 200 and r.json()["people"] == before["people"]  # nothing half-written
            r = c.patch("/api/people/Obama", json={"name": "Barack"}, headers=AUTH)
            assert r.status_code == 200
        svc.close()
        assert not (tmp_path / "unused").exists()
    finally:
        server.cleanup()
