"""Face embedders: MobileFaceNet on its real weights (PyTorch and ONNX Runtime), MagFace
iResNet checkpoint loading checked against a functional re-computation, and edge cases."""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from face_embedding import create_embedder, embedder_registry
from face_embedding.checkpoint import state_sha256
from face_embedding.iresnet import IResNet, iresnet
from face_embedding.mobilefacenet import MobileFaceNet
from face_embedding.onnx_backend import OnnxEmbedder
from facerec.align import align
from facerec.errors import CheckpointError, WeightsChecksumError, WeightsNotFoundError
from facerec.imageio import read_image
from facerec.types import AlignedFaces, Embeddings
from facerec.weights import ENV_VAR, sha256_file

# --- shared data (candidates for conftest.py) ---------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared"
MFN_FILE = "mobilefacenet_foamliu_ms1m.pt"
MFN_ONNX = "mobilefacenet_foamliu_ms1m.onnx"


def _weights_dir() -> Path:
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip() and (Path(part.strip()) / MFN_FILE).is_file():
            return Path(part.strip())
    return SHARED / "models"


WEIGHTS_DIR = _weights_dir()
LFW = SHARED / "data" / "lfw"
FACENET_CROPS = SHARED / "data" / "identities" / "facenet_pytorch_test_images"

#: Typical five landmarks of an LFW deep-funneled 250x250 image (median of YuNet's
#: landmarks over 125 LFW photos). Deep funneling already aligns the faces, so one fixed
#: transform gives usable ArcFace crops without a detector.
LFW_LANDMARKS = np.array([[104.0, 112.3], [148.5, 112.2], [125.7, 137.0], [107.7, 156.6], [145.6, 156.1]])
#: Two photos each of five people.
LFW_FILES = [
    "Aaron_Peirsol_0001", "Aaron_Peirsol_0002", "Angelina_Jolie_0003", "Angelina_Jolie_0004",
    "Colin_Powell_0038", "Colin_Powell_0074", "Serena_Williams_0017", "Serena_Williams_0052",
    "Tony_Blair_0006", "Tony_Blair_0094",
]


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    assert (WEIGHTS_DIR / MFN_FILE).is_file(), f"real weights not found in {WEIGHTS_DIR} (set {ENV_VAR})"
    return WEIGHTS_DIR


@pytest.fixture(scope="module")
def lfw_faces() -> tuple[list[str], np.ndarray]:
    """(person of each crop, ``(10, 112, 112, 3)`` aligned crops)."""
    assert LFW.is_dir(), f"{LFW} not found: tests need ../shared beside the checkout"
    people, crops = [], []
    for stem in LFW_FILES:
        person = stem.rsplit("_", 1)[0]
        crops.append(align(read_image(LFW / person / f"{stem}.jpg"), LFW_LANDMARKS).images[0])
        people.append(person)
    return people, np.stack(crops)


@pytest.fixture(scope="module")
def real_faces(lfw_faces) -> np.ndarray:
    """LFW crops plus facenet-pytorch's 160 px aligned crops resized to 112."""
    extra = [cv2.resize(read_image(p), (112, 112), interpolation=cv2.INTER_AREA)
             for p in sorted(FACENET_CROPS.glob("*/aligned_160.png"))]
    return np.concatenate([lfw_faces[1], np.stack(extra)]) if extra else lfw_faces[1]


@pytest.fixture(scope="module")
def mfn(weights_dir):
    return create_embedder("mobilefacenet", weights_dir=weights_dir, precision="fp32")  # parity: fp32 on every CPU


@pytest.fixture(scope="module")
def mfn_onnx(weights_dir):
    return create_embedder("mobilefacenet", weights_dir=weights_dir, backend="onnx")


# --- registry and constructor ---------------------------------------------------------------

ALL_NAMES = ["magface-iresnet100", "magface-iresnet18", "magface-iresnet34", "magface-iresnet50", "mobilefacenet"]


def test_every_family_is_registered():
    reg = embedder_registry()
    assert [n for n in reg.names() if n in ALL_NAMES] == ALL_NAMES


