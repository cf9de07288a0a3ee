"""Gallery archives (``.zip``/``.tar``/``.tar.gz``), for any backend.

An archive holds ``manifest.json``, a ``gallery.db`` (SQLite, the tables people, samples
and embeddings with the columns of the SQLite backend's schema, so any facerec release
can read it) and the crops under ``preprocessed/<Person>/``. Both directions use only the
:class:`~facerec.gallery.backend.GalleryBackend` protocol: export reads
:meth:`~facerec.gallery.backend.GalleryBackend.dump`, import checks each sample with
:meth:`~facerec.gallery.backend.GalleryBackend.find_sha256` and adds what is new with one
:meth:`~facerec.gallery.backend.GalleryBackend.add_dumped` (one transaction, with its
audit entry).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryBackend
from facerec.gallery.records import AuditNote, DumpedSample, validate_name

#: The database member of an archive and the crops' folder inside it.
DB_MEMBER = "gallery.db"
CROPS_DIR = "preprocessed"
#: Schema number written in the manifest (that of the SQLite tables the snapshot uses).
ARCHIVE_SCHEMA = 3
SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source_path TEXT, sha256 TEXT NOT NULL, crop_path TEXT NOT NULL UNIQUE, crop_sha256 TEXT NOT NULL,
    quality REAL NOT NULL, added REAL NOT NULL);
CREATE TABLE embeddings (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE, embedder TEXT NOT NULL,
    dim INTEGER NOT NULL, vector BLOB NOT NULL, norm REAL NOT NULL, PRIMARY KEY (sample_id, embedder));
"""


def _write_snapshot(db: Path, people: list[tuple[str, float]], samples: list[DumpedSample]) -> list[tuple[str, bytes]]:
    """Fill the archive's ``gallery.db``; returns ``(member path, png)`` of every crop."""
    conn = sqlite3.connect(str(db))
    crops: list[tuple[str, bytes]] = []
    try:
        conn.executescript(_TABLES)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?), ('version', '0')", (str(ARCHIVE_SCHEMA),))
        pid: dict[str, int] = {}
        for name, created in people:
            pid[name] = int(conn.execute("INSERT INTO people(name, created) VALUES (?, ?)", (name, created)).lastrowid or 0)
        taken: set[str] = set()
        for d in samples:
            if d.person not in pid:
                pid[d.person] = int(conn.execute("INSERT INTO people(name, created) VALUES (?, ?)",
                                                 (d.person, d.added)).lastrowid or 0)
            rel, n = f"{CROPS_DIR}/{d.person}/{d.stem}.png", 1
            while rel in taken:
                rel, n = f"{CROPS_DIR}/{d.person}/{d.stem}-{n}.png", n + 1
            taken.add(rel)
            sid = conn.execute("INSERT INTO samples(person_id, source_path, sha256, crop_path, crop_sha256, quality, "
                               "added) VALUES (?,?,?,?,?,?,?)", (pid[d.person], d.source_path, d.sha256, rel,
                                                                 hashlib.sha256(d.png).hexdigest(), d.quality,
                                                                 d.added)).lastrowid
            conn.executemany("INSERT INTO embeddings(sample_id, embedder, dim, vector, norm) VALUES (?,?,?,?,?)",
                             [(sid, k, int(v.shape[0]), np.ascontiguousarray(v, np.float32).tobytes(), float(m))
                              for k, (v, m) in d.vectors.items()])
            crops.append((rel, d.png))
        conn.commit()
    finally:
        conn.close()
    return crops


def export_archive(store: GalleryBackend, path: str | os.PathLike) -> None:
    """Write the gallery of ``store`` to one archive at ``path`` (written under a temporary
    name and renamed, so an interrupted export leaves no half archive).

    The format follows the suffix: ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``. The gallery is
    read in one snapshot, so a daemon may keep running.
    """
    out = Path(path).expanduser().absolute()
    name = out.name.lower()
    if not name.endswith(SUFFIXES):
        raise GalleryError(f"{out}: the archive name must end in .zip, .tar, .tar.gz or .tgz")
    out.parent.mkdir(parents=True, exist_ok=True)
    people, samples = store.dump()
    with tempfile.TemporaryDirectory(prefix="facerec-export-") as tmpdir:
        snap = Path(tmpdir) / DB_MEMBER
        crops = _write_snapshot(snap, people, samples)
        manifest = json.dumps({"format": "facerec-gallery", "schema": ARCHIVE_SCHEMA, "people": len(people),
                               "samples": len(samples), "exported": time.time()}, indent=2).encode()
        tmp_out = out.with_name(f".tmp-{uuid.uuid4().hex}-{out.name}")
        try:
            if name.endswith(".zip"):
                with zipfile.ZipFile(tmp_out, "w", zipfile.ZIP_STORED) as z:
                    z.writestr("manifest.json", manifest)
                    z.write(snap, DB_MEMBER)
                    for rel, png in crops:
                        z.writestr(rel, png)
            else:
                with tarfile.open(tmp_out, "w:gz" if name.endswith((".gz", ".tgz")) else "w") as t:
                    _add_bytes(t, "manifest.json", manifest)
                    t.add(snap, DB_MEMBER)
                    for rel, png in crops:
                        _add_bytes(t, rel, png)
            os.replace(tmp_out, out)
        finally:
            tmp_out.unlink(missing_ok=True)


