"""Detector speed: milliseconds per image for YOLOv5-face, PyTorch vs ONNX Runtime.

Rows:

* ``yolov5n-0.5-face`` on its real weights, PyTorch fp32 at each input size, and the
  released ONNX export through ONNX Runtime. That export has a fixed 640x640 input, so it
  is timed at 640 only.
* optionally the larger models (``--models yolov5s-face ...``) with random weights of the
  real size (no official file can be had here; speed does not depend on the values).

Each call is split into preprocessing (letterbox to an RGB blob), inference (the
network) and postprocessing (decode, NMS, mapping back to image pixels); the medians of
``repeats`` runs after warm-up are reported. The torch backend pads only the short side
up to a multiple of 32, so a 4:3 frame at 640 runs at 640x480 while the fixed ONNX runs
the full 640x640.

Run with ``python bench/bench_detect.py``. Other busy processes on the same cores inflate
PyTorch timings most, so compare rows of one run, not runs. On an oversubscribed CPU,
PyTorch's OpenMP threads busy-wait for each other: on 2 cores shared with other jobs
(load 6 to 9), yolov5n-0.5-face at 640x448 took 0.5 to 8.5 s per forward pass with two
threads and the default wait policy, against 33 to 100 ms with ``--threads 1`` or with
``OMP_WAIT_POLICY=PASSIVE`` in the environment (torch reads it once, at start-up).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/bench_detect.py``
    try:
        import facerec  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import platform
import time
from typing import Sequence

import numpy as np
import torch

from facerec.detect import create_detector
from facerec.detect import yolov5_face as y5
from facerec.errors import WeightsError
from facerec.imageio import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_IMAGE = SHARED / "data" / "detection" / "compreface_samples" / "015_6.jpg"  # 800x533, 6 faces


def _weights_dir() -> Path | None:
    dirs = [Path(p) for p in os.environ.get("FACEREC_WEIGHTS", "").split(os.pathsep) if p.strip()]
    dirs.append(SHARED / "models")
    return next((d for d in dirs if (d / "yolov5n-0.5-face.pt").is_file()), None)


def _time(detector: y5.YoloV5FaceDetector, image: np.ndarray, repeats: int, warmup: int = 3) -> dict:
    """Median milliseconds per stage of ``repeats`` calls on one image."""
    stages: dict[str, list[float]] = {"pre_ms": [], "infer_ms": [], "post_ms": []}
    faces = 0
    shape: tuple[int, ...] = ()
    runner = detector.runner
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        blob, box = detector.preprocess(image)
        t1 = time.perf_counter()
        heads = runner(blob)
        t2 = time.perf_counter()
        det = y5.postprocess([h[0] for h in heads], box, runner.anchors_px, runner.strides,
                             conf_thres=detector.conf_thres, iou_thres=detector.iou_thres,
                             min_face=detector.min_face, max_faces=detector.max_faces)
        t3 = time.perf_counter()
        if i >= warmup:
            stages["pre_ms"].append((t1 - t0) * 1e3)
            stages["infer_ms"].append((t2 - t1) * 1e3)
            stages["post_ms"].append((t3 - t2) * 1e3)
        faces, shape = len(det), blob.shape[2:]
    row = {k: float(np.median(v)) for k, v in stages.items()}
    row["total_ms"] = row["pre_ms"] + row["infer_ms"] + row["post_ms"]
    row["fps"] = 1e3 / row["total_ms"]
    row["input"] = f"{shape[1]}x{shape[0]}"
    row["faces"] = faces
    return row


def bench_detectors(sizes: Sequence[int] = (320, 640), repeats: int = 20,
                    models: Sequence[str] = ("yolov5n-0.5-face",), image: np.ndarray | None = None,
                    weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """Time the YOLOv5-face detectors; one dict per (model, backend, input size).

    Args:
        sizes: network input long sides in pixels.
        repeats: timed calls per row (after 3 warm-up calls).
        models: registry names. Models without a weights file here run with random
            weights (column ``weights``: ``"random"``).
        image: BGR test image; default a real 800x533 group photo (6 faces), or a grey
            frame where the data folder is absent.
        weights_dir: where to look for weights (default: ``FACEREC_WEIGHTS`` or
            ``../shared/models``).

    Returns:
        Rows with ``model``, ``backend``, ``weights``, ``input_size``, ``input`` (the
        blob's width x height), ``pre_ms``, ``infer_ms``, ``post_ms``, ``total_ms``,
        ``fps`` and ``faces`` (found in the last call).
    """
    if image is None:
        image = read_image(DEFAULT_IMAGE) if DEFAULT_IMAGE.is_file() else np.full((533, 800, 3), 114, np.uint8)
    wdir = weights_dir or _weights_dir()
    rows: list[dict] = []
    for name in models:
        backends: list[tuple[str, str]] = []
        try:
            create_detector(name, weights_dir=wdir)
            backends.append(("torch", "real"))
        except WeightsError:
            backends.append(("torch", "random"))
        try:
            create_detector(name, weights_dir=wdir, backend="onnx")
            backends.append(("onnx", "real"))
        except WeightsError:
            pass
        random_model = None
        for backend, weights in backends:
            for size in sizes:
                if weights == "random":
                    if random_model is None:
                        torch.manual_seed(0)
                        random_model = y5.YoloV5Face(y5.MODEL_TABLES[name]())
                    det = create_detector(name, model=random_model, input_size=size)
                else:
                    det = create_detector(name, weights_dir=wdir, backend=backend, input_size=size)
                fixed = det.runner.fixed_size
                if fixed is not None and max(fixed) != size:
                    continue  # a fixed-size export runs only at its own size
                row = {"model": name, "backend": backend, "weights": weights, "input_size": size}
                row.update(_time(det, image, repeats))
                rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table of :func:`bench_detectors` rows."""
    cols = ["model", "backend", "weights", "input", "pre_ms", "infer_ms", "post_ms", "total_ms", "fps", "faces"]
    cells = [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640], help="input long sides, pixels")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row")
    parser.add_argument("--models", nargs="+", default=["yolov5n-0.5-face"], help="registry names")
    parser.add_argument("--image", type=Path, help="BGR test image (default: a 6-face group photo)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = read_image(args.image) if args.image else None
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(format_table(bench_detectors(args.sizes, args.repeats, args.models, image)))


if __name__ == "__main__":
    main()
