"""Every checkpoint loader reads through the one restricted unpickler (facerec.safe_unpickle).

A pickle that names a function (here ``os.system`` touching a marker file) is refused by
each loader, in both of PyTorch's formats, and never runs; the real checkpoints in
../shared/models still read exactly as ``torch.load`` reads them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from face_embedding import create_embedder
from face_embedding.checkpoint import read_checkpoint as read_embedder_checkpoint
from facerec.detect import create_detector
from facerec.detect.yolov5_face import load_yolov5_face
from facerec.detect.yolov5_face import read_checkpoint as read_yolov5_checkpoint
from facerec.errors import CheckpointError
from facerec.safe_unpickle import InertObject, read_torch_pickle

REFUSED = r"refused to load, the checkpoint references (posix|nt|os)\.system"


class _Payload:
    """Unpickling this runs ``touch <marker>``: the attack every loader must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(tmp_path: Path, name: str, *, legacy: bool) -> tuple[Path, Path]:
    marker = tmp_path / f"ran-{name}"
    path = tmp_path / name
    state = {"state_dict": {"conv.weight": torch.zeros(2)}, "model": _Payload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path, marker


LOADERS = {
    "embedder read_checkpoint": read_embedder_checkpoint,
    "mobilefacenet": lambda p: create_embedder("mobilefacenet", weights=p, verify=False, engine="torch"),
    "magface-iresnet18": lambda p: create_embedder("magface-iresnet18", weights=p, verify=False, engine="torch"),
    "yolov5 read_checkpoint": read_yolov5_checkpoint,
    "yolov5 load": load_yolov5_face,
    "yolov5n-0.5-face": lambda p: create_detector("yolov5n-0.5-face", weights=p, verify=False, engine="torch"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_a_function_in_a_zip_checkpoint(tmp_path, loader):
    path, marker = _evil(tmp_path, "evil.pt", legacy=False)
    with pytest.raises(CheckpointError, match=REFUSED) as err:
        LOADERS[loader](path)
    assert str(path) in str(err.value)
    assert not marker.exists(), "the pickled call ran"


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_a_function_in_a_legacy_checkpoint(tmp_path, loader):
    path, marker = _evil(tmp_path, "evil_legacy.pth", legacy=True)
    # the embedders read the pre-zip format (the published MobileFaceNet is one) and refuse
    # the name; the YOLOv5 reader refuses the format itself, before any unpickling
    with pytest.raises(CheckpointError, match=REFUSED if "yolo" not in loader else "not a PyTorch zip checkpoint"):
        LOADERS[loader](path)
    assert not marker.exists(), "the pickled call ran"


def test_a_plain_pickle_is_refused_at_its_first_object(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=REFUSED):
        read_torch_pickle(path)
    assert not marker.exists()


def test_truncated_legacy_file_is_a_checkpoint_error(tmp_path, models_dir):
    data = (models_dir / "mobilefacenet_foamliu_ms1m.pt").read_bytes()
    for cut in (10, len(data) // 2, len(data) - 3):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path.name)):
            read_torch_pickle(path)


@pytest.mark.parametrize("name", ["mobilefacenet_foamliu_ms1m.pt", "retinaface_mobilenet0.25_Final.pth"])
def test_real_legacy_checkpoints_read_as_torch_load_reads_them(models_dir, name):
    path = models_dir / name
    ours = read_torch_pickle(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(ref)
    for k, v in ref.items():
        assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k


def test_a_class_outside_the_allowlist_is_named(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"m": torch.nn.ReLU()}, path)
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.activation\.ReLU"):
        read_torch_pickle(path)
    obj = read_torch_pickle(path, {"torch.nn.modules.activation": frozenset({"ReLU"})})
    assert isinstance(obj["m"], InertObject) and obj["m"].upstream == "torch.nn.modules.activation.ReLU"
