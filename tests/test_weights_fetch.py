"""``facerec weights fetch`` against a real HTTP server on 127.0.0.1 serving ../shared/models.

The server is Python's http.server with byte ranges added (as static file servers and
GitHub's CDN answer them); one variant cuts the connection half way through the first
response, as a dropped Wi-Fi link does.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from facerec.cli import run
from facerec.weights import sha256_file

FILES = {  # what the default pair (yolov5n-0.5-face + mobilefacenet) needs, with the published hashes
    "yolov5n-0.5-face.pt": "9f7cdbcf5cd63f454c47b18e7400a69630b96a01efb7559367e91b6e962ad3bd",
    "yolov5n-0.5-face.onnx": "7da50650e16167e93acf24caf01f15f2922ecf168c884f2825a3c95479f8687d",
    "mobilefacenet_foamliu_ms1m.pt": "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    "mobilefacenet_foamliu_ms1m.onnx": "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
}


class _Server:
    """A static file server with ``Range`` support; ``cut_first`` files break off once."""

    def __init__(self, root: Path, cut_first: set[str] = frozenset()) -> None:
        self.root = root
        self.cut_pending = set(cut_first)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                f = outer.root / name
                if "/" in name or not f.is_file():
                    self.send_error(404)
                    return
                data = f.read_bytes()
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if name in outer.cut_pending:
                    outer.cut_pending.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _fetch(*args: str) -> int:
    return run(["weights", "fetch", "--no-progress", *args])


def test_fetch_default_pair_from_mirror_verified(models_dir, tmp_path, capsys):
    dest = tmp_path / "w"
    with _Server(models_dir) as srv:
        rc = _fetch("--mirror", srv.url, "--weights-dir", str(dest))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "yolov5n-0.5-face + mobilefacenet" in out
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    for name, sha in FILES.items():
        assert sha256_file(dest / name) == sha
    assert out.count("verified ") == 4 and "4 verified, 0 unverified, 0 failed" in out
    # a second run finds them and downloads nothing
    with _Server(models_dir) as srv:
        assert _fetch("--mirror", srv.url, "--weights-dir", str(dest)) == 0
        assert srv.requests == []
    assert "already present" in capsys.readouterr().out


def test_mirror_from_environment_and_upstream_name(models_dir, tmp_path, monkeypatch, capsys):
    """A mirror that holds the file under its upstream name (mobilefacenet.pt) serves too."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(models_dir / "mobilefacenet_foamliu_ms1m.pt", served / "mobilefacenet.pt")
    shutil.copy(models_dir / "mobilefacenet_foamliu_ms1m.onnx", served / "MobileFaceNet.onnx")
    with _Server(served) as srv:
        monkeypatch.setenv("FACEREC_WEIGHTS_MIRROR", srv.url)
        rc = _fetch("mobilefacenet", "--weights-dir", str(tmp_path / "w"))
        asked = [p for p, _ in srv.requests]
    assert rc == 0, capsys.readouterr().out
    assert asked == ["mobilefacenet_foamliu_ms1m.pt", "mobilefacenet.pt",
                     "mobilefacenet_foamliu_ms1m.onnx", "MobileFaceNet.onnx"]
    assert sha256_file(tmp_path / "w" / "mobilefacenet_foamliu_ms1m.pt") == FILES["mobilefacenet_foamliu_ms1m.pt"]


