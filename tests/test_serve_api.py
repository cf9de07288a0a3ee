"""The HTTP API of ``facerec serve`` with the real models, through FastAPI's TestClient."""

from __future__ import annotations

import argparse
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facerec.config import load_config
from facerec.errors import ConfigError
from facerec.gallery.service import GalleryService
from facerec.serve.app import create_app
from facerec.serve.auth import TOKEN_ENV, is_loopback, resolve_token

TOKEN = "test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_UPLOAD_MB = 2.0
EXAMPLES = "face_recognition_examples"


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height`` RGB pixels, no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def make_service(analyzer, data_dir: Path) -> GalleryService:
    cfg = load_config(None, {"gallery.data_dir": str(data_dir), "serve.max_upload_mb": MAX_UPLOAD_MB})
    return GalleryService(cfg, analyzer=analyzer)


@pytest.fixture(scope="module")
def service(analyzer, tmp_path_factory) -> GalleryService:
    svc = make_service(analyzer, tmp_path_factory.mktemp("gallery"))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    with TestClient(create_app(service.cfg, service, token=TOKEN)) as c:
        yield c


@pytest.fixture(scope="module")
def ex(photo):
    """Path of a photo in identities/face_recognition_examples."""
    return lambda rel: photo(f"{EXAMPLES}/{rel}")


def upload(path: Path, field: str = "files") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/jpeg")


def enroll(client: TestClient, name: str, *paths: Path, box: int | None = None, force: bool = False):
    data = {"name": name} if box is None else {"name": name, "box": str(box)}
    if force:
        data["force"] = "true"
    return client.post("/api/people", data=data, files=[upload(p) for p in paths], headers=AUTH)


def people(client: TestClient) -> dict[str, dict]:
    r = client.get("/api/people", headers=AUTH)
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()["people"]}


def identify(client: TestClient, path: Path) -> dict:
    r = client.post("/api/identify", files=[upload(path, "file")], headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def gallery_state(service: GalleryService) -> tuple:
    """Everything a bad request must leave alone: people, samples and the files on disk."""
    files = sorted(str(p.relative_to(service.data_dir)) for p in (service.data_dir / "preprocessed").rglob("*")
                   if p.is_file()) if (service.data_dir / "preprocessed").is_dir() else []
    return service.store.people(), service.store.samples(), service.store.version(), files


@pytest.fixture(scope="module")
def enrolled(client, ex) -> dict[str, dict]:
    """Obama and Biden, one photo each."""
    for name, rel in (("Obama", "obama/obama.jpg"), ("Biden", "biden/biden.jpg")):
        r = enroll(client, name, ex(rel))
        assert r.status_code == 201, r.text
    return people(client)


# ---------------------------------------------------------------------------- the token

GUARDED = [
    ("GET", "/api/info", {}),
    ("GET", "/api/people", {}),
    ("GET", "/api/samples/1/image", {}),
    ("POST", "/api/people", {"data": {"name": "Intruder"}, "files": [("files", ("a.jpg", b"x", "image/jpeg"))]}),
    ("POST", "/api/people/Obama/samples", {"files": [("files", ("a.jpg", b"x", "image/jpeg"))]}),
    ("PATCH", "/api/people/Obama", {"json": {"name": "Renamed"}}),
    ("POST", "/api/people/Obama/merge", {"json": {"into": "Biden"}}),
    ("DELETE", "/api/people/Obama", {}),
    ("POST", "/api/samples/1/move", {"json": {"person": "Biden"}}),
    ("DELETE", "/api/samples/1", {}),
    ("POST", "/api/identify", {"files": [("file", ("a.jpg", b"x", "image/jpeg"))]}),
    ("POST", "/api/compare", {"files": [("a", ("a.jpg", b"x", "image/jpeg")), ("b", ("b.jpg", b"x", "image/jpeg"))]}),
    ("GET", "/api/export", {}),
    ("POST", "/api/import", {"files": [("file", ("g.zip", b"PK", "application/zip"))]}),
    ("GET", "/api/events", {}),
    ("GET", "/api/stream", {}),
    ("GET", "/api/no-such-route", {}),
]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
                         ids=["missing", "wrong", "not-bearer", "empty"])
