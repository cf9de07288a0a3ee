"""Every engine x precision for the models that matter, side by side, with parity.

Usage::

    FACEREC_WEIGHTS=../shared/models python bench/runtime.py [--threads N] [--budget S] [--det-size PX]

Rows: yolov5n-0.5-face (real weights), yolov5s-face (random weights of the real size),
MobileFaceNet (real) and MagFace iResNet-50 (random) on PyTorch, ONNX Runtime and OpenVINO,
fp32 and bf16 (ONNX Runtime: fp32 only). Columns: milliseconds per image (detectors, at
``--det-size``) or per face (embedders) at batch 1 and batch 32, the ratio to PyTorch fp32
at batch 1, and parity against PyTorch fp32:

* embedders: the lowest cosine between the two vectors of each of the real aligned faces;
* detectors with real weights: the worst box IoU and landmark error (fraction of the box
  size) over every face of the real photos;
* detectors with random weights: the largest head difference relative to the largest head
  value (boxes of a random network mean nothing).

Each cell runs for at most ``--budget`` seconds (after one warm-up call), so the whole run
stays short; figures on a shared machine move by 10-30 % between runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import facerec  # noqa: E402,F401  (sets the no-spin environment before torch starts)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from face_embedding import create_embedder  # noqa: E402
from face_embedding.iresnet import iresnet  # noqa: E402
from facerec.align import align  # noqa: E402
from facerec.detect import create_detector  # noqa: E402
from facerec.detect.yolov5_face import MODEL_TABLES, YoloV5Face, letterbox  # noqa: E402
from facerec.imageio import read_image  # noqa: E402
from facerec.runtime import available_engines, cpu_has_bf16, resolve_threads  # noqa: E402
from facerec.weights import PROJECT_ROOT  # noqa: E402

DATA = PROJECT_ROOT.parent / "shared" / "data"
PHOTOS = [
    "identities/face_recognition_examples/obama/obama.jpg",
    "identities/face_recognition_examples/biden/biden.jpg",
    "identities/facenet_pytorch_test_images/angelina_jolie/1.jpg",
    "detection/skimage_data/astronaut.png",
    "detection/compreface_samples/015_6.jpg",
    "identities/face_recognition_examples/_multi/obama_and_biden.jpg",
]


def per_item_ms(fn, batch: np.ndarray, budget: float) -> float:
    """Median milliseconds per item of ``fn(batch)`` over at most ``budget`` seconds."""
    fn(batch)  # warm-up: kernels, shapes
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while not times or (time.perf_counter() < t_end and len(times) < 20):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000 / len(batch)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def detector_parity(ref, det, photos) -> str:
    worst_iou, worst_lm, missing = 1.0, 0.0, 0
    for img in photos:
        a, b = ref(img), det(img)
        if len(a) != len(b):
            missing += abs(len(a) - len(b))
        if not len(a) or not len(b):
            continue
        m = iou(a.xyxy, b.xyxy)
        j = m.argmax(1)
        worst_iou = min(worst_iou, float(m.max(1).min()))
        size = (a.xyxy[:, 2:] - a.xyxy[:, :2]).max(1)
        worst_lm = max(worst_lm, float((np.abs(a.landmarks - b.landmarks[j]).max(axis=(1, 2)) / size).max()))
    return f"IoU {worst_iou:.4f}, lm {worst_lm:.4f}" + (f", {missing} faces differ" if missing else "")


def head_parity(ref_heads, heads) -> str:
    scale = max(float(np.abs(r).max()) for r in ref_heads)
    diff = max(float(np.abs(h - r).max()) for h, r in zip(heads, ref_heads))
    return f"heads rel. diff {diff / scale:.1e}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="threads of every engine (default: the cores available)")
    p.add_argument("--budget", type=float, default=1.5, help="seconds per cell after warm-up (default: %(default)s)")
    p.add_argument("--det-size", type=int, default=320, help="detector input, px, square (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="the large batch (default: %(default)s)")
    p.add_argument("--models", default="yolov5n-0.5-face,yolov5s-face,mobilefacenet,magface-iresnet50")
    p.add_argument("--engines", default=",".join(available_engines()))
    p.add_argument("--precisions", default="fp32,bf16")
    args = p.parse_args()
    threads = resolve_threads(args.threads)
    weights = os.environ.get("FACEREC_WEIGHTS") or str(PROJECT_ROOT.parent / "shared" / "models")
    engines = args.engines.split(",")
    precisions = args.precisions.split(",")
    torch.manual_seed(0)
    photos = [read_image(DATA / f) for f in PHOTOS]
    ref_det = create_detector("yolov5n-0.5-face", weights_dir=weights, engine="torch", precision="fp32",
                              threads=threads, input_size=args.det_size)
    faces = np.concatenate([align(img, d.landmarks).images for img in photos if len(d := ref_det(img))])
    face_batch = np.resize(faces, (args.batch, *faces.shape[1:]))
    square = [letterbox(img, (args.det_size, args.det_size))[0] for img in photos]
    blobs = np.concatenate([square[i % len(square)] for i in range(args.batch)])
    print(f"# bench/runtime.py: {threads} thread(s), cores available {len(os.sched_getaffinity(0))}, native bf16: "
          f"{cpu_has_bf16()}, detector input {args.det_size}x{args.det_size}, {len(faces)} real aligned faces, "
          f"torch {torch.__version__}", flush=True)
    print("\n| model | engine | precision (run) | ms/item @1 | ms/item @%d | x torch fp32 @1 | parity vs torch fp32 |"
          % args.batch)
    print("|---|---|---|---|---|---|---|", flush=True)
    random_nets = {"yolov5s-face": YoloV5Face(MODEL_TABLES["yolov5s-face"]()).eval(),
                   "magface-iresnet50": iresnet(50).eval()}
    for name in args.models.split(","):
        is_det = name.startswith("yolov5")
        base = None
        ref = None
        for engine in engines:
            for prec in precisions:
                if engine == "onnx" and prec == "bf16":
                    continue
                common = dict(engine=engine, precision=prec, threads=threads)
                t0 = time.perf_counter()
                if is_det:
                    kw = dict(model=random_nets[name]) if name in random_nets else dict(weights_dir=weights)
                    model = create_detector(name, input_size=args.det_size, **kw, **common)
                    run = model.raw
                    fixed = model.runner.fixed_size  # the published ONNX export takes 640x640 only
                    many = blobs if fixed is None else np.concatenate(
                        [letterbox(photos[i % len(photos)], fixed)[0] for i in range(args.batch)])
                    one = many[:1]
                else:
                    kw = dict(model=random_nets[name]) if name in random_nets else dict(weights_dir=weights)
                    model = create_embedder(name, batch_size=args.batch, **kw, **common)
                    run = model.embed
                    one, many = face_batch[:1], face_batch
                build_s = time.perf_counter() - t0
                emulated = engine == "torch" and prec == "bf16" and not cpu_has_bf16()
                ms1 = per_item_ms(run, one, 0 if emulated else args.budget)
                # emulated bf16 is several times slower than fp32; one batch would take minutes
                msb = float("nan") if emulated else per_item_ms(run, many, args.budget)
                if ref is None:
                    ref, base = model, ms1
                if is_det and name not in random_nets:
                    parity = detector_parity(ref, model, photos)
                elif is_det:
                    parity = head_parity(ref.raw(many[:2]), model.raw(many[:2]))
                else:
                    cos = np.sum(ref.embed(faces).vectors * model.embed(faces).vectors, axis=1)
                    parity = f"min cosine {cos.min():.5f}"
                real = "real" if name not in random_nets else "random"
                print(f"| {name} ({real}) | {engine} | {prec} ({model.precision}) | {ms1:.1f} | {msb:.1f} | "
                      f"{base / ms1:.2f} | {parity} |  <!-- build {build_s:.1f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
