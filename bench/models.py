"""Model speed in one run: detection ms per image at 320 and 640, embedding ms per face at
batch 1 and 32, PyTorch against ONNX Runtime.

This runs :mod:`bench_detect` and :mod:`bench_embed` back to back in one process, so every
row of both tables is measured on the same machine under the same load; see those two
files for what each row is (real weights where the file exists, random weights of the
real size for the models whose files cannot be had here). Run from the repository root::

    python bench/models.py                 # all rows
    python bench/models.py --threads 1     # one intra-op thread for torch and ORT

Timings on a shared machine move by tens of percent between runs: compare rows of one
run, not runs. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import bench_detect  # noqa: E402
import bench_embed  # noqa: E402
import cv2  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 640], help="detector input long sides, px")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="embedder batch sizes")
    p.add_argument("--detectors", nargs="+", default=["yolov5n-0.5-face", "yolov5s-face"],
                   help="detector registry names (random weights where no file is found)")
    p.add_argument("--repeats", type=int, default=20, help="timed detector calls per row")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime intra-op threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}")
    print("\nDetection, ms per image (800x533 photo, 6 faces):")
    print(bench_detect.format_table(bench_detect.bench_detectors(args.sizes, args.repeats, args.detectors)))
    print("\nEmbedding, ms per face:")
    print(bench_embed.format_table(bench_embed.bench_embedders(args.batches), args.batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
