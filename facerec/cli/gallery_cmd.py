"""Gallery subcommands: ``align``, ``embed``, ``enroll ...``, ``identify`` and ``cluster``.

Batch commands follow one rule for bad input: a bad item (unreadable photo, no face) is
reported with the reason and counted, and the command exits 0 unless nothing at all could
be done with a non-empty input (exit 1). Fatal problems (bad config, missing weights, an
unwritable gallery) exit 2 with one message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from facerec.cli.common import config_flags, print_json
from facerec.config import Config
from facerec.distributed import add_executor_options, identify_photos, open_executor
from facerec.errors import FacerecError
from facerec.gallery.readiness import gallery_warning
from facerec.gallery.service import BatchReport, GalleryService, align_dataset
from facerec.gallery.store import CROPS_DIR, write_atomic
from facerec.imageio import list_images


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import plain_parser

    plain = plain_parser()  # for the actions that run no model

    p = sub.add_parser(
        "align", parents=[common], help="raw/<Person>/* photos -> preprocessed/<Person>/*.png aligned crops",
        description="Detect the face of every photo in RAW/<Person>/, align it to 112x112 and write "
                    "OUT/<Person>/<stem>.png. Incremental: unchanged photos are not redone.",
    )
    p.add_argument("--folderdataset_dir", "--raw", dest="raw", metavar="RAW",
                   help="folder of <Person>/<photo> (default: DATA_DIR/raw)")
    p.add_argument("--save_path", "--out", dest="out", metavar="OUT",
                   help="output folder of crops (default: DATA_DIR/preprocessed)")
    p.add_argument("--weights", metavar="FILE", help="detector weights file")
    p.add_argument("--conf_thres", type=float, metavar="P", help="minimum face score (default: config)")
    p.add_argument("--iou_thres", type=float, metavar="IOU", help="NMS IoU threshold (default: config)")
    p.add_argument("--cpu-mode", action="store_true", help="accepted for compatibility; facerec runs on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--details", action="store_true", help="list every file in the summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_align)
    config_flags(p, {"weights": "models.detector_weights", "conf_thres": "detection.conf_thres",
                     "iou_thres": "detection.iou_thres"})

    p = sub.add_parser(
        "embed", parents=[common], help="sync preprocessed/ crops into the gallery and embed what is missing",
        description="Add new or changed crops of DATA_DIR/preprocessed/<Person>/ to the gallery, then embed "
                    "every sample that has no vector for the current embedder, committing batch by batch.",
    )
    p.add_argument("--prune", action="store_true", help="forget samples whose crop file is gone")
    p.add_argument("--batch-size", type=int, metavar="N", help="faces per committed batch (default: recognition.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--details", action="store_true", help="list every file in the summary")
    p.add_argument("--export-feat-list", metavar="OUT", help="afterwards, write the vectors in the seed's feature-list format")
    p.add_argument("--import-feat-list", metavar="IN", help="attach vectors from a seed feature list instead of embedding")
    add_executor_options(p, batch_size=False)
    p.set_defaults(func=cmd_embed)

    enroll = sub.add_parser("enroll", help="add, list, rename, merge, move, delete people; export/import the gallery",
                            description="Manage the people of the gallery.")
    esub = enroll.add_subparsers(dest="enroll_command", metavar="ACTION")
    enroll.set_defaults(func=lambda args, cfg: (enroll.print_help(), 2)[1])

    e = esub.add_parser("add", parents=[common], help="enroll photos (or folders of photos) as one person",
                        description="Enroll the face of each photo as a sample of NAME (created if new). Folders "
                                    "are read one level deep. A photo that conflicts with another person (already "
                                    "enrolled for them, or a face that matches them better) is refused unless "
                                    "--force; exit 1 when something was refused or nothing could be added.")
    e.add_argument("name", metavar="NAME")
    e.add_argument("paths", nargs="+", metavar="PHOTO|DIR")
    e.add_argument("--force", action="store_true", help="add photos that conflict with another person anyway")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_enroll_add)
    e = esub.add_parser("list", parents=[common], help="people and their sample counts",
                        description="List everyone in the gallery with their sample counts (never creates a gallery).")
    e.add_argument("--json", action="store_true", help="JSON output")
    e.set_defaults(func=cmd_enroll_list)
    e = esub.add_parser("samples", parents=[common], help="the samples (ids, crops, quality) of one person or everyone",
                        description="List the samples of NAME (or of everyone): id, quality, crop file and source photo.")
    e.add_argument("name", nargs="?", metavar="NAME")
    e.add_argument("--json", action="store_true", help="JSON output")
    e.set_defaults(func=cmd_enroll_samples)
    e = esub.add_parser("check", parents=[common], help="list suspicious samples (wrong person, duplicate, not a face)",
                        description="Examine every sample: outlier (far from its person's other samples), "
                                    "closer_to_other (closer to another person), low_quality, not_a_face, duplicate. "
                                    "Exit 0 whether or not something is flagged; with --json the last line is one "
                                    "JSON object {people, samples, flagged: [...]}.")
    e.add_argument("--json", action="store_true", help="one JSON object on the last line")
    e.set_defaults(func=cmd_enroll_check)
    e = esub.add_parser("rename", parents=[plain], help="rename a person", description="Rename OLD to NEW (NEW must not exist; merge joins two people).")
    e.add_argument("old", metavar="OLD")
    e.add_argument("new", metavar="NEW")
    e.set_defaults(func=cmd_enroll_rename)
    e = esub.add_parser("merge", parents=[common], help="move every sample of A into B and remove A",
                        description="Move every sample of A into B and remove A. Refused when A and B look like "
                                    "different people (their faces match below the recognition threshold) "
                                    "unless --force.")
    e.add_argument("src", metavar="A")
    e.add_argument("dst", metavar="B")
    e.add_argument("--force", action="store_true", help="merge even when A and B look like different people")
    e.set_defaults(func=cmd_enroll_merge)
    e = esub.add_parser("move", parents=[plain], help="give one sample to another person",
                        description="Give sample SAMPLE_ID (see `enroll samples`) to PERSON (created if new).")
    e.add_argument("sample_id", type=int, metavar="SAMPLE_ID")
    e.add_argument("person", metavar="PERSON")
    e.set_defaults(func=cmd_enroll_move)
    e = esub.add_parser("delete", parents=[plain], help="remove a person with all samples, crops and vectors",
                        description="Remove NAME with all samples, crop files and vectors (photos under raw/ stay).")
    e.add_argument("name", metavar="NAME")
    e.set_defaults(func=cmd_enroll_delete)
    e = esub.add_parser("clear", parents=[plain], help="remove everyone (needs --yes)",
                        description="Remove every person, sample, crop and vector from the gallery.")
    e.add_argument("--yes", action="store_true", help="really remove every person")
    e.set_defaults(func=cmd_enroll_clear)
    e = esub.add_parser("export", parents=[plain], help="write the gallery to one .zip/.tar/.tar.gz archive",
                        description="Write people, crops and vectors to FILE (.zip, .tar or .tar.gz); its folder "
                                    "must exist.")
    e.add_argument("file", metavar="FILE")
    e.set_defaults(func=cmd_enroll_export)
    e = esub.add_parser("import", parents=[plain], help="merge an exported archive into the gallery",
                        description="Add the people and samples of an archive written by `enroll export`.")
    e.add_argument("file", metavar="FILE")
    e.set_defaults(func=cmd_enroll_import)

    p = sub.add_parser("identify", parents=[common], help="name every face in photos (best person or unknown)",
                       description="Detect every face, match it against the gallery and print the best person "
                                   "(or unknown below the threshold) with the top candidates.")
    p.add_argument("paths", nargs="+", metavar="IMAGE|DIR")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.add_argument("--annotate", metavar="OUTDIR", help="write copies of the images with boxes and names")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--executor ray)")
    add_executor_options(p, batch_size=True)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("cluster", parents=[common], help="group the faces of unlabelled photos by identity",
                       description="Group the faces of the photos by identity: faces at least --threshold "
                                   "similar are linked, then the graph is split (Chinese whispers).")
    p.add_argument("paths", nargs="+", metavar="DIR|IMAGE")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--method", choices=("chinese_whispers", "components"), default="chinese_whispers",
                   help="how the similarity graph is split (default: %(default)s)")
    p.set_defaults(func=cmd_cluster)


# ---------------------------------------------------------------------------- helpers


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _batch_exit(report: BatchReport) -> int:
    """0 unless the input was non-empty and nothing could be done."""
    return 1 if report.total and not (report.done or report.unchanged) else 0


def _expand(paths: list[str], empty: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Files of ``paths`` (folders one level deep) and the paths that do not exist; folders
    without an image are appended to ``empty`` when given."""
    files: list[Path] = []
    missing: list[str] = []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            found = [f for f in list_images(p) if not f.name.startswith(".")]
            if not found and empty is not None:
                empty.append(s)
            files += found
        elif p.exists():
            files.append(p)
        else:
            missing.append(s)
    return files, missing


