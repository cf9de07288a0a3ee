"""One contract for every gallery backend: the same behaviour from SQLite and PostgreSQL.

Only the public :class:`facerec.gallery.backend.GalleryBackend` methods are used; the
PostgreSQL cases run against a real server started by the ``pg_server`` fixture.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from facerec.config import GalleryConfig
from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryBackend, open_backend
from facerec.gallery.search import GalleryIndex
from facerec.types import EmbedderKey, Embeddings

KEY_A = EmbedderKey("model-a", "a" * 64)
KEY_B = EmbedderKey("model-b", "b" * 64)


def crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def emb(key: EmbedderKey, seed: int, n: int = 1, d: int = 8) -> Embeddings:
    return Embeddings.from_raw(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32), key)


def add(b: GalleryBackend, person: str, seed: int, key: EmbedderKey | None = KEY_A):
    return b.add_sample(person, crop(seed), source_path=f"/photos/{seed}.jpg", source_sha256=f"{seed:064x}",
                        quality=float(seed), embeddings=emb(key, seed) if key else None, stem=f"p{seed}")


def gallery_cfg(kind: str, tmp_path: Path, dsn: str | None) -> GalleryConfig:
    return GalleryConfig(backend=kind, dsn=dsn, data_dir=str(tmp_path / "gal"))


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def cfg(kind: str, tmp_path: Path, request) -> GalleryConfig:
    dsn = request.getfixturevalue("pg_dsn") if kind == "postgres" else None
    return gallery_cfg(kind, tmp_path, dsn)


@pytest.fixture
def backend(cfg: GalleryConfig):
    b = open_backend(cfg)
    yield b
    b.close()


def test_empty(backend: GalleryBackend):
    assert isinstance(backend, GalleryBackend)
    assert backend.people() == [] and backend.samples() == [] and backend.count() == 0
    ids, names, vec, q = backend.vectors(KEY_A)
    assert len(ids) == 0 and names == [] and vec.shape[0] == 0
    assert backend.integrity_check() == []


def test_add_read_and_vectors_per_key(backend: GalleryBackend):
    s1 = add(backend, "Ann", 1)
    s2 = add(backend, "Ann", 2)
    s3 = add(backend, "Bob", 3, key=None)
    assert [(p.name, p.samples) for p in backend.people()] == [("Ann", 2), ("Bob", 1)]
    assert [s.id for s in backend.samples("Ann")] == [s1.id, s2.id]
    assert backend.sample(s3.id).person == "Bob"
    assert [s.id for s in backend.find_sha256(f"{2:064x}")] == [s2.id]
    assert [s.id for s in backend.missing_embeddings(KEY_A)] == [s3.id]
    backend.put_embeddings(KEY_B, [s3.id], emb(KEY_B, 9))
    ids, names, vec, q = backend.vectors(KEY_A)
    assert ids.tolist() == [s1.id, s2.id] and names == ["Ann", "Ann"]
    np.testing.assert_allclose(vec[1], emb(KEY_A, 2).vectors[0], rtol=1e-6)
    assert q.tolist() == [1.0, 2.0]
    assert backend.embedder_keys() == {str(KEY_A): 2, str(KEY_B): 1}
    assert backend.count(KEY_B) == 1
    only = backend.vectors(KEY_A, [s2.id, 12345])
    assert only[0].tolist() == [s2.id]
    # the crop comes back bit for bit as a 112x112 PNG
    import cv2

    png = backend.crop_png(s1.id)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), crop(1))
    assert backend.integrity_check() == []


def test_names_are_checked_and_errors_are_typed(backend: GalleryBackend):
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(GalleryError):
            backend.add_person(bad)
    add(backend, "Ann", 1)
    add(backend, "Bob", 2)
    with pytest.raises(GalleryError, match="already enrolled"):
        backend.rename_person("Ann", "Bob")
    with pytest.raises(GalleryError, match="no person"):
        backend.delete_person("Nobody")
    with pytest.raises(GalleryError, match="no sample"):
        backend.sample(999999)
    with pytest.raises(GalleryError, match="never mixed"):
        backend.put_embeddings(KEY_A, [backend.samples()[0].id], emb(KEY_B, 1))
    assert backend.count() == 2 and backend.integrity_check() == []


def test_rename_merge_move_delete(backend: GalleryBackend):
    a = add(backend, "Ann", 1)
    b = add(backend, "Bob", 2)
    c = add(backend, "Bob", 3)
    backend.rename_person("Ann", "Anna")
    assert [p.name for p in backend.people()] == ["Anna", "Bob"]
    assert backend.vectors(KEY_A)[1] == ["Anna", "Bob", "Bob"]
    backend.move_sample(c.id, "Cid")
    assert backend.sample(c.id).person == "Cid"
    backend.merge_people("Cid", "Anna")
    assert {p.name: p.samples for p in backend.people()} == {"Anna": 2, "Bob": 1}
    assert backend.delete_person("Bob") == 1
    backend.delete_sample(a.id)
    assert [s.id for s in backend.samples()] == [c.id]
    assert backend.count(KEY_A) == 1
    assert np.array_equal(np.frombuffer(backend.crop_png(c.id), np.uint8)[:8], np.frombuffer(b"\x89PNG\r\n\x1a\n", np.uint8))
    with pytest.raises(GalleryError):
        backend.sample(b.id)
    backend.clear()
    assert backend.people() == [] and backend.count() == 0
    assert backend.integrity_check() == []


def test_version_and_change_feed(backend: GalleryBackend):
    v0 = backend.version()
    a = add(backend, "Ann", 1)
    b = add(backend, "Bob", 2)
    v1 = backend.version()
    assert v1 == v0 + 2
    ch = backend.changes_since(v0)
    assert ch.version == v1 and not ch.full and ch.sample_ids == {a.id, b.id}
    assert backend.changes_since(v1).sample_ids == set()
    backend.rename_person("Ann", "Anna")
    ch = backend.changes_since(v1)
    assert ch.sample_ids == {a.id} and not ch.full
    v2 = backend.version()
    backend.delete_sample(b.id)
    assert backend.changes_since(v2).sample_ids == {b.id}
    v3 = backend.version()
    backend.clear()
    assert backend.changes_since(v3).full


def test_incremental_fetch_matches_full_load(backend: GalleryBackend):
    """Applying the feed's sample ids on top of an old load gives the same index as a full load."""
    for i in range(6):
        add(backend, f"P{i % 3}", i + 1)
    ids, names, vec, q = backend.vectors(KEY_A)
    table = {int(i): (n, v, qq) for i, n, v, qq in zip(ids, names, vec, q)}
    v = backend.version()
    backend.rename_person("P0", "Zed")
    backend.delete_sample(int(ids[1]))
    new = add(backend, "P2", 40)
    ch = backend.changes_since(v)
    part = backend.vectors(KEY_A, sorted(ch.sample_ids))
    for sid in ch.sample_ids:
        table.pop(sid, None)
    for i, n, vv, qq in zip(*part):
        table[int(i)] = (n, vv, qq)
    full = backend.vectors(KEY_A)
    assert sorted(table) == full[0].tolist() and new.id in table
    assert [table[i][0] for i in sorted(table)] == full[1]
    inc = GalleryIndex([table[i][0] for i in sorted(table)], np.stack([table[i][1] for i in sorted(table)]))
    ref = GalleryIndex(full[1], full[2])
    assert inc.people == ref.people and np.allclose(inc.rows, ref.rows)


