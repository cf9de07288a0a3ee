"""Shared fixtures: the real models and photos in ../shared, found once.

CI sets ``FACEREC_WEIGHTS=../shared/models``; when it is unset the tests look beside the
checkout. Tests that need a file that is not there fail (not skip): a green run must
mean the real models were exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEREC_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"
#: The small real models every command-line test runs, as flags (``*MODEL_FLAGS``); a test
#: adds its own ``--threads``, ``--engine`` or ``--input-size`` after them.
MODEL_FLAGS = ("--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet")

if not os.environ.get("FACEREC_WEIGHTS"):
    os.environ["FACEREC_WEIGHTS"] = str(MODELS)
# CI passes a path relative to the checkout; tests also run commands from other folders.
os.environ["FACEREC_WEIGHTS"] = os.pathsep.join(
    str(Path(p).expanduser().resolve()) for p in os.environ["FACEREC_WEIGHTS"].split(os.pathsep) if p.strip()
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"{SHARED} missing: tests need ../shared beside the checkout"
    return SHARED


@pytest.fixture(scope="session")
def models_dir(shared_dir: Path) -> Path:
    return MODELS


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return DATA


@pytest.fixture(scope="session")
def photo(data_dir: Path):
    """Path of a named real photo: ``photo("face_recognition_examples/obama/...")``."""

    def get(rel: str) -> Path:
        p = data_dir / "identities" / rel if not (data_dir / rel).exists() else data_dir / rel
        assert p.exists(), f"missing test photo {p}"
        return p

    return get


@pytest.fixture(scope="session")
def detector():
    """The real yolov5n-0.5-face detector (PyTorch), shared across tests."""
    from facerec.detect import create_detector

    return create_detector("yolov5n-0.5-face")


@pytest.fixture(scope="session")
def embedder():
    """The real MobileFaceNet embedder (PyTorch), shared across tests."""
    from face_embedding import create_embedder

    return create_embedder("mobilefacenet")


@pytest.fixture(scope="session")
def analyzer(detector, embedder):
    from facerec.analyze import FaceAnalyzer

    return FaceAnalyzer(detector, embedder, threshold=embedder.default_threshold)


@pytest.fixture
def service(analyzer, tmp_path):
    """A gallery service on a fresh SQLite gallery under ``tmp_path``, with the shared models."""
    from facerec.config import load_config
    from facerec.gallery.service import GalleryService

    svc = GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "gallery")}), analyzer=analyzer)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one intra-op thread, then restore the setting.

    On two shared cores torch's OpenMP threads busy-wait for each other: a 640x448
    yolov5n-0.5-face pass took 0.7 to 8 s with two threads against 0.1 s with one. The
    commands under test that take ``--threads 1`` set it themselves; this gives the rest
    of the run its setting back afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (see tests/pg_server.py); fails when absent."""
    from pg_server import PgServer

    server = PgServer().init().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(pg_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return pg_server.create_db()


@pytest.fixture
def progress(pytestconfig):
    """``progress(msg)``: one short line on the terminal, also without ``-s``, so a long
    acceptance test shows it is working."""
    import time

    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    t0 = time.monotonic()

    def say(msg: str) -> None:
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"  [{time.monotonic() - t0:5.1f} s] {msg}")

    return say
