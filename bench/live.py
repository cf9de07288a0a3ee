"""Live-loop benchmark: the daemon's pipeline against a naive loop, same clip, same machine.

The naive loop detects, aligns and embeds every face of every frame and matches each one
on its own; the daemon tracks faces, detects every ``--detect-every`` frames at
``--input-size``, embeds a face only when its track is new, clearly better or due
(``tracking.reembed_every``), and votes names over time.

Parts:

(a) real weights, yolov5n-0.5-face + MobileFaceNet. The clip's person is enrolled from
    frames of its first seconds, so names are real: FPS of both, the speed ratio, and how
    often the daemon gives the same name as the naive loop (per face-frame).
(b) the mission's models, YOLOv5s-face + MagFace iResNet-50, with random weights of the
    real size (timing only). Random detector heads would make NMS meaningless, so the real
    yolov5n-0.5 detector runs once beforehand and its boxes are replayed: in the timed run
    each detector call executes the random YOLOv5s forward pass for its cost and returns
    the replayed boxes.

``--soak N`` instead loops the clip through the daemon (headless, real weights) for N
frames and samples the resident memory (``/proc/self/statm``).

Frames are decoded into memory before timing, so both loops see identical frames and
decoding is not part of either figure. Run from the repository root::

    python bench/live.py                 # parts a and b, 200 frames each
    python bench/live.py --quick         # 60 frames (smoke test)
    python bench/live.py --soak 50000    # memory over a long run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FACEREC_SHARED", REPO.parent / "shared"))
os.environ.setdefault("FACEREC_WEIGHTS", str(SHARED / "models"))

import torch  # noqa: E402

from facerec.align import align  # noqa: E402
from facerec.capture import open_source  # noqa: E402
from facerec.config import Config, TrackingConfig  # noqa: E402
from facerec.live import LivePipeline, RunOptions, run_live  # noqa: E402
from facerec.runtime import resolve_precision  # noqa: E402
from facerec.types import Detections  # noqa: E402

def fast_detector(detector, precision: str):
    """The same YOLOv5-face detector on a PyTorch session in ``precision`` (channels-last,
    BatchNorm folded), keeping its settings."""
    from facerec.config import DetectionConfig
    from facerec.detect.yolov5_face import SessionRunner, YoloV5FaceDetector, fuse_conv_bn
    from facerec.runtime.torch_engine import TorchSession

    model = detector.model
    session = TorchSession(fuse_conv_bn(model), (None, 3, None, None), ("h0", "h1", "h2"), precision=precision,
                           threads=torch.get_num_threads(), channels_last=True)
    settings = DetectionConfig(input_size=detector.input_size, conf_thres=detector.conf_thres,
                               iou_thres=detector.iou_thres, min_face=detector.min_face, max_faces=detector.max_faces)
    return YoloV5FaceDetector(detector.name, SessionRunner(session, model.anchors_px(), model), settings)


def with_precision(embedder, precision: str):
    """The same PyTorch embedder (same key) on a session in ``precision``."""
    from face_embedding.checkpoint import SessionEmbedder
    from facerec.runtime.torch_engine import TorchSession

    session = TorchSession(embedder.model, (None, 3, 112, 112), ("embedding",), precision=precision,
                           threads=torch.get_num_threads())
    return SessionEmbedder(session, embedder.key, embedder.spec, embedder.dim, embedder.batch_size,
                           model=embedder.model, default_threshold=embedder.default_threshold,
                           quality_is_norm=embedder.quality_is_norm)


DEFAULT_CLIP = SHARED / "data" / "video" / "lp_driving_d3.mp4"
PERSON = "clip_person"


# ----------------------------------------------------------------------------- helpers


def load_frames(clip: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read frames from {clip}")
    return frames


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class LoopResult:
    seconds: float
    frames: int
    faces: int
    embedded: int
    names: list[list[tuple[np.ndarray, str | None]]]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def naive_loop(frames, detector, embedder, index, threshold: float) -> LoopResult:
    """Detect, align, embed and match every face of every frame."""
    names = []
    faces = 0
    t0 = time.perf_counter()
    for img in frames:
        det = detector(img)
        out = []
        if len(det):
            emb = embedder.embed(align(img, det.landmarks))
            matches = index.search(emb, threshold, top_k=1)
            out = [(det.xyxy[i], m.name) for i, m in enumerate(matches)]
        faces += len(det)
        names.append(out)
    return LoopResult(time.perf_counter() - t0, len(frames), faces, faces, names)


def daemon_loop(frames, pipeline: LivePipeline) -> LoopResult:
    """The daemon's per-frame work (detect/track/embed/match/vote) on the same frames."""
    from facerec.capture import Frame

    names = []
    t0 = time.perf_counter()
    for i, img in enumerate(frames):
        r = pipeline.step(Frame(img, i, i / 25.0))
        names.append([(f.xyxy, f.name if f.decided else "\0undecided") for f in r.faces])
    seconds = time.perf_counter() - t0
    if os.environ.get("BENCH_STAGES"):
        print("daemon stages:", json.dumps(pipeline.timer.summary()))
    return LoopResult(seconds, len(frames), pipeline.faces_seen, pipeline.faces_embedded, names)


