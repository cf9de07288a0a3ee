"""What every peer runner shares: reading the job file, the centre-face rule, timing a
video loop, and printing the one result line.

Runners execute inside their own virtual environments (see ``bench/peers_setup.sh``),
where facerec is not installed, so this module needs only NumPy and OpenCV.

The job file, written by ``bench/peers.py``, is JSON::

    {"images": [path, ...],              distinct LFW images, absolute paths
     "pairs": [[i, j], ...],             indices into "images"
     "fallback_landmarks": [[x, y] x5],  centre-face landmarks of a 250x250 LFW image
     "video": path, "frames": n,         the clip and how many frames to process
     "threads": n, "models_dir": path}

A runner prints exactly one JSON line on stdout::

    {"peer": ..., "versions": {...}, "scores": [...], "fallback": k, "failed": k,
     "lfw_seconds": s, "video_frames": n, "video_faces": m, "video_seconds": s}
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np


def load_job(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def centre_index(boxes_xyxy: np.ndarray, shape: tuple[int, ...]) -> int | None:
    """Index of the box whose centre is nearest the image centre (None when empty)."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return None
    h, w = shape[:2]
    c = (b[:, :2] + b[:, 2:]) / 2
    return int(np.argmin(np.hypot(c[:, 0] - w / 2, c[:, 1] - h / 2)))


def fallback_landmarks(job: dict, shape: tuple[int, ...]) -> np.ndarray:
    """The job's LFW centre landmarks scaled to an image of ``shape``."""
    h, w = shape[:2]
    return np.asarray(job["fallback_landmarks"], np.float32) * np.array([w / 250.0, h / 250.0], np.float32)


def read_frames(path: str, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of a clip, decoded before timing starts (BGR)."""
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read frames from {path}")
    return frames


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def run_lfw(job: dict, embed_image: Callable[[np.ndarray], tuple[np.ndarray, bool]],
            score: Callable[[np.ndarray, np.ndarray], float] = cosine) -> dict:
    """Embed every image once and score every pair.

    Args:
        embed_image: BGR image -> (feature, used_fallback).
        score: similarity of two features (higher = same person).
    """
    feats: list[np.ndarray | None] = []
    fallback = failed = 0
    t0 = time.perf_counter()
    for p in job["images"]:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            feats.append(None)
            failed += 1
            continue
        f, fb = embed_image(img)
        fallback += int(fb)
        feats.append(f)
    scores = []
    for i, j in job["pairs"]:
        a, b = feats[i], feats[j]
        scores.append(-1e9 if a is None or b is None else score(a, b))
    return {"scores": scores, "fallback": fallback, "failed": failed, "lfw_seconds": time.perf_counter() - t0}


def run_video(job: dict, process_frame: Callable[[np.ndarray], int]) -> dict:
    """Time ``process_frame`` (detect + embed every face; returns the face count) on the clip."""
    frames = read_frames(job["video"], int(job["frames"]))
    process_frame(frames[0])  # warm-up, not timed
    faces = 0
    t0 = time.perf_counter()
    for f in frames:
        faces += process_frame(f)
    return {"video_frames": len(frames), "video_faces": faces, "video_seconds": time.perf_counter() - t0}


def emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
