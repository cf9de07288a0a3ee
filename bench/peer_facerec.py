"""facerec itself as a peer: yolov5n-0.5-face + MobileFaceNet through ``FaceAnalyzer``.

Runs in facerec's own environment. LFW goes through the same code as
``facerec eval verify`` (centre face, centre-crop fallback, each image embedded once, crops
embedded in batches); the video loop calls ``FaceAnalyzer.analyze`` on every frame (detect,
align and embed every face; no tracking, no frame skipping).

Usage: python bench/peer_facerec.py JOB.json --backend torch|onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np
from peer_common import emit, load_job, run_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job")
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    args = ap.parse_args()
    job = load_job(args.job)

    import onnxruntime
    import torch

    import facerec
    from face_embedding import create_embedder
    from facerec.analyze import FaceAnalyzer
    from facerec.detect import create_detector
    from facerec.evaluate.verify import EmbeddingCache

    threads = int(job["threads"])
    torch.set_num_threads(threads)
    det = create_detector("yolov5n-0.5-face", backend=args.backend, weights_dir=job["models_dir"])
    emb = create_embedder("mobilefacenet", backend=args.backend, weights_dir=job["models_dir"], threads=threads)
    analyzer = FaceAnalyzer(det, emb)

    paths = [Path(p) for p in job["images"]]
    cache = EmbeddingCache(analyzer)
    t0 = time.perf_counter()
    cache.embed(paths)
    scores = []
    for i, j in job["pairs"]:
        a, b = cache.vectors[paths[i]], cache.vectors[paths[j]]
        scores.append(-1e9 if a is None or b is None else float(np.dot(a, b)))
    out = {
        "peer": f"facerec-{args.backend}",
        "pipeline": "yolov5n-0.5-face + mobilefacenet",
        "versions": {"facerec": facerec.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "scores": scores,
        "fallback": len(cache.fallback),
        "failed": len(cache.failed),
        "lfw_seconds": time.perf_counter() - t0,
    }
    out.update(run_video(job, lambda frame: len(analyzer.analyze(frame))))
    emit(out)


if __name__ == "__main__":
    main()