def agreement(naive: LoopResult, daemon: LoopResult) -> tuple[float, int]:
    """Share of the naive loop's face-frames where the daemon shows the same name."""
    same = total = 0
    for nf, df in zip(naive.names, daemon.names):
        for box, name in nf:
            total += 1
            best = max(df, key=lambda d: iou(box, d[0]), default=None)
            if best is not None and iou(box, best[0]) >= 0.3 and best[1] == name:
                same += 1
    return (same / total if total else 1.0), total


def enroll(frames, analyzer, data_dir: Path) -> tuple[object, int]:
    """Enroll the clip's person from every 10th of the given frames; the gallery index."""
    from facerec.gallery.search import GalleryIndex
    from facerec.gallery.service import GalleryService

    cfg = Config()
    cfg.gallery.data_dir = str(data_dir)
    with GalleryService(cfg, analyzer) as service:
        added = sum(service.enroll_image(PERSON, img).ok for img in frames[::10])
        index = GalleryIndex.from_store(service.store, analyzer.embedder.key)
    return index, added


def pipeline_for(detector, embedder, index, threshold, args) -> LivePipeline:
    p = LivePipeline(detector, embedder, threshold=threshold, tracking=TrackingConfig(),
                     detect_every=args.detect_every, gallery=index)
    p.warmup(frames_shape(args))
    return p


def frames_shape(args) -> tuple[int, int, int]:
    return args._shape


def warm(detector, embedder, shape) -> None:
    detector(np.zeros(shape, np.uint8))
    embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))


# ----------------------------------------------------------------------------- parts


def part_a(frames, args) -> dict:
    from face_embedding import create_embedder

    from facerec.analyze import FaceAnalyzer
    from facerec.detect import create_detector

    det640 = create_detector("yolov5n-0.5-face", input_size=640)
    det_fast = fast_detector(create_detector("yolov5n-0.5-face", input_size=args.input_size), args.precision)
    emb = create_embedder("mobilefacenet")
    analyzer = FaceAnalyzer(det640, emb, threshold=emb.default_threshold)
    with tempfile.TemporaryDirectory() as tmp:
        index, added = enroll(load_frames(args.clip, int(args._fps * 3)), analyzer, Path(tmp) / "gallery")
    thr = emb.default_threshold
    warm(det640, emb, args._shape)
    naive = naive_loop(frames, det640, emb, index, thr)
    emb_fast = with_precision(create_embedder("mobilefacenet"), args.precision)
    det640_fast = fast_detector(det640, args.precision)
    warm(det640_fast, emb_fast, args._shape)
    naive_fast = naive_loop(frames, det640_fast, emb_fast, index, thr)
    daemon = daemon_loop(frames, pipeline_for(det_fast, emb_fast, index, thr, args))
    agree, face_frames = agreement(naive, daemon)
    named = sum(1 for f in naive.names for _, n in f if n == PERSON)
    return {"naive": naive, "naive_fast": naive_fast, "daemon": daemon, "agreement": agree, "face_frames": face_frames,
            "enrolled": added, "naive_named": named}


