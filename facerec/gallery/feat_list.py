"""The seed's feature-list format (``embedding_feat.py``): export the gallery's vectors to
it, or attach the vectors of such a list to the crops they were computed from.

The functions take the :class:`~facerec.gallery.service.GalleryService` whose backend,
models and audit log they use; call them through its methods.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.store import CROPS_DIR, validate_name
from facerec.imageio import list_images
from facerec.types import Embeddings

if TYPE_CHECKING:
    from facerec.gallery.service import GalleryService

LABEL_MAP_NAME = "label_map.json"


def export_feat_list(svc: GalleryService, path: str | os.PathLike) -> tuple[int, int]:
    """:meth:`GalleryService.export_feat_list` (see there)."""
    from face_embedding.embedding_feat import write_feat_list, write_label_map

    out = Path(path)
    rows = [(n, c, v, m, len(v)) for n, c, v, m in svc.store.raw_vectors(svc.key)]
    missing = len(svc.store.missing_embeddings(svc.key))
    people = sorted({r[0] for r in rows})
    label = {p: i for i, p in enumerate(people)}
    rows.sort(key=lambda r: (label[r[0]], Path(r[1]).name))
    dim = rows[0][4] if rows else svc.embedder.dim
    feats = np.stack([r[2] * r[3] for r in rows]) if rows else np.zeros((0, dim), np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_feat_list(out, [label[r[0]] for r in rows], feats)
    write_label_map(out.with_name(LABEL_MAP_NAME), people)
    return len(rows), missing


def import_feat_list(svc: GalleryService, path: str | os.PathLike) -> int:
    """:meth:`GalleryService.import_feat_list` (see there)."""
    from face_embedding.embedding_feat import read_feat_list, read_label_map

    src = Path(path)
    try:
        labels, feats = read_feat_list(src)
        label_map = read_label_map(src.with_name(LABEL_MAP_NAME))
    except (OSError, ValueError) as e:
        raise GalleryError(f"cannot import {src}: {e}") from None
    if len(feats) and feats.shape[1] != svc.embedder.dim:
        raise GalleryError(f"{src} has {feats.shape[1]}-d features; {svc.key.model} makes {svc.embedder.dim}-d")
    svc.sync_preprocessed()
    crops = svc.store.crop_hashes()
    ids: list[int] = []
    rows: list[int] = []
    for lab in sorted(set(labels.tolist())):
        if lab not in label_map:
            raise GalleryError(f"{src}: label {lab} is not in {LABEL_MAP_NAME}")
        person = validate_name(label_map[lab])
        folder = svc.data_dir / CROPS_DIR / person
        files = [f for f in list_images(folder) if not f.name.startswith(".")] if folder.is_dir() else []
        lines = np.flatnonzero(labels == lab)
        if len(files) != len(lines):
            raise GalleryError(
                f"{src}: {person!r} has {len(lines)} lines but {len(files)} crops in {folder}; "
                "the list was made from other crops (re-embed with facerec embed instead)"
            )
        for f, line in zip(files, lines):
            rel = f"{CROPS_DIR}/{person}/{f.name}"
            if rel in crops:
                ids.append(crops[rel][0])
                rows.append(int(line))
    if not ids:
        return 0
    emb = Embeddings.from_raw(feats[rows], svc.key)
    use_norm = svc.embedder.quality_is_norm
    svc.store.put_embeddings(svc.key, ids, emb, quality=emb.norm if use_norm else None,
                             audit=svc.note("gallery.embed", "*", vectors=len(ids), embedder=str(svc.key),
                                            source=src.name))
    return len(ids)
