"""The DeepStack and CompreFace APIs of ``facerec serve``, driven by the real client libraries.

A real ``facerec serve`` process (real models, a fresh gallery, a free loopback port) is
called through ``deepstack-python`` (the client of Home Assistant's deepstack_face),
DeepQuest's ``deepstack-sdk`` and CompreFace's ``compreface-sdk``, on LFW photos: people
registered from one photo each through one client are recognised on their other photos
through every client, people never registered stay unknown, a delete through one API
removes a person registered through the other, and wrong or missing keys change nothing.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import serve_proc
from compreface import CompreFace
from deepstack.core import DeepstackException, DeepstackFace
from deepstack_sdk import Face, ServerConfig

from facerec.serve.dropin import KeylessClients, ScoreScale, error_body

TOKEN = "dropin-token-0123456789-abcdefgh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_MB = 1.0  # serve.max_upload_mb of the server under test

# Who registers whom (one photo each; Hans_Blix with two through deepstack-sdk).
BY_DEEPSTACK_PY = ["Paul_Wolfowitz", "Jennifer_Lopez", "Zhu_Rongji"]
BY_DEEPSTACK_SDK = ["John_Bolton", "Jennifer_Garner", "Hans_Blix"]
BY_COMPREFACE = ["Angelina_Jolie", "Amelie_Mauresmo"]
REGISTERED = BY_DEEPSTACK_PY + BY_DEEPSTACK_SDK + BY_COMPREFACE
PROBES = (2, 3, 4)  # the photos recognised (0 and 1 may have been registered)
NEVER = ["Venus_Williams", "Tom_Ridge", "Tim_Henman", "Tiger_Woods", "Rubens_Barrichello", "Robert_Redford",
         "Richard_Gephardt", "Queen_Elizabeth_II", "Martin_Scorsese", "Li_Zhaoxing", "Laura_Bush", "John_Ashcroft"]


def facerec_serve(tmp: Path, gallery: Path, extra: str = "") -> contextlib.AbstractContextManager[int]:
    return serve_proc.facerec_serve(tmp, gallery, TOKEN, extra)


@pytest.fixture(scope="module")
def lfw(data_dir: Path) -> Callable[[str, int], Path]:
    """``lfw(person, i)``: the i-th photo (sorted) of an LFW person."""
    def get(person: str, i: int) -> Path:
        photos = sorted((data_dir / "lfw" / person).iterdir())
        assert len(photos) > i, f"{person} has {len(photos)} photos in ../shared/data/lfw"
        return photos[i]
    return get


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dropin-gallery")


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, gallery_dir: Path) -> Iterator[int]:
    with facerec_serve(tmp_path_factory.mktemp("dropin-serve"), gallery_dir, f"serve:\n  max_upload_mb: {MAX_MB}\n") as p:
        yield p


def people(port: int) -> dict[str, int]:
    """``GET /api/people`` (facerec's own API): name -> sample count."""
    r = requests.get(f"http://127.0.0.1:{port}/api/people", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return {p["name"]: p["sample_count"] for p in r.json()["people"]}


def audit(port: int) -> list[tuple[str, str, str]]:
    r = requests.get(f"http://127.0.0.1:{port}/api/audit", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return [(e["interface"], e["action"], e["subject"]) for e in r.json()["entries"]]


def clients(port: int, key: str | None = TOKEN) -> tuple[DeepstackFace, Face, Any]:
    """The three real clients pointed at ``port`` with ``key``."""
    ds_py = DeepstackFace(ip="127.0.0.1", port=port, api_key=key or "")
    ds_sdk = Face(ServerConfig(f"http://127.0.0.1:{port}", api_key=key))
    cf = CompreFace("http://127.0.0.1", str(port), {"det_prob_threshold": 0.8, "prediction_count": 1, "limit": 0,
                                                      "status": True}).init_face_recognition(key or "")
    return ds_py, ds_sdk, cf


def central(faces: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[float, float, float, float]]) -> dict | None:
    """The face nearest the centre of a 250x250 LFW photo (the person it is named after)."""
    def dist(f: dict[str, Any]) -> float:
        x1, y1, x2, y2 = key(f)
        return ((x1 + x2) / 2 - 125) ** 2 + ((y1 + y2) / 2 - 125) ** 2
    return min(faces, key=dist) if faces else None


def ds_box(f: dict[str, Any]) -> tuple[float, float, float, float]:
    return f["x_min"], f["y_min"], f["x_max"], f["y_max"]


def cf_box(f: dict[str, Any]) -> tuple[float, float, float, float]:
    b = f["box"]
    return b["x_min"], b["y_min"], b["x_max"], b["y_max"]


def names_by_client(port: int, photo: Path) -> dict[str, list[str | None]]:
    """What each client says about every face of ``photo``, central face first (None = unknown)."""
    ds_py, ds_sdk, cf = clients(port)
    data = photo.read_bytes()
    out: dict[str, list[str | None]] = {}
    preds = ds_py.recognize(data)
    first = central(preds, ds_box)
    out["deepstack-python"] = [(None if f["userid"] == "unknown" else f["userid"])
                               for f in sorted(preds, key=lambda f: f is not first)]
    sdk = [{"userid": d.userid, "x_min": d.x_min, "y_min": d.y_min, "x_max": d.x_max, "y_max": d.y_max}
           for d in ds_sdk.recognizeFace(str(photo))]
    first = central(sdk, ds_box)
    out["deepstack-sdk"] = [(None if f["userid"] == "unknown" else f["userid"])
                            for f in sorted(sdk, key=lambda f: f is not first)]
    res = cf.recognize(str(photo))
    result = res.get("result", [])
    assert result or res.get("code") == 28, res
    first = central(result, cf_box)
    out["compreface-sdk"] = [(f["subjects"][0]["subject"] if f["subjects"] else None)
                             for f in sorted(result, key=lambda f: f is not first)]
    return out


@pytest.fixture(scope="module")
def registered(port: int, lfw: Callable[[str, int], Path]) -> dict[str, int]:
    """Everyone of REGISTERED, each through its client; returns /api/people."""
    ds_py, ds_sdk, cf = clients(port)
    for name in BY_DEEPSTACK_PY:
        assert ds_py.register(name, lfw(name, 0).read_bytes()) == "face added"
    for name in BY_DEEPSTACK_SDK:
        photos = [str(lfw(name, 0))] + ([str(lfw(name, 1))] if name == "Hans_Blix" else [])
        assert ds_sdk.registerFace(photos, name) is True
    for name in BY_COMPREFACE:
        r = cf.get_face_collection().add(str(lfw(name, 0)), name)
        assert r["subject"] == name and isinstance(r["image_id"], str) and r["image_id"].isdigit(), r
    return people(port)


# ---------------------------------------------------------------------------- keys first


def test_wrong_or_missing_keys_are_refused_and_change_nothing(port: int, registered: dict[str, int],
                                                             lfw: Callable[[str, int], Path]):
    before = people(port), audit(port)
    photo = lfw("Laura_Bush", 0)
    refused = 0
    for key in ("wrong-key-0123456789-abcdefghijk", ""):
        ds_py, ds_sdk, cf = clients(port, key)
        for call in (lambda: ds_py.register("Intruder", photo.read_bytes()), lambda: ds_py.recognize(photo.read_bytes())):
            with pytest.raises(DeepstackException, match="401"):
                call()
            refused += 1
        with pytest.raises(Exception, match="401"):
            ds_sdk.registerFace([str(photo)], "Intruder")
        refused += 1
        with pytest.raises(Exception, match="401"):
            ds_sdk.deleteFace("Paul_Wolfowitz")
        refused += 1
        for r in (cf.get_face_collection().add(str(photo), "Intruder"), cf.recognize(str(photo)),
                  cf.get_face_collection().delete_all("Paul_Wolfowitz")):
            assert r.get("code") in (10, 20) and "x-api-key" in r["message"], r
            refused += 1
    # deepstack-python has no delete and reads the list without checking the status
    with pytest.raises(KeyError):
        clients(port, "wrong-key-0123456789-abcdefghijk")[0].get_registered_faces()
    refused += 1
    assert refused >= 13
    assert (people(port), audit(port)) == before


def test_register_through_each_client(port: int, registered: dict[str, int]):
    assert set(registered) == set(REGISTERED)
    assert registered["Hans_Blix"] == 2 and all(registered[n] == 1 for n in REGISTERED if n != "Hans_Blix")
    log = audit(port)
    assert {(i, s) for i, a, s in log if a == "samples.add"} == (
        {("deepstack", n) for n in BY_DEEPSTACK_PY + BY_DEEPSTACK_SDK} | {("compreface", n) for n in BY_COMPREFACE})
    assert registered == people(port)


def test_lists_show_everyone(port: int, registered: dict[str, int]):
    ds_py, ds_sdk, cf = clients(port)
    assert sorted(ds_py.get_registered_faces()) == sorted(REGISTERED)
    assert sorted(ds_sdk.listFaces()) == sorted(REGISTERED)
    assert sorted(cf.get_subjects().list()["subjects"]) == sorted(REGISTERED)
    faces = cf.get_face_collection().list()
    assert faces["total_elements"] == len(REGISTERED) + 1 and faces["page_number"] == 0
    assert sorted({f["subject"] for f in faces["faces"]}) == sorted(REGISTERED)
    assert all(isinstance(f["image_id"], str) for f in faces["faces"])


def test_recognise_through_each_client(port: int, registered: dict[str, int], lfw: Callable[[str, int], Path]):
    right = {c: 0 for c in ("deepstack-python", "deepstack-sdk", "compreface-sdk")}
    unknown = dict.fromkeys(right, 0)
    for name in REGISTERED:
        for i in PROBES:
            for client, faces in names_by_client(port, lfw(name, i)).items():
                right[client] += bool(faces) and faces[0] == name
    for name in NEVER:
        for client, faces in names_by_client(port, lfw(name, 0)).items():
            unknown[client] += all(f is None for f in faces)
    n_known, n_never = len(REGISTERED) * len(PROBES), len(NEVER)
    print(f"\nright names {right} of {n_known}; unknown {unknown} of {n_never}")
    for client in right:
        assert right[client] >= 0.9 * n_known, (client, right)
        assert unknown[client] >= 0.8 * n_never, (client, unknown)


def test_min_confidence_maps_onto_facerec_threshold(port: int, registered: dict[str, int],
                                                    lfw: Callable[[str, int], Path]):
    """The library defaults (0.45, 0.7) keep facerec's names; a stricter minimum names fewer."""
    photos = [lfw(n, 2).read_bytes() for n in REGISTERED]
    named: dict[float, int] = {}
    for m in (0.45, 0.7, 0.95):
        ds = DeepstackFace(ip="127.0.0.1", port=port, api_key=TOKEN, min_confidence=m)
        preds = [p for data in photos for p in ds.recognize(data) if p["userid"] != "unknown"]
        assert all(p["confidence"] >= max(m, 0.7) for p in preds), (m, preds)
        named[m] = len(preds)
    assert named[0.45] == named[0.7] >= len(REGISTERED) - 1 and named[0.95] < named[0.7], named


def test_detection_and_no_face(port: int, data_dir: Path, lfw: Callable[[str, int], Path]):
    ds_py, ds_sdk, cf = clients(port)
    boxes = ds_py.detect(lfw("Laura_Bush", 0).read_bytes())
    assert boxes and all(0.7 <= b["confidence"] <= 1 and b["x_min"] < b["x_max"] for b in boxes), boxes
    assert len(ds_sdk.detectFace(str(lfw("Laura_Bush", 0)))) == len(boxes)
    empty = data_dir / "detection" / "compreface_samples" / "017_0.jpg"
    assert ds_py.recognize(empty.read_bytes()) == []
    r = cf.recognize(str(empty))
    assert r["code"] == 28, r  # what Double Take reads as "no face"
    assert cf.get_face_collection().add(str(empty), "Nobody")["code"] == 28
    assert "Nobody" not in people(port)


def test_bad_photos_and_upload_limits(port: int, registered: dict[str, int], lfw: Callable[[str, int], Path]):
    """As for facerec's own API: not an image 422, over serve.max_upload_mb 413, in each API's shape."""
    ds_py, ds_sdk, cf = clients(port)
    not_image = b"this is not a photo at all" * 10
    with pytest.raises(DeepstackException, match="422"):
        ds_py.recognize(not_image)
    with pytest.raises(DeepstackException, match="422"):
        ds_py.register("Broken", not_image)
    r = cf.recognize(not_image)
    assert r["code"] == 36 and "image" in r["message"], r
    big = lfw("Laura_Bush", 0).read_bytes() + b"\0" * int(MAX_MB * 1024 * 1024)  # just over, within the framing slack
    r = requests.post(f"http://127.0.0.1:{port}/v1/vision/face/register", files={"image": big},
                      data={"api_key": TOKEN, "userid": "Huge"}, timeout=30)
    assert r.status_code == 413 and r.json()["success"] is False and "limit" in r.json()["error"], r.text
    r = cf.get_face_collection().add(big, "Huge")
    assert r["code"] == 36 and "limit" in r["message"], r
    assert set(people(port)) == set(registered)
    # the base64 JSON body CompreFace also takes (no client library sends it), then a delete by image_id
    r = requests.post(f"http://127.0.0.1:{port}/api/v1/recognition/faces?subject=Laura Bush", timeout=30,
                      json={"file": base64.b64encode(lfw("Laura_Bush", 0).read_bytes()).decode()},
                      headers={"x-api-key": TOKEN})
    assert r.status_code == 201 and r.json()["subject"] == "Laura Bush", r.text
    assert cf.get_face_collection().delete(r.json()["image_id"]) == r.json()
    assert people(port)["Laura Bush"] == 0  # CompreFace keeps the subject of a deleted example
    assert cf.get_subjects().delete("Laura Bush") == {"subject": "Laura Bush"}
    assert set(people(port)) == set(registered)
    # refusals made before any route runs (a declared size over the limit) take each API's shape too
    assert error_body("/v1/vision/face/recognize", 413, "too big") == {"success": False, "error": "too big", "code": 413}
    assert error_body("/api/v1/recognition/recognize", 413, "too big") == {"message": "too big", "code": 36}
    assert error_body("/api/people", 413, "too big") == {"detail": "too big"}


def test_delete_through_one_api_what_the_other_registered(port: int, registered: dict[str, int],
                                                          lfw: Callable[[str, int], Path]):
    ds_py, ds_sdk, cf = clients(port)
    # deepstack-sdk deletes a person CompreFace registered...
    assert ds_sdk.deleteFace("Angelina_Jolie") is True
    # ...and CompreFace deletes people the DeepStack clients registered (all examples; by subject)
    assert cf.get_face_collection().delete_all("Paul_Wolfowitz") == {"deleted": 1}
    assert cf.get_subjects().delete("Hans_Blix") == {"subject": "Hans_Blix"}
    left = people(port)
    assert not {"Angelina_Jolie", "Paul_Wolfowitz", "Hans_Blix"} & set(left) and len(left) == len(REGISTERED) - 3
    for name in ("Angelina_Jolie", "Paul_Wolfowitz", "Hans_Blix"):
        for client, faces in names_by_client(port, lfw(name, 2)).items():
            assert name not in faces, (client, name, faces)
    log = audit(port)
    assert ("deepstack", "person.delete", "Angelina_Jolie") in log
    assert ("compreface", "person.delete", "Paul_Wolfowitz") in log
    assert ("compreface", "person.delete", "Hans_Blix") in log
    # CompreFace's "delete everything" (no subject) is refused
    assert cf.get_face_collection().delete_all("")["code"] == 33
    assert cf.get_subjects().delete_all()["code"] == 33
    assert people(port) == left
    # a rename through CompreFace (a name with a space and an accent, sent unencoded) is
    # what the DeepStack clients then answer
    assert cf.get_subjects().update("Amelie_Mauresmo", "Amélie Mauresmo") == {"updated": True}
    assert ("compreface", "person.rename", "Amélie Mauresmo") in audit(port)
    assert "Amélie Mauresmo" in ds_py.get_registered_faces() and "Amelie_Mauresmo" not in people(port)
    assert "Amélie Mauresmo" in [p["userid"] for p in ds_py.recognize(lfw("Amelie_Mauresmo", 2).read_bytes())]


def test_keyless_setting(port: int, registered: dict[str, int], gallery_dir: Path,
                         tmp_path: Path, lfw: Callable[[str, int], Path]):
    """Off by default (the main server refused keyless calls above); on for listed addresses:
    recognise and detect without a key, never register, delete or list."""
    photo = lfw("Jennifer_Lopez", 3)
    with facerec_serve(tmp_path, gallery_dir, "serve:\n  keyless_clients: [127.0.0.1]\n") as keyless:
        ds = DeepstackFace(ip="127.0.0.1", port=keyless, api_key="")
        assert "Jennifer_Lopez" in [p["userid"] for p in ds.recognize(photo.read_bytes())]
        assert ds.detect(photo.read_bytes())
        with pytest.raises(DeepstackException, match="401"):
            ds.register("Intruder", photo.read_bytes())
        sdk = Face(ServerConfig(f"http://127.0.0.1:{keyless}"))
        with pytest.raises(Exception, match="401"):
            sdk.deleteFace("Jennifer_Lopez")
        with pytest.raises(Exception, match="401"):
            sdk.listFaces()
        with pytest.raises(DeepstackException, match="401"):  # a wrong key is still wrong
            DeepstackFace(ip="127.0.0.1", port=keyless, api_key="wrong-key-0123456789-abcd").recognize(photo.read_bytes())
    assert "Intruder" not in people(port) and "Jennifer_Lopez" in people(port)
    listed = KeylessClients(["192.168.1.20", "10.9.8.0/24", "::1"])
    assert [listed.allows(h) for h in ("192.168.1.20", "10.9.8.77", "::ffff:10.9.8.1", "::1", "127.0.0.1",
                                       "192.168.1.21", "testclient", None)] == [True] * 4 + [False] * 4
    assert not KeylessClients([]) and not KeylessClients([]).allows("127.0.0.1")


def test_score_scales():
    """facerec's decision point reads as the anchor; minimums up to it change nothing, above it
    they ask proportionally more, up to a perfect score at 1."""
    s = ScoreScale(0.32, 0.7)
    assert s.to_client(0.32) == pytest.approx(0.7) and s.to_client(1.0) == pytest.approx(1.0)
    assert s.to_client(0.1) == pytest.approx(0.7)  # never shown below the anchor
    assert s.required(None) == s.required(0.45) == s.required(0.7) == pytest.approx(0.32)
    assert s.required(0.85) == pytest.approx(0.66) and s.required(1.0) == pytest.approx(1.0)
    for m in (0.75, 0.8, 0.95):
        assert s.to_client(s.required(m)) == pytest.approx(m)