@pytest.mark.parametrize("name", ALL_NAMES)
def test_constructor_signature(name):
    params = inspect.signature(embedder_registry().get(name).build).parameters
    assert list(params) == ["weights", "weights_dir", "runtime", "recognition", "verify", "model", "overrides"]
    assert params["runtime"].default is None and params["recognition"].default is None  # defaults: facerec.config


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n.startswith("magface")])
def test_magface_spec_is_bgr_unit_scale(name):
    spec = embedder_registry().get(name).weights
    assert (spec.channel_order, spec.mean, spec.std, spec.sha256) == ("BGR", (0, 0, 0), (1, 1, 1), None)
    assert "IrvingMeng/MagFace" in spec.url


# --- edge cases -------------------------------------------------------------------------------


def test_zero_faces_give_empty_embeddings_of_the_right_dim(mfn):
    for faces in (AlignedFaces.empty(), np.zeros((0, 112, 112, 3), np.uint8)):
        out = mfn.embed(faces)
        assert isinstance(out, Embeddings)
        assert out.vectors.shape == (0, 128) and out.norm.shape == (0,) and out.key == mfn.key


def test_zero_faces_magface():
    emb = create_embedder("magface-iresnet18", model=iresnet(18))
    assert emb.embed(AlignedFaces.empty()).vectors.shape == (0, 512)


def test_one_face(mfn, real_faces):
    out = mfn.embed(real_faces[:1])
    assert out.vectors.shape == (1, 128)
    assert np.linalg.norm(out.vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert out.norm[0] > 0


def test_batch_boundaries_do_not_change_results(weights_dir, real_faces):
    faces = real_faces[:5]
    small = create_embedder("mobilefacenet", weights_dir=weights_dir, batch_size=2).embed(faces)
    big = create_embedder("mobilefacenet", weights_dir=weights_dir, batch_size=32).embed(faces)
    np.testing.assert_allclose(small.vectors, big.vectors, atol=1e-5)
    np.testing.assert_allclose(small.norm, big.norm, rtol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 112, 112, 3), np.float32),  # wrong dtype
        np.zeros((2, 100, 100, 3), np.uint8),  # not an aligned crop size
        np.zeros((112, 112, 3), np.uint8),  # missing batch axis
        np.zeros((2, 112, 112), np.uint8),  # grey
    ],
    ids=["float32", "100px", "no-batch-axis", "grey"],
)
def test_wrong_input_raises_value_error(mfn, bad):
    with pytest.raises(ValueError):
        mfn.embed(bad)


def test_invalid_batch_size_and_backend(weights_dir):
    with pytest.raises(ValueError):
        create_embedder("mobilefacenet", weights_dir=weights_dir, batch_size=0)
    with pytest.raises(ValueError):
        create_embedder("mobilefacenet", weights_dir=weights_dir, backend="tensorrt")


def test_missing_weights_name_the_url(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="github.com/IrvingMeng/MagFace"):
        create_embedder("magface-iresnet34", weights_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="github.com/foamliu/MobileFaceNet"):
        create_embedder("mobilefacenet", weights=tmp_path / MFN_FILE)


