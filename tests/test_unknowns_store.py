"""Sightings, negatives and the audit log of both gallery backends (SQLite, a real PostgreSQL): one behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facerec.config import Config
from facerec.errors import GalleryError
from facerec.gallery.backend import open_backend
from facerec.gallery.records import AuditNote
from facerec.live import TrackState, keep_best_face
from facerec.track import NameVote
from facerec.unknowns import SightingSink, encode_jpeg


def jpeg(seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8))


def unit(seed: int, d: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request, tmp_path: Path) -> Config:
    c = Config()
    c.gallery.data_dir = str(tmp_path / "gal")
    if request.param == "postgres":
        c.gallery.backend = "postgres"
        c.gallery.dsn = request.getfixturevalue("pg_dsn")
    return c


@pytest.fixture
def store(cfg: Config):
    s = open_backend(cfg.gallery)
    yield s
    s.close()


def test_empty(store):
    assert store.sightings() == [] and store.sighting_ids() == [] and store.latest_embedder() is None
    ids, vec = store.sighting_vectors("m")
    assert ids == [] and vec.shape[0] == 0
    assert store.prune_sightings(10, 10, 10) == [] and store.delete_sightings([]) == 0
    assert store.unknowns_stats() == {"sightings": 0, "crops": 0, "bytes": 0, "negatives": 0}
    with pytest.raises(GalleryError, match="no unknown crop 5"):
        store.unknown_crop(5)
    assert store.version() == 0 and store.audit_log() == []


def test_sightings_round_trip_and_delete(store, cfg: Config):
    with pytest.raises(GalleryError, match="at least one crop"):
        store.add_sighting("cam", 1, 0, 1, "m", unit(0), [])
    a = store.add_sighting("door", 7, 100.0, 104.5, "m", unit(1), [(jpeg(1), 0.2), (jpeg(2), 0.9)], added=1000)
    b = store.add_sighting("yard", 3, 200.0, 201.0, "other", unit(2), [(jpeg(3), 0.5)], added=1001)
    assert b > a
    s = store.sightings()
    assert [x.id for x in s] == [a, b]
    assert (s[0].camera, s[0].track_id, s[0].first_seen, s[0].last_seen) == ("door", 7, 100.0, 104.5)
    assert s[0].quality == pytest.approx(0.9) and len(s[0].crop_ids) == 2
    # best crop first
    assert store.unknown_crop(s[0].crop_ids[0]) == jpeg(2)
    assert s[0].bytes == len(jpeg(1)) + len(jpeg(2))
    ids, vec = store.sighting_vectors("m")
    assert ids == [a] and np.allclose(vec[0], unit(1))
    assert store.latest_embedder() == "other"
    assert [x.id for x in store.sightings(after=a)] == [b]
    assert [r[0] for r in store.unknown_crops([a], per_sighting=1)] == [a]
    assert store.delete_sightings([a, 999], audit=AuditNote("test", "unknown.dismiss", "candidate 1")) == 1
    assert store.sighting_ids() == [b] and store.unknowns_stats()["crops"] == 1
    assert store.audit_log()[0].action == "unknown.dismiss"
    assert store.version() == 0  # sightings are not gallery changes: no daemon reloads for them
    with pytest.raises(GalleryError):
        store.unknown_crop(s[0].crop_ids[0])
    if cfg.gallery.backend == "postgres":  # nothing at all under data_dir
        assert not Path(cfg.gallery.data_dir).exists()


def test_retention_by_age_count_and_size(store):
    size = len(jpeg(0))
    ids = [store.add_sighting("c", i, 0, 1, "m", unit(i), [(jpeg(0), 1.0)], added=1000.0 + i) for i in range(5)]
    # age: older than 2.5 s at t=1004 -> added 1000, 1001 go
    note = AuditNote("cli", "unknown.prune", "retention")
    assert store.prune_sightings(2.5, 100, 10**9, now=1004.0, audit=note) == ids[:2]
    assert store.audit_log()[0].detail == {"sightings": 2}
    # count: keep the newest 2
    assert store.prune_sightings(0, 2, 10**9, now=1004.0) == ids[2:3]
    # size: room for one crop only
    assert store.prune_sightings(0, 100, int(size * 1.5), now=1004.0) == ids[3:4]
    assert store.sighting_ids() == ids[4:]
    assert store.prune_sightings(0, 100, 10**9, now=1004.0, audit=note) == [] and len(store.audit_log()) == 1


def test_negatives_and_append_only_audit(store, cfg: Config):
    store.add_person("alice")
    store.add_person("bob")
    v0 = store.version()
    n = store.add_negative("alice", "m", unit(5), jpeg(5), audit=AuditNote("api", "negative.add", "alice"))
    store.add_negative("bob", "m", unit(6))
    names, vec = store.negatives("m")
    assert names == ["alice", "bob"] and np.allclose(vec[0], unit(5)) and n > 0
    assert store.negative_counts() == {"alice": 1, "bob": 1}
    assert store.version() == v0  # negatives have their own version
    nv = store.negatives_version()
    # negatives follow their person through a rename and go with them, in the same transaction
    store.rename_person("alice", "alicia", audit=AuditNote("cli", "person.rename", "alicia", {"previous": "alice"}))
    store.delete_person("bob", audit=AuditNote("cli", "person.delete", "bob"))
    assert store.negatives("m")[0] == ["alicia"] and store.negatives_version() != nv
    store.audit(AuditNote("api", "unknown.name", "carol", {"sightings": [1, 2]}))
    log = store.audit_log()
    assert [(e.interface, e.action, e.subject) for e in log] == [
        ("api", "unknown.name", "carol"), ("cli", "person.delete", "bob"), ("cli", "person.rename", "alicia"),
        ("api", "negative.add", "alice")]
    assert log[1].detail == {"samples": 0, "negatives": 1} and log[2].detail == {"previous": "alice", "negatives": 1}
    assert log[3].detail == {"negative": n}
    with pytest.raises(ValueError, match="interface"):
        AuditNote("telnet", "x", "y")
    # the database itself refuses to rewrite history
    with pytest.raises(Exception, match="append-only"):
        with store._feedback_tx() as c:
            c.run("DELETE FROM audit_log", ())
    with pytest.raises(Exception, match="append-only"):
        with store._feedback_tx() as c:
            c.run("UPDATE audit_log SET subject = ?", ("x",))
    assert len(store.audit_log()) == 4


def _track(tid: int, name: str | None, faces: int) -> TrackState:
    vote = NameVote(0.4, 10, 0.1)
    vote.add(name, 0.9 if name else 0.1, 1.0)
    st = TrackState(tid, vote, np.zeros(4, np.float32), 0.9, first_t=10.0, last_t=12.5)
    rng = np.random.default_rng(tid)
    for q in rng.permutation(faces):
        keep_best_face(st, float(q), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), unit(tid + int(q)), 3)
    return st


def test_sink_keeps_only_decided_unknown_tracks_with_their_best_crops(store, cfg: Config):
    sink = SightingSink(store, cfg.unknowns, "door", "m")
    known, unknown, bare = _track(1, "alice", 5), _track(2, None, 5), _track(3, None, 0)
    assert [f[0] for f in unknown.best_faces] == [4.0, 3.0, 2.0]  # the 3 best of 5
    sink.tracks_ended([known.record(), unknown.record(), bare.record()])
    sink.close()
    (s,) = store.sightings()
    assert (s.camera, s.track_id, len(s.crop_ids), s.quality) == ("door", 2, 3, 4.0)
    assert s.last_seen - s.first_seen == pytest.approx(2.5)
    _, vec = store.sighting_vectors("m")
    assert np.linalg.norm(vec[0]) == pytest.approx(1.0, abs=1e-5)
    assert sink.saved == 1 and sink.failed == 0 and sink.dropped == 0


def test_sink_saves_a_track_still_in_view_then_updates_it(store, cfg: Config):
    sink = SightingSink(store, cfg.unknowns, "door", "m")
    st = _track(2, None, 2)
    st.last_t = st.first_t + 1.0
    sink.tracks_in_view([st.record()])  # one second in view: not yet
    sink.flush()
    assert store.sightings() == []
    st.last_t = st.first_t + SightingSink.SAVE_AFTER_S + 0.5
    sink.tracks_in_view([st.record(), _track(1, "alice", 3).record()])  # the named track is never saved
    sink.flush()
    (s,) = store.sightings()
    assert s.track_id == 2 and len(s.crop_ids) == 2
    sink.tracks_in_view([st.record()])  # within UPDATE_EVERY_S: nothing new
    sink.flush()
    assert store.sightings() == [s]
    # more and better faces; the track ends: the same sighting, updated, not a second one
    keep_best_face(st, 9.0, np.zeros((112, 112, 3), np.uint8), unit(99), 3)
    st.last_t += 20.0
    sink.tracks_ended([st.record()])
    sink.close()
    (after,) = store.sightings()
    assert after.id == s.id and after.quality == 9.0 and len(after.crop_ids) == 3
    assert after.first_seen == s.first_seen and after.last_seen >= s.last_seen  # wall clock: seen until now
    assert sink.saved == 1 and sink.failed == 0
    # a sighting named or dismissed meanwhile is not brought back by an update
    assert store.delete_sightings([s.id]) == 1
    assert store.update_sighting(s.id, 1.0, unit(1), [(jpeg(1), 1.0)]) is False
    assert store.sightings() == []
