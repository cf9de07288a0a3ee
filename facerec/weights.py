"""Weights files: where they come from, where they are looked for, and verification.

Weight files are never downloaded at run time and never committed. A model's
:class:`WeightsSpec` names the file, its published sha256 and the upstream URL; the file
is found by :func:`resolve_weights` in this order:

1. an explicit path (command-line ``--weights`` / a path given in the config),
2. ``models.weights_dir`` from ``config.yaml``,
3. ``./weights/`` (the project's folder, or the current directory's),
4. each directory in ``FACEREC_WEIGHTS`` (``os.pathsep``-separated).

The sha256 is checked before anything is unpickled; a missing or mismatching file raises
a typed error that names the file, the expected hash and where to get it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facerec.errors import WeightsChecksumError, WeightsNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "FACEREC_WEIGHTS"

Backend = Literal["torch", "onnx"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's weights come from and how to feed the model.

    Attributes:
        file: file name looked for on the search path.
        sha256: published hash, or ``None`` where upstream publishes none (the file is
            then used unverified and ``facerec weights`` says so).
        url: where a user gets the file by hand.
        input_size: network input ``(height, width)`` in pixels.
        channel_order: ``"RGB"`` or ``"BGR"`` as the network was trained.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel std divided after subtracting the mean.
        license: licence of the weights (not of this code).
        aliases: other file names under which the same weights are distributed.
        onnx_file: file name of the upstream ONNX export, if one exists.
        onnx_sha256: published hash of the ONNX export.
        urls: direct download addresses of ``file``, tried in order by ``facerec weights
            fetch`` (never at run time); empty where upstream publishes only pages that need
            a person (e.g. a Google Drive folder), then ``url`` says where to go.
        onnx_urls: the same for ``onnx_file``.
        onnx_page: where a person gets ``onnx_file`` by hand, where that is not ``url``
            (the export often lives elsewhere than the checkpoint's release).
    """

    file: str
    sha256: str | None
    url: str
    input_size: tuple[int, int]
    channel_order: Literal["RGB", "BGR"]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    license: str = "unknown"
    aliases: tuple[str, ...] = ()
    onnx_file: str | None = None
    onnx_sha256: str | None = None
    urls: tuple[str, ...] = ()
    onnx_urls: tuple[str, ...] = ()
    onnx_page: str | None = None

    def names(self, backend: Backend = "torch") -> tuple[str, ...]:
        """File names to look for with ``backend``."""
        if backend == "onnx":
            return (self.onnx_file,) if self.onnx_file else ()
        return (self.file, *self.aliases)

    def expected_sha256(self, backend: Backend = "torch") -> str | None:
        return self.onnx_sha256 if backend == "onnx" else self.sha256

    def download_urls(self, backend: Backend = "torch") -> tuple[str, ...]:
        """Direct download addresses of the ``backend`` file, in the order to try them."""
        return self.onnx_urls if backend == "onnx" else self.urls

    def page(self, backend: Backend = "torch") -> str:
        """Where a person gets the ``backend`` file by hand."""
        return (self.onnx_page or self.url) if backend == "onnx" else self.url


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for weights, in order (see module docstring)."""
    dirs: list[Path] = []
    if weights_dir:
        dirs.append(Path(weights_dir).expanduser())
    dirs.append(Path.cwd() / "weights")
    dirs.append(PROJECT_ROOT / "weights")
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime) for this process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def find_weights(spec: WeightsSpec, path: str | os.PathLike[str] | None = None,
                 weights_dir: str | os.PathLike[str] | None = None,
                 backend: Backend = "torch") -> Path | None:
    """The first existing file for ``spec`` and ``backend`` on the search path, or ``None``."""
    if path is not None:
        p = Path(path).expanduser()
        return p if p.is_file() else None
    for d in search_dirs(weights_dir):
        for name in spec.names(backend):
            p = d / name
            if p.is_file():
                return p
    return None


def fetch_command(spec: WeightsSpec) -> str:
    """The ``facerec weights fetch NAME`` command that gets ``spec``'s files.

    The registries are imported here, on the error path only: by then the model that
    asked for ``spec`` has imported them already.
    """
    from face_embedding import embedder_registry
    from facerec.detect import detector_registry

    for registry in (detector_registry(), embedder_registry()):
        for entry in registry.entries():
            if entry.weights == spec:
                return f"facerec weights fetch {entry.name}"
    return "facerec weights fetch NAME"


def use_onnx_export(spec: WeightsSpec, engine: str, weights: str | os.PathLike[str] | None,
                    weights_dir: str | os.PathLike[str] | None, checkpoint: Path | None) -> bool:
    """Whether a model built by name runs from its upstream ONNX export, not its checkpoint.

    The ``onnx`` engine takes the export when it is present; OpenVINO takes it when the
    checkpoint is absent. Without the export both engines convert the checkpoint (the
    ``.pt`` alone runs every engine, which is why ``facerec weights fetch`` calls the
    export optional), and when neither file is there the checkpoint is what the
    not-found error names. An explicit ``weights`` file is used as given.

    Args:
        spec: the model's weights spec.
        engine: the concrete engine (``torch``, ``onnx`` or ``openvino``).
        weights: an explicit file, if any.
        weights_dir: directory from the configuration, searched first.
        checkpoint: the checkpoint found on the search path, or ``None``.
    """
    if weights is not None or spec.onnx_file is None or engine == "torch":
        return False
    if engine == "openvino" and checkpoint is not None:
        return False
    return find_weights(spec, None, weights_dir, "onnx") is not None


def resolve_weights(spec: WeightsSpec, path: str | os.PathLike[str] | None = None,
                    weights_dir: str | os.PathLike[str] | None = None, *, verify: bool = True,
                    backend: Backend = "torch") -> Path:
    """Find and verify the weights file for ``spec``.

    Args:
        spec: the model's weights spec.
        path: explicit file; when given, no search happens.
        weights_dir: directory from the configuration, searched first.
        verify: check the sha256 (skipped where the spec has none).
        backend: ``"torch"`` for the checkpoint, ``"onnx"`` for the ONNX export.

    Raises:
        WeightsNotFoundError: no file found; the message lists the places searched.
        WeightsChecksumError: the file's sha256 differs from the published one.
    """
    found = find_weights(spec, path, weights_dir, backend)
    wanted = list(spec.names(backend))
    expected = spec.expected_sha256(backend)
    if not wanted and path is None:
        raise WeightsNotFoundError(f"no {backend} export is published for {spec.file}; use another backend")
    if found is None:
        if path is not None:
            raise WeightsNotFoundError(f"weights file {path} does not exist (expected {spec.file}, from {spec.url})")
        places = "\n  ".join(str(d) for d in search_dirs(weights_dir))
        raise WeightsNotFoundError(
            f"weights {' or '.join(wanted)} not found. Run `{fetch_command(spec)}` to download and verify it "
            f"into ./weights/ (--mirror URL or --from DIR when offline). Looked in:\n  {places}\n"
            f"By hand: get it from {spec.page(backend)}"
            + (f" (sha256 {expected})" if expected else "")
            + f", put it in ./weights/ or point {ENV_VAR} or models.weights_dir at its folder."
        )
    if verify and expected and found.name in wanted:
        actual = sha256_file(found)
        if actual != expected:
            raise WeightsChecksumError(
                f"{found}: sha256 {actual} does not match the published {expected} of {found.name}. "
                f"The file is corrupt or a different model; download it again from {spec.url}."
            )
    return found
