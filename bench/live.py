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
    the replayed boxes. The daemon runs both models on the engine and precision
    ``runtime: auto`` picks (one thread per call, latency hint), idle and then with
    ``--burners`` CPU-burning processes (the issue's targets: 30 and 15 FPS).

``--cameras 1,2,4`` instead compares, for each N, one daemon running N cameras (N clips,
shared models, as many model calls at once as cores / threads per call) with N separate one-camera processes started
together: per-camera and aggregate FPS and resident memory (peak RSS, summed over the
processes), plus whether batching model calls across cameras would be faster.

``--soak N`` instead loops the clip through the daemon (headless, real weights) for N
frames and samples the resident memory (``/proc/self/statm``).

``--contention N`` instead runs the daemon exactly as shipped (``config.yaml``: its
models, detect interval, input size, threads and the pacer, through ``run_live``) and the
naive loop of ``bench/peer_ort_naive.py`` (plain ONNX Runtime, detect and embed every face
of every frame, the same threads) on the clip, first on the idle machine, then with N
CPU-burning processes that the bench starts and stops itself (each also ends on its own
after ``--burn-limit-s``). Names are checked against the reference loop (detect and embed
every face at 640, fp32, with facerec's models). Printed: FPS of each, the ratios the
issue sets targets for, and what the pacer chose.

Frames are decoded into memory before timing, so both loops see identical frames and
decoding is not part of either figure. Run from the repository root::

    python bench/live.py                 # parts a and b, 200 frames each
    python bench/live.py --quick         # 60 frames (smoke test)
    python bench/live.py --soak 50000    # memory over a long run
    python bench/live.py --cameras 1,2,4 # one daemon for N cameras vs N processes
    python bench/live.py --contention 2  # shipped defaults vs the naive loop, idle and on a busy CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
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

from burners import Burners  # noqa: E402  (bench/burners.py)

from facerec.align import align  # noqa: E402
from facerec.capture import open_source  # noqa: E402
from facerec.config import Config, TrackingConfig, load_config  # noqa: E402
from facerec.live import LivePipeline, PipelineSettings, RunOptions, run_live  # noqa: E402
from facerec.sinks import FrameSinkBase  # noqa: E402
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
    p = LivePipeline(detector, embedder,
                     PipelineSettings(threshold=threshold, tracking=TrackingConfig(), detect_every=args.detect_every),
                     gallery=index)
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

    from facerec.config import RuntimeConfig
    from facerec.detect import create_detector
    from facerec.detect.yolov5_face import MODEL_TABLES, YoloV5Face
    from facerec.gallery.search import GalleryIndex

    real = create_detector("yolov5n-0.5-face", input_size=640)
    replay = {id(img): real(img) for img in frames}
    torch.manual_seed(0)
    yolo = YoloV5Face(MODEL_TABLES["yolov5s-face"]())
    det640 = ReplayDetector(create_detector("yolov5s-face", input_size=640, model=yolo), replay)
    net = iresnet(50)
    emb = create_embedder("magface-iresnet50", model=net)
    # the daemon: the engine and precision ``runtime: auto`` picks, as the live loop runs
    # them (one thread per call, latency hint; facerec.models.live_threads)
    live_rt = RuntimeConfig(engine="auto", precision=args.precision, threads=args.threads or 1, hint="latency")
    det_fast = ReplayDetector(create_detector("yolov5s-face", input_size=args.input_size, model=copy.deepcopy(yolo),
                                              runtime=live_rt), replay)
    emb_fast = create_embedder("magface-iresnet50", model=copy.deepcopy(net), runtime=live_rt)
    engines = (f"{det_fast.net.runner.session.info.engine} {det_fast.net.runner.session.info.precision} / "
               f"{emb_fast.engine} {emb_fast.precision}")
    # a gallery of the same (random) vector space: names are meaningless, the cost is real
    crops = [align(img, replay[id(img)].landmarks[:1]).images for img in frames[:50:10] if len(replay[id(img)])]
    vecs = emb.embed(np.concatenate(crops))
    index = GalleryIndex([f"p{i}" for i in range(len(vecs))], vecs.vectors, key=emb.key)
    thr = 0.3
    warm(det640, emb, args._shape)
    naive = naive_loop(frames, det640, emb, index, thr)
    det640_fast = ReplayDetector(fast_detector(det640.net, args.precision), replay)
    emb_torch = with_precision(emb, args.precision)
    warm(det640_fast, emb_torch, args._shape)
    naive_fast = naive_loop(frames, det640_fast, emb_torch, index, thr)
    daemon = daemon_loop(frames, pipeline_for(det_fast, emb_fast, index, thr, args))
    with Burners(args.burners, args.burn_limit_s) as burn:
        busy = daemon_loop(frames, pipeline_for(det_fast, emb_fast, index, thr, args))
        alive = burn.alive()
    return {"naive": naive, "naive_fast": naive_fast, "daemon": daemon, "busy": busy, "engines": engines,
            "alive": alive}


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
    if "busy" in res:
        b = res["busy"]
        print(f"daemon engines (runtime auto): {res['engines']}")
        print(f"daemon with {args.burners} CPU burners: {b.fps:.1f} FPS ({b.fps / d.fps:.2f} of idle; "
              f"{res['alive']} burners still running at its end)")
        print(f"mission pair targets: idle {d.fps:.1f} FPS (>= 30: {'met' if d.fps >= 30 else 'NOT met'}), "
              f"busy {b.fps:.1f} FPS (>= 15: {'met' if b.fps >= 15 else 'NOT met'})")
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
        pipe = LivePipeline(det, emb,
                            PipelineSettings(threshold=emb.default_threshold, tracking=cfg.tracking,
                                             detect_every=args.detect_every), gallery=watcher)
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


#: Clips the ``--cameras`` bench gives its cameras, in order (one person each).
CAMERA_CLIPS = ("lp_driving_d0.mp4", "lp_driving_d3.mp4", "lp_driving_d6.mp4", "lp_driving_d9.mp4",
                "lp_driving_d10.mp4", "lp_driving_d11.mp4", "lp_driving_d12.mp4", "lp_driving_d13.mp4")


def _camera_child(args) -> None:
    """One process of the ``--cameras`` bench: a daemon for the cameras in
    ``args.camera_child`` (clip indices). Builds and warms up, prints ``ready``, waits for a
    line on stdin, runs every camera for ``--frames`` frames, prints its stats as JSON."""
    import resource

    from facerec.daemon import CameraSpec, Daemon

    cfg = Config()
    cfg.models.detector, cfg.models.embedder = "yolov5n-0.5-face", "mobilefacenet"
    cfg.detection.input_size = args.input_size
    cfg.live.detect_every, cfg.runtime.precision, cfg.live.stats_every_s = args.detect_every, args.precision, 0
    cfg.runtime.threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        cfg.gallery.data_dir = tmp
        specs = [CameraSpec(f"cam{i}", str(SHARED / "data" / "video" / CAMERA_CLIPS[i]), False, False,
                            args.detect_every, args.input_size, cfg.detection.min_face)
                 for i in (int(x) for x in args.camera_child.split(","))]
        daemon = Daemon(cfg, specs, max_frames=args.frames)
        daemon.prepare()  # sources open, models built and warmed up: not part of the timing
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        daemon.start()
        daemon.wait()
        wall = time.perf_counter() - t0
        stats = daemon.stats()
        daemon.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "rss_mb": peak_mb, "models": stats["models"],
                      "cameras": {n: {"frames": c["frames"], "fps": c["fps"]} for n, c in stats["cameras"].items()}}),
          flush=True)