def test_corrupt_copy_rejected_nothing_left(models_dir, tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    data = bytearray((models_dir / "yolov5n-0.5-face.pt").read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit
    (served / "yolov5n-0.5-face.pt").write_bytes(bytes(data))
    shutil.copy(models_dir / "yolov5n-0.5-face.onnx", served / "yolov5n-0.5-face.onnx")
    dest = tmp_path / "w"
    with _Server(served) as srv:
        rc = _fetch("yolov5n-0.5-face", "--mirror", srv.url, "--weights-dir", str(dest))
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED" in out and "is not the published 9f7cdbcf" in out
    # the good file is in place; of the bad one, no trace (neither the name nor a .part)
    assert sorted(p.name for p in dest.iterdir()) == ["yolov5n-0.5-face.onnx"]


def test_interrupted_download_resumes_with_range(models_dir, tmp_path, capsys):
    dest = tmp_path / "w"
    name = "mobilefacenet_foamliu_ms1m.pt"
    size = (models_dir / name).stat().st_size
    with _Server(models_dir, cut_first={name}) as srv:
        rc = _fetch("mobilefacenet", "--mirror", srv.url, "--weights-dir", str(dest))
        asked = [(p, r) for p, r in srv.requests if p == name]
    assert rc == 0, capsys.readouterr().out
    assert asked == [(name, None), (name, f"bytes={size // 2}-")]
    assert sha256_file(dest / name) == FILES[name]
    assert not (dest / (name + ".part")).exists()


def test_part_file_from_an_earlier_run_is_resumed(models_dir, tmp_path, capsys):
    dest = tmp_path / "w"
    dest.mkdir()
    name = "yolov5n-0.5-face.onnx"
    (dest / (name + ".part")).write_bytes((models_dir / name).read_bytes()[:100_000])
    with _Server(models_dir) as srv:
        assert _fetch("yolov5n-0.5-face", "--mirror", srv.url, "--weights-dir", str(dest)) == 0
        assert (name, "bytes=100000-") in srv.requests
    assert sha256_file(dest / name) == FILES[name]


def test_from_dir_offline(models_dir, tmp_path, monkeypatch, capsys):
    """--from copies and verifies without any network: the mirror set here is a closed port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("FACEREC_WEIGHTS_MIRROR", f"http://127.0.0.1:{closed}")
    monkeypatch.chdir(tmp_path)  # default destination: ./weights/
    rc = _fetch("--from", str(models_dir))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(FILES)
    assert "copied from" in out


def test_unverified_and_unreachable_are_reported(tmp_path, capsys):
    """A model with no published hash is fetched but reported UNVERIFIED (exit 3); a source
    that is down fails with where to get the file by hand (exit 1)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "magface-iresnet34.pth").write_bytes(b"\x80\x02not-really-a-checkpoint" * 100)
    with _Server(served) as srv:
        rc = _fetch("magface-iresnet34", "--mirror", srv.url, "--weights-dir", str(tmp_path / "w"))
    out = capsys.readouterr().out
    assert rc == 3 and "UNVERIFIED" in out and "NOT checked" in out
    assert (tmp_path / "w" / "magface-iresnet34.pth").is_file()

    rc = _fetch("magface-iresnet50", "--mirror", "http://127.0.0.1:9", "--weights-dir", str(tmp_path / "w2"))
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED" in out and "github.com/IrvingMeng/MagFace" in out
    assert not (tmp_path / "w2").exists() or not any((tmp_path / "w2").iterdir())


def test_html_page_is_not_taken_for_weights(tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    (served / "yolov5s-face.pt").write_text("<!DOCTYPE html><html><body>Virus scan warning</body></html>")
    with _Server(served) as srv:
        rc = _fetch("yolov5s-face", "--mirror", srv.url, "--weights-dir", str(tmp_path / "w"))
    out = capsys.readouterr().out
    assert rc == 1 and "HTML page" in out
    assert not any((tmp_path / "w").iterdir())


def test_unknown_name_lists_known(capsys):
    assert _fetch("yolov9-face") == 2
    assert "known models" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["yolov5n-0.5-face", "mobilefacenet"])
def test_default_pair_has_published_addresses_and_hashes(name):
    from facerec.cli.weights_cmd import _spec_of

    spec = _spec_of(name)
    assert spec.sha256 and spec.urls and spec.onnx_sha256 and spec.onnx_urls
    assert all(u.startswith("https://") for u in (*spec.urls, *spec.onnx_urls))


# ---- a model is fetched when one runnable file verifies; exports are optional --------------------


def _serve_only(models_dir: Path, root: Path, names: list[str]) -> Path:
    root.mkdir()
    for n in names:
        shutil.copy(models_dir / n, root / n)
    return root


def test_mirror_with_only_the_checkpoints_is_enough(models_dir, tmp_path, monkeypatch, capsys):
    """The issue's case: a mirror with the two .pt files and no .onnx export: exit 0, both
    verified, the exports listed as optional and nothing else written."""
    served = _serve_only(models_dir, tmp_path / "served", ["yolov5n-0.5-face.pt", "mobilefacenet_foamliu_ms1m.pt"])
    dest = tmp_path / "w"
    with _Server(served) as srv:
        rc = _fetch("yolov5n-0.5-face", "mobilefacenet", "--mirror", srv.url, "--weights-dir", str(dest))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sorted(p.name for p in dest.iterdir()) == ["mobilefacenet_foamliu_ms1m.pt", "yolov5n-0.5-face.pt"]
    for name in ("yolov5n-0.5-face.pt", "mobilefacenet_foamliu_ms1m.pt"):
        assert sha256_file(dest / name) == FILES[name]
    assert out.count("\noptional ") == 2 and "FAILED" not in out
    assert "2 verified, 0 unverified, 0 failed, of 4 files (2 optional not available" in out
    # and `facerec weights` calls the absent exports optional, not missing
    monkeypatch.setenv("FACEREC_WEIGHTS", "")
    monkeypatch.chdir(tmp_path)
    assert run(["weights", "--weights-dir", str(dest)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "yolov5n-0.5-face " in line]
    assert [r[2:5] for r in rows] == [["torch", "verified", str(dest / "yolov5n-0.5-face.pt")],
                                      ["onnx", "missing", "(optional)"]]


def test_from_folder_with_only_a_checkpoint(models_dir, tmp_path, capsys):
    src = _serve_only(models_dir, tmp_path / "usb", ["mobilefacenet_foamliu_ms1m.pt"])
    rc = _fetch("mobilefacenet", "--from", str(src), "--weights-dir", str(tmp_path / "w"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "optional" in out and "mobilefacenet_foamliu_ms1m.onnx" in out


def test_corrupt_checkpoint_alone_is_refused_and_leaves_nothing(models_dir, tmp_path, capsys):
    """No export to fall back on and a bad checkpoint: exit 1, the folder stays empty."""
    served = tmp_path / "served"
    served.mkdir()
    data = bytearray((models_dir / "mobilefacenet_foamliu_ms1m.pt").read_bytes())
    data[-100] ^= 0x80
    (served / "mobilefacenet_foamliu_ms1m.pt").write_bytes(bytes(data))
    dest = tmp_path / "w"
    with _Server(served) as srv:
        rc = _fetch("mobilefacenet", "--mirror", srv.url, "--weights-dir", str(dest))
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "FAILED" in out and "is not the published 90a00ba1" in out and "optional" not in out
    assert list(dest.iterdir()) == []


def test_model_with_no_file_on_the_mirror_fails(models_dir, tmp_path, capsys):
    served = _serve_only(models_dir, tmp_path / "served", ["yolov5n-0.5-face.pt"])
    with _Server(served) as srv:
        rc = _fetch("yolov5n-0.5-face", "mobilefacenet", "--mirror", srv.url, "--weights-dir", str(tmp_path / "w"))
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "1 verified, 0 unverified, 2 failed, of 4 files (1 optional not available: yolov5n-0.5-face.onnx)" in out
    assert out.count("FAILED") == 2 and "get it by hand from https://github.com/foamliu/MobileFaceNet " in out


def test_checkpoints_alone_run_on_the_onnx_engine(models_dir, tmp_path, monkeypatch):
    """What makes the export optional: with only the .pt files, the onnx engine converts them."""
    from face_embedding import create_embedder
    from facerec.detect import create_detector
    from facerec.align import align
    from facerec.imageio import read_image

    only = _serve_only(models_dir, tmp_path / "w", ["yolov5n-0.5-face.pt", "mobilefacenet_foamliu_ms1m.pt"])
    monkeypatch.setenv("FACEREC_WEIGHTS", "")
    monkeypatch.chdir(tmp_path)
    det = create_detector("yolov5n-0.5-face", weights_dir=only, engine="onnx", threads=1, cache_dir=str(tmp_path / "c"))
    emb = create_embedder("mobilefacenet", weights_dir=only, engine="onnx", threads=1, cache_dir=str(tmp_path / "c"))
    assert det.engine == "onnx" and emb.engine == "onnx"
    image = read_image(models_dir.parent / "data/identities/face_recognition_examples/obama/obama.jpg")
    faces = det(image)
    assert len(faces) == 1
    vec = emb.embed(align(image, faces.landmarks)).vectors
    assert vec.shape == (1, 128) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