class ReplayDetector:
    """Runs a (random-weight) detector network for its cost, returns replayed detections."""

    def __init__(self, net, replay: dict[int, Detections]) -> None:
        self.net = net
        self.replay = replay
        self.name = getattr(net, "name", "replay")

    def __call__(self, image: np.ndarray) -> Detections:
        blob, _ = self.net.preprocess(image)
        self.net.raw(blob)
        return self.replay.get(id(image), Detections.empty())


def part_b(frames, args) -> dict:
    from face_embedding import create_embedder
    from face_embedding.iresnet import iresnet

    from facerec.detect import create_detector
    from facerec.detect.yolov5_face import MODEL_TABLES, YoloV5Face
    from facerec.gallery.search import GalleryIndex

    real = create_detector("yolov5n-0.5-face", input_size=640)
    replay = {id(img): real(img) for img in frames}
    torch.manual_seed(0)
    yolo = YoloV5Face(MODEL_TABLES["yolov5s-face"]())
    det640 = ReplayDetector(create_detector("yolov5s-face", input_size=640, model=yolo), replay)
    det_fast = ReplayDetector(fast_detector(create_detector("yolov5s-face", input_size=args.input_size,
                                                            model=copy.deepcopy(yolo)), args.precision), replay)
    net = iresnet(50)
    emb = create_embedder("magface-iresnet50", model=net)
    emb_fast = with_precision(create_embedder("magface-iresnet50", model=copy.deepcopy(net)), args.precision)
    # a gallery of the same (random) vector space: names are meaningless, the cost is real
    crops = [align(img, replay[id(img)].landmarks[:1]).images for img in frames[:50:10] if len(replay[id(img)])]
    vecs = emb.embed(np.concatenate(crops))
    index = GalleryIndex([f"p{i}" for i in range(len(vecs))], vecs.vectors, key=emb.key)
    thr = 0.3
    warm(det640, emb, args._shape)
    naive = naive_loop(frames, det640, emb, index, thr)
    det640_fast = ReplayDetector(fast_detector(det640.net, args.precision), replay)
    warm(det640_fast, emb_fast, args._shape)
    naive_fast = naive_loop(frames, det640_fast, emb_fast, index, thr)
    daemon = daemon_loop(frames, pipeline_for(det_fast, emb_fast, index, thr, args))
    return {"naive": naive, "naive_fast": naive_fast, "daemon": daemon}


def print_part(title: str, res: dict, args, naive_cfg: str, daemon_cfg: str) -> None:
    n, d = res["naive"], res["daemon"]
    print(f"\n{title}")
    print(f"{'loop':<8} {'settings':<52} {'FPS':>7} {'ms/frame':>9} {'faces/frame':>12} {'embedded':>9}")
    rows = [("naive", n, naive_cfg)]
    if "naive_fast" in res:
        rows.append(("naive", res["naive_fast"], naive_cfg.replace("fp32", args.precision + ", channels-last")))
    rows.append(("daemon", d, daemon_cfg))
    for label, r, cfg in rows:
        print(f"{label:<8} {cfg:<52} {r.fps:>7.1f} {1000 / r.fps if r.fps else 0:>9.1f} "
              f"{r.faces / max(1, r.frames):>12.2f} {r.embedded:>9d}")
    print(f"speed ratio daemon/naive: {d.fps / n.fps:.1f}x"
          + (f" (against the naive loop with the same {args.precision}/channels-last speed-ups: "
             f"{d.fps / res['naive_fast'].fps:.1f}x)" if "naive_fast" in res else ""))
    if "agreement" in res:
        print(f"name agreement with the naive loop: {100 * res['agreement']:.1f}% of {res['face_frames']} face-frames "
              f"(enrolled {res['enrolled']} samples; naive loop named the person on {res['naive_named']})")


