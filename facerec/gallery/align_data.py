"""``facerec align`` / ``align_data.py``: photos of ``raw/<Person>/`` become aligned crops.

Incremental through a manifest beside the crops (:data:`MANIFEST_NAME`), which
:func:`facerec.gallery.sync.sync_preprocessed` also reads to know each crop's source photo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from facerec.align import align
from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.faces import detect_faces, pick_face
from facerec.gallery.quality import face_size
from facerec.gallery.reports import BatchReport, _progress, _strip_name
from facerec.gallery.store import validate_name, write_atomic
from facerec.imageio import IMAGE_SUFFIXES, decode_image

if TYPE_CHECKING:
    from facerec.detect import Detector

log = logging.getLogger(__name__)

MANIFEST_NAME = ".align_manifest.json"


def _load_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable alignment manifest %s (%s); every photo is redone", path, e)
    return {"version": 1, "files": {}}


def _save_manifest(path: Path, manifest: dict) -> None:
    write_atomic(path, json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def align_dataset(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    detector: Detector,
    *,
    multiple_faces: str = "largest",
    min_face_size: int = 32,
    pad_retry: float = 0.5,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> BatchReport:
    """Turn ``raw_dir/<Person>/*`` photos into ``out_dir/<Person>/<stem>.png`` aligned crops.

    One face per photo (several: the largest, or skip the photo with
    ``multiple_faces="skip"``; none or too small: skipped with the reason). Incremental:
    a manifest in ``out_dir`` records each photo's sha256 and the ``settings`` it was
    processed with, so an unchanged photo is not redone. Crops and the manifest are
    written atomically and only inside ``out_dir``; hidden folders and folder names that
    are not valid person names are refused.

    Args:
        detector: any detector; ``settings`` should name it and its thresholds so a
            change of detector redoes every photo.

    Returns:
        The report; ``done`` and ``unchanged`` hold ``Person/file`` names.
    """
    t0 = time.perf_counter()
    raw, out = Path(raw_dir), Path(out_dir)
    report = BatchReport()
    if not raw.is_dir():
        raise GalleryError(f"{raw} is not a folder of <Person>/<photo> images")
    out.mkdir(parents=True, exist_ok=True)
    out_root = out.resolve()
    manifest_path = out / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)
    fingerprint = json.dumps(settings or {}, sort_keys=True)
    old = manifest["files"]
    files: dict[str, dict] = {}
    claimed = {e["output"]: k for k, e in old.items() if isinstance(e, dict) and e.get("output")}
    work: list[tuple[str, str, Path]] = []
    for d in sorted(raw.iterdir()):
        if d.name.startswith("."):
            report.skipped.append((d.name, "hidden folder refused"))
            continue
        if not d.is_dir():
            report.skipped.append((d.name, "not in a person folder"))
            continue
        try:
            person = validate_name(d.name)
        except GalleryError as e:
            report.skipped.append((d.name, f"folder name refused: {e}"))
            continue
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                report.skipped.append((f"{d.name}/{f.name}", "sub-folder ignored (one level of person folders)"))
            elif f.suffix.lower() not in IMAGE_SUFFIXES:
                report.skipped.append((f"{d.name}/{f.name}", f"not an image (suffix {f.suffix or 'none'})"))
            else:
                work.append((person, f"{d.name}/{f.name}", f))
    try:
        for n, (person, key, f) in enumerate(_progress(work, desc="align", enabled=progress, unit="photo")):
            try:
                data = f.read_bytes()
            except OSError as e:
                report.failed.append((key, f"cannot be read ({e.strerror or e})"))
                continue
            sha = hashlib.sha256(data).hexdigest()
            prev = old.get(key)
            if (isinstance(prev, dict) and prev.get("sha256") == sha and prev.get("settings") == fingerprint
                    and (not prev.get("output") or (out / prev["output"]).is_file())):
                files[key] = prev
                if prev.get("output"):
                    report.unchanged.append(key)
                else:  # the same photo failed or was skipped last time: not retried, still reported
                    why = (key, f"{prev.get('reason', 'no crop')} (unchanged photo, not retried)")
                    (report.failed if prev.get("status") == "failed" else report.skipped).append(why)
                continue
            entry: dict[str, Any] = {"sha256": sha, "settings": fingerprint, "source": str(f), "output": None}
            try:
                image = decode_image(data, key)
            except ImageReadError as e:
                entry.update(status="failed", reason=_strip_name(str(e), key))
                report.failed.append((key, entry["reason"]))
                files[key] = entry
                continue
            det, reason, warns = pick_face(detect_faces(detector, image, pad_retry), multiple_faces, key, min_face_size)
            report.warnings += warns
            if det is None:
                entry.update(status="skipped", reason=reason)
                report.skipped.append((key, reason))
                files[key] = entry
                continue
            crop = align(image, det.landmarks).images[0]
            rel = f"{person}/{f.stem}.png"
            if claimed.get(rel, key) != key:
                rel = f"{person}/{f.name}.png"
            target = (out / rel).resolve()
            if not target.is_relative_to(out_root):
                report.skipped.append((key, "output path would leave the output folder"))
                continue
            ok, buf = cv2.imencode(".png", crop)
            if not ok:
                report.failed.append((key, "could not encode the crop as PNG"))
                continue
            write_atomic(target, buf.tobytes())
            claimed[rel] = key
            entry.update(status="done", output=rel, score=round(float(det.score[0]), 4),
                         face_px=round(face_size(det.xyxy[0]), 1))
            files[key] = entry
            report.done.append(key)
            if n % 50 == 49:
                _save_manifest(manifest_path, {"version": 1, "files": {**old, **files}})
    finally:
        gone = sorted(set(old) - {k for _, k, _ in work})
        report.removed = gone
        _save_manifest(manifest_path, {"version": 1, "files": {**{k: v for k, v in old.items() if k not in gone}, **files}})
    report.seconds = time.perf_counter() - t0
    return report
