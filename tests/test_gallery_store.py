"""The SQLite gallery store: names, transactions, files on disk, keys never mixed, archives."""

from __future__ import annotations

import sqlite3
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facerec.errors import GalleryError
from facerec.gallery.archive_io import export_archive, import_archive
from facerec.gallery.search import GalleryIndex
from facerec.gallery.store import GalleryStore, validate_name
from facerec.types import EmbedderKey, Embeddings

KEY_A = EmbedderKey("model-a", "a" * 64)
KEY_B = EmbedderKey("model-b", "b" * 64)


def crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def emb(key: EmbedderKey, seed: int, n: int = 1, d: int = 8) -> Embeddings:
    raw = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return Embeddings.from_raw(raw, key)


def add(store: GalleryStore, person: str, seed: int, key: EmbedderKey | None = KEY_A):
    return store.add_sample(person, crop(seed), source_path=f"/photos/{seed}.jpg", source_sha256=f"{seed:064x}",
                            quality=float(seed), embeddings=emb(key, seed) if key else None)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path):
    with GalleryStore(tmp_path / "gal") as s:
        yield s


def test_empty_gallery(store: GalleryStore):
    assert store.people() == []
    assert store.samples() == []
    ids, names, vec, q = store.vectors(KEY_A)
    assert ids.shape == (0,) and names == [] and vec.shape[0] == 0 and q.shape == (0,)
    assert store.missing_embeddings(KEY_A) == []
    matches = GalleryIndex.from_store(store, KEY_A).search(emb(KEY_A, 1, n=3), threshold=0.3)
    assert [m.name for m in matches] == [None, None, None]
    assert all(m.top == [] for m in matches)
    assert store.integrity_check() == []


def test_sqlite_settings(store: GalleryStore):
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("name", ["Ada Lovelace", "José Álvarez", "王小明", "Zoë  O'Brien-Smith", "a" * 100])
def test_names_with_spaces_and_unicode(store: GalleryStore, name: str):
    s = add(store, name, 1)
    assert [p.name for p in store.people()] == [name]
    assert Path(s.crop_path).parent.name == name
    assert Path(s.crop_path).is_file()
    assert Path(s.crop_path).is_relative_to(store.data_dir / "preprocessed")


@pytest.mark.parametrize("name", ["", "   ", "../x", "..", "a/b", "a\\b", ".hidden", "x..y", "tab\there",
                                  "new\nline", "nul\x00", "a" * 101])
def test_bad_names_refused(store: GalleryStore, name: str):
    with pytest.raises(GalleryError):
        validate_name(name)
    with pytest.raises(GalleryError):
        add(store, name, 1)
    assert store.people() == []
    assert not any(p.is_file() for p in store.data_dir.rglob("*.png"))


def test_name_canonical_form(store: GalleryStore):
    add(store, "  Bob  ", 1)
    add(store, "Bob", 2)
    assert store.people()[0].name == "Bob" and store.people()[0].samples == 2
    # NFC and NFD spellings of one name are one person
    add(store, "Jose\u0301", 3)
    add(store, "Jos\u00e9", 4)
    assert [p.samples for p in store.people()] == [2, 2]


def test_version_increases(store: GalleryStore):
    v = [store.version()]
    s = add(store, "Ann", 1)
    v.append(store.version())
    store.put_embeddings(KEY_B, [s.id], emb(KEY_B, 1))
    v.append(store.version())
    store.rename_person("Ann", "Anna")
    v.append(store.version())
    store.delete_sample(s.id)
    v.append(store.version())
    assert v == sorted(v) and len(set(v)) == len(v)
    # a second connection (a daemon) sees the same counter
    with GalleryStore(store.data_dir, readonly=True) as ro:
        assert ro.version() == v[-1]


