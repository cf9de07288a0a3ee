"""``facerec eval verify|identify|gallery|detect|cluster`` and ``facerec calibrate``.

Every evaluation prints a readable summary; with ``--json`` the last line on stdout is one
JSON object (progress bars and warnings go to stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facerec.cli.common import config_flags, print_json
from facerec.config import DEFAULT_CONFIG, Config
from facerec.errors import FacerecError

_EPILOG_VERIFY = """\
Pair lists use the LFW format: a header 'N' (N same-person lines, then N different-person
lines) or 'FOLDS N' (View 2: FOLDS folds of N same + N different); lines 'name i j' or
'name1 i name2 j'; images ROOT/<name>/<name>_<i:04d>.jpg. With folds the reported accuracy is
the LFW 10-fold protocol; otherwise the accuracy at the best threshold on the whole list,
with 10-fold cross-validation over the list printed beside it.
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import detector_parser

    ev = sub.add_parser("eval", help="measure accuracy: verify pairs, identify, check a gallery, detect",
                        description="Evaluation on labelled data.")
    esub = ev.add_subparsers(dest="eval_command", metavar="WHAT")
    ev.set_defaults(func=lambda args, cfg: (ev.print_help(), 2)[1])

    p = esub.add_parser("verify", parents=[common], help="verification accuracy on an LFW-format pair list",
                        description="Face verification on a pair list: accuracy, AUC, EER, TAR at FAR.",
                        epilog=_EPILOG_VERIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, metavar="FILE", help="pair list (pairs.txt / pairsDevTest.txt)")
    p.add_argument("--root", metavar="DIR", help="image root (default: the pair list's folder)")
    p.add_argument("--limit", type=int, metavar="N", help="use N pairs, half same and half different, spread over the list")
    p.add_argument("--plot", metavar="PNG", help="write the ROC and the score histograms here")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = esub.add_parser("identify", parents=[common], help="open-set identification on <person>/<photo> folders",
                        description="Enroll GALLERY/<person>/* (largest face per photo) and search with every "
                                    "PROBES/<person>/* photo; probe people missing from the gallery should come "
                                    "out unknown. Reports top-1/top-5 and FNIR at FPIR 1% and 10%.")
    p.add_argument("--gallery", required=True, metavar="DIR", help="enrolled people: DIR/<person>/<photo>")
    p.add_argument("--probes", required=True, metavar="DIR", help="search photos: DIR/<person>/<photo>")
    p.add_argument("--template", choices=("mean", "quality_mean", "max"), help="person template (default: gallery.template)")
    p.add_argument("--plot", metavar="PNG", help="write the DET curve here")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_identify)
    config_flags(p, {"template": "gallery.template"})

    p = esub.add_parser("gallery", parents=[common], help="leave-one-out check of the gallery (or of photo folders)",
                        description="Compare every enrolled sample with its own person (without it) and with "
                                    "every other person: closest people, weakest samples, likely mislabelled "
                                    "samples and the threshold range that separates people. Uses the gallery "
                                    "at --data-dir (vectors of the configured embedder), or --root photos.")
    p.add_argument("--root", metavar="DIR", help="check photo folders DIR/<person>/<photo> instead of the gallery")
    p.add_argument("--template", choices=("mean", "quality_mean", "max"), help="person template (default: gallery.template)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_gallery)
    config_flags(p, {"template": "gallery.template"})

    p = esub.add_parser("detect", parents=[detector_parser()], help="detector recall/precision against ground-truth boxes",
                        description="Recall and precision at an IoU threshold (greedy matching by score; "
                                    "ignored boxes count neither way), and faces found on photos without faces.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the annotated images")
    p.add_argument("--gt", required=True, metavar="CSV", help="ground truth: split,file,x,y,w,h,ignore")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    p.add_argument("--also-iou", type=float, nargs="+", default=[], metavar="IOU",
                   help="further IoU thresholds reported on the same detections")
    p.add_argument("--split", metavar="NAME", help="only ground-truth rows of this split")
    p.add_argument("--negatives", nargs="+", default=[], metavar="PATH",
                   help="photos (or folders) with no face: every detection there is a false positive")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_detect)

    p = esub.add_parser("cluster", parents=[common], help="group photo folders into people as the daemon groups unknowns",
                        description="Cluster the largest face of every DIR/<person>/* photo with the unknown-face "
                                    "grouping of the daemon (unknowns.min_faces, unknowns.max_distance) and score "
                                    "it against the folders: BCubed precision, recall and F1, clusters found vs "
                                    "people. A face left ungrouped counts as a cluster of its own in BCubed.")
    p.add_argument("--root", required=True, metavar="DIR", help="labelled photos: DIR/<person>/<photo>")
    p.add_argument("--min-photos", type=int, default=1, metavar="N",
                   help="only people with at least N photos (LFW: 2); default 1")
    p.add_argument("--max-people", type=int, metavar="N", help="only the first N people by folder name (caps the run time)")
    p.add_argument("--min-faces", type=int, metavar="N", help="override unknowns.min_faces")
    p.add_argument("--max-distance", type=float, metavar="D", help="override unknowns.max_distance (cosine distance)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_cluster)
    config_flags(p, {"min_faces": "unknowns.min_faces", "max_distance": "unknowns.max_distance"})

    p = sub.add_parser("calibrate", parents=[common], help="set recognition.threshold for a target false-accept rate",
                       description="Compute the threshold that keeps the false-accept rate at or below --far on "
                                   "a pair list (--pairs/--root) or, without --pairs, on the gallery at --data-dir (default: "
                                   "gallery.data_dir, data_recognition), and write it to "
                                   "recognition.threshold in the config file (a timestamped backup is kept; "
                                   "comments are preserved).")
    p.add_argument("--pairs", metavar="FILE", help="LFW-format pair list to calibrate on")
    p.add_argument("--root", metavar="DIR", help="image root of --pairs (default: the pair list's folder)")
    p.add_argument("--limit", type=int, metavar="N", help="use N pairs of --pairs")
    p.add_argument("--far", required=True, metavar="RATE", help="target false-accept rate, e.g. 1e-3")
    p.add_argument("--dry-run", action="store_true", help="print the change, do not write the file")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)


