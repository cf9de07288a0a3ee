"""Gallery archives (``.zip``/``.tar``/``.tar.gz``) for any backend.

The SQLite store reads and writes archives itself (:meth:`GalleryStore.export_archive`,
:meth:`GalleryStore.import_archive`); any other backend goes through a temporary SQLite
copy, using only the backend's ``dump``/``add_dumped``/``find_sha256``. The audit entry
of an import is the service's (:meth:`GalleryService.import_archive`).
"""

from __future__ import annotations

import os
import tempfile

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryBackend
from facerec.gallery.store import GalleryStore


def export_archive(store: GalleryBackend, path: str | os.PathLike) -> None:
    """Write the gallery of ``store`` to an archive at ``path``."""
    if isinstance(store, GalleryStore):
        store.export_archive(path)
        return
    with tempfile.TemporaryDirectory(prefix="facerec-export-") as tmp, GalleryStore(tmp) as snap:
        people, samples = store.dump()
        snap.add_dumped(people, samples)
        snap.export_archive(path)


def import_archive(store: GalleryBackend, path: str | os.PathLike) -> int:
    """Merge an archive into ``store``; returns the samples added (see
    :meth:`GalleryStore.import_archive` for the rules: a sample enrolled here under another
    person refuses the whole archive, one already here is left alone)."""
    if isinstance(store, GalleryStore):
        return store.import_archive(path)
    with tempfile.TemporaryDirectory(prefix="facerec-import-") as tmp, GalleryStore(tmp) as snap:
        snap.import_archive(path)
        people, samples = snap.dump()
    conflicts, todo = [], []
    for d in samples:
        here = store.find_sha256(d.sha256)
        if any(h.person != d.person for h in here):
            conflicts.append(f"{d.stem} ({d.person} in the archive, {', '.join(sorted({h.person for h in here}))} here)")
        elif not here:
            todo.append(d)
    if conflicts:
        raise GalleryError(f"{path}: {len(conflicts)} sample(s) are enrolled under another person here; "
                           "nothing imported:\n  " + "\n  ".join(conflicts[:20]))
    return store.add_dumped(people, todo)
