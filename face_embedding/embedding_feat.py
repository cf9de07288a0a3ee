"""Embed a folder of aligned face crops into the seed's feature-list text file.

Seed-compatible command line::

    python face_embedding/embedding_feat.py --backbone iresnet50 --resume CKPT \\
        --folderdataset_dir DIR --feat_list OUT [--cpu-mode] [--batch_size N] [--embedding_size 512]

``DIR`` holds ``<person>/<image>`` aligned 112x112 crops (as written by ``align_data.py``).
Persons are numbered 0, 1, ... in sorted folder order and images are taken in sorted
order. ``OUT`` gets one line per embedded image::

    <label index> <f1> <f2> ... <fd>

with the raw, unnormalised features (their norm is MagFace's quality score), and
``label_map.json`` beside ``OUT`` maps each label index (a string key) to its folder name.
Unreadable images are skipped with a warning and counted; the command exits 0 unless no
image at all could be embedded. Both files are replaced atomically: an interrupted run
leaves the previous ones intact.

:func:`write_feat_list` and :func:`read_feat_list` read and write the same format for
gallery import and export.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python face_embedding/embedding_feat.py``
    _here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == _here:
        sys.path.pop(0)  # the package's own folder must not shadow top-level modules
    # this checkout's packages first, even where another copy is installed (pip install -e
    # of another checkout): the script and the package it imports must be the same code
    sys.path.insert(0, str(_here.parent))

import argparse
import contextlib
import json
import logging
import os
import tempfile
from typing import IO, Iterator, Sequence

import cv2
import numpy as np

from face_embedding.base import Embedder, create_embedder
from facerec.errors import ConfigError, FacerecError, ImageReadError
from facerec.imageio import list_images, read_image
from facerec.runtime.engines import ENGINE_TABLE, engine_alias
from facerec.types import ALIGNED_SIZE, AlignedFaces

logger = logging.getLogger("face_embedding.embedding_feat")

#: ``--backbone`` values of the seed -> registry names.
BACKBONES = {
    "mobilefacenet": "mobilefacenet",
    "iresnet18": "magface-iresnet18",
    "iresnet34": "magface-iresnet34",
    "iresnet50": "magface-iresnet50",
    "iresnet100": "magface-iresnet100",
}

LABEL_MAP_NAME = "label_map.json"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Write a text file through a temporary file in the same folder, then ``os.replace``.

    Readers see either the old file or the complete new one, never a partial file; on an
    exception the temporary file is removed and the old file is left untouched.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _format_rows(labels: np.ndarray, feats: np.ndarray) -> Iterator[str]:
    # %.9g round-trips every float32 exactly
    for label, row in zip(labels, feats):
        yield f"{int(label)} " + " ".join(f"{v:.9g}" for v in row.tolist()) + "\n"


def _check_feats(labels: Sequence[int] | np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, np.float32)
    if feats.ndim != 2:
        raise ValueError(f"feats must have shape (n, d), got {feats.shape}")
    labels_arr = np.asarray(labels)
    if labels_arr.size == 0:
        labels_arr = labels_arr.astype(np.int64).reshape(0)
    if labels_arr.ndim != 1 or len(labels_arr) != len(feats):
        raise ValueError(f"labels must have shape ({len(feats)},), got {labels_arr.shape}")
    if labels_arr.size and not np.issubdtype(labels_arr.dtype, np.integer):
        raise ValueError(f"labels must be integers (label indices), got dtype {labels_arr.dtype}")
    return labels_arr.astype(np.int64), feats


def write_feat_list(path: str | os.PathLike, labels: Sequence[int] | np.ndarray, feats: np.ndarray) -> None:
    """Write a feature list: one ``<label> <f1> ... <fd>`` line per row, atomically.

    Args:
        path: output file; replaced as a whole.
        labels: ``(n,)`` integer label indices.
        feats: ``(n, d)`` features (raw or normalised, written as given).

    Raises:
        ValueError: shapes or dtypes do not fit.
    """
    labels_arr, feats = _check_feats(labels, feats)
    with atomic_write(path) as fh:
        fh.writelines(_format_rows(labels_arr, feats))


def read_feat_list(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a feature list written by :func:`write_feat_list` or the seed project.

    Blank lines are ignored.

    Returns:
        ``labels`` ``(n,)`` int64 and ``feats`` ``(n, d)`` float32; ``(0,)`` and ``(0, 0)``
        for an empty file.

    Raises:
        ValueError: a line has a non-integer label, no features, an unparsable number or
            a different number of features than the first line (the line number is given).
    """
    labels: list[int] = []
    rows: list[np.ndarray] = []
    dim = None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                label = int(parts[0])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label {parts[0]!r} is not an integer") from None
            try:
                row = np.array(parts[1:], dtype=np.float32)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if row.size == 0:
                raise ValueError(f"{path}:{lineno}: no features after the label")
            if dim is None:
                dim = row.size
            elif row.size != dim:
                raise ValueError(f"{path}:{lineno}: {row.size} features, earlier lines have {dim}")
            labels.append(label)
            rows.append(row)
    if not rows:
        return np.zeros((0,), np.int64), np.zeros((0, 0), np.float32)
    return np.asarray(labels, np.int64), np.stack(rows)


