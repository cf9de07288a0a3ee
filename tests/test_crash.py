"""Crash safety, short version of ``bench/crash.py``: a writer doing real enrollments,
embeddings, deletions and renames through the gallery service is SIGKILLed at random
moments on both backends, and the PostgreSQL server is SIGKILLed during writes; after each
kill the gallery must pass its integrity check and hold exactly the completed operations
(the interrupted one fully or not at all). The full run (100 + 100 + 20 trials) is the
bench's; these keep the guarantee in the suite.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "crash.py"


@pytest.fixture(scope="module")
def crash():
    spec = importlib.util.spec_from_file_location("facerec_bench_crash", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def setup(crash, one_torch_thread, tmp_path_factory):
    photos = crash.lfw_photos(8)
    analyzer = crash.build_analyzer(crash.make_config("sqlite", str(tmp_path_factory.mktemp("warm")), None))
    return photos, analyzer


# ---------------------------------------------------------------------------- the checker itself


def test_checker_rejects_a_partial_person_and_accepts_either_side_of_an_interrupted_op(crash):
    before = crash.State(frozenset({"ada"}), {1: ("ada", "s1", True)})
    enroll = {"at": "begin", "op": "enroll", "name": "bo", "sha256": "s2"}
    partial = crash.State(frozenset({"ada", "bo"}), {1: ("ada", "s1", True)})  # person row, no sample
    no_vector = crash.State(frozenset({"ada", "bo"}), {1: ("ada", "s1", True), 2: ("bo", "s2", False)})
    done = crash.State(frozenset({"ada", "bo"}), {1: ("ada", "s1", True), 2: ("bo", "s2", True)})
    assert crash.check(before, [enroll], before)[0]
    assert crash.check(before, [enroll], done)[0]
    assert not crash.check(before, [enroll], partial)[0]
    assert not crash.check(before, [enroll], no_vector)[0]
    # a completed operation must be there
    assert not crash.check(before, [enroll, {"at": "end", "sample": 2}], before)[0]
    # embed: whole batches only
    many = crash.State(frozenset({"ada"}), {i: ("ada", f"s{i}", False) for i in range(1, 6)})
    embed = {"at": "begin", "op": "embed", "todo": [1, 2, 3, 4, 5]}
    batch = crash.State(many.people, {i: ("ada", f"s{i}", i <= 3) for i in range(1, 6)})
    torn = crash.State(many.people, {i: ("ada", f"s{i}", i <= 2) for i in range(1, 6)})
    assert crash.check(many, [embed], batch)[0]
    assert not crash.check(many, [embed], torn)[0]


# ---------------------------------------------------------------------------- kills


def _run(crash, setup, backend: str, tmp_path: Path, dsn: str | None = None, server=None, trials: int = 5):
    photos, analyzer = setup
    cfg = crash.make_config(backend, str(tmp_path / "gallery"), dsn)
    tally = crash.Tally(backend)
    crash.run_trials(tally, cfg, analyzer, photos, trials, random.Random(1), 1.0, server=server,
                     kill_the_server=server is not None)
    print(tally.line())
    assert tally.failures == []
    assert tally.trials == trials and tally.ops > 0
    return cfg


def test_sqlite_writer_killed_at_random_moments(crash, setup, tmp_path: Path):
    cfg = _run(crash, setup, "sqlite", tmp_path)
    rc, out = crash.db_check_cli(cfg, tmp_path)
    assert rc == 0, out


def test_postgres_writer_killed_at_random_moments(crash, setup, tmp_path: Path, pg_dsn: str):
    _run(crash, setup, "postgres", tmp_path, pg_dsn)


def test_postgres_server_killed_during_writes(crash, setup, tmp_path: Path):
    from pg_server import PgServer

    server = PgServer().init().start()
    try:
        cfg = _run(crash, setup, "postgres", tmp_path, server.create_db("crash"), server=server, trials=3)
        rc, out = crash.db_check_cli(cfg, tmp_path)
        assert rc == 0, out
    finally:
        server.cleanup()