# ---------------------------------------------------------------------------- align / embed


def _detector_for_file(file_name: str, default: str) -> str:
    """The registered detector whose published weights file (or ONNX export) is ``file_name``."""
    from facerec.detect import detector_registry

    for entry in detector_registry().entries():
        if file_name in (*entry.weights.names("torch"), *entry.weights.names("onnx")):
            return entry.name
    return default


def cmd_align(args: argparse.Namespace, cfg: Config) -> int:
    if args.weights and cfg.models.detector == "auto":
        cfg.models.detector = _detector_for_file(Path(args.weights).name, cfg.models.detector)
    data = Path(cfg.gallery.data_dir)
    raw = Path(args.raw) if args.raw else data / "raw"
    out = Path(args.out) if args.out else data / CROPS_DIR
    from facerec.models import build_detector

    detector = build_detector(cfg, None if cfg.models.detector == "auto" else cfg.models.detector)
    det_name = getattr(detector, "name", cfg.models.detector)
    d = cfg.detection
    settings = {"detector": det_name, "weights": cfg.models.detector_weights, "input_size": d.input_size,
                "conf_thres": d.conf_thres, "iou_thres": d.iou_thres, "multiple_faces": cfg.gallery.multiple_faces,
                "min_face_size": cfg.gallery.min_face_size, "pad_retry": cfg.gallery.pad_retry}
    report = align_dataset(raw, out, detector, multiple_faces=cfg.gallery.multiple_faces,
                           min_face_size=cfg.gallery.min_face_size, pad_retry=cfg.gallery.pad_retry,
                           settings=settings, progress=not args.no_progress)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary("photos", args.details))
        if report.removed:
            print(f"{len(report.removed)} photo(s) no longer in {raw}; their crops were kept")
        print(f"crops in {out}")
    return _batch_exit(report)