def test_magface_on_onnx_runtime_needs_the_checkpoint(tmp_path, monkeypatch):
    """MagFace publishes no ONNX export: engine onnx converts the checkpoint, so a missing
    checkpoint is reported with its download page."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="github.com/IrvingMeng/MagFace"):
        create_embedder("magface-iresnet50", engine="onnx", weights_dir=tmp_path)


def test_corrupted_weights_fail_the_checksum(weights_dir, tmp_path):
    bad = tmp_path / MFN_FILE
    data = bytearray((weights_dir / MFN_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="does not match"):
        create_embedder("mobilefacenet", weights_dir=tmp_path)
    with pytest.raises(WeightsChecksumError):
        create_embedder("mobilefacenet", weights=bad)


def test_truncated_weights_without_verification_raise_checkpoint_error(weights_dir, tmp_path):
    bad = tmp_path / MFN_FILE
    bad.write_bytes((weights_dir / MFN_FILE).read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=MFN_FILE):
        create_embedder("mobilefacenet", weights=bad, verify=False)


# --- MobileFaceNet on real weights --------------------------------------------------------------


def test_mobilefacenet_key_is_the_file_hash(mfn, mfn_onnx):
    spec = embedder_registry().get("mobilefacenet").weights
    assert mfn.key.model == mfn_onnx.key.model == "mobilefacenet"
    assert mfn.key.weights_sha256 == spec.sha256
    assert mfn_onnx.key.weights_sha256 == spec.onnx_sha256
    assert mfn.key != mfn_onnx.key  # different files: galleries never mix them silently


def test_mobilefacenet_torch_matches_released_onnx(mfn, mfn_onnx, real_faces):
    assert isinstance(mfn_onnx, OnnxEmbedder) and mfn_onnx.fixed_batch == 1
    a, b = mfn.embed(real_faces), mfn_onnx.embed(real_faces)
    cos = np.sum(a.vectors * b.vectors, axis=1)
    print(f"MobileFaceNet torch vs ONNX on {len(cos)} real faces: min cosine {cos.min():.7f}")
    assert cos.min() > 0.9999
    np.testing.assert_allclose(a.norm, b.norm, rtol=1e-3)


def test_explicit_onnx_path_selects_onnx_runtime(weights_dir):
    emb = create_embedder("mobilefacenet", weights=weights_dir / MFN_ONNX)
    assert isinstance(emb, OnnxEmbedder)


def test_same_person_scores_higher_than_different_people(mfn, lfw_faces):
    people, crops = lfw_faces
    vec = mfn.embed(crops).vectors
    sim = vec @ vec.T
    same = np.array([[p == q for q in people] for p in people])
    np.fill_diagonal(same, False)
    different = ~same
    np.fill_diagonal(different, False)
    print(f"same-person min {sim[same].min():.3f}, different-person max {sim[different].max():.3f}")
    assert sim[same].min() > sim[different].max()
    assert sim[same].min() > mfn.default_threshold > sim[different].max()


def test_flip_tta_changes_the_vector_a_little(mfn, lfw_faces):
    crops = lfw_faces[1]
    plain, flipped = mfn.embed(crops), mfn.embed(crops, flip=True)
    cos = np.sum(plain.vectors * flipped.vectors, axis=1)
    assert np.abs(plain.vectors - flipped.vectors).max() > 1e-3
    assert cos.min() > 0.9
    raw = (mfn.forward_raw(mfn.preprocess(crops)) + mfn.forward_raw(mfn.preprocess(crops[:, :, ::-1]))) / 2
    np.testing.assert_allclose(flipped.vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    # averaged, not summed: the norm (MagFace's quality) keeps the scale of one pass
    np.testing.assert_allclose(flipped.norm, np.linalg.norm(raw, axis=1), rtol=1e-5)
    assert np.all(flipped.norm < 1.1 * plain.norm)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter needs no onnxscript
def test_dynamic_and_fixed_batch_exports(tmp_path, real_faces):
    net = MobileFaceNet().eval()
    torch_emb = create_embedder("mobilefacenet", model=net, batch_size=3)
    ref = torch_emb.embed(real_faces[:5])
    for name, batch, dynamic in (("dyn.onnx", 1, True), ("fixed2.onnx", 2, False)):
        path = tmp_path / name
        torch.onnx.export(
            net, (torch.zeros(batch, 3, 112, 112),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "n"}, "output": {0: "n"}} if dynamic else None,
        )
        emb = create_embedder("mobilefacenet", weights=path, batch_size=3)
        assert emb.fixed_batch == (None if dynamic else 2)
        out = emb.embed(real_faces[:5])  # 5 faces: padded to the fixed batch where needed
        np.testing.assert_allclose(out.vectors, ref.vectors, atol=1e-4)


# --- MagFace iResNet ----------------------------------------------------------------------------


def _iresnet18_with_realistic_state(seed: int = 0) -> IResNet:
    """iResNet-18 whose BatchNorm statistics, affine terms and PReLU slopes are non-trivial."""
    torch.manual_seed(seed)
    net = iresnet(18)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass gives real statistics
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 3, 112, 112))
        g = torch.Generator().manual_seed(seed + 1)
        for k, v in net.state_dict().items():
            if k.endswith("prelu.weight"):
                v.copy_(torch.rand(v.shape, generator=g) * 0.5)
            elif v.ndim == 1 and k.endswith(".weight"):
                v.mul_(0.5 + torch.rand(v.shape, generator=g))
            elif v.ndim == 1 and k.endswith(".bias") and not k.startswith("fc"):
                v.add_(0.1 * torch.randn(v.shape, generator=g))
    return net.eval()


def _functional_iresnet(sd: dict[str, torch.Tensor], x: torch.Tensor, layers=(2, 2, 2, 2), eps=2e-5) -> torch.Tensor:
    """MagFace's iResNet forward pass written out from the official parameter names."""

    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            training=False, eps=eps)

    x = F.prelu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), sd["prelu.weight"])
    for stage, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            out = F.conv2d(bn(x, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(bn(out, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
            out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=2 if b == 0 else 1, padding=1), f"{p}.bn3")
            if b == 0:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), f"{p}.downsample.1")
            x = out + x
    x = bn(x, "bn2").flatten(1)  # dropout: identity at inference
    return bn(F.linear(x, sd["fc.weight"], sd["fc.bias"]), "features")