# --------------------------------------------------------------------------------------
# helpers


def _analyzer(cfg: Config):
    from facerec.analyze import FaceAnalyzer

    return FaceAnalyzer.from_config(cfg)


def _model_info(cfg: Config, analyzer) -> dict:
    return {
        "detector": getattr(analyzer.detector, "name", cfg.models.detector),
        "embedder": str(analyzer.embedder.key),
        "engine": getattr(analyzer.embedder, "engine", cfg.runtime.engine),
        "precision": getattr(analyzer.embedder, "precision", cfg.runtime.precision),
        "flip": bool(analyzer.flip),
    }


def _fmt(v: float | None, pct: bool = False, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.{digits}f}"


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def _pairs_root(args) -> Path:
    return Path(args.root) if args.root else Path(args.pairs).parent


# --------------------------------------------------------------------------------------
# eval verify


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.metrics import roc_curve
    from facerec.evaluate.plot import plot_verification
    from facerec.evaluate.verify import read_pairs, score_pairs, summary

    pairs = read_pairs(args.pairs).limit(args.limit)
    analyzer = _analyzer(cfg)
    result = score_pairs(analyzer, pairs, _pairs_root(args), progress=_progress(args))
    rep = result.report()
    out = summary(result, rep)
    out.update(_model_info(cfg, analyzer))

    kind = "10-fold (LFW protocol)" if out["accuracy_protocol"] == "10-fold" else "best threshold"
    print(f"pairs: {rep.pairs} ({rep.genuine} same, {rep.impostor} different), images: {result.images}, "
          f"centre-crop fallback: {result.fallback_images}, failed pairs: {result.failed_pairs}")
    std = f" +- {_fmt(out['accuracy_std'], True)}" if out["accuracy_protocol"] == "10-fold" else ""
    print(f"accuracy ({kind}): {_fmt(out['accuracy'], True)}{std} at threshold {_fmt(rep.best_threshold)}")
    if out["accuracy_protocol"] != "10-fold" and rep.kfold:
        print(f"accuracy (10-fold cross-validation over the list): {_fmt(rep.kfold.mean, True)} "
              f"+- {_fmt(rep.kfold.std, True)}")
    print(f"AUC: {_fmt(rep.auc, digits=5)}  EER: {_fmt(rep.eer, True)} (threshold {_fmt(rep.eer_threshold)})")
    for p in rep.operating_points:
        note = "" if p.resolvable else f" (only {rep.impostor} different pairs: FAR below {1 / max(rep.impostor, 1):.0e} is not measurable)"
        print(f"TAR@FAR={p.target_far:g}: {_fmt(p.tar, True)} at threshold {_fmt(p.threshold)}{note}")
    print(f"time: {result.seconds:.1f} s ({result.images / max(result.seconds, 1e-9):.1f} images/s)")
    if args.plot:
        if rep.genuine and rep.impostor:
            title = f"ROC  {out['detector']} + {analyzer.embedder.key.model}  AUC {_fmt(rep.auc, digits=4)}"
            path = plot_verification(args.plot, roc_curve(result.scores, result.labels),
                                     result.scores[result.labels], result.scores[~result.labels],
                                     rep.best_threshold, title)
            print(f"plot: {path}")
        else:
            print("plot: skipped (needs both same and different pairs)", file=sys.stderr)
    if args.json:
        print_json(out)
    return 0