def cmd_embed(args: argparse.Namespace, cfg: Config) -> int:
    service = GalleryService(cfg)
    if args.import_feat_list:
        n = service.import_feat_list(args.import_feat_list)
        print(f"imported {n} vectors for {service.key} from {args.import_feat_list}")
        return 0 if n else 1
    with open_executor(args, cfg) as executor:
        sync, report = service.embed(prune=args.prune, progress=not args.no_progress, batch_size=args.batch_size,
                                     run=executor.embed if executor else None)
    print(sync.summary(f"crops in {service.data_dir / CROPS_DIR}", args.details))
    if sync.removed and not args.prune:
        print(f"{len(sync.removed)} sample(s) lost their crop file; they stay in the gallery "
              "(facerec embed --prune forgets them)")
    elif sync.removed:
        print(f"forgot {len(sync.removed)} sample(s) whose crop file is gone")
    n = len(report.done)
    rate = n / report.seconds if report.seconds > 0 else 0.0
    print(f"embedded {n} face(s) with {service.key} in {report.seconds:.1f} s ({rate:.1f} faces/s)")
    for item, reason in report.failed:
        _err(f"warning: {item}: {reason}")
    people = service.store.people()
    print(f"gallery: {len(people)} people, {service.store.count()} samples, "
          f"{service.store.count(service.key)} vectors for {service.key}")
    if args.export_feat_list:
        written, missing = service.export_feat_list(args.export_feat_list)
        print(f"wrote {written} feature lines to {args.export_feat_list}" + (f" ({missing} samples without a vector)" if missing else ""))
    return 1 if report.failed and not report.done and not service.store.count(service.key) else 0


# ---------------------------------------------------------------------------- enroll