def _spawn(cameras: list[int], args) -> list[dict]:
    """Start one child per entry of ``cameras`` (a comma list of clip indices each), let
    them all build, then start them at the same moment; their results."""
    import subprocess

    base = [sys.executable, str(Path(__file__).resolve()), "--frames", str(args.frames), "--input-size",
            str(args.input_size), "--detect-every", str(args.detect_every), "--precision", args.precision,
            "--threads", str(args.threads)]
    procs = [subprocess.Popen(base + ["--camera-child", c], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=REPO) for c in cameras]
    for p in procs:
        line = p.stdout.readline()
        assert line.strip() == "ready", f"a bench child failed to start: {line!r}"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        lines = [ln for ln in p.stdout.read().splitlines() if ln.startswith("{")]
        p.wait()
        assert lines, "a bench child printed no result"
        out.append(json.loads(lines[-1]))
    return out


def _batching(args) -> None:
    """Is one model call for several cameras faster than one call each? Detector: N
    frames of N clips in one ``detect_batch`` vs N calls; embedder: N face crops in one
    call vs N calls (what a batching model worker would gain)."""
    from face_embedding import create_embedder

    from facerec.detect import create_detector

    det = fast_detector(create_detector("yolov5n-0.5-face", input_size=args.input_size), args.precision)
    emb = with_precision(create_embedder("mobilefacenet"), args.precision)
    print(f"\nbatching across cameras (median of 7, ms; {args.precision}, input {args.input_size}):")
    print(f"{'N':>3} {'detect: N calls':>16} {'1 batch':>9} {'ratio':>6} {'embed: N calls':>15} {'1 batch':>9} {'ratio':>6}")
    frame = cv2.resize(load_frames(SHARED / "data" / "video" / CAMERA_CLIPS[0], 1)[0], (640, 480))
    crop = np.ascontiguousarray(cv2.resize(frame[100:400, 200:500], (112, 112)))

    def median_ms(fn) -> float:
        fn()
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1000)
        return float(np.median(ts))

    for n in args._cameras:
        frames = [frame] * n
        crops = np.stack([crop] * n)
        d_each = median_ms(lambda: [det(f) for f in frames])
        d_batch = median_ms(lambda: det.detect_batch(frames))
        e_each = median_ms(lambda: [emb.embed(crops[i:i + 1]) for i in range(n)])
        e_batch = median_ms(lambda: emb.embed(crops))
        print(f"{n:>3} {d_each:>16.1f} {d_batch:>9.1f} {d_each / d_batch:>6.2f} {e_each:>15.1f} {e_batch:>9.1f} "
              f"{e_each / e_batch:>6.2f}")


