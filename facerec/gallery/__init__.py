"""The gallery: enrolled people, their face samples and vectors, and search.

* :mod:`facerec.gallery.store`: the SQLite store (people, samples, embeddings per
  embedder key) with crash-safe writes;
* :mod:`facerec.gallery.search`: templates and exact / FAISS search;
* :mod:`facerec.gallery.service`: enrollment, identification, (re-)embedding and
  ``align_data``, as the command line, web app and daemon use them;
* :mod:`facerec.gallery.cluster`: grouping unlabelled faces;
* :mod:`facerec.gallery.quality`: sharpness and size when the embedder has no quality.
"""

from __future__ import annotations

from facerec.gallery.search import GalleryIndex
from facerec.gallery.service import BatchReport, EnrollResult, GalleryService, align_dataset
from facerec.gallery.store import GalleryStore, PersonInfo, SampleInfo, validate_name

__all__ = [
    "BatchReport",
    "EnrollResult",
    "GalleryIndex",
    "GalleryService",
    "GalleryStore",
    "PersonInfo",
    "SampleInfo",
    "align_dataset",
    "validate_name",
]