def _add_bytes(t: tarfile.TarFile, member: str, data: bytes) -> None:
    info = tarfile.TarInfo(member)
    info.size = len(data)
    info.mtime = int(time.time())
    t.addfile(info, io.BytesIO(data))


def read_archive(path: str | os.PathLike) -> tuple[list[tuple[str, float]], list[tuple[str, DumpedSample]]]:
    """People ``(name, created)`` and ``(crop member, sample)`` of an archive, the samples'
    crops not read yet (only those that are imported are); every name and member path is
    checked.

    Raises:
        GalleryError: no such file, not a gallery archive, a refused member path or an
            unreadable crop.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise GalleryError(f"{src}: no such archive")
    reader = _ArchiveReader(src)
    try:
        with tempfile.TemporaryDirectory(prefix="facerec-import-") as tmpdir:
            snap = Path(tmpdir) / DB_MEMBER
            snap.write_bytes(reader.read(DB_MEMBER))
            try:
                other = sqlite3.connect(f"{snap.as_uri()}?mode=ro", uri=True)
                people = [(n, float(t)) for n, t in other.execute("SELECT name, created FROM people ORDER BY id")]
                rows = other.execute("SELECT s.id, p.name, s.source_path, s.sha256, s.crop_path, s.quality FROM samples s "
                                     "JOIN people p ON p.id = s.person_id ORDER BY s.id").fetchall()
                embs = other.execute("SELECT sample_id, embedder, vector, norm FROM embeddings").fetchall()
                other.close()
            except sqlite3.DatabaseError as e:
                raise GalleryError(f"{src}: the archive's {DB_MEMBER} is not a facerec gallery ({e})") from None
        vectors: dict[int, dict[str, tuple[np.ndarray, float]]] = {}
        for sid, key, blob, norm in embs:
            vectors.setdefault(int(sid), {})[key] = (np.frombuffer(blob, np.float32).copy(), float(norm))
        for pname, _ in people:
            validate_name(pname)
        now = time.time()
        samples = []
        for oid, pname, srcp, sha, crop_path, q in rows:
            rel = PurePosixPath(crop_path)
            if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != CROPS_DIR:
                raise GalleryError(f"{src}: refusing the archive member path {crop_path!r}")
            samples.append((crop_path, DumpedSample(pname, b"", rel.stem, srcp, sha, float(q), now,
                                                    vectors.get(int(oid), {}))))
        return people, samples
    finally:
        reader.close()


def import_archive(store: GalleryBackend, path: str | os.PathLike, note: AuditNote | None = None) -> int:
    """Merge an archive written by :func:`export_archive` into ``store``; returns the samples added.

    People that exist in both galleries receive the archive's samples; a sample whose
    source hash is already enrolled under the same person is skipped; people without
    samples come along too. Vectors come along for every embedder key in the archive.
    ``note`` is written with the import (with ``samples`` = how many) when it added any.

    Raises:
        GalleryError: not a gallery archive, or a conflict: the same source photo is
            enrolled under different people here and in the archive (nothing is imported
            then; resolve it with ``enroll move``/``rename`` first).
    """
    people, samples = read_archive(path)
    conflicts, todo = [], []
    for member, d in samples:
        here = store.find_sha256(d.sha256)
        if any(h.person != d.person for h in here):
            conflicts.append(f"{member} ({d.person} in the archive, "
                             f"{', '.join(sorted({h.person for h in here}))} here)")
        elif not here:
            todo.append((member, d))
    if conflicts:
        raise GalleryError(f"{path}: {len(conflicts)} sample(s) are enrolled under another person here; "
                           "nothing imported:\n  " + "\n  ".join(conflicts[:20]))
    reader = _ArchiveReader(Path(path).expanduser())
    try:
        for member, d in todo:
            d.png = reader.read(member)
            if cv2.imdecode(np.frombuffer(d.png, np.uint8), cv2.IMREAD_COLOR) is None:
                raise GalleryError(f"{path}: {member} is not a readable image")
    finally:
        reader.close()
    return store.add_dumped(people, [d for _, d in todo], audit=note)


class _ArchiveReader:
    """Reads named members of a zip or tar archive without extracting anything else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
            else:
                self._tar = tarfile.open(path)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise GalleryError(f"{path}: not a zip or tar archive ({e})") from None

    def read(self, member: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(member)
            tar = self._tar
            if tar is None:
                raise KeyError(member)
            info = tar.getmember(member)
            if not info.isfile():
                raise KeyError(member)
            f = tar.extractfile(info)
            return f.read() if f else b""
        except KeyError:
            raise GalleryError(f"{self.path}: the archive has no {member} (not a facerec gallery export?)") from None
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise GalleryError(f"{self.path}: cannot read {member} ({e})") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()