def test_readonly_refuses_writes(cfg: GalleryConfig, backend: GalleryBackend):
    add(backend, "Ann", 1)
    ro = open_backend(cfg, readonly=True)
    try:
        assert [p.name for p in ro.people()] == ["Ann"]
        with pytest.raises(GalleryError):
            ro.add_person("Bob")
    finally:
        ro.close()
    assert [p.name for p in backend.people()] == ["Ann"]


def test_dump_and_add_dumped_are_lossless(backend: GalleryBackend, tmp_path: Path):
    add(backend, "Ann", 1)
    s = add(backend, "Bob", 2)
    backend.put_embeddings(KEY_B, [s.id], emb(KEY_B, 5))
    backend.add_person("Empty")
    people, samples = backend.dump()
    other = open_backend(GalleryConfig(data_dir=str(tmp_path / "copy")))
    try:
        assert other.add_dumped(people, samples) == 2
        assert [(p.name, p.samples) for p in other.people()] == [(p.name, p.samples) for p in backend.people()]
        for key in (KEY_A, KEY_B):
            x, y = backend.vectors(key), other.vectors(key)
            assert x[1] == y[1] and np.array_equal(x[2], y[2]) and np.array_equal(x[3], y[3])
        assert [other.crop_png(i.id) for i in other.samples()] == [backend.crop_png(i.id) for i in backend.samples()]
        assert other.integrity_check() == []
    finally:
        other.close()


