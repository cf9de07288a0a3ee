"""``facerec weights``: the known models, whether each file is present and verified."""

from __future__ import annotations

import argparse

from face_embedding import embedder_registry
from facerec.cli.common import print_json
from facerec.config import Config
from facerec.detect import detector_registry
from facerec.errors import WeightsError
from facerec.weights import find_weights, resolve_weights, search_dirs


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("weights", parents=[common], help="list known models and check their weight files",
                       description="List every registered model with its weights file, sha256 status and source.")
    p.add_argument("--json", action="store_true", help="one JSON line per model")
    p.set_defaults(func=cmd_weights)


def _status(spec, cfg: Config, backend: str) -> tuple[str, str]:
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
        print("\nMissing files: download from the model's source (see README 'Models') into ./weights/ "
              "or a folder named by FACEREC_WEIGHTS.")
    return 0
