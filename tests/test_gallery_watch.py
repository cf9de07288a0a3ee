"""The daemon's gallery index: incremental updates on both backends, NOTIFY, outages."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from test_gallery_contract import KEY_A, add, emb

from facerec.config import GalleryConfig
from facerec.gallery.backend import GalleryUnavailable, open_backend
from facerec.gallery.watch import GalleryWatcher


def wait_for(cond, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request, tmp_path: Path) -> GalleryConfig:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    return GalleryConfig(backend=request.param, dsn=dsn, data_dir=str(tmp_path / "gal"))


def test_changes_are_applied_incrementally(cfg: GalleryConfig):
    w = GalleryWatcher(cfg.data_dir, KEY_A, cfg, poll_s=0.05)
    try:
        assert w.index is None or len(w.index) == 0  # no gallery yet: everyone unknown
        with open_backend(cfg) as b:
            a = add(b, "Ann", 1)
            add(b, "Bob", 2)
            wait_for(lambda: w.index is not None and w.index.people == ["Ann", "Bob"])
            b.rename_person("Ann", "Anna")
            wait_for(lambda: w.index.people == ["Anna", "Bob"])
            b.delete_person("Bob")
            wait_for(lambda: w.index.people == ["Anna"])
            m = w.index.search(emb(KEY_A, 1), threshold=0.5)[0]
            assert m.name == "Anna" and m.similarity > 0.999
            assert w.index.sample_ids.tolist() == [a.id]
        assert w.full_reloads == 0  # every change came from the feed, none reloaded everything
        assert w.status()["online"] and w.status()["samples"] == 1
    finally:
        w.close()


def test_postgres_notify_reaches_the_watcher_without_polling(pg_dsn: str, tmp_path: Path):
    cfg = GalleryConfig(backend="postgres", dsn=pg_dsn, data_dir=str(tmp_path / "gal"))
    with open_backend(cfg) as b:
        add(b, "Ann", 1)
        w = GalleryWatcher(None, KEY_A, cfg, poll_s=3600)  # polling alone would never see the change
        try:
            assert w.index.people == ["Ann"]
            t0 = time.time()
            add(b, "Bob", 2)
            wait_for(lambda: w._index.people == ["Ann", "Bob"], timeout=5)
            assert w.applied_at - t0 < 5
        finally:
            w.close()


def test_postgres_outage_keeps_recognising_and_catches_up(tmp_path: Path, caplog):
    from pg_server import PgServer

    server = PgServer().init().start()
    try:
        cfg = GalleryConfig(backend="postgres", dsn=server.create_db("gal"), data_dir=str(tmp_path / "gal"))
        b = open_backend(cfg)
        add(b, "Ann", 1)
        b.close()
        caplog.set_level(logging.WARNING, logger="facerec.gallery.watch")
        w = GalleryWatcher(None, KEY_A, cfg, poll_s=0.2)
        try:
            assert w.index.people == ["Ann"]
            server.stop("immediate")
            wait_for(lambda: not w.online, timeout=15)
            # still recognising with the last loaded gallery
            assert w.index.search(emb(KEY_A, 1), threshold=0.5)[0].name == "Ann"
            assert w.status()["online"] is False and "cannot be reached" in w.status()["error"]
            with pytest.raises(GalleryUnavailable, match="cannot be reached"):
                open_backend(cfg)
            time.sleep(1.5)  # several failed attempts...
            said = [r for r in caplog.records if "gallery unavailable" in r.getMessage()]
            assert len(said) == 1  # ...but said once
            server.start()
            with open_backend(cfg) as b2:
                add(b2, "Bob", 2)
            wait_for(lambda: w.online and w._index.people == ["Ann", "Bob"], timeout=40)
            assert w.full_reloads == 0  # caught up from the change feed
        finally:
            w.close()
    finally:
        server.cleanup()


def test_sqlite_watcher_sees_a_gallery_created_later(tmp_path: Path):
    cfg = GalleryConfig(data_dir=str(tmp_path / "gal"))
    w = GalleryWatcher(cfg.data_dir, KEY_A, cfg, poll_s=0.01)
    try:
        assert w.index is None
        with open_backend(cfg) as b:
            add(b, "Ann", 1)
        wait_for(lambda: w.index is not None and w.index.people == ["Ann"])
        np.testing.assert_allclose(w.index.rows[0], emb(KEY_A, 1).vectors[0], rtol=1e-6)
    finally:
        w.close()


@pytest.mark.parametrize("template", ["mean", "max"])
def test_patched_index_equals_a_fresh_load(cfg: GalleryConfig, template: str):
    """Random enroll / delete / rename / move / merge through the backend: the watcher's
    patched index has the same people, rows and answers as an index built from scratch."""
    from facerec.gallery.search import GalleryIndex

    cfg = cfg.model_copy(update={"template": template})
    rng = np.random.default_rng(7)
    with open_backend(cfg) as b:
        ids = [add(b, f"p{i % 5}", i).id for i in range(12)]
        w = GalleryWatcher(cfg.data_dir, KEY_A, cfg, poll_s=0.0, listen=False)
        try:
            seed = 100
            for step in range(16):
                op = ["enroll", "delete", "rename", "move", "merge", "delete_person"][step % 6]
                people = sorted(p.name for p in b.people())
                if op == "enroll" or len(ids) < 3:
                    seed += 1
                    ids.append(add(b, f"p{int(rng.integers(0, 8))}", seed).id)
                elif op == "delete":
                    b.delete_sample(ids.pop(int(rng.integers(len(ids)))))
                elif op == "rename":
                    b.rename_person(people[0], f"r{step}")
                elif op == "move":
                    b.move_sample(ids[int(rng.integers(len(ids)))], f"m{step}")
                elif op == "merge" and len(people) > 1:
                    b.merge_people(people[-1], people[0])
                elif op == "delete_person":
                    gone = people[int(rng.integers(len(people)))]
                    b.delete_person(gone)
                    ids = [s.id for s in b.samples()]
                assert w.poll(force=True) or op == "merge"
                assert w.full_reloads == 0
                fresh = GalleryIndex.from_store(b, KEY_A, template)
                assert w.index.people == fresh.people, (step, op)
                probes = emb(KEY_A, 999, n=6)
                np.testing.assert_allclose(w.index.similarities(probes), fresh.similarities(probes), atol=1e-5)
                np.testing.assert_array_equal(np.sort(w.index.sample_ids), np.sort(fresh.sample_ids))
                assert [m.name for m in w.index.search(probes, 0.2)] == [m.name for m in fresh.search(probes, 0.2)]
        finally:
            w.close()
