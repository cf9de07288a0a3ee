"""Every gallery change, through the CLI or the HTTP API, leaves exactly one audit entry
naming that interface, written in the change's own transaction, on SQLite and on
PostgreSQL; negatives are read once per change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from facerec.cli import run
from facerec.config import load_config
from facerec.gallery.service import GalleryService
from facerec.errors import GalleryError
from facerec.gallery.backend import open_backend
from facerec.gallery.records import AuditNote
from facerec.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FR = "face_recognition_examples"
TOKEN = "test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path: Path) -> dict:
    """``{"cfg", "argv"}``: a gallery config and the CLI options that select it."""
    models = {"detector": "yolov5n-0.5-face", "embedder": "mobilefacenet"}  # in the file: not every command has the flags
    cfg_file = tmp_path / "audit.yaml"
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        overrides = {"gallery.backend": "postgres", "gallery.dsn": dsn, "gallery.data_dir": str(tmp_path / "g")}
        cfg_file.write_text(yaml.safe_dump({"models": models, "gallery": {"backend": "postgres", "dsn": dsn}}))
    else:
        overrides = {"gallery.data_dir": str(tmp_path / "g")}
        cfg_file.write_text(yaml.safe_dump({"models": models}))
    argv = ["--config", str(cfg_file), "--data-dir", str(tmp_path / "g")]
    return {"cfg": load_config(None, overrides), "argv": argv}


def entries(cfg) -> list:
    with open_backend(cfg.gallery) as store:
        return store.audit_log(1000)


def cli_step(capsys, cfg, argv: list[str], *cmd: str, action: str | None, subject: str = "", n: int = 1) -> dict:
    """Run one CLI command; check it added ``n`` entries (``action``: one per change) or none."""
    before = len(entries(cfg))
    capsys.readouterr()
    code = run([*cmd, *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    log = entries(cfg)
    if action is None:
        assert len(log) == before, [e.to_json() for e in log[: len(log) - before]]
        return {}
    assert len(log) == before + n, (cmd, [e.to_json() for e in log[: len(log) - before]])
    for e in log[:n]:
        assert (e.interface, e.action, e.subject) == ("cli", action, subject), e.to_json()
    e = log[0]
    return e.detail


def test_each_cli_change_is_one_entry(backend, capsys, photo):
    cfg, argv = backend["cfg"], backend["argv"]
    fr = photo(FR)
    d = cli_step(capsys, cfg, argv, "enroll", "add", "Kit", str(fr / "kit_harington/john1.jpeg"),
                 str(fr / "kit_harington/john2.jpeg"), "--no-progress", action="samples.add", subject="Kit", n=2)
    assert d["added"] == 1 and len(d["samples"]) == 1  # each photo is its own change
    # the same photos again change nothing, so nothing is logged
    cli_step(capsys, cfg, argv, "enroll", "add", "Kit", str(fr / "kit_harington/john1.jpeg"), "--no-progress",
             action=None)
    cli_step(capsys, cfg, argv, "enroll", "add", "Rose", str(fr / "rose_leslie/img1.jpg"), "--no-progress",
             action="samples.add", subject="Rose")
    d = cli_step(capsys, cfg, argv, "enroll", "rename", "Kit", "Kit Harington", action="person.rename",
                 subject="Kit Harington")
    assert d["previous"] == "Kit"
    with GalleryService(cfg, readonly=True) as svc:
        sample = svc.store.samples("Kit Harington")[0].id
    d = cli_step(capsys, cfg, argv, "enroll", "move", str(sample), "Rose", action="sample.move", subject="Rose")
    assert d == {"sample": sample, "previous": "Kit Harington"}
    d = cli_step(capsys, cfg, argv, "enroll", "merge", "Rose", "Kit Harington", "--force",
                 action="person.merge", subject="Kit Harington")
    assert d["merged"] == "Rose" and d["samples"] == 2
    archive = Path(cfg.gallery.data_dir).parent / "gallery.zip"
    cli_step(capsys, cfg, argv, "enroll", "export", str(archive), action=None)  # reading is not a change
    # embed with no preprocessed/ folder finds nothing to change: no entry
    cli_step(capsys, cfg, argv, "embed", "--no-progress", action=None)
    d = cli_step(capsys, cfg, argv, "enroll", "delete", "Kit Harington", action="person.delete",
                 subject="Kit Harington")
    assert d["samples"] == 3
    d = cli_step(capsys, cfg, argv, "enroll", "clear", "--yes", action="gallery.clear", subject="*")
    assert d == {"people": 0, "samples": 0}
    d = cli_step(capsys, cfg, argv, "enroll", "import", str(archive), action="gallery.import", subject="gallery.zip")
    assert d == {"samples": 3}
    cli_step(capsys, cfg, argv, "enroll", "import", str(archive), action=None)  # all there already
    assert [e.action for e in entries(cfg)][::-1] == [
        "samples.add", "samples.add", "samples.add", "person.rename", "sample.move", "person.merge", "person.delete",
        "gallery.clear", "gallery.import"]


def test_each_api_change_is_one_entry(backend, analyzer, photo):
    cfg = backend["cfg"]
    fr = photo(FR)
    svc = GalleryService(cfg, analyzer=analyzer)

    def up(rel: str):
        p = fr / rel
        return ("files", (p.name, p.read_bytes(), "image/jpeg"))

    with svc, TestClient(create_app(cfg, svc, token=TOKEN)) as c:
        def step(method: str, path: str, code: int, action: str | None, subject: str = "", n: int = 1, **kw) -> dict:
            before = len(entries(cfg))
            r = c.request(method, path, headers=AUTH, **kw)
            assert r.status_code == code, r.text
            log = entries(cfg)
            if action is None:
                assert len(log) == before
                return r.json()
            assert len(log) == before + n, [e.to_json() for e in log[: len(log) - before]]
            assert (log[0].interface, log[0].action, log[0].subject) == ("api", action, subject), log[0].to_json()
            return log[0].detail

        d = step("POST", "/api/people", 201, "samples.add", "Kit", n=2, data={"name": "Kit"},
                 files=[up("kit_harington/john1.jpeg"), up("kit_harington/john2.jpeg")])
        assert d["added"] == 1
        # Obama under Kit is what enroll check flags: in only with force
        step("POST", "/api/people/Kit/samples", 422, None, files=[up("obama/obama.jpg")])
        step("POST", "/api/people/Kit/samples", 201, "samples.add", "Kit", data={"force": "true"},
             files=[up("obama/obama.jpg")])
        # refused requests change nothing and log nothing
        step("POST", "/api/people/Kit/samples", 409, None, files=[up("obama/obama.jpg")])
        step("PATCH", "/api/people/Nobody", 404, None, json={"name": "X"})
        d = step("PATCH", "/api/people/Kit", 200, "person.rename", "Kit H", json={"name": "Kit H"})
        assert d["previous"] == "Kit"
        sample = svc.store.samples("Kit H")[-1].id
        d = step("POST", f"/api/samples/{sample}/move", 200, "sample.move", "Barack", json={"person": "Barack"})
        assert d["previous"] == "Kit H"
        step("POST", "/api/people/Barack/merge", 200, "person.merge", "Kit H", json={"into": "Kit H"})
        step("DELETE", f"/api/samples/{sample}", 200, "sample.delete", "Kit H")
        step("DELETE", "/api/people/Kit H", 200, "person.delete", "Kit H")
        assert svc.store.people() == []


def test_negatives_are_read_again_only_when_they_change(backend):
    cfg = backend["cfg"]
    svc = GalleryService(cfg)
    with svc, open_backend(cfg.gallery) as store:
        key = str(svc.key)
        assert svc._negatives()[0] == [] and svc.negative_loads == 1
        store.add_person("Ann")
        store.add_negative("Ann", key, np.eye(512, dtype=np.float32)[0])
        names, vec, v1 = svc._negatives()
        assert names == ["Ann"] and vec.shape == (1, 512) and svc.negative_loads == 2
        for _ in range(5):  # every search-index check: the same answer, no reload
            assert svc._negatives()[2] == v1
        assert svc.negative_loads == 2
        svc.rename_person("Ann", "Anna")  # the negatives follow the person, in the same transaction
        names, _, v2 = svc._negatives()
        assert names == ["Anna"] and v2 != v1 and svc.negative_loads == 3
        assert entries(cfg)[0].detail == {"previous": "Ann", "negatives": 1}
        store.delete_person("Anna")
        assert svc._negatives()[0] == [] and svc.negative_loads == 4


def test_a_change_whose_entry_cannot_be_written_is_not_made(backend, monkeypatch):
    """The entry is part of the change's transaction: when writing it fails, the change is
    rolled back too (before, the change stayed and the entry was lost with a warning)."""
    from facerec.gallery import feedback

    cfg = backend["cfg"]
    with open_backend(cfg.gallery) as store:
        store.add_person("Ann")

        def broken(*a, **kw):
            raise GalleryError("the audit log is full")

        monkeypatch.setattr(feedback, "write_audit", broken)
        monkeypatch.setattr(type(store), "_audit", lambda self, c, note, **extra: broken())
        with pytest.raises(GalleryError, match="audit log is full"):
            store.rename_person("Ann", "Anna", audit=AuditNote("test", "person.rename", "Anna"))
        assert [p.name for p in store.people()] == ["Ann"]
        with pytest.raises(GalleryError, match="audit log is full"):
            store.add_negative("Ann", "k", np.eye(4, dtype=np.float32)[0], audit=AuditNote("test", "negative.add", "Ann"))
        assert store.negative_counts() == {}
