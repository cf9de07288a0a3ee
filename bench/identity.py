"""Names you can trust: the old behaviour (a track keeps its name, ``identity_check:
false``) against the identity check inside tracks (``true``), on the same clips.

Clips (built from ../shared/data/video by ``tests/identity_clip.py``):

* ``cuts``: six 1.5 s talking-head segments joined with hard cuts, each filling the same
  480x480 frame: Anna, a stranger, Wei, another stranger, Anna, Wei;
* ``crossing``: Anna and Wei side by side, sliding past each other (Anna in front).

Anna and Wei are enrolled from frames of their own clips that are not in the clips. Each
clip runs through the daemon's pipeline (yolov5n-0.5-face at 320, MobileFaceNet, real
weights) with every frame, and with only every 3rd frame (as a consumer that drops two
of three frames sees a live source). Printed per run: face-frames, wrong-name
face-frames (a face shown with another person's name), face-frames of an enrolled person
without a name, and the name latency (seconds from a person's first frame to the first
frame with their right name; worst and mean over appearances).

``--cuts`` instead measures what ``tracking.cut_threshold`` separates: the thumbnail
change between consecutive frames (and 5 frames apart) of every clip against hard cuts
between every pair of clips.

Run from the repository root::

    python bench/identity.py
    python bench/identity.py --cuts
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
DATA = REPO.parent / "shared" / "data"

from identity_clip import (enroll_images, read_frames, score, write_crossing_clip,  # noqa: E402
                           write_cut_clip)


def _gallery(detector, embedder, video: Path):
    from facerec.align import align
    from facerec.gallery.search import GalleryIndex

    names, vecs = [], []
    for name, images in enroll_images(video).items():
        for img in images:
            det = detector(img)
            best = int(np.argmax(det.score))
            vecs.append(embedder.embed(align(img, det.landmarks[[best]])).vectors[0])
            names.append(name)
    return GalleryIndex(names, np.stack(vecs), index="exact")


def _run(frames, truth, detector, embedder, gallery, check: bool, step: int) -> dict:
    from facerec.capture import Frame
    from facerec.config import TrackingConfig
    from facerec.live import LivePipeline, PipelineSettings
    from facerec.tracklog import frame_record

    pipe = LivePipeline(detector, embedder,
                        PipelineSettings(threshold=embedder.default_threshold,
                                         tracking=TrackingConfig(identity_check=check)), gallery=gallery)
    rows = []
    t0 = time.perf_counter()
    for i in range(0, len(frames), step):
        rows.append(frame_record(pipe.step(Frame(frames[i], i, i / 30.0))))
    ms = (time.perf_counter() - t0) * 1000 / len(rows)
    s = score(rows, truth)
    finite = [x for x in s.latency_s if math.isfinite(x)]
    return {"faces": s.face_frames, "wrong": s.wrong, "unnamed": s.unsure, "worst": s.worst_latency_s,
            "mean": sum(finite) / len(finite) if finite else math.inf, "never": len(s.latency_s) - len(finite),
            "splits": pipe.splits, "ms": ms}


def bench_names() -> None:
    import torch

    from face_embedding import create_embedder
    from facerec.detect import create_detector

    torch.set_num_threads(1)
    video = DATA / "video"
    detector = create_detector("yolov5n-0.5-face", input_size=320)
    embedder = create_embedder("mobilefacenet")
    gallery = _gallery(detector, embedder, video)
    print("clip      frames  check  face-frames  wrong  unnamed  latency worst/mean s  never  splits  ms/frame")
    with tempfile.TemporaryDirectory() as tmp:
        for clip, write in (("cuts", write_cut_clip), ("crossing", write_crossing_clip)):
            path = Path(tmp) / f"{clip}.mp4"
            truth = write(path, video)
            frames = read_frames(path, 0, len(truth.people), None)
            for step in (1, 3):
                res = {check: _run(frames, truth, detector, embedder, gallery, check, step) for check in (False, True)}
                for check in (False, True):
                    r = res[check]
                    print(f"{clip:9s} {'all' if step == 1 else '1 in 3':6s}  {'on ' if check else 'off'}  "
                          f"{r['faces']:11d}  {r['wrong']:5d}  {r['unnamed']:7d}  {r['worst']:10.2f} / {r['mean']:4.2f}"
                          f"  {r['never']:5d}  {r['splits']:6d}  {r['ms']:8.1f}")
                off, on = res[False], res[True]
                print(f"{'':9s} {'':6s}  wrong names off/on: {off['wrong']}/{on['wrong']}; "
                      f"time per frame on/off: {on['ms'] / off['ms']:.2f}x")


def bench_cuts() -> None:
    import cv2

    from facerec.config import TrackingConfig
    from facerec.track import SceneCutDetector

    clips = sorted((DATA / "video").glob("lp_*.mp4"))
    thumbs: dict[Path, np.ndarray] = {}
    near1: list[float] = []
    near5: list[float] = []
    for c in clips:
        cap = cv2.VideoCapture(str(c))
        th = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            d = SceneCutDetector(1.0)
            d.score(img)
            th.append(d._prev)
        cap.release()
        a = thumbs[c] = np.array(th)
        near1 += (np.abs(a[1:] - a[:-1]).mean((1, 2)) / 255).tolist()
        near5 += (np.abs(a[5:] - a[:-5]).mean((1, 2)) / 255).tolist()
    cuts = np.array([np.abs(thumbs[a][-1] - thumbs[b][i]).mean() / 255
                     for a, b in itertools.permutations(clips, 2) for i in (0, len(thumbs[b]) // 2)])
    n1, n5 = np.array(near1), np.array(near5)
    print(f"{len(clips)} clips: consecutive frames max {n1.max():.3f}, 5 frames apart max {n5.max():.3f}; "
          f"{len(cuts)} hard cuts: min {cuts.min():.3f}, median {np.median(cuts):.3f}")
    print("threshold  cuts missed  false alarms (consecutive)  (5 apart)")
    current = TrackingConfig().cut_threshold
    for t in sorted({0.06, 0.07, 0.08, 0.09, 0.10, 0.12, current}):
        mark = "  <- tracking.cut_threshold" if t == current else ""
        print(f"{t:9.2f}  {100 * (cuts <= t).mean():10.1f}%  {100 * (n1 > t).mean():25.3f}%  "
              f"{100 * (n5 > t).mean():8.3f}%{mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", action="store_true", help="measure the scene-cut threshold instead")
    args = ap.parse_args()
    bench_cuts() if args.cuts else bench_names()


if __name__ == "__main__":
    main()