def test_postgres_writes_nothing_under_data_dir(pg_dsn: str, tmp_path: Path):
    cfg = gallery_cfg("postgres", tmp_path, pg_dsn)
    with open_backend(cfg) as b:  # type: ignore[attr-defined]
        add(b, "Ann", 1)
        b.rename_person("Ann", "Anna")
    assert not (tmp_path / "gal").exists()


def test_postgres_unreachable_is_a_clear_error(tmp_path: Path):
    from pg_server import free_port

    from facerec.gallery.backend import GalleryUnavailable

    cfg = gallery_cfg("postgres", tmp_path, f"postgresql://facerec@127.0.0.1:{free_port()}/x")
    with pytest.raises(GalleryUnavailable, match="cannot be reached.*gallery.dsn"):
        open_backend(cfg)
    from facerec.gallery.backend import resolve_dsn

    with pytest.raises(GalleryError, match="FACEREC_DB_DSN"):
        resolve_dsn(GalleryConfig(backend="postgres"), env={})
    assert resolve_dsn(GalleryConfig(backend="postgres"), env={"FACEREC_DB_DSN": "postgresql://x"}) == "postgresql://x"


def test_sample_ids_are_never_reused(backend: GalleryBackend):
    a = add(backend, "Ann", 1)
    b = add(backend, "Ann", 2)
    backend.delete_sample(b.id)  # the newest: a plain integer key would hand its id out again
    c = add(backend, "Bob", 3)
    backend.delete_person("Bob")
    d = add(backend, "Cy", 4)
    assert len({a.id, b.id, c.id, d.id}) == 4 and a.id < b.id < c.id < d.id


def test_sqlite_gallery_of_schema_2_upgrades_without_losing_samples(tmp_path: Path):
    import sqlite3

    from facerec.gallery.store import DB_NAME, SCHEMA_VERSION, GalleryStore

    with GalleryStore(tmp_path / "g") as g:
        ids = [add(g, "Ann", i).id for i in (1, 2, 3)]
        g.delete_sample(ids[-1])
    con = sqlite3.connect(tmp_path / "g" / DB_NAME, isolation_level=None)
    con.execute("PRAGMA foreign_keys=OFF")
    sql = con.execute("SELECT sql FROM sqlite_master WHERE name='samples'").fetchone()[0]
    con.executescript(f"""BEGIN; CREATE TABLE old_samples AS SELECT * FROM samples; DROP TABLE samples;
        {sql.replace('AUTOINCREMENT', '')}; INSERT INTO samples SELECT * FROM old_samples; DROP TABLE old_samples;
        UPDATE meta SET value='2' WHERE key='schema'; COMMIT;""")
    con.close()
    with GalleryStore(tmp_path / "g") as g:
        assert [s.id for s in g.samples()] == ids[:2]
        assert g.vectors(KEY_A)[0].tolist() == ids[:2] and g.integrity_check() == []
        assert add(g, "Ann", 9).id > ids[1]
    con = sqlite3.connect(tmp_path / "g" / DB_NAME)
    assert "AUTOINCREMENT" in con.execute("SELECT sql FROM sqlite_master WHERE name='samples'").fetchone()[0]
    assert con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_sqlite_feedback_of_an_older_release_moves_into_the_gallery_file(tmp_path: Path):
    """Before schema 4, sightings, negatives and the audit log lived in ``unknowns.db``
    beside ``gallery.db``. Opening the gallery for writing copies them in, ids kept (crop
    URLs stay valid), in one transaction, and keeps the old file renamed."""
    import sqlite3

    from facerec.gallery.store import GalleryStore

    root = tmp_path / "g"
    with GalleryStore(root) as g:  # a gallery, then the old release's second file beside it
        add(g, "Ann", 1)
    old = sqlite3.connect(root / "unknowns.db", isolation_level=None)
    old.executescript("""
        CREATE TABLE unknown_sightings (id INTEGER PRIMARY KEY AUTOINCREMENT, camera TEXT NOT NULL,
            track_id INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, added REAL NOT NULL,
            embedder TEXT NOT NULL, vector BLOB NOT NULL, quality REAL NOT NULL, bytes INTEGER NOT NULL);
        CREATE TABLE unknown_crops (id INTEGER PRIMARY KEY AUTOINCREMENT, sighting_id INTEGER NOT NULL,
            rank INTEGER NOT NULL, quality REAL NOT NULL, jpeg BLOB NOT NULL);
        CREATE TABLE negatives (id INTEGER PRIMARY KEY AUTOINCREMENT, person TEXT NOT NULL, embedder TEXT NOT NULL,
            vector BLOB NOT NULL, jpeg BLOB, added REAL NOT NULL);
        CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, interface TEXT NOT NULL,
            action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);""")
    vec = np.ones(4, np.float32) / 2
    old.execute("INSERT INTO unknown_sightings VALUES (7, 'door', 3, 1.0, 2.0, 3.0, 'm', ?, 0.5, 3)", (vec.tobytes(),))
    old.execute("INSERT INTO unknown_crops VALUES (41, 7, 0, 0.5, x'ffd8ff')")
    old.execute("INSERT INTO negatives VALUES (5, 'Ann', 'm', ?, NULL, 4.0)", (vec.tobytes(),))
    old.execute("INSERT INTO audit_log VALUES (9, 5.0, 'cli', 'negative.add', 'Ann', '{}')")
    old.close()
    with GalleryStore(root) as g:
        assert [s.id for s in g.sightings()] == [7] and g.unknown_crop(41) == b"\xff\xd8\xff"
        assert g.negatives("m")[0] == ["Ann"] and [e.id for e in g.audit_log()] == [9]
        assert g.add_sighting("door", 4, 6.0, 7.0, "m", vec, [(b"x", 1.0)]) > 7  # ids go on from the old ones
    assert not (root / "unknowns.db").exists() and (root / "unknowns.db.migrated").is_file()
    with GalleryStore(root) as g:  # once only
        assert len(g.sightings()) == 2 and len(g.audit_log()) == 1