@pytest.mark.parametrize(("method", "path", "kwargs"), GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED])
def test_every_api_route_needs_the_token(client, service, enrolled, method, path, kwargs, headers):
    before = gallery_state(service)
    r = client.request(method, path, headers=headers, **kwargs)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "token" in r.json()["detail"]
    assert gallery_state(service) == before


def test_health_page_and_openapi_are_open(client):
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'data-testid="token-input"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/identify" in spec["paths"] and "/api/people/{name}/merge" in spec["paths"]
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())


# ---------------------------------------------------------------------------- enroll and identify


def test_enroll_two_people_and_identify_a_third_photo(client, enrolled, ex):
    assert {"Obama", "Biden"} <= set(enrolled)
    for name in ("Obama", "Biden"):
        assert enrolled[name]["sample_count"] == 1
        (sample,) = enrolled[name]["samples"]
        assert sample["url"] == f"/api/samples/{sample['id']}/image"
        crop = client.get(sample["url"], headers=AUTH)
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
        assert crop.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", crop.content[16:24]) == (112, 112)

    out = identify(client, ex("obama/obama2.jpg"))
    assert out["width"] > 0 and out["height"] > 0
    (face,) = out["faces"]
    assert face["name"] == "Obama"
    assert face["top"][0][0] == "Obama" and face["similarity"] >= out["threshold"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= out["width"] and 0 <= y1 < y2 <= out["height"]

    names = {f["name"] for f in identify(client, ex("_multi/obama_and_biden.jpg"))["faces"]}
    assert {"Obama", "Biden"} <= names


def test_identify_an_empty_gallery_and_a_photo_without_faces(analyzer, tmp_path, photo, ex):
    svc = make_service(analyzer, tmp_path)
    with TestClient(create_app(svc.cfg, svc, token=TOKEN)) as c:
        (face,) = identify(c, ex("obama/obama2.jpg"))["faces"]
        assert face["name"] is None and face["top"] == []
        assert identify(c, photo("detection/compreface_samples/017_0.jpg"))["faces"] == []
    svc.close()


def test_box_chooses_the_face_to_enroll(client, enrolled, ex):
    multi = ex("_multi/obama_and_biden.jpg")
    faces = identify(client, multi)["faces"]
    biden = next(f["index"] for f in faces if f["name"] == "Biden")
    # Biden's face under a new name is what enroll check flags: refused with the reason, unless forced
    r = enroll(client, "Chosen", multi, box=biden)
    assert r.status_code == 422 and "closer_to_other" in r.text and "'Biden'" in r.text, r.text
    r = enroll(client, "Chosen", multi, box=biden, force=True)
    assert r.status_code == 201 and r.json()["added"][0]["warnings"], r.text
    try:
        threshold = identify(client, ex("biden/biden2.jpg"))["threshold"]
        top_biden = dict(identify(client, ex("biden/biden2.jpg"))["faces"][0]["top"])
        top_obama = dict(identify(client, ex("obama/obama2.jpg"))["faces"][0]["top"])
        assert top_biden["Chosen"] >= threshold > top_obama["Chosen"]
        # the same face of the same photo again: already enrolled
        again = client.post("/api/people/Chosen/samples", data={"box": str(biden)}, files=[upload(multi)], headers=AUTH)
        assert again.status_code == 409, again.text
        out_of_range = client.post("/api/people/Chosen/samples", data={"box": "99"}, files=[upload(multi)],
                                   headers=AUTH)
        assert out_of_range.status_code == 422 and "99" in out_of_range.json()["detail"]
        assert people(client)["Chosen"]["sample_count"] == 1
    finally:
        assert client.delete("/api/people/Chosen", headers=AUTH).status_code == 200


def test_confirm_adds_a_sample_to_an_existing_person(client, enrolled, ex, service):
    r = client.post("/api/people/Obama/samples", files=[upload(ex("obama/obama3.jpg"))], headers=AUTH)
    assert r.status_code == 201, r.text
    (added,) = r.json()["added"]
    assert people(client)["Obama"]["sample_count"] == 2
    assert client.delete(f"/api/samples/{added['sample_id']}", headers=AUTH).status_code == 200
    assert people(client)["Obama"]["sample_count"] == 1
    missing = client.post("/api/people/Nobody/samples", files=[upload(ex("obama/obama3.jpg"))], headers=AUTH)
    assert missing.status_code == 404
    taken = enroll(client, "Obama", ex("obama/obama3.jpg"))
    assert taken.status_code == 409 and "already enrolled" in taken.json()["detail"]


# ---------------------------------------------------------------------------- managing people


def test_rename_merge_move_delete(client, ex, service):
    for name, rel in (("Kit", "kit_harington/john1.jpeg"), ("Temp", "kit_harington/john2.jpeg"),
                      ("Rose", "rose_leslie/img1.jpg")):  # Temp is Kit again: forced in, to be merged
        assert enroll(client, name, ex(rel), force=True).status_code == 201

    r = client.patch("/api/people/Kit", json={"name": "Kit Harington"}, headers=AUTH)
    assert r.status_code == 200, r.text
    now = people(client)
    assert "Kit Harington" in now and "Kit" not in now
    assert client.patch("/api/people/Kit Harington", json={"name": "Rose"}, headers=AUTH).status_code == 409
    assert client.patch("/api/people/Nobody", json={"name": "X"}, headers=AUTH).status_code == 404
    bad = client.patch("/api/people/Rose", json={"name": "../escape"}, headers=AUTH)
    assert bad.status_code == 400 and ".." in bad.json()["detail"]

    r = client.post("/api/people/Temp/merge", json={"into": "Kit Harington"}, headers=AUTH)
    assert r.status_code == 200, r.text
    now = people(client)
    assert "Temp" not in now and now["Kit Harington"]["sample_count"] == 2
    assert client.post("/api/people/Rose/merge", json={"into": "Rose"}, headers=AUTH).status_code == 400

    moved = now["Kit Harington"]["samples"][0]["id"]
    r = client.post(f"/api/samples/{moved}/move", json={"person": "Rose"}, headers=AUTH)
    assert r.status_code == 200, r.text
    now = people(client)
    assert now["Kit Harington"]["sample_count"] == 1 and now["Rose"]["sample_count"] == 2
    assert moved in {s["id"] for s in now["Rose"]["samples"]}
    assert client.get(f"/api/samples/{moved}/image", headers=AUTH).status_code == 200
    assert client.post("/api/samples/999999/move", json={"person": "Rose"}, headers=AUTH).status_code == 404

    crops = [Path(s.crop_path) for s in service.store.samples("Rose")]
    r = client.delete("/api/people/Rose", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": "Rose", "samples": 2, "negatives": 0}
    assert "Rose" not in people(client)
    assert not any(p.exists() for p in crops)
    assert client.get(f"/api/samples/{moved}/image", headers=AUTH).status_code == 404
    assert client.delete("/api/people/Rose", headers=AUTH).status_code == 404
    assert client.delete("/api/people/Kit Harington", headers=AUTH).status_code == 200


# ---------------------------------------------------------------------------- bad uploads


def _bad_uploads(photo) -> list:
    return [
        ("not-an-image", b"this is a text file, not a photo\n" * 20, 422),
        ("empty", b"", 422),
        ("png-bomb-header", png_header(60000, 60000), 422),
        ("truncated-jpeg", (photo(f"{EXAMPLES}/obama/obama.jpg")).read_bytes()[:300], 422),
        ("no-face", photo("detection/compreface_samples/017_0.jpg").read_bytes(), 422),
        ("oversized", b"\xff\xd8\xff" + bytes(int(MAX_UPLOAD_MB * 1024 * 1024) + 10), 413),
    ]


BAD_CASES = ["not-an-image", "empty", "png-60000x60000", "truncated-jpeg", "no-face", "oversized"]
# A photo without a face is a normal answer of /api/identify (no faces), tested above.
BAD_UPLOADS = [(route, case) for route in ("new-person", "add-sample", "identify") for case in range(len(BAD_CASES))
               if not (route == "identify" and BAD_CASES[case] == "no-face")]


@pytest.mark.parametrize(("route", "case"), BAD_UPLOADS, ids=[f"{r}-{BAD_CASES[c]}" for r, c in BAD_UPLOADS])
def test_bad_upload_is_refused_and_stores_nothing(client, service, enrolled, photo, case, route):
    label, data, code = _bad_uploads(photo)[case]
    before = gallery_state(service)
    file = ("photo.jpg", data, "image/jpeg")  # the name and type lie; the content decides
    if route == "new-person":
        r = client.post("/api/people", data={"name": "Mallory"}, files=[("files", file)], headers=AUTH)
    elif route == "add-sample":
        r = client.post("/api/people/Obama/samples", files=[("files", file)], headers=AUTH)
    else:
        r = client.post("/api/identify", files=[("file", file)], headers=AUTH)
    assert r.status_code == code, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert gallery_state(service) == before
    assert "Mallory" not in people(client)


def test_a_bad_file_among_good_ones_stores_nothing(client, service, enrolled, ex):
    before = gallery_state(service)
    files = [upload(ex("obama/obama3.jpg")), ("files", ("b.jpg", b"GIF89a not really", "image/jpeg"))]
    r = client.post("/api/people/Obama/samples", files=files, headers=AUTH)
    assert r.status_code == 422 and "b.jpg" in r.json()["detail"]
    assert gallery_state(service) == before


def test_oversized_body_without_content_length_is_cut_off(client, service, enrolled):
    before = gallery_state(service)
    chunk = b"\0" * (256 * 1024)

    def body():
        for _ in range(int(MAX_UPLOAD_MB * 4) + 4):
            yield chunk

    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=x"}
    r = client.post("/api/identify", content=body(), headers=headers)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert gallery_state(service) == before


def test_bad_names_are_400(client, service, enrolled, ex):
    before = gallery_state(service)
    for name in ("", "   ", "../etc", ".hidden", "a/b", "x" * 101, "tab\tname"):
        r = enroll(client, name, ex("obama/obama3.jpg"))
        assert r.status_code in (400, 422), (name, r.text)
    assert gallery_state(service) == before


# ---------------------------------------------------------------------------- compare, archive, live


def test_compare_gives_a_matrix_and_a_verdict(client, ex):
    def compare(a: Path, b: Path) -> dict:
        r = client.post("/api/compare", files=[upload(a, "a"), upload(b, "b")], headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()

    same = compare(ex("obama/obama.jpg"), ex("obama/obama2.jpg"))
    assert same["same"] is True and same["similarity"] >= same["threshold"]
    diff = compare(ex("obama/obama.jpg"), ex("biden/biden.jpg"))
    assert diff["same"] is False
    multi = compare(ex("biden/biden2.jpg"), ex("_multi/obama_and_biden.jpg"))
    assert len(multi["matrix"]) == 1 and len(multi["matrix"][0]) == len(multi["b"]["faces"]) >= 2
    j = multi["best"][0]["b"]
    assert multi["best"][0]["same"] and multi["matrix"][0][j] == max(multi["matrix"][0])


def test_export_import_round_trip(client, service, enrolled, analyzer, tmp_path, ex):
    r = client.get("/api/export", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"]
    archive = r.content

    fresh = make_service(analyzer, tmp_path / "fresh")
    with TestClient(create_app(fresh.cfg, fresh, token=TOKEN)) as other:
        before = gallery_state(fresh)
        bad = other.post("/api/import", files=[("file", ("g.zip", b"not an archive", "application/zip"))],
                         headers=AUTH)
        assert bad.status_code == 400 and "g.zip" in bad.json()["detail"]
        assert gallery_state(fresh) == before
        r = other.post("/api/import", files=[("file", ("gallery.zip", archive, "application/zip"))], headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["imported"] == len(service.store.samples())
        mine, theirs = people(client), people(other)
        assert {n: p["sample_count"] for n, p in theirs.items()} == {n: p["sample_count"] for n, p in mine.items()}
        assert identify(other, ex("obama/obama2.jpg"))["faces"][0]["name"] == "Obama"
        again = other.post("/api/import", files=[("file", ("gallery.zip", archive, "application/zip"))], headers=AUTH)
        assert again.json()["imported"] == 0
    fresh.close()


class StubFeed:
    def __init__(self, jpeg: bytes) -> None:
        self.jpeg = jpeg

    def cameras(self) -> list[str]:
        return ["cam"]

    def recent_events(self, n: int, camera: str | None = None) -> list[dict]:
        from facerec.events import Event

        return [Event("recognized", "Obama", 0.7, i, float(i), "cam", ts=1.0 + i).to_json() for i in range(3)][-n:]

    def latest_jpeg(self, camera: str | None = None) -> bytes | None:
        self.jpeg = self.jpeg[:1] + self.jpeg[1:]  # a new object: a new frame each time
        return self.jpeg

    def camera_stats(self) -> dict[str, dict]:
        return {"cam": {"frames": 3, "fps": 1.5, "running": True}}


def test_live_routes(client, service):
    for path in ("/api/events", "/api/stream"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 503 and "--source" in r.json()["detail"]
    import cv2

    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 127, np.uint8))
    app = create_app(service.cfg, service, token=TOKEN, feed=StubFeed(jpg.tobytes()))
    with TestClient(app) as c:
        events = c.get("/api/events?n=2", headers=AUTH).json()["events"]
        assert [e["ts"] for e in events] == [2.0, 3.0]
        assert c.get("/api/events?n=2&camera=cam", headers=AUTH).json()["events"] == events
        for path in ("/api/events?camera=nope", "/api/stream?camera=nope"):
            r = c.get(path, headers=AUTH)
            assert r.status_code == 404 and "'cam'" in r.json()["detail"]
        assert c.get("/api/cameras", headers=AUTH).json()["cameras"] == [
            {"name": "cam", "stats": {"frames": 3, "fps": 1.5, "running": True}}]
        assert c.get("/api/info", headers=AUTH).json()["cameras"] == ["cam"]
        r = c.get("/api/stream?frames=2&fps=30", headers=AUTH)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        parts = [p for p in r.content.split(b"--frame\r\n") if p]
        assert len(parts) == 2
        head, _, body = parts[0].partition(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        assert body.rstrip(b"\r\n") == jpg.tobytes()


# ---------------------------------------------------------------------------- binding


def test_token_resolution_and_public_binding():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    token, generated = resolve_token("127.0.0.1", {})
    assert generated and len(token) >= 32
    assert resolve_token("0.0.0.0", {TOKEN_ENV: TOKEN}) == (TOKEN, False)
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        resolve_token("0.0.0.0", {})
    with pytest.raises(ConfigError, match="at least"):
        resolve_token("127.0.0.1", {TOKEN_ENV: "short"})


def test_serve_refuses_0_0_0_0_without_a_token(monkeypatch, tmp_path, capsys):
    from facerec.cli import common, serve_cmd

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    parser = argparse.ArgumentParser(prog="facerec")
    serve_cmd.register(parser.add_subparsers(), common.common_parser())
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "8765", "--data-dir", str(tmp_path / "g")])
    with pytest.raises(ConfigError, match=f"refusing to listen on 0.0.0.0 without an API token.*{TOKEN_ENV}"):
        args.func(args, common.config_from_args(args))
    assert not (tmp_path / "g").exists()  # refused before the gallery was opened
    assert capsys.readouterr().err == ""  # and no generated token was printed


def test_serve_source_runs_the_live_daemon(analyzer, tmp_path, ex):
    """``facerec serve --source``: the live loop's events and annotated frames reach the API."""
    import shutil

    from facerec.cli.serve_cmd import DaemonFeed

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        shutil.copy(ex("obama/obama2.jpg"), frames / f"{i:02d}.jpg")
    cfg = load_config(None, {"gallery.data_dir": str(tmp_path / "gallery"), "models.detector": "yolov5n-0.5-face",
                             "models.embedder": "mobilefacenet", "live.stats_every_s": 0})
    svc = GalleryService(cfg, analyzer=analyzer)
    feed = DaemonFeed(str(frames), cfg, realtime=True, loop=True, fps=10)
    try:
        with TestClient(create_app(cfg, svc, token=TOKEN, feed=feed)) as c:
            assert enroll(c, "Obama", ex("obama/obama.jpg")).status_code == 201
            feed.start()
            deadline = time.monotonic() + 60
            events: list[dict] = []
            while time.monotonic() < deadline and not any(e["name"] == "Obama" for e in events):
                time.sleep(0.2)
                events = c.get("/api/events", headers=AUTH).json()["events"]
            assert any(e["event"] == "appeared" and e["name"] == "Obama" and e["camera"] == "frames"
                       for e in events), events
            r = c.get("/api/stream?frames=1&camera=frames", headers=AUTH)
            _, _, body = r.content.partition(b"\r\n\r\n")
            assert r.status_code == 200 and body[:2] == b"\xff\xd8"  # a JPEG frame
            cams = c.get("/api/cameras", headers=AUTH).json()["cameras"]
            assert [cam["name"] for cam in cams] == ["frames"] and cams[0]["stats"]["frames"] > 0
    finally:
        feed.close()
        svc.close()
