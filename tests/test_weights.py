from __future__ import annotations

import pytest

from facerec.errors import UnknownModelError, WeightsChecksumError, WeightsNotFoundError
from facerec.registry import Registry
from facerec.weights import WeightsSpec, resolve_weights, search_dirs, sha256_file

MFN_SHA = "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4"


def _spec(**kw) -> WeightsSpec:
    base = dict(file="mobilefacenet_foamliu_ms1m.pt", sha256=MFN_SHA, url="https://example.org/mfn",
                input_size=(112, 112), channel_order="RGB")
    base.update(kw)
    return WeightsSpec(**base)


def test_real_file_resolves_and_verifies(models_dir):
    p = resolve_weights(_spec(), weights_dir=models_dir)
    assert p.name == "mobilefacenet_foamliu_ms1m.pt" and sha256_file(p) == MFN_SHA


def test_missing_file_names_places_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights(_spec(file="nothere.pt"), weights_dir=tmp_path / "cfg")
    msg = str(e.value)
    assert "nothere.pt" in msg and "https://example.org/mfn" in msg and str(tmp_path) in msg and MFN_SHA in msg


def test_checksum_mismatch_is_refused(tmp_path, models_dir):
    data = bytearray((models_dir / "mobilefacenet_foamliu_ms1m.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "mobilefacenet_foamliu_ms1m.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="does not match"):
        resolve_weights(_spec(), weights_dir=tmp_path)
    # the explicit path is verified too
    with pytest.raises(WeightsChecksumError):
        resolve_weights(_spec(), path=tmp_path / "mobilefacenet_foamliu_ms1m.pt")
    assert resolve_weights(_spec(), weights_dir=tmp_path, verify=False).parent == tmp_path


def test_search_order_config_then_local_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_WEIGHTS", f"{tmp_path / 'e1'}:{tmp_path / 'e2'}")
    dirs = search_dirs(tmp_path / "cfg")
    assert dirs[0] == tmp_path / "cfg"
    assert dirs[-2:] == [tmp_path / "e1", tmp_path / "e2"]
    assert any(d.name == "weights" for d in dirs[1:-2])


def test_onnx_backend_uses_its_own_file_and_hash(models_dir):
    spec = _spec(onnx_file="mobilefacenet_foamliu_ms1m.onnx",
                 onnx_sha256="b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507")
    assert resolve_weights(spec, weights_dir=models_dir, backend="onnx").suffix == ".onnx"
    with pytest.raises(WeightsNotFoundError, match="no onnx export"):
        resolve_weights(_spec(), weights_dir=models_dir, backend="onnx")


def test_registry_unknown_name_lists_known():
    reg: Registry[object] = Registry("detector")
    reg.register("a-model", _spec())(lambda: None)
    with pytest.raises(UnknownModelError, match="known detectors: a-model"):
        reg.get("b-model")
    with pytest.raises(ValueError, match="twice"):
        reg.register("a-model", _spec())(lambda: None)


def test_checksums_file_matches_the_registered_specs():
    """weights/checksums.sha256 is for people; the registry is for code. They must agree."""
    from face_embedding import embedder_registry
    from facerec.detect import detector_registry
    from facerec.weights import PROJECT_ROOT

    listed = dict(
        reversed(line.split()) for line in (PROJECT_ROOT / "weights" / "checksums.sha256").read_text().splitlines()
    )
    known = {}
    for reg in (detector_registry(), embedder_registry()):
        for e in reg.entries():
            for backend in ("torch", "onnx"):
                names, sha = e.weights.names(backend), e.weights.expected_sha256(backend)
                if names and sha:
                    known[names[0]] = sha
    assert listed == known


def test_not_found_names_weights_fetch_first(tmp_path, monkeypatch):
    """The message starts with the command that fixes it, then the places, then the page."""
    from face_embedding.mobilefacenet import WEIGHTS

    monkeypatch.setenv("FACEREC_WEIGHTS", "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights(WEIGHTS, weights_dir=tmp_path / "none")
    msg = str(e.value)
    assert msg.index("`facerec weights fetch mobilefacenet`") < msg.index("Looked in") < msg.index("By hand")


def test_onnx_hint_names_the_onnx_file_not_the_checkpoint(tmp_path, monkeypatch):
    from face_embedding.mobilefacenet import WEIGHTS

    monkeypatch.setenv("FACEREC_WEIGHTS", "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights(WEIGHTS, weights_dir=tmp_path / "none", backend="onnx")
    msg = str(e.value)
    assert "mobilefacenet_foamliu_ms1m.onnx not found" in msg and "MobileFaceNet.onnx" in msg
    assert "mobilefacenet.pt" not in msg and "mobilefacenet_foamliu_ms1m.pt" not in msg


def test_fresh_install_error_names_the_default_pair_and_fetch(tmp_path):
    """No weights anywhere: ``facerec detect`` names the model ``weights fetch`` installs
    (not yolov5s-face, which it cannot download) and the command first."""
    import os
    import subprocess
    import sys

    from facerec.weights import ENV_VAR, PROJECT_ROOT

    img = PROJECT_ROOT.parent / "shared/data/identities/face_recognition_examples/obama/obama.jpg"
    env = {**os.environ, ENV_VAR: ""}
    (tmp_path / "c.yaml").write_text("{}\n")
    out = subprocess.run([sys.executable, "-m", "facerec", "detect", str(img), "--config", str(tmp_path / "c.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "yolov5n-0.5-face.pt" in out.stderr and "yolov5s-face" not in out.stderr
    assert out.stderr.index("facerec weights fetch yolov5n-0.5-face") < out.stderr.index("Looked in")
    assert "Traceback" not in out.stderr