def test_folder_sync_changes_and_vector_maintenance(backend: GalleryBackend, cfg: GalleryConfig):
    """What ``facerec embed`` does through the protocol: register crops found in
    ``preprocessed/``, see a changed file, forget gone ones, drop one embedder's vectors."""
    import cv2

    from facerec.gallery.records import AuditNote, sha256_bytes

    folder = Path(cfg.data_dir) / "preprocessed" / "Cat"
    folder.mkdir(parents=True)
    files = []
    for i in (1, 2):
        f = folder / f"c{i}.png"
        cv2.imwrite(str(f), crop(i))
        files.append((f, sha256_bytes(f.read_bytes())))
    note = AuditNote("test", "samples.sync", "*")
    made = backend.add_existing_crops([("Cat", f, sha, f"{i:064x}", 3.0, None) for i, (f, sha) in enumerate(files)],
                                      audit=note)
    assert backend.has_person("Cat") and not backend.has_person("Dog") and len(made) == 2
    assert backend.audit_log()[0].detail == {"samples": 2}
    hashes = backend.crop_hashes()
    assert {k: v[1] for k, v in hashes.items()} == {"preprocessed/Cat/c1.png": files[0][1],
                                                     "preprocessed/Cat/c2.png": files[1][1]}
    backend.put_embeddings(KEY_A, [s.id for s in made], emb(KEY_A, 5, n=2))
    assert sorted(r[1] for r in backend.raw_vectors(KEY_A)) == ["c1.png", "c2.png"]
    # the first crop changed in place: new hashes, its vector dropped until re-embedded
    cv2.imwrite(str(files[0][0]), crop(7))
    png = files[0][0].read_bytes()
    v = backend.version()
    backend.update_sample_file(made[0].id, sha256_bytes(png), 4.0, png=png)
    assert backend.version() > v and backend.crop_png(made[0].id) == png
    assert [s.id for s in backend.missing_embeddings(KEY_A)] == [made[0].id]
    assert backend.changes_since(v).sample_ids == frozenset({made[0].id})
    # the second file is gone: its record goes too
    assert backend.forget_samples([made[1].id]) == 1 and backend.count() == 1
    add(backend, "Ann", 9)
    backend.put_embeddings(KEY_B, [made[0].id], emb(KEY_B, 1))
    assert backend.delete_embeddings(KEY_A) == 1 and backend.count(KEY_A) == 0 and backend.count(KEY_B) == 1
    assert backend.changes_since(backend.version() - 1).full  # dropping a vector space reloads everything


def test_subscribe_wakes_on_a_commit_from_another_connection(backend: GalleryBackend, cfg: GalleryConfig):
    sub = backend.subscribe()
    try:
        assert sub.wait(0.05) is False  # nothing happened
        with open_backend(cfg) as other:
            add(other, "Ann", 1)
        assert sub.wait(10.0) is True
    finally:
        sub.close()


