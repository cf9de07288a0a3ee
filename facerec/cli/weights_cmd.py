"""``facerec weights``: the known models, whether each file is present and verified;
``facerec weights fetch``: download (or copy) and verify their files, on request only."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal

from face_embedding import embedder_registry
from facerec.cli.common import print_json
from facerec.config import Config
from facerec.detect import detector_registry
from facerec.errors import ConfigError, UnknownModelError, WeightsError
from facerec.weights import find_weights, resolve_weights, search_dirs
from facerec.weights_fetch import MIRROR_ENV, fetch_one, files_of, copy_tree_hint

#: What ``fetch`` takes for ``auto``: the pair whose files have a published sha256 and
#: direct download addresses (``auto`` at run time then finds and uses them).
DEFAULT_FETCH = ("yolov5n-0.5-face", "mobilefacenet")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import plain_parser

    common = plain_parser()  # models are named as arguments here, none runs

    p = sub.add_parser("weights", parents=[common], help="list known models and check their weight files",
                       description="List every registered model with its weights file, sha256 status and source.")
    p.add_argument("--json", action="store_true", help="one JSON line per model")
    p.set_defaults(func=cmd_weights)
    wsub = p.add_subparsers(dest="weights_command", metavar="SUBCOMMAND")
    f = wsub.add_parser(
        "fetch", parents=[common], help="download and verify the weight files of models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Download the files of the named models (checkpoint and, where published, ONNX export) from\n"
            "their published addresses, check each sha256 before moving it into place, and report.\n"
            "Without NAME: the configured detector and embedder; with models.detector/embedder: auto,\n"
            f"the pair whose files carry a published sha256: {DEFAULT_FETCH[0]} + {DEFAULT_FETCH[1]}.\n"
            "Interrupted downloads resume (FILE.part). Nothing is ever downloaded except by this command.\n\n"
            "exit status: 0 every file present and verified; 3 every file present, some with no\n"
            "published sha256 (kept, reported UNVERIFIED); 1 some file missing or rejected."
        ),
    )
    f.add_argument("names", nargs="*", metavar="NAME", help="model names from `facerec weights` (default: see above)")
    f.add_argument("--mirror", metavar="BASE_URL",
                   help=f"fetch BASE_URL/<file name> (and the upstream name) instead of the published addresses; "
                        f"default ${MIRROR_ENV}")
    f.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="copy from this folder instead (offline; no network is used)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fetch)


def _status(spec, cfg: Config, backend: Literal["torch", "onnx"]) -> tuple[str, str]:
    path = find_weights(spec, None, cfg.models.weights_dir, backend)
    if path is None:
        return "missing", ""
    if not spec.expected_sha256(backend):
        return "present (no published sha256)", str(path)
    try:
        resolve_weights(spec, None, cfg.models.weights_dir, backend=backend)
        return "verified", str(path)
    except WeightsError:
        return "CHECKSUM MISMATCH", str(path)


def cmd_weights(args: argparse.Namespace, cfg: Config) -> int:
    rows = []
    for kind, registry in (("detector", detector_registry()), ("embedder", embedder_registry())):
        for entry in registry.entries():
            spec = entry.weights
            for backend in ("torch", "onnx"):
                if backend == "onnx" and not spec.onnx_file:
                    continue
                status, path = _status(spec, cfg, backend)
                rows.append({
                    "kind": kind, "name": entry.name, "backend": backend,
                    "file": spec.names(backend)[0], "status": status, "path": path,
                    "sha256": spec.expected_sha256(backend), "license": spec.license, "url": spec.url,
                    **({"default_threshold": entry.info["default_threshold"]} if "default_threshold" in entry.info else {}),
                })
    if args.json:
        for r in rows:
            print_json(r)
        return 0
    print("Searched, in order: " + ", ".join(str(d) for d in search_dirs(cfg.models.weights_dir)))
    w = max(len(r["name"]) for r in rows)
    print(f"{'kind':9} {'name':{w}} {'backend':7} {'status':30} file")
    for r in rows:
        print(f"{r['kind']:9} {r['name']:{w}} {r['backend']:7} {r['status']:30} {r['path'] or r['file']}")
    missing = [r for r in rows if r["status"] == "missing"]
    if missing:
        print("\nMissing files: `facerec weights fetch NAME` downloads and verifies them into ./weights/ "
              "(or copy them there, or into a folder named by FACEREC_WEIGHTS).")
    return 0


def _spec_of(name: str):
    for registry in (detector_registry(), embedder_registry()):
        if name in registry:
            return registry.get(name).weights
    known = ", ".join(sorted([*detector_registry().names(), *embedder_registry().names()]))
    raise UnknownModelError(f"unknown model {name!r}; known models: {known}")


def cmd_fetch(args: argparse.Namespace, cfg: Config) -> int:
    names = list(args.names)
    if not names:
        det = cfg.models.detector if cfg.models.detector != "auto" else DEFAULT_FETCH[0]
        emb = cfg.models.embedder if cfg.models.embedder != "auto" else DEFAULT_FETCH[1]
        names = [det, emb]
        how = "models.detector/embedder: auto -> the pair with published sha256" \
            if "auto" in (cfg.models.detector, cfg.models.embedder) else "the configured pair"
        print(f"models: {det} + {emb} ({how}; name others as arguments)")
    specs = [(n, _spec_of(n)) for n in dict.fromkeys(names)]
    dest = Path(args.weights_dir).expanduser() if args.weights_dir else Path.cwd() / "weights"
    from_dir = Path(args.from_dir).expanduser() if args.from_dir else None
    if from_dir is not None and not from_dir.is_dir():
        raise ConfigError(f"--from {args.from_dir}: no such folder")
    mirror = None if from_dir is not None else (args.mirror or os.environ.get(MIRROR_ENV) or None)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--weights-dir {dest}: exists and is not a folder")
    print(f"into {dest}" + (f", from {from_dir}" if from_dir else f", mirror {mirror}" if mirror else ""))
    results = []
    for name, spec in specs:
        for item in files_of(name, spec):
            r = fetch_one(item, dest, from_dir=from_dir, mirror=mirror, progress=not args.no_progress)
            results.append(r)
            label = {"verified": "verified", "unverified": "UNVERIFIED", "failed": "FAILED"}[r.status]
            extra = {"verified": f"sha256 {item.sha256[:12]}... matches" if item.sha256 else "",
                     "unverified": "no published sha256: kept, NOT checked; check its source yourself",
                     "failed": "not fetched"}[r.status]
            print(f"{label:10} {name:20} {item.file:40} {extra}" + (f" ({r.how})" if r.how else ""), flush=True)
            for line in r.problems:
                print(f"           {line}")
            if r.status == "failed":
                print(f"           get it by hand from {item.page}")
    n_ok = sum(r.status == "verified" for r in results)
    n_unv = sum(r.status == "unverified" for r in results)
    n_bad = sum(r.status == "failed" for r in results)
    print(f"{n_ok} verified, {n_unv} unverified, {n_bad} failed, of {len(results)} files")
    if n_bad:
        print(copy_tree_hint(results))
        return 1
    return 3 if n_unv else 0
