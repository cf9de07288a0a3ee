"""``facerec embed`` and ``facerec identify``: local against ``--executor ray``, side by side.

Starts a two-node Ray cluster on this machine (``--cpus`` per node, in a private network
namespace, as the tests do: needs root), aligns ``--photos`` real photos into a gallery,
then times on copies of it:

* ``embed --engine onnx`` (a new vector space: every crop is embedded) locally and on the
  cluster, wall time of the whole command (start-up and model loads included) and the
  embed step alone as the command reports it;
* ``identify --json`` of the same photos, locally and on the cluster.

It prints the per-actor model load times the driver reports and the per-face cost, from
which the README's estimate for a million crops is made. On a 2-core machine a cluster of
two 1-CPU nodes cannot beat a local run (the same cores, plus Ray's own processes): the
point is what each part costs.

    FACEREC_WEIGHTS=../shared/models python bench/ray_jobs.py --photos dlib_johns
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ray_cluster import ADDRESS, RayCluster  # noqa: E402

MODELS = ["--detector", "yolov5n-0.5-face", "--embedder", "mobilefacenet", "--threads", "1", "--no-progress"]
FACEREC = [sys.executable, "-m", "facerec"]


def timed(run, *argv: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = run(*argv)
    if r.returncode:
        sys.exit(f"{' '.join(argv[:4])} failed:\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0, r


def steady(stderr: str) -> str:
    """The driver's "ms per item per actor" once the actors were ready (ray runs only)."""
    m = re.search(r"(\d+\.\d) ms per \w+ per actor", stderr)
    return m.group(1) if m else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="dlib_johns", help="a set under ../shared/data/identities")
    ap.add_argument("--cpus", type=int, default=1, help="CPUs of each of the two nodes")
    a = ap.parse_args()
    local = lambda *argv: subprocess.run([*FACEREC, *argv], capture_output=True, text=True)  # noqa: E731
    root = Path(tempfile.mkdtemp(prefix="fr-bench-ray-"))
    g = root / "g"
    shutil.copytree(REPO.parent / "shared" / "data" / "identities" / a.photos, g / "raw")
    timed(local, "align", *MODELS[:-1], "--data-dir", str(g))
    timed(local, "embed", *MODELS, "--data-dir", str(g))
    cluster = RayCluster(workers=1, cpus=a.cpus).start()
    try:
        ray = lambda *argv: cluster.run(*FACEREC, *argv, "--executor", "ray", "--ray-address", ADDRESS, "-v")  # noqa: E731
        rows = []
        for name, run in (("local", local), ("ray", ray)):
            d = root / name
            shutil.copytree(g, d)
            wall, r = timed(run, "embed", *MODELS, "--engine", "onnx", "--data-dir", str(d))
            m = re.search(r"embedded (\d+) face\(s\) with \S+ in (\d+\.\d) s", r.stdout)
            loads = re.findall(r"models loaded in (\d+\.\d+) s", r.stderr)
            rows.append((f"embed {name}", wall, int(m.group(1)), float(m.group(2)), loads, steady(r.stderr)))
        photos = sorted(str(p) for p in (g / "raw").glob("*/*"))
        for name, run in (("local", local), ("ray", ray)):
            wall, r = timed(run, "identify", *MODELS, "--data-dir", str(g), "--json", *photos)
            loads = re.findall(r"models loaded in (\d+\.\d+) s", r.stderr)
            rows.append((f"identify {name}", wall, len(photos), float("nan"), loads, steady(r.stderr)))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("| job | items | wall s (command) | embed step s | model load per actor s | ms per item per actor, actors ready |")
    print("|---|---|---|---|---|---|")
    for job, wall, n, step, loads, per in rows:
        print(f"| {job} | {n} | {wall:.1f} | {step if step == step else '-'} | {', '.join(loads) or '-'} | {per} |")


if __name__ == "__main__":
    main()
