"""Recognise latency through the drop-in APIs against facerec's own ``/api/identify``.

One real ``facerec serve`` process (yolov5n-0.5-face + MobileFaceNet, one thread, a fresh
gallery of LFW people enrolled through ``/api/people``) answers the same photos through
three routes:

* ``POST /api/identify`` (facerec's own API, Bearer token),
* ``POST /v1/vision/face/recognize`` (DeepStack, form field ``api_key``),
* ``POST /api/v1/recognition/recognize`` (CompreFace, header ``x-api-key``, the query
  string Double Take sends).

Each photo goes through the three routes back to back in a rotating order, over one
keep-alive HTTP session, so the machine's noise falls on all three alike. Printed: the
median and mean milliseconds per photo of each route and their ratios to ``/api/identify``
(the target is within 10%).

Run from the repository root::

    python bench/dropin.py --photos 30 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
DATA = REPO.parent / "shared" / "data"

from serve_proc import facerec_serve  # noqa: E402

TOKEN = "bench-dropin-token-0123456789abcd"
ENROLLED = ["Paul_Wolfowitz", "Jennifer_Lopez", "Zhu_Rongji", "John_Bolton", "Jennifer_Garner", "Hans_Blix",
            "Angelina_Jolie", "Amelie_Mauresmo"]


def photos(n: int) -> list[bytes]:
    """``n`` LFW photos: the enrolled people's other photos, then people never enrolled."""
    lfw = DATA / "lfw"
    paths = [p for name in ENROLLED for p in sorted((lfw / name).iterdir())[1:]]
    paths += [sorted(d.iterdir())[0] for d in sorted(lfw.iterdir()) if d.is_dir() and d.name not in ENROLLED]
    return [p.read_bytes() for p in paths[:n]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=30, help="photos per round")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the photos")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dropin-") as tmp, \
            facerec_serve(Path(tmp), Path(tmp) / "gallery", TOKEN) as port:
        base = f"http://127.0.0.1:{port}"
        s = requests.Session()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for name in ENROLLED:
            first = sorted((DATA / "lfw" / name).iterdir())[0]
            r = s.post(f"{base}/api/people", data={"name": name}, files={"files": (first.name, first.read_bytes())},
                       headers=bearer)
            if r.status_code != 201:
                print(f"enrolling {name}: {r.status_code} {r.text}", file=sys.stderr)

        def own(data: bytes) -> requests.Response:
            return s.post(f"{base}/api/identify", files={"file": ("photo.jpg", data)}, headers=bearer)

        def deepstack(data: bytes) -> requests.Response:
            return s.post(f"{base}/v1/vision/face/recognize", files={"image": data},
                          data={"api_key": TOKEN, "min_confidence": 0.45})

        def compreface(data: bytes) -> requests.Response:
            return s.post(f"{base}/api/v1/recognition/recognize?det_prob_threshold=0.8",
                          files={"file": ("image.jpg", data)}, headers={"x-api-key": TOKEN})

        routes = {"/api/identify": own, "deepstack recognize": deepstack, "compreface recognize": compreface}
        times: dict[str, list[float]] = {k: [] for k in routes}
        images = photos(args.photos)
        for data in images[:3]:  # warm-up: first requests of each route, not counted
            for fn in routes.values():
                fn(data)
        order = list(routes)
        for _ in range(args.rounds):
            for i, data in enumerate(images):
                for k in order[i % 3:] + order[:i % 3]:
                    t0 = time.perf_counter()
                    r = routes[k](data)
                    times[k].append((time.perf_counter() - t0) * 1000)
                    if r.status_code not in (200, 400):  # 400: CompreFace's "no face" (code 28)
                        raise RuntimeError(f"{k}: {r.status_code} {r.text[:200]}")
    ref_med = statistics.median(times["/api/identify"])
    ref_mean = statistics.fmean(times["/api/identify"])
    print(f"{len(images)} photos x {args.rounds} rounds, one facerec serve (1 thread), yolov5n-0.5-face + MobileFaceNet")
    print(f"{'route':24s} {'median ms':>10s} {'mean ms':>9s} {'x median':>9s} {'x mean':>7s}")
    for k, v in times.items():
        med, mean = statistics.median(v), statistics.fmean(v)
        print(f"{k:24s} {med:10.1f} {mean:9.1f} {med / ref_med:9.3f} {mean / ref_mean:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