# --------------------------------------------------------------------------------------
# eval identify


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.identify import identify_folders, summary
    from facerec.evaluate.metrics import det_curve
    from facerec.evaluate.plot import plot_det

    analyzer = _analyzer(cfg)
    template = cfg.gallery.template  # --template applied
    res = identify_folders(analyzer, args.gallery, args.probes, template, _progress(args), cfg.gallery.pad_retry)
    rep = res.report()
    out = summary(res)
    out["template"] = template
    out.update(_model_info(cfg, analyzer))
    print(f"gallery: {len(res.people)} people from {res.gallery_photos} photos; probes: {rep.probes} "
          f"({rep.mated} enrolled, {rep.nonmated} not enrolled); skipped photos: {len(res.skipped)}")
    print(f"top-1: {_fmt(rep.top1, True)}  top-5: {_fmt(rep.top5, True)}")
    for p in rep.operating_points:
        note = "" if p.resolvable else f" (only {rep.nonmated} non-enrolled probes: not measurable that low)"
        print(f"FNIR@FPIR={p.target_fpir:g}: {_fmt(p.fnir, True)} at threshold {_fmt(p.threshold)}{note}")
    if not rep.operating_points:
        print("FNIR@FPIR: n/a (needs probes of enrolled and of not enrolled people)")
    if args.plot:
        if rep.mated and rep.nonmated:
            print(f"plot: {plot_det(args.plot, det_curve(res.scores, res.mate))}")
        else:
            print("plot: skipped (needs probes of enrolled and of not enrolled people)", file=sys.stderr)
    if args.json:
        print_json(out)
    return 0


# --------------------------------------------------------------------------------------
# eval gallery


def _gallery_vectors(cfg: Config):
    """``(samples, names, vectors, quality, source, embedder key)`` from the configured gallery
    (either backend, through the gallery service)."""
    from facerec.gallery.service import GalleryService

    with GalleryService(cfg, readonly=True) as svc:
        key = svc.key
        store = svc.store
        where = store.label
        ids, names, vec, quality = store.vectors(key)
        crops = {s.id: s for s in store.samples()}
    if len(ids) == 0:
        raise FacerecError(
            f"the gallery at {where} has no vectors for {key}: enroll people or run "
            "`facerec embed` with this embedder first"
        )
    labels = []
    for i in ids:
        s = crops.get(int(i))
        src = Path(s.source_path).name if s and s.source_path else (Path(s.crop_path).name if s else "")
        labels.append(f"#{int(i)} {src}".strip())
    return labels, list(names), vec, quality, where, str(key)