def cameras_bench(args) -> None:
    """``--cameras 1,2,4``: one daemon with N cameras against N one-camera processes."""
    print(f"\ncameras: {args.frames} frames per camera, clips {', '.join(CAMERA_CLIPS[:max(args._cameras)])}, "
          f"yolov5n-0.5-face + MobileFaceNet, detect 1/{args.detect_every} @{args.input_size}, {args.precision}, "
          f"{args.threads} torch thread(s) per process, empty gallery, files read as fast as processed")
    print(f"{'N':>3} {'mode':<12} {'agg FPS':>8} {'per-camera FPS':<32} {'RSS MB':>8} {'slot wait ms':>12}")
    for n in args._cameras:
        one = _spawn([",".join(str(i) for i in range(n))], args)[0]
        sep = _spawn([str(i) for i in range(n)], args)
        rows = []
        for mode, results in (("one daemon", [one]), ("N processes", sep)):
            cams = {k: v for r in results for k, v in r["cameras"].items()}
            frames = sum(c["frames"] for c in cams.values())
            agg = frames / max(r["wall_s"] for r in results)
            rss = sum(r["rss_mb"] for r in results)
            wait = sum(r["models"]["slot_wait_ms"] for r in results)
            per = " ".join(f"{c['fps']:.1f}" for c in cams.values())
            rows.append((agg, rss))
            print(f"{n:>3} {mode:<12} {agg:>8.1f} {per:<32} {rss:>8.0f} {wait:>12.0f}")
        print(f"{'':>3} {'ratio':<12} {rows[0][0] / rows[1][0]:>8.2f}x {'(one daemon / N processes)':<32} "
              f"{rows[0][1] / rows[1][1]:>7.2f}x")
    _batching(args)
# ----------------------------------------------------------------------------- contention

class MemoryCapture:
    """Frames decoded beforehand, served to :func:`run_live` as a file source would."""

    def __init__(self, images: list[np.ndarray], fps: float, spec: str) -> None:
        from facerec.capture import CaptureStats

        self.images, self.fps, self.spec = images, fps, spec
        self.size = (images[0].shape[1], images[0].shape[0])
        self.stats = CaptureStats()
        self.error = None
        self._next = 0

    @property
    def ended(self) -> bool:
        return self._next >= len(self.images)

    def read(self, timeout: float | None = None):
        from facerec.capture import Frame

        if self.ended:
            return None
        i, self._next = self._next, self._next + 1
        return Frame(self.images[i], i, i / self.fps)

    def close(self) -> None:
        pass


class NameLog(FrameSinkBase):
    """A frame sink in place of the events: records each frame's faces and names."""

    def __init__(self) -> None:
        self.frames: list[list[tuple[np.ndarray, str | None]]] = []

    def on_frame(self, result, image) -> bool:
        self.frames.append([(f.xyxy, f.name if f.decided else "\0undecided") for f in result.faces])
        return True


