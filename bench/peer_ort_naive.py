"""A naive loop over the upstream ONNX files with plain ONNX Runtime, as a peer.

Runs in ``.bench_envs/ort_naive`` and uses no facerec code: this is what a user writes in
an afternoon from the model cards. ``yolov5n-0.5-face.onnx`` on a 640x640 letterbox
(image centred on grey 114, as upstream), sigmoid decode with upstream's anchors,
OpenCV NMS; five-point alignment with ``cv2.estimateAffinePartial2D`` onto the ArcFace
template; ``mobilefacenet_foamliu_ms1m.onnx`` one face at a time (its batch is fixed at 1);
cosine similarity. No tracking, no batching. On LFW the face nearest the centre is used;
where none is found, the shared LFW centre landmarks are used, and counted.

Usage: .bench_envs/ort_naive/bin/python bench/peer_ort_naive.py JOB.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
from peer_common import (
    centre_index,
    emit,
    fallback_landmarks,
    load_job,
    run_lfw,
    run_video,
)

SIZE = 640
ANCHORS = {8: [(4, 5), (8, 10), (13, 16)], 16: [(23, 29), (43, 55), (73, 105)], 32: [(146, 217), (231, 300), (335, 433)]}
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Pipeline:
    def __init__(self, models: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.det = ort.InferenceSession(str(models / "yolov5n-0.5-face.onnx"), opts, providers=["CPUExecutionProvider"])
        self.rec = ort.InferenceSession(str(models / "mobilefacenet_foamliu_ms1m.onnx"), opts,
                                        providers=["CPUExecutionProvider"])
        self.det_in = self.det.get_inputs()[0].name
        self.rec_in = self.rec.get_inputs()[0].name
        self.names = [o.name for o in self.det.get_outputs()]

    def detect(self, img: np.ndarray, conf: float = 0.5, iou: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (n, 4) xyxy and landmarks (n, 5, 2) in image pixels."""
        h, w = img.shape[:2]
        r = SIZE / max(h, w)
        nh, nw = round(h * r), round(w * r)
        top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
        canvas = np.full((SIZE, SIZE, 3), 114, np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        outs = self.det.run(None, {self.det_in: blob})
        boxes, scores, lms = [], [], []
        for name, out in zip(self.names, outs):
            stride = int(name.split("_")[-1])
            _, na, ny, nx, _ = out.shape
            s = 1 / (1 + np.exp(-out[0]))
            gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            grid = np.stack([gx, gy], -1)[None].astype(np.float32)
            anchor = np.array(ANCHORS[stride], np.float32)[:, None, None, :]
            xy = (s[..., 0:2] * 2 - 0.5 + grid) * stride
            wh = (s[..., 2:4] * 2) ** 2 * anchor
            score = s[..., 4] * s[..., 15]
            lm = out[0][..., 5:15].reshape(na, ny, nx, 5, 2) * anchor[..., None, :] + (grid * stride)[..., None, :]
            keep = score > conf
            boxes.append(np.c_[xy[keep] - wh[keep] / 2, wh[keep]])
            scores.append(score[keep])
            lms.append(lm[keep])
        b, sc, lm = np.concatenate(boxes), np.concatenate(scores), np.concatenate(lms)
        if not len(b):
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)
        idx = np.array(cv2.dnn.NMSBoxes(b.tolist(), sc.tolist(), conf, iou), np.int64).reshape(-1)
        b, lm = b[idx], lm[idx]
        off = np.array([left, top], np.float32)
        xyxy = np.c_[(b[:, :2] - off) / r, (b[:, :2] + b[:, 2:] - off) / r]
        return xyxy, (lm - off) / r

    def embed(self, img: np.ndarray, lm: np.ndarray) -> np.ndarray:
        m, _ = cv2.estimateAffinePartial2D(lm.astype(np.float32), TEMPLATE, method=cv2.LMEDS)
        crop = cv2.warpAffine(img, m, (112, 112), borderValue=0)
        x = (crop[:, :, ::-1].astype(np.float32) / 255.0 - MEAN) / STD
        return self.rec.run(None, {self.rec_in: x.transpose(2, 0, 1)[None]})[0][0]


def main() -> None:
    job = load_job(sys.argv[1])
    threads = int(job["threads"])
    cv2.setNumThreads(threads)
    pipe = Pipeline(Path(job["models_dir"]), threads)

    def embed(img: np.ndarray) -> tuple[np.ndarray, bool]:
        xyxy, lms = pipe.detect(img)
        i = centre_index(xyxy, img.shape)
        if i is None:
            return pipe.embed(img, fallback_landmarks(job, img.shape)), True
        return pipe.embed(img, lms[i]), False

    def frame(img: np.ndarray) -> int:
        _, lms = pipe.detect(img)
        for lm in lms:
            pipe.embed(img, lm)
        return len(lms)

    import onnxruntime

    out = {
        "peer": "ort_naive",
        "pipeline": "yolov5n-0.5-face.onnx + mobilefacenet .onnx, plain ORT loop",
        "versions": {"onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__},
    }
    out.update(run_lfw(job, embed))
    out.update(run_video(job, frame))
    emit(out)


if __name__ == "__main__":
    main()