def cmd_enroll_add(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        empty: list[str] = []
        files, missing = _expand(args.paths, empty)
        report = service.enroll_paths(args.name, files, progress=not args.no_progress,
                                      refuse_conflicts=not args.force)
        report.failed += [(m, f"{m}: no such file or folder") for m in missing]
        report.failed += [(d, f"no images found in the folder {d}") for d in empty]
        if args.json:
            print_json(report.to_json())
        else:
            for w in report.warnings:
                _err(f"warning: {w}")
            for item, reason in report.skipped:
                _err(f"skipped {item}: {reason}")
            for item, reason in report.failed:
                _err(f"failed {item}: {reason}")
            people = {p.name: p.samples for p in service.store.people()}
            name = next((n for n in people if n == args.name.strip()), args.name.strip())
            print(f"{name}: {len(report.done)} added, {len(report.unchanged)} already enrolled, "
                  f"{len(report.skipped)} skipped, {len(report.failed)} failed; "
                  f"{people.get(name, 0)} sample(s) in total")
            if not report.done and not report.unchanged:
                why = (report.failed + report.skipped)[0][1] if report.failed or report.skipped else "no photo given"
                _err(f"nothing added for {name}: {why}")
        return 1 if report.refused or not (report.done or report.unchanged) else 0


def cmd_enroll_list(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg, readonly=True) as service:
        people = service.store.people()
        if args.json:
            print_json([{"name": p.name, "samples": p.samples, "created": p.created} for p in people])
            return 0
        if not people:
            print(f"the gallery at {service.data_dir} is empty")
            return 0
        width = max(len(p.name) for p in people)
        for p in people:
            print(f"{p.name:<{width}}  {p.samples:>5} sample(s)")
        keys = service.store.embedder_keys()
        print(f"{len(people)} people, {sum(p.samples for p in people)} samples"
              + "".join(f"; {n} vectors for {k}" for k, n in keys.items()))
    return 0


def cmd_enroll_samples(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg, readonly=True) as service:
        samples = service.store.samples(args.name)
        if args.json:
            print_json([s.__dict__ for s in samples])
            return 0
        for s in samples:
            print(f"{s.id:>6}  {s.person}  quality {s.quality:8.1f}  {s.crop_path}  <- {s.source_path or '-'}")
    return 0


def cmd_enroll_check(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg, readonly=True) as service:
        report = service.check()
    if args.json:
        print_json(report.to_json())
        return 0
    for f in report.flagged:
        print(f.describe())
    print(f"{report.people} people, {report.samples} samples: {len(report.flagged)} flagged"
          + (f"; {report.unchecked} sample(s) without a vector were not compared (run facerec embed)"
             if report.unchecked else ""))
    return 0


def cmd_enroll_rename(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        service.rename_person(args.old, args.new)
        print(f"renamed {args.old!r} to {args.new!r}")
    return 0


def cmd_enroll_merge(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        n = len(service.store.samples(args.src))
        sim = service.person_similarity(args.src, args.dst) if n else None
        if sim is not None and sim < service.threshold and not args.force:
            raise FacerecError(
                f"{args.src!r} and {args.dst!r} look like different people (their faces match at {sim:.3f}, below "
                f"the threshold {service.threshold:.3f}); nothing merged. Check with `facerec enroll samples`, "
                "or use --force to merge anyway")
        service.merge_people(args.src, args.dst)
        print(f"merged {args.src!r} into {args.dst!r} ({n} sample(s) moved)")
    return 0


def cmd_enroll_move(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        before = service.move_sample(args.sample_id, args.person)
        print(f"moved sample {args.sample_id} from {before!r} to {args.person!r}")
    return 0


def cmd_enroll_delete(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        from facerec.unknowns import purge_person

        r = purge_person(service, args.name, interface="cli")
        print(f"removed {args.name!r}: {r['samples']} sample(s) with their crop files and vectors, "
              f"{r['negatives']} negative sample(s)")
        raw = service.data_dir / "raw" / args.name.strip()
        if raw.is_dir():
            print(f"note: the photos in {raw} were not touched; delete them too, or facerec align + "
                  "facerec embed will enroll them again")
    return 0


def cmd_enroll_clear(args: argparse.Namespace, cfg: Config) -> int:
    if not args.yes:
        _err("facerec enroll clear removes every person, sample, crop and vector; run it with --yes")
        return 2
    with GalleryService(cfg) as service:
        people, samples = service.clear()
        print(f"removed {people} people and {samples} sample(s) from {service.data_dir}")
    return 0


def cmd_enroll_export(args: argparse.Namespace, cfg: Config) -> int:
    folder = Path(args.file).expanduser().resolve().parent
    if not folder.is_dir():
        raise FacerecError(f"enroll export {args.file}: folder {folder} does not exist (create it first)")
    with GalleryService(cfg, readonly=True) as service:
        service.export_archive(args.file)
        print(f"exported {len(service.store.people())} people, {service.store.count()} samples to {args.file}")
    return 0


def cmd_enroll_import(args: argparse.Namespace, cfg: Config) -> int:
    with GalleryService(cfg) as service:
        n = service.import_archive(args.file)
        print(f"imported {n} new sample(s) from {args.file}; the gallery has {len(service.store.people())} people")
    return 0


# ---------------------------------------------------------------------------- identify / cluster


def _annotate(image: np.ndarray, faces: list[dict], out: Path) -> None:
    from facerec.draw import annotate
    from facerec.types import TrackedFace

    # faces of a photo are not tracked: no id in their labels
    img = annotate(image, [TrackedFace(-1, f["box"], f["name"], f["similarity"], score=f["score"]) for f in faces])
    ok, buf = cv2.imencode(out.suffix, img)
    if ok:
        write_atomic(out, buf.tobytes())


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    empty: list[str] = []
    files, missing = _expand(args.paths, empty)
    with GalleryService(cfg, readonly=True) as service, open_executor(args, cfg) as executor:
        samples, vectors = service.store.count(), service.store.count(service.key)
        nobody = gallery_warning(service.store, service.key, service.store.label,
                                 live=False)
        if nobody:  # the same words as the daemon and the page
            raise FacerecError(nobody)
        if samples > vectors:
            _err(f"warning: {samples - vectors} of {samples} samples have no vector for {service.key}; "
                 "run facerec embed to include them")
        annotate_dir = Path(args.annotate) if args.annotate else None
        if annotate_dir:
            if annotate_dir.exists() and not annotate_dir.is_dir():
                raise FacerecError(f"--annotate {annotate_dir} is a file; it names a folder for the annotated "
                                   "copies (give a new or existing folder)")
            annotate_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        ok = 0
        for m in missing:
            _err(f"skipped {m}: no such file or folder")
        for d in empty:
            _err(f"skipped {d}: no images found in the folder")
        for f, image, faces, error in identify_photos(service, files, executor, batch_size=args.batch_size,
                                                      keep_images=annotate_dir is not None):
            if error is not None:
                if args.json:
                    print_json({"image": str(f), "error": error, "faces": []})
                else:
                    _err(f"skipped {error}")
                continue
            ok += 1
            if args.json:
                print_json({"image": str(f), "faces": faces})
            else:
                print(f"{f}: {len(faces)} face(s)")
                for face in faces:
                    box = ",".join(f"{v:.0f}" for v in face["box"])
                    top = ", ".join(f"{n} {s:.3f}" for n, s in face["top"][:3])
                    print(f"  [{box}]  {face['name'] or 'unknown':<24} {face['similarity']:.3f}   top: {top or '-'}")
            if annotate_dir and image is not None:
                stem = f.stem
                n = 1
                while stem in used:
                    stem, n = f"{f.stem}-{n}", n + 1
                used.add(stem)
                _annotate(image, faces, annotate_dir / f"{stem}.jpg")
    if not ok:
        _err("nothing identified: " + ("no image could be read" if files else "no images found in "
                                        + ", ".join(args.paths)))
    return 0 if ok else 1


def cmd_cluster(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.cluster import cluster_images

    files, missing = _expand(args.paths)
    for m in missing:
        _err(f"skipped {m}: no such file or folder")
    from facerec.analyze import FaceAnalyzer

    analyzer = FaceAnalyzer.from_config(cfg)
    threshold = analyzer.threshold if cfg.recognition.threshold is None else cfg.recognition.threshold
    report = cluster_images(analyzer, files, threshold, args.method, pad=cfg.gallery.pad_retry)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
    return 0 if report.faces or not files else 1