def cmd_gallery(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.gallery_eval import check_gallery, describe
    from facerec.evaluate.identify import embed_folder

    template = cfg.gallery.template  # --template applied
    if args.root:
        analyzer = _analyzer(cfg)
        fe = embed_folder(analyzer, args.root, _progress(args), "embedding", cfg.gallery.pad_retry)
        root = Path(args.root)
        samples = [str(p.relative_to(root)) for p in fe.paths]
        names, vec, quality, source, key = fe.names, fe.vectors, fe.quality, str(root), str(analyzer.embedder.key)
        skipped = len(fe.skipped)
    else:
        samples, names, vec, quality, source, key = _gallery_vectors(cfg)
        skipped = 0
    check = check_gallery(vec, names, samples, quality, template)
    print(f"source: {source} ({key})" + (f", {skipped} photo(s) without a usable face skipped" if skipped else ""))
    for line in describe(check):
        print(line)
    if args.json:
        d = check.to_dict()
        d.update({"source": source, "embedder": key, "skipped": skipped})
        print_json(d)
    return 0


# --------------------------------------------------------------------------------------
# eval detect


def cmd_detect(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.detect_eval import evaluate_detector, negative_paths, read_gt
    from facerec.models import build_detector

    gt = read_gt(args.gt, args.split)
    if not gt:
        raise FacerecError(f"{args.gt}: no ground-truth rows" + (f" in split {args.split!r}" if args.split else ""))
    detector = build_detector(cfg)
    results = evaluate_detector(detector, args.images, gt, args.iou, negative_paths(args.negatives),
                                _progress(args), tuple(args.also_iou))
    main = results[args.iou]
    s = main.summary()
    print(f"{getattr(detector, 'name', '')}: {main.images} images, {main.gt} faces, input_size "
          f"{cfg.detection.input_size}, conf {cfg.detection.conf_thres}")
    for t, r in results.items():
        print(f"IoU {t:g}: recall {_fmt(r.recall, True)} ({r.tp}/{r.gt}), precision {_fmt(r.precision, True)} "
              f"({r.fp} false positives, {r.ignored} on ignored faces)")
    if main.negatives:
        print(f"photos without faces: {len(main.negatives)}, faces found there (false positives): "
              f"{sum(main.negatives.values())}")
        for name, n in main.negatives.items():
            print(f"  {name}: {n}")
    if args.json:
        s["detector"] = getattr(detector, "name", cfg.models.detector)
        s["input_size"] = cfg.detection.input_size
        for t, r in results.items():
            if t != args.iou:
                s[f"recall_iou_{t:g}"] = r.recall
                s[f"precision_iou_{t:g}"] = r.precision
        print_json(s)
    return 0


# --------------------------------------------------------------------------------------
# calibrate


def cmd_calibrate(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.calibrate import (
        calibrate_scores,
        check_far,
        gallery_comparisons,
        write_threshold,
    )

    far = check_far(args.far)  # a bad target fails before any model is loaded
    if args.pairs and args.data_dir:
        raise FacerecError("calibrate on either --pairs or --data-dir, not both")
    if args.pairs:
        from facerec.evaluate.verify import read_pairs, score_pairs

        pairs = read_pairs(args.pairs).limit(args.limit)
        analyzer = _analyzer(cfg)
        res = score_pairs(analyzer, pairs, _pairs_root(args), progress=_progress(args))
        scores, labels = res.scores, res.labels
        source = f"{args.pairs} ({len(pairs)} pairs)"
    else:  # the gallery at --data-dir, or at gallery.data_dir (default data_recognition)
        try:
            _, names, vec, quality, data_dir, key = _gallery_vectors(cfg)
        except FacerecError as e:
            raise FacerecError(f"{e}; or calibrate on a pair list: --pairs FILE [--root DIR]") from None
        scores, labels = gallery_comparisons(vec, names, quality, cfg.gallery.template)
        source = f"gallery {data_dir} ({key}, template {cfg.gallery.template})"
    cal = calibrate_scores(scores, labels, far)
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    change = write_threshold(path, cal.threshold, dry_run=args.dry_run)
    print(f"calibrated on {source}: {cal.genuine} genuine and {cal.impostor} impostor comparisons")
    print(f"threshold {cal.threshold:.4f}: FAR {cal.far:.2e} (target {far:g}), TAR {100 * cal.tar:.2f}%")
    if not cal.resolvable:
        print(f"warning: {cal.impostor} impostor comparisons cannot measure a FAR of {far:g} "
              f"(that needs at least {int(np.ceil(1 / far))}); the threshold only rejects every impostor "
              "seen here", file=sys.stderr)
    old = change.old if change.old is not None else "(not set)"
    verb = "would change" if args.dry_run else "changed"
    print(f"{change.path}: recognition.threshold {verb} {old} -> {change.new}")
    if change.backup:
        print(f"backup: {change.backup}")
    if args.json:
        print_json({
            "threshold": cal.threshold, "old": change.old, "far": cal.far, "tar": cal.tar, "target_far": far,
            "genuine": cal.genuine, "impostor": cal.impostor, "resolvable": cal.resolvable,
            "config": str(change.path), "backup": str(change.backup) if change.backup else None,
            "written": change.written,
        })
    return 0


# --------------------------------------------------------------------------------------
# eval cluster


def cmd_cluster(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.evaluate.cluster_eval import evaluate_clustering
    from facerec.unknowns import ClusterParams

    if args.min_photos < 1 or (args.max_people is not None and args.max_people < 1):
        raise FacerecError("--min-photos and --max-people must be at least 1")
    params = ClusterParams(cfg.unknowns.min_faces, cfg.unknowns.max_distance)  # --min-faces/--max-distance applied
    analyzer = _analyzer(cfg)
    res = evaluate_clustering(analyzer, args.root, params, args.min_photos, args.max_people,
                              _progress(args), cfg.gallery.pad_retry)
    out = res.summary()
    out.update(_model_info(cfg, analyzer))
    out["root"] = str(args.root)
    left = f", {out['people_left_out']} people left out (fewer than {args.min_photos} photos or past --max-people)" \
        if out["people_left_out"] else ""
    print(f"{out['faces']} faces of {out['people']} people{left}; {out['skipped']} photo(s) without a usable face skipped")
    print(f"min_faces {params.min_faces}, max_distance {params.max_distance:g}: {out['clusters']} clusters "
          f"({out['pure_clusters']} pure) for {out['people']} people, {out['noise']} faces ungrouped")
    print(f"BCubed precision {_fmt(out['bcubed_precision'])}  recall {_fmt(out['bcubed_recall'])}  "
          f"F1 {_fmt(out['bcubed_f1'])}")
    print(f"time: {out['seconds']:.1f} s (clustering {1000 * out['cluster_seconds']:.0f} ms)")
    if args.json:
        print_json(out)
    return 0
