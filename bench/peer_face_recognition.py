"""face_recognition (dlib HOG detector + dlib ResNet-34 embedder) as a peer.

Runs in ``.bench_envs/face_recognition``. Used as its README shows: ``face_locations``
(HOG, one upsampling) then ``face_encodings`` (5-point landmarks, one jitter); pairs are
scored by minus the Euclidean distance, the library's own comparison. On LFW the face
nearest the centre is used; where HOG finds none, a fixed centre box (the mean HOG box of
80 LFW images, measured here) is passed as a known location, and counted.

Usage: .bench_envs/face_recognition/bin/python bench/peer_face_recognition.py JOB.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
from peer_common import centre_index, emit, load_job, run_lfw, run_video

#: (top, right, bottom, left) of the centre face of a 250x250 LFW image.
LFW_CENTRE_BOX = (80, 174, 184, 70)


def main() -> None:
    job = load_job(sys.argv[1])
    import dlib
    import face_recognition

    def embed(img: np.ndarray) -> tuple[np.ndarray | None, bool]:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        locs = face_recognition.face_locations(rgb, 1, "hog")
        fb = not locs
        if fb:
            h, w = rgb.shape[:2]
            t, r, b, l = LFW_CENTRE_BOX
            box = (round(t * h / 250), round(r * w / 250), round(b * h / 250), round(l * w / 250))
        else:
            xyxy = np.array([[l, t, r, b] for t, r, b, l in locs])
            box = locs[centre_index(xyxy, rgb.shape)]
        enc = face_recognition.face_encodings(rgb, [box], 1, "small")
        return (enc[0] if enc else None), fb

    def frame(img: np.ndarray) -> int:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        locs = face_recognition.face_locations(rgb, 1, "hog")
        return len(face_recognition.face_encodings(rgb, locs, 1, "small")) if locs else 0

    out = {
        "peer": "face_recognition",
        "pipeline": "dlib HOG + dlib ResNet-34 (face_recognition 1.3.0)",
        "versions": {"face_recognition": "1.3.0", "dlib": dlib.__version__},
    }
    out.update(run_lfw(job, embed, lambda a, b: -float(np.linalg.norm(a - b))))
    out.update(run_video(job, frame))
    emit(out)


if __name__ == "__main__":
    main()
