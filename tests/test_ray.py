"""``facerec embed`` and ``facerec identify`` with ``--executor ray`` on a real two-node Ray
cluster (1 CPU each, started here in a private network namespace, see ray_cluster.py),
compared with local runs of the same commands on the same real crops and photos."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ray_cluster import ADDRESS, RayCluster

from facerec.gallery.store import GalleryStore
from facerec.types import EmbedderKey

MODELS = ["--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet", "--threads", "1"]
RAY = ["--executor", "ray", "--ray-address", ADDRESS]
FACEREC = [sys.executable, "-m", "facerec"]


def facerec(*argv: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*FACEREC, *argv], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def summary(out: str, data_dir: Path) -> list[str]:
    """The embed summary without its timings and folder."""
    out = out.replace(str(data_dir), "DATA")
    out = re.sub(r"\(\d+\.\d s\)", "(T)", out)
    return re.sub(r"in \d+\.\d s \(\d+\.\d faces/s\)", "in T", out).splitlines()


def onnx_key(out: str) -> EmbedderKey:
    return EmbedderKey.parse(re.search(r"with (mobilefacenet@\w+)", out).group(1))


def vectors_by_crop(data_dir: Path, key: EmbedderKey) -> dict[str, np.ndarray]:
    with GalleryStore(data_dir, readonly=True) as store:
        ids, _, vec, _ = store.vectors(key)
        path = {s.id: "/".join(Path(s.crop_path).parts[-2:]) for s in store.samples()}
    return {path[int(i)]: v for i, v in zip(ids, vec)}


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster(workers=1, cpus=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, data_dir: Path) -> Path:
    """55 real photos of 5 people aligned and embedded locally with the default engine."""
    g = tmp_path_factory.mktemp("ray") / "gallery"
    shutil.copytree(data_dir / "identities" / "dlib_johns", g / "raw")
    facerec("align", *MODELS, "--data-dir", str(g), "--no-progress")
    facerec("embed", *MODELS, "--data-dir", str(g), "--no-progress")
    return g


@pytest.fixture(scope="module")
def local_onnx(gallery: Path) -> tuple[Path, str]:
    """A copy of the gallery re-embedded here for the ONNX export (another vector space)."""
    d = gallery.parent / "local"
    shutil.copytree(gallery, d)
    return d, facerec("embed", *MODELS, "--engine", "onnx", "--data-dir", str(d), "--no-progress").stdout


def test_embed_on_cluster_equals_local(cluster: RayCluster, gallery: Path, local_onnx: tuple[Path, str]) -> None:
    local_dir, local_out = local_onnx
    d = gallery.parent / "on-ray"
    shutil.copytree(gallery, d)
    r = cluster.run(*FACEREC, "embed", *MODELS, "--engine", "onnx", "--data-dir", str(d), "--no-progress",
                    *RAY, "--batch-size", "8", "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(r.stdout, d) == summary(local_out, local_dir)
    assert "embedded 55 face(s)" in r.stdout
    key = onnx_key(r.stdout)
    here, there = vectors_by_crop(local_dir, key), vectors_by_crop(d, key)
    assert len(here) == len(there) == 55 and here.keys() == there.keys()
    assert min(float(here[k] @ there[k]) for k in here) >= 0.999
    # one actor on each node, each loading the embedder once
    nodes = set(re.findall(r"actor on node (\w+)", r.stderr))
    assert len(nodes) == 2, r.stderr
    assert "ray: 2 actor(s) on 2 node(s)" in r.stderr
    for name in ("head", "worker0"):
        assert len(re.findall(r"facerec worker on node .* loaded in", cluster.worker_logs(name))) == 1, name

    again = cluster.run(*FACEREC, "embed", *MODELS, "--engine", "onnx", "--data-dir", str(d), "--no-progress", *RAY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "embedded 0 face(s)" in again.stdout and "55 unchanged" in again.stdout
    assert "actor(s)" not in again.stderr  # nothing to do: no actor started
    with GalleryStore(d, readonly=True) as store:
        assert store.integrity_check() == [] and store.count(key) == 55


def test_identify_on_cluster_equals_local(cluster: RayCluster, gallery: Path, data_dir: Path,
                                          tmp_path: Path) -> None:
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"this is not a jpeg")
    photos = [str(data_dir / "identities" / "face_recognition_examples" / "obama"), str(bad),
              str(data_dir / "identities" / "face_recognition_examples" / "_multi"), str(tmp_path / "missing.jpg"),
              *map(str, sorted((data_dir / "identities" / "dlib_johns" / "John_Simm").iterdir())[:3])]
    args = ["identify", *MODELS, "--data-dir", str(gallery), "--json", *photos]
    local = subprocess.run([*FACEREC, *args], capture_output=True, text=True, timeout=600)
    remote = cluster.run(*FACEREC, *args, *RAY, "--batch-size", "2", "--actors", "3", "--no-progress", "--annotate",
                         str(tmp_path / "annotated"))
    assert remote.returncode == local.returncode == 0, remote.stderr
    here = [json.loads(line) for line in local.stdout.splitlines()]
    there = [json.loads(line) for line in remote.stdout.splitlines()]
    assert len(here) == len(there) >= 15
    assert [x["image"] for x in here] == [x["image"] for x in there]
    assert [x.get("error") for x in here] == [x.get("error") for x in there]
    assert sum("error" in x for x in there) == 1
    for a, b in zip(here, there):
        assert [f["name"] for f in a["faces"]] == [f["name"] for f in b["faces"]], a["image"]
        for fa, fb in zip(a["faces"], b["faces"]):
            assert np.allclose(fa["box"], fb["box"], atol=0.5) and abs(fa["similarity"] - fb["similarity"]) < 1e-3
    assert sum(len(x["faces"]) for x in there) >= 15 and any(f["name"] for x in there for f in x["faces"])
    assert "skipped" in remote.stderr and "missing.jpg" in remote.stderr
    assert "room for 2 actor(s) of 1 CPU(s); starting 2, not 3" in remote.stderr
    assert len(list((tmp_path / "annotated").glob("*.jpg"))) == len(there) - 1  # all but the bad file


_PG_VECTORS = """
import json, sys
from facerec.gallery.postgres import PostgresGallery
from facerec.types import EmbedderKey
with PostgresGallery(sys.argv[1], readonly=True) as g:
    ids, names, vec, _ = g.vectors(EmbedderKey.parse(sys.argv[2]))
    print(json.dumps({"names": list(names), "vectors": vec.tolist(), "problems": g.integrity_check()}))