def write_label_map(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``{"0": names[0], "1": names[1], ...}`` as JSON, atomically."""
    with atomic_write(path) as fh:
        json.dump({str(i): n for i, n in enumerate(names)}, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """Read a label map written by :func:`write_label_map` (label index -> person)."""
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    return {int(k): str(v) for k, v in raw.items()}


def list_dataset(root: Path) -> tuple[list[str], list[tuple[int, Path]]]:
    """Persons (sorted folder names) and ``(label, image path)`` in sorted order.

    Hidden folders and files (names starting with ``.``) are left out.
    """
    persons = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [(label, img) for label, name in enumerate(persons) for img in list_images(root / name)
             if not img.name.startswith(".")]
    return persons, items


def _load_crop(path: Path, stats: dict[str, int]) -> np.ndarray | None:
    try:
        img = read_image(path)
    except ImageReadError as e:
        logger.warning("skipping %s", e)
        stats["unreadable"] += 1
        return None
    if img.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        logger.warning("%s: %dx%d is not an aligned %dx%d crop; resizing it",
                       path, img.shape[1], img.shape[0], ALIGNED_SIZE, ALIGNED_SIZE)
        shrink = img.shape[0] > ALIGNED_SIZE or img.shape[1] > ALIGNED_SIZE
        img = cv2.resize(img, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        stats["resized"] += 1
    return img


def raw_features(embedder: Embedder, crops: np.ndarray) -> np.ndarray:
    """Raw (unnormalised) features of aligned crops, ``(n, dim)`` float32."""
    faces = AlignedFaces(crops)
    out = [embedder.forward_raw(embedder.preprocess(faces.images[i : i + embedder.batch_size]))
           for i in range(0, len(faces), embedder.batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, embedder.dim), np.float32)


class _NothingEmbedded(Exception):
    """Aborts the atomic write when no crop could be embedded."""


def embed_folder(embedder: Embedder, root: str | os.PathLike, feat_list: str | os.PathLike) -> dict[str, int]:
    """Embed every crop under ``root`` into ``feat_list`` and write the label map beside it.

    Nothing is written when no crop could be embedded.

    Returns:
        Counts: ``persons``, ``images`` found, ``embedded``, ``unreadable``, ``resized``.
    """
    root, out = Path(root), Path(feat_list)
    persons, items = list_dataset(root)
    stats = {"persons": len(persons), "images": len(items), "embedded": 0, "unreadable": 0, "resized": 0}
    try:
        with atomic_write(out) as fh:
            for start in range(0, len(items), embedder.batch_size):
                crops, labels = [], []
                for label, path in items[start : start + embedder.batch_size]:
                    img = _load_crop(path, stats)
                    if img is not None:
                        crops.append(img)
                        labels.append(label)
                if not crops:
                    continue
                feats = raw_features(embedder, np.stack(crops))
                fh.writelines(_format_rows(np.asarray(labels), feats))
                stats["embedded"] += len(crops)
            if stats["embedded"] == 0:
                raise _NothingEmbedded
    except _NothingEmbedded:
        return stats  # keep the previous outputs rather than replace them with empty ones
    write_label_map(out.with_name(LABEL_MAP_NAME), persons)
    return stats


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="embedding_feat.py",
        description="Embed <person>/<image> aligned crops into a feature-list file (label index + raw features).",
    )
    p.add_argument("--backbone", default="iresnet100", choices=sorted(BACKBONES),
                   help="network: MagFace iResNet-18/34/50/100 or MobileFaceNet (default: %(default)s)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="weights file (.pth/.pt, or .onnx for ONNX Runtime); default: search ./weights, "
                        "--weights_dir and FACEREC_WEIGHTS for the model's published file name")
    p.add_argument("--folderdataset_dir", required=True, metavar="DIR", help="folder of <person>/<image> aligned crops")
    p.add_argument("--feat_list", required=True, metavar="OUT", help="feature list to write; label_map.json goes beside it")
    p.add_argument("--batch_size", type=int, default=32, metavar="N", help="faces per forward pass (default: %(default)s)")
    p.add_argument("--embedding_size", type=int, default=None, metavar="D",
                   help="expected feature size; checked against the model (512 for iResNet, 128 for MobileFaceNet)")
    p.add_argument("--cpu-mode", action="store_true", help="accepted for compatibility; facerec always runs on the CPU")
    p.add_argument("--engine", choices=("auto", *ENGINE_TABLE), default=None,
                   help="inference engine (default: runtime.engine of config.yaml, auto)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None, help=argparse.SUPPRESS)  # old --engine
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="arithmetic (default: runtime.precision, auto = bf16 where the CPU has it)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads of the engine (default: the cores available)")
    p.add_argument("--weights_dir", default=None, metavar="DIR", help="folder searched first for the weights")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    try:
        args.engine = engine_alias(args.engine, args.backend, engine_name="--engine", alias_name="--backend")
    except ConfigError as e:
        p.error(str(e))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    root = Path(args.folderdataset_dir)
    if not root.is_dir():
        logger.error("%s is not a folder of <person>/<image> crops", root)
        return 1
    out = Path(args.feat_list)
    if not out.parent.is_dir():
        logger.error("the folder of --feat_list (%s) does not exist", out.parent)
        return 1
    try:
        from facerec.config import load_config

        runtime = load_config().runtime.model_copy(update={"hint": "throughput"})
        embedder = create_embedder(BACKBONES[args.backbone], weights=args.resume, weights_dir=args.weights_dir,
                                   runtime=runtime, engine=args.engine, precision=args.precision,
                                   threads=args.threads, batch_size=args.batch_size)
        if args.embedding_size is not None and args.embedding_size != embedder.dim:
            logger.error("--embedding_size %d does not match %s, which makes %d-d features",
                         args.embedding_size, embedder.key.model, embedder.dim)
            return 1
        logger.info("embedding %s with %s", root, embedder.key)
        stats = embed_folder(embedder, root, out)
    except FacerecError as e:
        logger.error("%s", e)
        return 1
    logger.info(
        "embedded %d of %d images of %d persons into %s; %d unreadable skipped, %d resized to %dx%d",
        stats["embedded"], stats["images"], stats["persons"], out, stats["unreadable"], stats["resized"],
        ALIGNED_SIZE, ALIGNED_SIZE,
    )
    if stats["embedded"] == 0:
        logger.error("no image was embedded")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