def shipped_daemon(frames, cfg: Config, models, index, fps: float, spec: str) -> tuple[LoopResult, dict]:
    """The daemon as ``rec_cam.py`` runs it with the shipped config: its own camera builder
    (the shared models, the pacer), run_live (no outputs, names recorded per frame)."""
    from facerec.camera import build_camera
    from facerec.daemon import CameraSpec

    pipe = build_camera(CameraSpec.single(spec, cfg), models, cfg, gallery=index)
    pipe.warmup(frames[0].shape)
    log = NameLog()
    t0 = time.perf_counter()
    stats = run_live(MemoryCapture(frames, fps, spec), pipe, sinks=[log], options=RunOptions(stats_every_s=0),
                     camera=spec)
    seconds = time.perf_counter() - t0
    names = log.frames[:len(frames)]
    return LoopResult(seconds, stats["frames"], stats["faces_seen"], stats["faces_embedded"], names), stats


def ort_naive(frames, threads: int) -> LoopResult:
    """bench/peer_ort_naive.py's loop: plain ONNX Runtime, every face of every frame."""
    sys.path.insert(0, str(REPO / "bench"))
    from peer_ort_naive import Pipeline

    pipe = Pipeline(SHARED / "models", threads)

    def frame(img: np.ndarray) -> int:
        _, lms = pipe.detect(img)
        for lm in lms:
            pipe.embed(img, lm)
        return len(lms)

    frame(frames[0])  # warm-up, not timed
    faces = 0
    t0 = time.perf_counter()
    for img in frames:
        faces += frame(img)
    return LoopResult(time.perf_counter() - t0, len(frames), faces, faces, [])