def test_archive_round_trip_between_backends(backend: GalleryBackend, tmp_path: Path):
    """Export and import are written against the protocol: an archive made from either
    backend restores into the other kind too, crops, vectors and empty people included."""
    from facerec.gallery.archive_io import export_archive, import_archive
    from facerec.gallery.records import AuditNote
    from facerec.gallery.store import GalleryStore

    a = add(backend, "Ann", 1)
    add(backend, "Bob", 2)
    backend.put_embeddings(KEY_B, [a.id], emb(KEY_B, 3))
    backend.add_person("Empty")
    arc = tmp_path / "g.tar.gz"
    export_archive(backend, arc)
    with GalleryStore(tmp_path / "other") as other:
        note = AuditNote("test", "gallery.import", arc.name)
        assert import_archive(other, arc, note) == 2
        assert {p.name: p.samples for p in other.people()} == {"Ann": 1, "Bob": 1, "Empty": 0}
        assert other.crop_png(other.samples("Bob")[0].id) == backend.crop_png(backend.samples("Bob")[0].id)
        np.testing.assert_allclose(other.vectors(KEY_B)[2], backend.vectors(KEY_B)[2])
        assert other.audit_log()[0].detail == {"samples": 2}
        assert import_archive(other, arc, note) == 0 and len(other.audit_log()) == 1  # nothing new: no entry
        export_archive(other, tmp_path / "back.zip")
    backend.clear()
    assert import_archive(backend, tmp_path / "back.zip") == 2 and backend.integrity_check() == []


def test_a_camera_reading_the_index_never_touches_the_database(cfg: GalleryConfig):
    """The watcher's own thread applies changes; ``index`` on a camera's thread only reads
    a reference (before, with SQLite, it polled and could rebuild the index there)."""
    import threading
    import time

    from facerec.gallery.watch import GalleryWatcher

    with open_backend(cfg) as b:
        add(b, "Ann", 1)
        w = GalleryWatcher(cfg.data_dir, KEY_A, cfg, poll_s=0.02)
        try:
            store = w._store
            calls: list[str] = []
            for name in ("version", "changes_since", "vectors", "negatives_version", "negatives"):
                real = getattr(store, name)

                def spy(*a, _real=real, _name=name, **kw):
                    calls.append(f"{_name} on {threading.current_thread().name}")
                    return _real(*a, **kw)

                setattr(store, name, spy)
            add(b, "Bob", 2)
            end = time.monotonic() + 30
            while w.index.people != ["Ann", "Bob"]:  # what a camera does, frame after frame
                assert time.monotonic() < end, "the change never arrived"
            assert calls and all(c.endswith("gallery-watch") for c in calls), calls
        finally:
            w.close()


def test_every_protocol_method_has_a_contract_test():
    """Each method of the protocol is called in the tests that run on both backends."""
    import inspect

    here = Path(__file__).parent
    source = "".join((here / f).read_text() for f in (
        "test_gallery_contract.py", "test_gallery_watch.py", "test_unknowns_store.py", "test_audit.py"))
    methods = [n for n, v in inspect.getmembers(GalleryBackend) if callable(v) and not n.startswith("_")]
    assert len(methods) > 40
    untested = [m for m in methods if f".{m}(" not in source]
    assert untested == [], f"protocol methods no test calls on both backends: {untested}"


def test_a_reader_of_an_older_sqlite_gallery_keeps_recognising(tmp_path: Path):
    """A daemon (read-only) started on a gallery of an earlier release, before anything
    opened it for writing: no feedback tables yet. It names people and sees no negatives,
    instead of reporting the gallery unavailable."""
    import sqlite3

    from facerec.gallery.store import DB_NAME, GalleryStore
    from facerec.gallery.watch import GalleryWatcher

    cfg = GalleryConfig(data_dir=str(tmp_path / "g"))
    with GalleryStore(cfg.data_dir) as g:
        add(g, "Ann", 1)
    con = sqlite3.connect(Path(cfg.data_dir) / DB_NAME, isolation_level=None)
    con.executescript("""DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
        DROP TABLE unknown_crops; DROP TABLE unknown_sightings; DROP TABLE negatives; DROP TABLE audit_log;
        UPDATE meta SET value='3' WHERE key='schema';""")
    con.close()
    w = GalleryWatcher(cfg.data_dir, KEY_A, cfg, poll_s=0.02)
    try:
        assert w.index is not None and w.index.people == ["Ann"]
        store = w._store
        assert store is not None and store.negatives(str(KEY_A))[0] == [] and store.audit_log() == []
        time.sleep(0.2)  # several checks of the watcher's thread
        assert w.status()["online"], w.status()
    finally:
        w.close()
