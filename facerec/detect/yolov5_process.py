"""YOLOv5-face pre- and post-processing, shared by every engine: letterbox, decode, NMS.

The network takes a letterboxed RGB blob and returns raw head tensors; everything between
an image and :class:`~facerec.types.Detections` in that image's pixels is here, in numpy,
so PyTorch, ONNX Runtime and OpenVINO give the same boxes from the same heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from facerec.detect.yolov5_net import NON_CLASS_OUTPUTS
from facerec.types import Detections

#: Grey used by upstream to pad the letterboxed image.
PAD_VALUE = 114

#: Most candidates passed to NMS (the best-scoring ones), as upstream caps them; only a
#: very low ``conf_thres`` on a crowd reaches it, and NMS time grows with its square.
MAX_CANDIDATES = 30_000


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed into the network input.

    Attributes:
        scale_x: input pixels per original pixel, horizontally.
        scale_y: same, vertically.
        pad_x: left padding in input pixels.
        pad_y: top padding in input pixels.
        width: original image width in pixels.
        height: original image height in pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept ``(H, W, 3)`` BGR, ``(H, W)``/``(H, W, 1)`` grey or ``(H, W, 4)`` BGRA uint8.

    Raises:
        ValueError: another dtype or shape (the message says which).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detector input must be a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"detector input must have shape (H, W, 3), (H, W) or (H, W, 4), got {image.shape}")


def letterbox(image: np.ndarray, size: int | tuple[int, int], stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centre on grey (114) padding, make an RGB blob.

    Args:
        image: ``(H, W, 3)`` uint8 BGR, at least 1x1.
        size: an int makes the long side ``size`` pixels and pads the short side only up
            to the next multiple of ``stride`` (less work for wide frames, as upstream's
            detect script does); an ``(h, w)`` pair fits the image inside exactly that
            input (fixed-size ONNX models).
        stride: the network's largest stride; input sides must be multiples of it.

    Returns:
        ``(1, 3, h, w)`` float32 RGB in [0, 1], and the placement for mapping back.
        Shrinking uses area interpolation (less aliasing), enlarging bilinear.
    """
    h0, w0 = image.shape[:2]
    if isinstance(size, int):
        r = size / max(h0, w0)
        nw, nh = max(1, min(size, round(w0 * r))), max(1, min(size, round(h0 * r)))
        out_w, out_h = math.ceil(nw / stride) * stride, math.ceil(nh / stride) * stride
    else:
        out_h, out_w = size
        r = min(out_h / h0, out_w / w0)
        nw, nh = max(1, min(out_w, round(w0 * r))), max(1, min(out_h, round(h0 * r)))
    if (nw, nh) != (w0, h0):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    left, top = int(round((out_w - nw) / 2 - 0.1)), int(round((out_h - nh) / 2 - 0.1))
    canvas = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    canvas[top:top + nh, left:left + nw] = image
    blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(blob), Letterbox(nw / w0, nh / h0, left, top, w0, h0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def decode_heads(heads: Sequence[np.ndarray], anchors_px: np.ndarray, strides: Sequence[int],
                 conf_thres: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn raw head tensors of one image into candidate faces in input pixels.

    Per anchor the head gives ``[tx, ty, tw, th, obj, 10 landmark values, classes]``.
    With ``s = sigmoid(t)``, grid cell ``(gx, gy)``, level stride and anchor ``(aw, ah)``:
    centre ``(s_xy * 2 - 0.5 + g) * stride``, size ``(s_wh * 2)^2 * anchor``, score
    ``s_obj * max(s_cls)``, landmark ``t_lm * anchor + g * stride`` (the landmark values
    are not squashed; this is upstream's ``Detect`` inference formula).

    Args:
        heads: per level ``(na, ny, nx, 15 + nc)`` float arrays (batch index removed).
        anchors_px: ``(nl, na, 2)`` anchor sizes in input pixels.
        strides: input pixels per grid cell of each level.
        conf_thres: keep candidates whose score exceeds this.

    Returns:
        ``(k, 4)`` xyxy boxes, ``(k,)`` scores, ``(k, 5, 2)`` landmarks, float32.
    """
    boxes, scores, marks = [], [], []
    for level, (head, stride) in enumerate(zip(heads, strides)):
        head = np.asarray(head, dtype=np.float32)
        score = _sigmoid(head[..., 4]) * _sigmoid(head[..., NON_CLASS_OUTPUTS:]).max(-1)
        a, gy, gx = np.nonzero(score > conf_thres)
        if len(a) == 0:
            continue
        t = head[a, gy, gx]
        anchor = anchors_px[level][a]
        grid = np.stack([gx, gy], 1).astype(np.float32)
        xy = (_sigmoid(t[:, 0:2]) * 2 - 0.5 + grid) * stride
        wh = (_sigmoid(t[:, 2:4]) * 2) ** 2 * anchor
        boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2], 1))
        scores.append(score[a, gy, gx])
        marks.append(t[:, 5:15].reshape(-1, 5, 2) * anchor[:, None, :] + (grid * stride)[:, None, :])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(marks).astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def postprocess(heads: Sequence[np.ndarray], box: Letterbox, anchors_px: np.ndarray, strides: Sequence[int], *,
                conf_thres: float, iou_thres: float, min_face: float = 0, max_faces: int = 1000) -> Detections:
    """Decode, filter, suppress and map one image's head outputs back to its pixels.

    After NMS, faces whose box is narrower or shorter than ``min_face`` original pixels
    are dropped (after, so each face is judged by its best box, not by a weaker, larger
    duplicate); then at most ``max_faces`` of the highest scores are kept. Boxes and
    landmarks are clipped to the image.
    """
    xyxy, score, marks = decode_heads(heads, anchors_px, strides, conf_thres)
    if len(score) == 0:
        return Detections.empty()
    if len(score) > MAX_CANDIDATES:
        top = np.argsort(-score, kind="stable")[:MAX_CANDIDATES]
        xyxy, score, marks = xyxy[top], score[top], marks[top]
    scale = np.array([box.scale_x, box.scale_y], np.float32)
    pad = np.array([box.pad_x, box.pad_y], np.float32)
    xyxy = ((xyxy.reshape(-1, 2, 2) - pad) / scale).reshape(-1, 4)
    marks = (marks - pad) / scale
    keep = nms(xyxy, score, iou_thres)
    if min_face > 0:
        keep = keep[(xyxy[keep, 2:] - xyxy[keep, :2]).min(1) >= min_face]
    keep = keep[:max_faces]
    xyxy, score, marks = xyxy[keep], score[keep], marks[keep]
    limit = np.array([box.width, box.height], np.float32)
    xyxy = np.clip(xyxy.reshape(-1, 2, 2), 0, limit).reshape(-1, 4)
    marks = np.clip(marks, 0, limit)
    return Detections(xyxy, score, marks)