@pytest.fixture(scope="module")
def magface18() -> IResNet:
    return _iresnet18_with_realistic_state()


def _save_magface(path: Path, net: torch.nn.Module, prefix: str, head: str, extra: dict | None = None) -> Path:
    sd = {prefix + k: v.clone() for k, v in net.state_dict().items()}
    sd[head] = torch.randn(10, 512)  # margin classifier over 10 training identities
    sd.update(extra or {})
    torch.save({"epoch": 25, "arch": "iresnet18", "state_dict": sd}, path)
    return path


@pytest.mark.parametrize(
    "prefix, head",
    [("features.module.", "parallel_fc.weight"), ("module.features.", "module.fc.weight"), ("features.module.", "fc.weight")],
    ids=["ddp", "dp", "ddp-fc"],
)
def test_magface_checkpoint_loads_strictly_and_matches_functional(tmp_path, magface18, prefix, head):
    path = _save_magface(tmp_path / "magface_iresnet18_casia_dp.pth", magface18, prefix, head)
    emb = create_embedder("magface-iresnet18", weights=path, precision="fp32")
    assert emb.quality_is_norm and emb.dim == 512
    assert emb.key.weights_sha256 == sha256_file(path)
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        ref = _functional_iresnet(magface18.state_dict(), x)
        wrong_eps = _functional_iresnet(magface18.state_dict(), x, eps=1e-5)
    got = emb.forward_raw(x.numpy())
    diff = float(np.abs(got - ref.numpy()).max())
    print(f"iResNet-18 vs functional re-computation: max abs diff {diff:.2e}")
    assert diff < 1e-4
    assert float((wrong_eps - ref).abs().max()) > 1e-3  # the check would notice a wrong BN eps