def soak(args) -> None:
    from face_embedding import create_embedder

    from facerec.detect import create_detector
    from facerec.live import GalleryWatcher

    cfg = Config()
    det = fast_detector(create_detector("yolov5n-0.5-face", input_size=args.input_size), args.precision)
    emb = with_precision(create_embedder("mobilefacenet"), args.precision)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page / 2**20

    with tempfile.TemporaryDirectory() as tmp:
        from facerec.analyze import FaceAnalyzer

        _, added = enroll(load_frames(args.clip, int(args._fps * 3)), FaceAnalyzer(det, emb, threshold=emb.default_threshold),
                          Path(tmp) / "gallery")
        watcher = GalleryWatcher(Path(tmp) / "gallery", emb.key, cfg.gallery)
        pipe = LivePipeline(det, emb, threshold=emb.default_threshold, tracking=cfg.tracking,
                            detect_every=args.detect_every, gallery=watcher)
        pipe.warmup(args._shape)
        cap = open_source(args.clip, loop=True)
        samples: list[tuple[int, float, float]] = []
        done = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            every = max(1.0, args.sample_s)
            while not done.wait(every):
                samples.append((pipe.frames, time.monotonic() - t0, rss_mb()))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        stats = run_live(cap, pipe, options=RunOptions(max_frames=args.soak, stats_every_s=0))
        done.set()
        cap.close()
        watcher.close()
        samples.append((pipe.frames, time.monotonic() - t0, rss_mb()))
    warm_at = max(args.soak // 10, 1000)
    base = next((s for s in samples if s[0] >= warm_at), samples[0])
    print(f"\nsoak: {stats['frames']} frames of {args.clip.name} looped, headless, {stats['fps']:.1f} FPS, "
          f"detect_every={args.detect_every}, input {args.input_size}, {args.precision}")
    print(f"{'frames':>8} {'seconds':>8} {'RSS MB':>8}")
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"{s[0]:>8d} {s[1]:>8.0f} {s[2]:>8.1f}")
    growth = (samples[-1][2] - base[2]) / base[2] * 100
    print(f"RSS growth after warm-up (from {base[0]} frames, {base[2]:.1f} MB, to the end, {samples[-1][2]:.1f} MB): "
          f"{growth:+.2f}%  (target < 5%)")
    print("stats:", json.dumps({k: stats[k] for k in ("frames", "fps", "faces_seen", "faces_embedded", "tracks")}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video with 1-3 faces (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=200, help="frames per loop")
    ap.add_argument("--quick", action="store_true", help="60 frames: a smoke test of the benchmark")
    ap.add_argument("--part", choices=("a", "b", "both"), default="both")
    ap.add_argument("--detect-every", type=int, default=3, help="the daemon's live.detect_every")
    ap.add_argument("--input-size", type=int, default=320, help="the daemon's detection.input_size")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="the daemon's live.precision")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: with 2 threads on 2 shared cores OpenMP waits on busy cores "
                         "and both loops slow down several-fold)")
    ap.add_argument("--soak", type=int, metavar="N", help="loop the clip through the daemon for N frames, sample RSS")
    ap.add_argument("--sample-s", type=float, default=5.0, help="soak: seconds between RSS samples")
    args = ap.parse_args(argv)
    args.precision = resolve_precision(args.precision)
    if args.threads:
        torch.set_num_threads(args.threads)
    cap = cv2.VideoCapture(str(args.clip))
    args._fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    args._shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), 3)
    cap.release()
    command = "python bench/live.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"command: {command.strip()}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    if args.soak:
        soak(args)
        return 0
    n = 60 if args.quick else args.frames
    frames = load_frames(args.clip, n)
    print(f"clip: {args.clip.name}, {len(frames)} frames of {args._shape[1]}x{args._shape[0]} (decoded before timing)")
    daemon_cfg = (f"track, detect 1/{args.detect_every} @{args.input_size}, embed new/better/every "
                  f"{TrackingConfig().reembed_every}, {args.precision}")
    if args.part in ("a", "both"):
        res = part_a(frames, args)
        print_part("(a) yolov5n-0.5-face + MobileFaceNet, real weights", res, args,
                   "detect+embed every face, @640, fp32", daemon_cfg)
    if args.part in ("b", "both"):
        res = part_b(frames, args)
        print_part("(b) YOLOv5s-face + MagFace iResNet-50, random weights, replayed real boxes (timing only)",
                   res, args, "detect+embed every face, @640, fp32", daemon_cfg)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes on the machine slow both loops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
