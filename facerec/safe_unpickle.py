"""Reading PyTorch checkpoint files without running anything they name.

A ``.pt``/``.pth`` file is a pickle, and a pickle can call any function it names: loading
an untrusted one with plain ``pickle`` or ``torch.load(weights_only=False)`` runs its
code. Every checkpoint this project reads (the YOLOv5-face ``.pt``, the MagFace and
MobileFaceNet state_dicts) goes through :func:`read_torch_pickle`, one unpickler that

* resolves only a fixed set of names: tensor storages, the tensor rebuild functions
  (replaced by our own, which only reshape bytes), ``OrderedDict``, ``set``, numpy arrays
  and scalars;
* turns the classes a caller allows (e.g. upstream YOLOv5's ``models.yolo.Model``) into
  :class:`InertObject` stand-ins that only keep their pickled state, so no method of the
  original class exists to run;
* refuses every other name with a :class:`~facerec.errors.CheckpointError` that names it;
* reads the data records itself, capped at :data:`MAX_RECORD_BYTES` each (zip bombs).

Both of PyTorch's formats are read: the zip archive written since torch 1.6, and the
older single stream (magic number, protocol, system info, the pickle, then the raw
storages), in which e.g. the published MobileFaceNet weights are stored.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import numpy as np
import torch

from facerec.errors import CheckpointError

try:  # numpy >= 2 moved the pickling helpers; numpy.core still works but warns
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

#: Largest single record read from a checkpoint. The largest model file this project
#: knows is a few hundred MB; a bigger record is a corrupt or hostile file (zip bomb).
MAX_RECORD_BYTES = 1 << 30

#: First pickle of a legacy (pre-zip) torch file, and the protocol it names.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class InertObject:
    """Stand-in for a class named in a pickled checkpoint.

    Creating one and restoring its state only stores what the pickle holds (in
    ``state`` and ``args``); no method of the original class exists here, so nothing the
    checkpoint refers to can run. ``upstream`` names the class it stands in for.
    """

    upstream = ""
    args: tuple[Any, ...]
    state: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        self.state = state if isinstance(state, dict) else {"__state__": state}

    def __repr__(self) -> str:
        return f"<inert {self.upstream}>"


#: Storage class name -> (torch dtype, numpy dtype of the stored bytes, little-endian).
_STORAGE_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "HalfStorage": (torch.float16, "<f2"), "FloatStorage": (torch.float32, "<f4"),
    "DoubleStorage": (torch.float64, "<f8"), "BFloat16Storage": (torch.bfloat16, "<u2"),
    "LongStorage": (torch.int64, "<i8"), "IntStorage": (torch.int32, "<i4"), "ShortStorage": (torch.int16, "<i2"),
    "CharStorage": (torch.int8, "i1"), "ByteStorage": (torch.uint8, "u1"), "BoolStorage": (torch.bool, "?"),
}


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_parameter(data: torch.Tensor, *_unused: Any) -> torch.Tensor:
    return data


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as numpy's pickles use it (bytes stored as latin-1 text)."""
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


#: Names resolved to real objects, none of which can run code chosen by the file.
_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}

_REBUILD_TENSOR = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}