def test_readonly_missing_db(tmp_path: Path):
    with pytest.raises(GalleryError, match="no gallery at"):
        GalleryStore(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_readonly_refuses_writes(store: GalleryStore):
    add(store, "Ann", 1)
    with GalleryStore(store.data_dir, readonly=True) as ro:
        assert [p.name for p in ro.people()] == ["Ann"]
        with pytest.raises(GalleryError, match="read-only"):
            ro.add_person("Bob")


def test_rename(store: GalleryStore):
    s1 = add(store, "Ann", 1)
    add(store, "Bob", 2)
    with pytest.raises(GalleryError, match="already enrolled"):
        store.rename_person("Ann", "Bob")
    with pytest.raises(GalleryError, match="no person"):
        store.rename_person("Nobody", "Carl")
    with pytest.raises(GalleryError):
        store.rename_person("Ann", "../Carl")
    store.rename_person("Ann", "Ann Smith")
    assert [p.name for p in store.people()] == ["Ann Smith", "Bob"]
    moved = store.sample(s1.id)
    assert Path(moved.crop_path).parent.name == "Ann Smith" and Path(moved.crop_path).is_file()
    assert not Path(s1.crop_path).exists()
    assert not (store.data_dir / "preprocessed" / "Ann").exists()
    ids, names, _, _ = store.vectors(KEY_A)
    assert dict(zip(ids.tolist(), names))[s1.id] == "Ann Smith"


def test_merge_and_move(store: GalleryStore):
    a1, a2 = add(store, "A", 1), add(store, "A", 2)
    b1 = add(store, "B", 3)
    store.merge_people("A", "B")
    assert [(p.name, p.samples) for p in store.people()] == [("B", 3)]
    for s in store.samples("B"):
        assert Path(s.crop_path).is_file() and Path(s.crop_path).parent.name == "B"
    assert not Path(a1.crop_path).exists() and not Path(a2.crop_path).exists()
    store.move_sample(b1.id, "C")
    assert {p.name: p.samples for p in store.people()} == {"B": 2, "C": 1}
    assert Path(store.sample(b1.id).crop_path).parent.name == "C"
    assert store.count(KEY_A) == 3  # embeddings follow their samples
    with pytest.raises(GalleryError):
        store.merge_people("B", "B")
    with pytest.raises(GalleryError):
        store.move_sample(9999, "B")


def test_delete_purges_everything(store: GalleryStore):
    a = [add(store, "A", i) for i in range(3)]
    b = add(store, "B", 10)
    store.put_embeddings(KEY_B, [s.id for s in a], emb(KEY_B, 5, n=3))
    assert store.delete_person("A") == 3
    assert [p.name for p in store.people()] == ["B"]
    assert all(not Path(s.crop_path).exists() for s in a)
    assert not (store.data_dir / "preprocessed" / "A").exists()
    assert store.count(KEY_A) == 1 and store.count(KEY_B) == 0
    assert store.integrity_check() == []  # no vector left without its sample (foreign keys cascade)
    store.delete_sample(b.id)
    assert not Path(b.crop_path).exists()
    assert store.people()[0].samples == 0
    with pytest.raises(GalleryError):
        store.delete_person("A")
    store.clear()
    assert store.people() == [] and store.count() == 0
    assert files_under(store.data_dir / "preprocessed") == set()


def test_keys_never_mixed(store: GalleryStore):
    s1, s2 = add(store, "A", 1), add(store, "B", 2)
    assert [s.id for s in store.missing_embeddings(KEY_B)] == [s1.id, s2.id]
    store.put_embeddings(KEY_B, [s1.id], emb(KEY_B, 7, d=16))
    ids_a, _, va, _ = store.vectors(KEY_A)
    ids_b, _, vb, _ = store.vectors(KEY_B)
    assert va.shape == (2, 8) and vb.shape == (1, 16) and ids_b.tolist() == [s1.id]
    assert [s.id for s in store.missing_embeddings(KEY_B)] == [s2.id]
    with pytest.raises(GalleryError, match="never mixed"):
        store.put_embeddings(KEY_A, [s2.id], emb(KEY_B, 8))
    assert store.embedder_keys() == {str(KEY_A): 2, str(KEY_B): 1}
    with pytest.raises(GalleryError, match="cannot be matched"):
        GalleryIndex.from_store(store, KEY_A).search(emb(KEY_B, 1), 0.3)


def test_vectors_are_what_was_stored(store: GalleryStore):
    e = emb(KEY_A, 3, n=1)
    s = store.add_sample("A", crop(3), source_path=None, source_sha256="x" * 64, quality=2.5, embeddings=e)
    ids, names, vec, q = store.vectors(KEY_A)
    assert ids.tolist() == [s.id] and names == ["A"] and q.tolist() == [2.5]
    np.testing.assert_array_equal(vec, e.vectors)


def test_failed_write_leaves_no_trace(store: GalleryStore):
    add(store, "A", 1)
    before = files_under(store.data_dir / "preprocessed")
    v = store.version()
    with pytest.raises(GalleryError):  # NOT NULL fails inside the transaction, after the crop was renamed into place
        store.add_sample("A", crop(2), source_path=None, source_sha256=None, quality=1.0)  # type: ignore[arg-type]
    assert files_under(store.data_dir / "preprocessed") == before
    assert store.version() == v and store.count() == 1


def test_files_not_recorded_by_the_store_are_left_alone(tmp_path: Path):
    """A crop written by `facerec align`, never recorded by the store, survives reopening.

    (Crops orphaned by a crash between their rename and the commit are covered by the
    SIGKILL trials in tests/test_gallery_crash.py.)"""
    root = tmp_path / "gal"
    with GalleryStore(root) as s:
        add(s, "A", 1)
        foreign = s.crop_dir("A") / "aligned_by_user.png"
        foreign.write_bytes(b"png")
    with GalleryStore(root) as s:
        assert foreign.exists()
        assert s.count() == 1 and s.integrity_check() == []


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_export_import_roundtrip(tmp_path: Path, suffix: str):
    with GalleryStore(tmp_path / "one") as one:
        a = add(one, "Ann", 1)
        add(one, "Bob", 2)
        one.put_embeddings(KEY_B, [a.id], emb(KEY_B, 3))
        one.add_person("Empty")
        arc = tmp_path / f"gal{suffix}"
        export_archive(one, arc)
        v1 = one.vectors(KEY_A)
    if suffix == ".zip":
        assert "gallery.db" in zipfile.ZipFile(arc).namelist()
    else:
        assert "gallery.db" in tarfile.open(arc).getnames()
    with GalleryStore(tmp_path / "two") as two:
        add(two, "Ann", 1)  # same photo already enrolled under the same person: skipped
        add(two, "Carl", 4)
        assert import_archive(two, arc) == 1
        assert {p.name: p.samples for p in two.people()} == {"Ann": 1, "Bob": 1, "Carl": 1, "Empty": 0}
        for s in two.samples():
            assert Path(s.crop_path).is_file()
        ids, names, vec, _ = two.vectors(KEY_A)
        np.testing.assert_allclose(vec[names.index("Bob")], v1[2][v1[1].index("Bob")])
        assert two.count(KEY_B) == 0  # Ann's key-B vector belonged to the skipped duplicate
        assert import_archive(two, arc) == 0  # idempotent
        assert two.integrity_check() == []


def test_import_conflict_refused(tmp_path: Path):
    with GalleryStore(tmp_path / "one") as one:
        add(one, "Ann", 1)
        add(one, "Bob", 2)
        export_archive(one, tmp_path / "g.zip")
    with GalleryStore(tmp_path / "two") as two:
        add(two, "Someone Else", 1)  # the same photo under another name
        v = two.version()
        with pytest.raises(GalleryError, match="another person"):
            import_archive(two, tmp_path / "g.zip")
        assert two.version() == v and [p.name for p in two.people()] == ["Someone Else"]


def test_import_rejects_bad_archives(tmp_path: Path, store: GalleryStore):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not an archive")
    with pytest.raises(GalleryError):
        import_archive(store, bad)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(GalleryError, match="gallery.db"):
        import_archive(store, tmp_path / "empty.zip")
    with pytest.raises(GalleryError):
        export_archive(store, tmp_path / "gal.rar")


WRITER = """
import sys
import numpy as np
from facerec.errors import GalleryError
from facerec.gallery.store import GalleryStore
root, tag = sys.argv[1], sys.argv[2]
with GalleryStore(root) as s:
    for i in range(40):
        img = np.random.default_rng(hash((tag, i)) % 2**32).integers(0, 256, (112, 112, 3), dtype=np.uint8)
        s.add_sample("Shared", img, source_path=None, source_sha256=f"{tag}{i}", quality=1.0, stem=f"{tag}{i % 5}")
        while i % 7 == 6:  # the other writer may delete the same oldest sample first: take the next
            try:
                s.delete_sample(s.samples("Shared")[0].id)
                break
            except GalleryError:
                continue
"""


def test_two_writer_processes_never_remove_each_others_crops(tmp_path: Path):
    """Two processes enroll into (and delete from) one folder at once; each one's cleanup of
    unreferenced files must spare the other's crops in flight: every sample keeps its crop."""
    import os
    import subprocess
    import sys

    root = tmp_path / "gal"
    GalleryStore(root).close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), tag], env=env, stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read().decode()[-2000:]
    with GalleryStore(root) as s:
        assert s.count() == 2 * (40 - 5)
        assert s.integrity_check() == []  # every sample's crop is there and intact
        referenced = {Path(x.crop_path).name for x in s.samples()}
        assert {p.name for p in s.crop_dir("Shared").iterdir()} == referenced
