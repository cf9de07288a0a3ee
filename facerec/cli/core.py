"""``facerec detect`` and ``facerec compare``: the still-image commands."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np

from facerec.analyze import FaceAnalyzer, FaceResult
from facerec.cli.common import print_json
from facerec.config import Config
from facerec.errors import FacerecError, ImageReadError
from facerec.imageio import list_images, read_image
from facerec.models import build_detector

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import detector_parser

    p = sub.add_parser("detect", parents=[detector_parser()], help="detect faces and landmarks in images",
                       description="Detect faces in images (files or folders). Boxes are x1,y1,x2,y2 in pixels.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("compare", parents=[common], help="similarity of the faces in two photos, or a folder's matrix",
                       description="compare A B: similarity and same/different verdict (a matrix when a photo "
                                   "has several faces). compare DIR: the similarity matrix of the folder's photos "
                                   "(largest face of each) as CSV; DIR's subfolders are not read.")
    p.add_argument("inputs", nargs="+", metavar="PATH", help="two photos, or one folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--output", "-o", metavar="CSV", help="compare DIR: write the matrix here instead of stdout")
    p.set_defaults(func=cmd_compare)


def expand_images(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    out: list[Path] = []
    for s in paths:
        p = Path(s)
        out.extend(list_images(p) if p.is_dir() else [p])
    return out


def cmd_detect(args: argparse.Namespace, cfg: Config) -> int:
    detector = build_detector(cfg)
    images = expand_images(args.images)
    ok = failed = 0
    for path in images:
        try:
            img = read_image(path)
        except ImageReadError as e:
            failed += 1
            print(f"warning: {e}; skipped", file=sys.stderr)
            if args.json:
                print_json({"image": str(path), "error": str(e)})
            continue
        det = detector(img)
        ok += 1
        if args.json:
            print_json({"image": str(path), "faces": det.to_json()})
        else:
            print(f"{path}: {len(det)} face(s)")
            for f in det.to_json():
                print(f"  box {f['box']} score {f['score']:.3f}")
    if failed:
        print(f"{ok} image(s) processed, {failed} skipped", file=sys.stderr)
    return 0 if ok or not images else 1


def _analyze_file(analyzer: FaceAnalyzer, path: Path) -> FaceResult:
    return analyzer.analyze(read_image(path))


def cmd_compare(args: argparse.Namespace, cfg: Config) -> int:
    if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir():
        folder = Path(args.inputs[0])
        if not list_images(folder):
            subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            if subs:
                raise FacerecError(
                    f"{folder} has no images directly inside; compare DIR does not look into subfolders "
                    f"({len(subs)} here, e.g. {subs[0]!r}): give one folder of photos, e.g. "
                    f"facerec compare {folder / subs[0]}")
            raise FacerecError(f"{folder} contains no images")
        return _compare_dir(FaceAnalyzer.from_config(cfg), folder, args)
    analyzer = FaceAnalyzer.from_config(cfg)
    if len(args.inputs) != 2:
        raise FacerecError("compare takes two photos (A B) or one folder")
    a, b = (Path(p) for p in args.inputs)
    ra, rb = _analyze_file(analyzer, a), _analyze_file(analyzer, b)
    for path, r in ((a, ra), (b, rb)):
        if len(r) == 0:
            raise FacerecError(f"{path}: no face found; use a photo where the face is visible and at least "
                               f"{cfg.detection.min_face} px tall")
    sim = ra.embeddings.vectors @ rb.embeddings.vectors.T
    t = analyzer.threshold
    if args.json:
        best = [{"face": i, "best": int(np.argmax(row)), "similarity": round(float(row.max()), 4),
                 "same": bool(row.max() >= t)} for i, row in enumerate(sim)]
        print_json({
            "a": str(a), "b": str(b), "threshold": t,
            "faces_a": ra.detections.to_json(), "faces_b": rb.detections.to_json(),
            "similarity": [[round(float(v), 4) for v in row] for row in sim], "best_match": best,
            **({"same": bool(sim[0, 0] >= t), "similarity_max": round(float(sim[0, 0]), 4)} if sim.shape == (1, 1) else {}),
        })
        return 0
    if sim.shape == (1, 1):
        s = float(sim[0, 0])
        print(f"similarity {s:.4f} -> {'SAME person' if s >= t else 'DIFFERENT people'} (threshold {t:.3f})")
        return 0
    print(f"{a}: {len(ra)} face(s); {b}: {len(rb)} face(s); threshold {t:.3f}")
    # faces are numbered left to right (by the left edge of the box), as the header says
    order_a = np.argsort(ra.detections.xyxy[:, 0], kind="stable")
    order_b = np.argsort(rb.detections.xyxy[:, 0], kind="stable")
    sim = sim[order_a][:, order_b]
    print("similarity (rows: faces of A, columns: faces of B, each numbered left to right):")
    print("      " + " ".join(f"B{j:<6d}" for j in range(sim.shape[1])))
    for i, row in enumerate(sim):
        print(f"A{i:<4d} " + " ".join(f"{v:7.4f}" for v in row))
    for i, row in enumerate(sim):
        j = int(np.argmax(row))
        verdict = "same" if row[j] >= t else "no match"
        print(f"A{i} (box {[round(float(v)) for v in ra.detections.xyxy[order_a[i]]]}) best B{j}: {row[j]:.4f} {verdict}")
    return 0


def _compare_dir(analyzer: FaceAnalyzer, folder: Path, args: argparse.Namespace) -> int:
    names, vecs, skipped = [], [], 0
    for path in list_images(folder):
        try:
            r = _analyze_file(analyzer, path)
        except ImageReadError as e:
            print(f"warning: {e}; skipped", file=sys.stderr)
            skipped += 1
            continue
        if len(r) == 0:
            print(f"warning: {path}: no face found; skipped", file=sys.stderr)
            skipped += 1
            continue
        i = int(np.argmax(r.detections.area))
        names.append(path.name)
        vecs.append(r.embeddings.vectors[i])
    if not vecs:
        raise FacerecError(f"{folder}: no face found in any image ({skipped} skipped)")
    m = np.stack(vecs) @ np.stack(vecs).T
    if args.json:
        print_json({"images": names, "similarity": [[round(float(v), 4) for v in row] for row in m],
                    "threshold": analyzer.threshold, "skipped": skipped})
        return 0
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        w = csv.writer(out)
        w.writerow(["image", *names])
        for n, row in zip(names, m):
            w.writerow([n, *(f"{v:.4f}" for v in row)])
    finally:
        if out is not sys.stdout:
            out.close()
    if skipped:
        print(f"{len(names)} image(s) compared, {skipped} skipped", file=sys.stderr)
    return 0