def _storage_tensor(raw: bytes, np_dtype: str, dtype: torch.dtype, big_endian: bool) -> torch.Tensor:
    """A 1-d CPU tensor of ``dtype`` over a copy of ``raw`` (stored bytes, any byte order)."""
    array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder(">" if big_endian else "<"))
    tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_REAL_GLOBALS`, storages and allowed stand-ins.

    Stand-in classes are made per file, so a hostile pickle that sets attributes on a
    class it names cannot affect any other load. Storages come from ``storage(key, name,
    numel)``: the zip reader returns the filled tensor, the legacy reader an empty one
    it fills after the pickle (tensors are then views of it, as in ``torch.load``).
    """

    def __init__(self, stream: IO[bytes], path: str, allow: Mapping[str, frozenset[str]], what: str,
                 storage: Any = None, copy_tensors: bool = True) -> None:
        super().__init__(stream)
        self._path = path
        self._allow = allow
        self._what = what
        self._storage = storage
        self._copy = copy_tensors
        self._inert: dict[str, type[InertObject]] = {}

    def _rebuild_tensor(self, storage: torch.Tensor, offset: int, size: Sequence[int], stride: Sequence[int],
                        *_unused: Any) -> torch.Tensor:
        view = torch.as_strided(storage, tuple(size), tuple(stride), offset)
        return view.clone() if self._copy else view

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _REBUILD_TENSOR:
            return self._rebuild_tensor
        real = _REAL_GLOBALS.get((module, name))
        if real is not None:
            return real
        if name in self._allow.get(module, ()):
            qualname = f"{module}.{name}"
            if qualname not in self._inert:
                self._inert[qualname] = type(name, (InertObject,), {"upstream": qualname})
            return self._inert[qualname]
        raise CheckpointError(f"{self._path}: refused to load, the checkpoint references {module}.{name}, "
                              f"which is not part of {self._what}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and self._storage is not None):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage = self._storage(str(pid[2]), pid[1].name, pid[4])
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy files: (view key, offset, numel) into the root storage
            if not (isinstance(view, tuple) and len(view) == 3):
                raise pickle.UnpicklingError(f"unsupported storage view {view!r}")
            offset, numel = int(view[1]), int(view[2])
            if not (0 <= offset and offset + numel <= len(storage)):
                raise pickle.UnpicklingError(f"storage view {view!r} lies outside its storage")
            return storage[offset:offset + numel]
        return storage


def _read_record(archive: zipfile.ZipFile, name: str) -> bytes:
    if archive.getinfo(name).file_size > MAX_RECORD_BYTES:
        raise pickle.UnpicklingError(f"record {name} is larger than {MAX_RECORD_BYTES} bytes")
    return archive.read(name)


def _read_zip(p: Path, allow: Mapping[str, frozenset[str]], what: str) -> Any:
    with zipfile.ZipFile(p) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{p}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0].rsplit("/", 1)[0]
        big_endian = False
        if f"{prefix}/byteorder" in archive.namelist():
            big_endian = _read_record(archive, f"{prefix}/byteorder").strip() == b"big"
        storages: dict[str, torch.Tensor] = {}

        def storage(key: str, kind: str, numel: Any) -> torch.Tensor:
            if key not in storages:
                dtype, np_dtype = _STORAGE_DTYPES[kind]
                storages[key] = _storage_tensor(_read_record(archive, f"{prefix}/data/{key}"), np_dtype, dtype,
                                                big_endian)
            return storages[key]

        data = io.BytesIO(_read_record(archive, pickles[0]))
        return _RestrictedUnpickler(data, str(p), allow, what, storage).load()


def _read_legacy(p: Path, allow: Mapping[str, frozenset[str]], what: str) -> Any:
    with open(p, "rb") as fh:
        header = [_RestrictedUnpickler(fh, str(p), {}, what).load() for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL or not isinstance(header[2], dict):
            raise CheckpointError(f"{p}: not a PyTorch checkpoint (no torch zip archive or legacy header)")
        big_endian = not header[2].get("little_endian", True)
        storages: dict[str, tuple[torch.Tensor, str]] = {}

        def storage(key: str, kind: str, numel: Any) -> torch.Tensor:
            if key not in storages:
                dtype, np_dtype = _STORAGE_DTYPES[kind]
                n = int(numel)
                if not 0 <= n * np.dtype(np_dtype).itemsize <= MAX_RECORD_BYTES:
                    raise pickle.UnpicklingError(f"storage {key} of {n} elements is out of bounds")
                storages[key] = (torch.zeros(n, dtype=dtype), np_dtype)
            return storages[key][0]

        result = _RestrictedUnpickler(fh, str(p), allow, what, storage, copy_tensors=False).load()
        keys = _RestrictedUnpickler(fh, str(p), {}, what).load()
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise CheckpointError(f"{p}: its storage list does not match the tensors it holds")
        for key in map(str, keys):
            target, np_dtype = storages[key]
            numel = int.from_bytes(fh.read(8), "big" if big_endian else "little")
            if numel != len(target):
                raise CheckpointError(f"{p}: storage {key} holds {numel} elements, its tensors expect {len(target)}")
            size = numel * np.dtype(np_dtype).itemsize
            raw = fh.read(size)
            if len(raw) != size:
                raise CheckpointError(f"{p}: truncated (storage {key} ends early)")
            target.copy_(_storage_tensor(raw, np_dtype, target.dtype, big_endian))
        return result


def read_torch_pickle(path: str | os.PathLike, allow: Mapping[str, frozenset[str]] | None = None, *,
                      what: str = "a model checkpoint (a state_dict of tensors)", legacy: bool = True) -> Any:
    """Unpickle a PyTorch checkpoint onto the CPU without importing or running anything it names.

    Args:
        path: the ``.pt``/``.pth`` file.
        allow: ``module -> class names`` that may appear; each comes back as an
            :class:`InertObject` stand-in (e.g. upstream YOLOv5's pickled modules).
            Nothing else beyond tensors, containers and numpy values is resolved.
        what: what the file should be, for the refusal message ("... which is not part
            of <what>").
        legacy: also read the pre-zip format (torch < 1.6); ``False`` refuses it.

    Returns:
        The unpickled object; tensors are CPU tensors in their stored dtype.

    Raises:
        CheckpointError: not a torch checkpoint (or a legacy one with ``legacy=False``),
            a truncated or corrupt file, or a reference to any name outside the allowlist.
    """
    p = Path(path)
    allowed = allow or {}
    is_zip = zipfile.is_zipfile(p)
    if not is_zip and not legacy:
        raise CheckpointError(
            f"{p}: not a PyTorch zip checkpoint (files from torch < 1.6 or plain pickles are not read); "
            "re-save it with a current torch or use the ONNX backend"
        )
    try:
        return _read_zip(p, allowed, what) if is_zip else _read_legacy(p, allowed, what)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt files raise many unrelated types
        raise CheckpointError(f"{p}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None


#: How many key names an error message lists before it says "and N more".
SHOWN_KEYS = 8


def short_list(keys: Sequence[str]) -> str:
    """``a, b, c and 12 more`` for a list of checkpoint keys (sorted first)."""
    keys = sorted(keys)
    head = ", ".join(keys[:SHOWN_KEYS])
    return head + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def key_mismatch(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """``3 missing key(s): ...; 1 unexpected key(s): ...`` for a checkpoint that does not fit
    its network (every loader words it the same way)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {short_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {short_list(unexpected)}")
    return "; ".join(parts)