def test_magface_architecture_details():
    net = iresnet(18)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.eps == 2e-5 for m in bns)
    assert isinstance(net.features, torch.nn.BatchNorm1d) and net.features.affine
    assert net.fc.in_features == 512 * 7 * 7 and net.fc.out_features == 512
    assert isinstance(net.dropout, torch.nn.Dropout2d) and net.dropout.p == 0.4
    assert [len(getattr(iresnet(34), f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    with pytest.raises(ValueError):
        iresnet(101)


def test_magface_keeps_the_raw_norm_as_quality(magface18):
    emb = create_embedder("magface-iresnet18", model=magface18)
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    out = emb.embed(faces)
    raw = emb.forward_raw(emb.preprocess(faces))
    np.testing.assert_allclose(out.norm, np.linalg.norm(raw, axis=1), rtol=1e-5)
    assert not np.allclose(out.norm, 1.0)
    # BGR in [0, 1], no mean/std: the network sees the crop's own channel order
    np.testing.assert_allclose(emb.preprocess(faces[:1])[0], faces[0].transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_model_argument_key_hashes_the_weights(magface18):
    a = create_embedder("magface-iresnet18", model=magface18)
    b = create_embedder("magface-iresnet18", model=magface18)
    c = create_embedder("magface-iresnet18", model=iresnet(18))
    assert a.key == b.key != c.key
    assert a.key.weights_sha256 == state_sha256(magface18)
    on_ort = create_embedder("magface-iresnet18", model=magface18, engine="onnx")
    assert on_ort.key == a.key and on_ort.engine == "onnx"  # same weights, same vector space
    with pytest.raises(ValueError):
        create_embedder("magface-iresnet18", model=magface18, engine="tensorrt")


def _broken(net: torch.nn.Module, how: str) -> dict:
    sd = {f"features.module.{k}": v.clone() for k, v in net.state_dict().items()}
    if how == "missing":
        del sd["features.module.layer3.1.bn2.running_var"]
    elif how == "unexpected":
        sd["features.module.layer5.0.conv1.weight"] = torch.zeros(1)
    elif how == "outside":
        sd["ema.layer1.0.conv1.weight"] = torch.zeros(1)
    elif how == "shape":
        sd["features.module.layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    return sd


@pytest.mark.parametrize(
    "how, expected",
    [
        ("missing", r"1 missing key\(s\): layer3\.1\.bn2\.running_var"),
        ("unexpected", r"1 unexpected key\(s\): layer5\.0\.conv1\.weight"),
        ("outside", r"unexpected key\(s\): ema\.layer1\.0\.conv1\.weight"),
        ("shape", r"layer2\.0\.conv1\.weight: checkpoint \(128, 64, 1, 1\) vs model \(128, 64, 3, 3\)"),
    ],
)
def test_magface_wrong_checkpoint_names_the_keys(tmp_path, magface18, how, expected):
    path = tmp_path / "bad.pth"
    torch.save({"epoch": 1, "state_dict": _broken(magface18, how)}, path)
    with pytest.raises(CheckpointError, match=expected) as err:
        create_embedder("magface-iresnet18", weights=path)
    assert str(path) in str(err.value)


def test_checkpoint_without_batchnorm_counters_loads(tmp_path, magface18):
    sd = {f"module.features.{k}": v for k, v in magface18.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"state_dict": sd}, tmp_path / "old.pth")
    emb = create_embedder("magface-iresnet18", weights=tmp_path / "old.pth", engine="torch", precision="fp32")  # a loader test
    x = np.random.default_rng(1).random((1, 3, 112, 112), dtype=np.float32)
    with torch.no_grad():
        ref = magface18(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(emb.forward_raw(x), ref, atol=1e-5)


def test_wrong_depth_checkpoint_is_refused(tmp_path, magface18):
    path = _save_magface(tmp_path / "r18.pth", magface18, "module.features.", "module.fc.weight")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): layer1\.2\."):
        create_embedder("magface-iresnet34", weights=path)


def test_shortened_key_lists(tmp_path):
    torch.save({"state_dict": {f"features.module.junk{i}": torch.zeros(1) for i in range(30)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"and \d+ more") as err:
        create_embedder("magface-iresnet18", weights=tmp_path / "x.pth")
    assert len(str(err.value)) < 2000


def test_copy_of_real_file_under_alias_is_verified(weights_dir, tmp_path):
    shutil.copy(weights_dir / MFN_FILE, tmp_path / "mobilefacenet.pt")
    emb = create_embedder("mobilefacenet", weights_dir=tmp_path)
    assert emb.key.weights_sha256 == embedder_registry().get("mobilefacenet").weights.sha256


def test_live_bf16_embedder_agrees_with_fp32_on_real_faces(weights_dir, real_faces, lfw_faces):
    """The live loop's ``precision: bf16`` keeps an fp32 gallery valid: vectors agree at
    cosine >= 0.999 and no pair similarity moves by more than 0.02 (measured here: 0.99964
    and 0.0095; thresholds sit 0.1 or more from typical genuine and impostor scores)."""
    fp32 = create_embedder("mobilefacenet", weights_dir=weights_dir, engine="torch", precision="fp32")
    bf16 = create_embedder("mobilefacenet", weights_dir=weights_dir, engine="torch", precision="bf16")
    assert bf16.precision == "bf16"
    assert bf16.key == fp32.key
    a, b = fp32.embed(real_faces).vectors, bf16.embed(real_faces).vectors
    cos = np.sum(a * b, axis=1)
    shift = np.abs(a @ a.T - b @ b.T).max()
    print(f"bf16 vs fp32 on {len(cos)} real faces: min cosine {cos.min():.6f}, largest pair shift {shift:.4f}")
    assert cos.min() >= 0.999
    assert shift < 0.02