def contention(frames, args) -> int:
    from facerec.analyze import FaceAnalyzer
    from facerec.daemon import build_models
    from facerec.models import build_detector, build_embedder, live_threads, threshold_for

    cfg = load_config(REPO / "config.yaml")
    if args.threads:
        cfg.runtime.threads = args.threads
    threads = live_threads(cfg)
    torch.set_num_threads(threads)
    # the daemon's models as facerec/daemon.py builds them (the live loop's threads, the
    # latency hint, OpenCV's threads); the reference and the enrollment use the batch
    # tools' models at detection.input_size (640)
    models = build_models(cfg)
    detector, embedder = models.detector, models.embedder
    ref_det, ref_emb = build_detector(cfg), build_embedder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        index, added = enroll(load_frames(args.clip, int(args._fps * 3)),
                              FaceAnalyzer(ref_det, ref_emb, threshold=ref_emb.default_threshold), Path(tmp) / "g")
    thr = threshold_for(cfg, embedder)
    live = cfg.live
    print(f"shipped config: {getattr(detector, 'name', detector)} + {embedder.key}, detect 1/{live.detect_every} "
          f"@{live.live_input_size(cfg.detection)}, adapt={live.adapt} (interval <= {live.max_detect_every} frames "
          f"and {live.max_detect_interval_s} s, input >= {live.min_input_size}), precision {cfg.runtime.precision}, engine {cfg.runtime.engine}, "
          f"{threads} thread(s); naive: ONNX Runtime, {threads} thread(s); {added} enrollment samples")
    warm(ref_det, ref_emb, args._shape)
    ref = naive_loop(frames, ref_det, ref_emb, index, thr)
    res: dict[str, dict] = {}
    for cond in ("idle", f"{args.contention} burners"):
        burn = Burners(args.contention if cond != "idle" else 0, args.burn_limit_s)
        with burn:
            daemon, stats = shipped_daemon(frames, cfg, models, index, args._fps, args.clip.name)
            naive = ort_naive(frames, threads)
            alive = burn.alive()
        agree, face_frames = agreement(ref, daemon)
        res[cond] = {"daemon": daemon, "naive": naive, "stats": stats, "agree": agree, "face_frames": face_frames,
                     "alive": alive}
    print(f"\n{'condition':<12} {'loop':<8} {'FPS':>7} {'ms/frame':>9} {'faces/frame':>12} {'embedded':>9}  "
          f"pacer / names")
    print(f"{'idle':<12} {'ref':<8} {ref.fps:>7.1f} {1000 / ref.fps:>9.1f} {ref.faces / ref.frames:>12.2f} "
          f"{ref.embedded:>9d}  detect+embed every face @640 fp32 (names reference)")
    for cond, r in res.items():
        d, n, pace = r["daemon"], r["naive"], r["stats"]["pace"]
        chosen = ", ".join(f"{k}: {v}" for k, v in pace.get("frames_at", {}).items())
        print(f"{cond:<12} {'daemon':<8} {d.fps:>7.1f} {1000 / d.fps:>9.1f} {d.faces / d.frames:>12.2f} "
              f"{d.embedded:>9d}  target {pace.get('target_fps')} fps, {pace.get('changes')} changes, frames at "
              f"{chosen}; same names as ref on {100 * r['agree']:.1f}% of {r['face_frames']} face-frames")
        print(f"{cond:<12} {'naive':<8} {n.fps:>7.1f} {1000 / n.fps:>9.1f} {n.faces / n.frames:>12.2f} "
              f"{n.embedded:>9d}  ({r['alive']} burners still running at its end)")
        print(f"{'':<12} daemon ms per frame by stage: "
              + " ".join(f"{k}={v['mean_ms']:.1f}" for k, v in r["stats"]["stages"].items()))
    idle, busy = res["idle"], res[f"{args.contention} burners"]
    checks = [
        ("daemon under contention / daemon idle", busy["daemon"].fps / idle["daemon"].fps, 0.5),
        ("daemon / naive under contention", busy["daemon"].fps / busy["naive"].fps, 4.0),
        ("daemon / naive idle", idle["daemon"].fps / idle["naive"].fps, 8.0),
        ("same names as the reference, idle (share of face-frames)", idle["agree"], 0.98),
    ]
    print()
    for label, value, target in checks:
        print(f"{label:<58} {value:>6.2f}  target >= {target:<5} {'met' if value >= target else 'NOT met'}")
    print("pace history under contention:", json.dumps(busy["stats"]["pace"].get("history", [])))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video with 1-3 faces (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=200, help="frames per loop")
    ap.add_argument("--quick", action="store_true", help="60 frames: a smoke test of the benchmark")
    ap.add_argument("--part", choices=("a", "b", "both"), default="both")
    ap.add_argument("--detect-every", type=int, default=3, help="the daemon's live.detect_every")
    ap.add_argument("--input-size", type=int, default=320, help="the daemon's detection.input_size")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="the daemon's live.precision")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default 1, or the shipped runtime.threads rule for the live loop with --contention: with 2 threads on "
                         "2 shared cores OpenMP waits on busy cores and both loops slow down several-fold)")
    ap.add_argument("--contention", type=int, metavar="N",
                    help="the shipped defaults and the naive ONNX Runtime loop, idle and with N CPU burners")
    ap.add_argument("--burners", type=int, default=2, metavar="N",
                    help="part b: CPU burners for the daemon's busy run (default: %(default)s)")
    ap.add_argument("--burn-limit-s", type=float, default=300.0,
                    help="--contention: a burner ends on its own after this many seconds")
    ap.add_argument("--soak", type=int, metavar="N", help="loop the clip through the daemon for N frames, sample RSS")
    ap.add_argument("--sample-s", type=float, default=5.0, help="soak: seconds between RSS samples")
    ap.add_argument("--cameras", metavar="N,N,...",
                    help="one daemon with N cameras vs N separate processes, for each N (e.g. 1,2,4)")
    ap.add_argument("--camera-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.precision = resolve_precision(args.precision)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.camera_child:
        _camera_child(args)
        return 0
    if args.contention is None:
        torch.set_num_threads(args.threads or 1)
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
    if args.cameras:
        try:
            args._cameras = [int(x) for x in args.cameras.split(",")]
        except ValueError:
            ap.error(f"--cameras wants numbers separated by commas, like 1,2,4; got {args.cameras!r}")
        if not all(1 <= n <= len(CAMERA_CLIPS) for n in args._cameras):
            ap.error(f"--cameras: each N must be 1 to {len(CAMERA_CLIPS)} (one clip per camera)")
        if args.quick:
            args.frames = 30
        cameras_bench(args)
        return 0
    n = 60 if args.quick else args.frames
    frames = load_frames(args.clip, n)
    print(f"clip: {args.clip.name}, {len(frames)} frames of {args._shape[1]}x{args._shape[0]} (decoded before timing)")
    if args.contention is not None:
        if args.contention < 1:
            raise SystemExit("--contention N needs N >= 1 burners")
        if len(frames) < n:  # a short clip (the GIFs with several faces) is played again
            frames = (frames * -(-n // len(frames)))[:n]
            print(f"clip repeated to {n} frames")
        return contention(frames, args)
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