"""


def test_embed_on_cluster_postgres(cluster: RayCluster, gallery: Path, local_onnx: tuple[Path, str],
                                   tmp_path: Path) -> None:
    """A PostgreSQL gallery: the driver reads the crops from the database and sends them;
    the workers never connect to it."""
    from pg_server import PgServer

    server = PgServer()
    server._run_as = [*cluster.ns(), *server._run_as]  # the server lives in the cluster's namespace
    server.init().start()
    try:
        dsn = server.dsn()
        cfg = tmp_path / "pg.yaml"
        cfg.write_text(f"gallery:\n  backend: postgres\n  dsn: {dsn}\n")
        r = cluster.run(*FACEREC, "db", "copy", "--config", str(cfg), "--from", str(gallery), "--to", dsn)
        assert r.returncode == 0, r.stdout + r.stderr
        r = cluster.run(*FACEREC, "embed", *MODELS, "--config", str(cfg), "--engine", "onnx", "--no-progress", *RAY)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "embedded 55 face(s)" in r.stdout and "55 vectors for mobilefacenet@" in r.stdout
        key = onnx_key(r.stdout)
        out = cluster.run(sys.executable, "-c", _PG_VECTORS, dsn, str(key))
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["problems"] == [] and len(got["vectors"]) == 55
        ref = vectors_by_crop(local_onnx[0], key)
        for name, v in zip(got["names"], np.asarray(got["vectors"], np.float32)):
            assert max(float(v @ w) for k, w in ref.items() if k.startswith(f"{name}/")) >= 0.999, name
    finally:
        server.cleanup()


def _add_variants(d: Path) -> int:
    """Four altered copies (mirrored, lighter, darker, shifted) of every crop: more work."""
    n = 0
    for f in sorted((d / "preprocessed").glob("*/*.png")):
        img = cv2.imread(str(f))
        for k, v in enumerate((img[:, ::-1], cv2.add(img, 12), cv2.subtract(img, 12), np.roll(img, 2, axis=1))):
            cv2.imwrite(str(f.with_name(f"{f.stem}_v{k}.png")), v)
            n += 1
    return n


def test_worker_node_lost_mid_job(cluster: RayCluster, gallery: Path, local_onnx: tuple[Path, str],
                                  progress) -> None:
    """The worker node dies half way: the job finishes on the head, or stops with a
    message; either way every stored vector is whole and a rerun completes the gallery."""
    d = gallery.parent / "lost-node"
    shutil.copytree(gallery, d)
    total = 55 + _add_variants(d)
    cmd = [*FACEREC, "embed", *MODELS, "--engine", "onnx", "--data-dir", str(d), "--no-progress", *RAY,
           "--batch-size", "1"]
    key = onnx_key(local_onnx[1])
    proc = cluster.popen(*cmd)
    written = 0
    t0 = time.monotonic()
    while written < 10 and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.05)
        try:
            with GalleryStore(d, readonly=True) as store:
                written = store.count(key)
        except Exception:  # noqa: BLE001 - the driver may be creating the file's tables
            continue
    assert proc.poll() is None and 10 <= written < total, "the job ended before the node could be killed"
    cluster.kill("worker0")
    out, err = proc.communicate(timeout=300)
    progress(f"worker node killed after {written} of {total} vectors; the job "
             + ("finished on the head" if proc.returncode == 0 else f"stopped: {err.strip().splitlines()[-1]}"))
    assert "lost a Ray actor" in err, err
    if proc.returncode == 0:
        assert f"embedded {total} face(s)" in out
    else:
        assert proc.returncode == 2 and "rerun to do the rest" in err and "Traceback" not in err, err
    with GalleryStore(d, readonly=True) as store:
        assert store.integrity_check() == []
        partial = store.count(key)
    assert written <= partial <= total
    rerun = cluster.run(*cmd)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"embedded {total - partial} face(s)" in rerun.stdout
    got, ref = vectors_by_crop(d, key), vectors_by_crop(local_onnx[0], key)
    assert len(got) == total
    assert min(float(got[k] @ ref[k]) for k in ref) >= 0.999
    assert np.allclose(np.linalg.norm(np.stack(list(got.values())), axis=1), 1, atol=1e-4)


def test_ray_executor_needs_a_reachable_address(tmp_path: Path, monkeypatch, capsys) -> None:
    """No address, or nothing listening there: one message, exit 2, nothing changed."""
    import socket

    from facerec.cli import run

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    d = ["--data-dir", str(tmp_path / "g")]
    assert run(["embed", *d, "--no-progress", "--executor", "ray"]) == 2
    assert "needs --ray-address HOST:PORT" in capsys.readouterr().err
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run(["embed", *d, "--no-progress", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert run(["embed", *d, "--no-progress", "--executor", "ray", "--actors", "0"]) == 2
    assert "--actors must be at least 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as in an install without the extra
    assert run(["embed", *d, "--no-progress", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 2
    assert "needs Ray, which is not installed: pip install 'facerec[ray]'" in capsys.readouterr().err


def test_local_commands_never_import_ray() -> None:
    code = ("import sys; from facerec.cli import build_parser; build_parser(); import facerec.distributed; "
            "print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
