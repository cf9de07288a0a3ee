"""Evaluation plots drawn with OpenCV: a ROC with score histograms, and a DET curve.

Plots are plain lines and text on a white canvas written as PNG, so evaluation needs no
plotting library. Axes can be linear or base-10 logarithmic.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facerec.evaluate.metrics import Det, Roc

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (210, 210, 210)
BLUE = (200, 90, 30)  # BGR
GREEN = (60, 160, 60)
RED = (50, 50, 210)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Axes:
    """A rectangle of the canvas with data limits; maps data to pixels.

    Args:
        canvas: BGR image drawn into.
        box: ``(x0, y0, x1, y1)`` pixel rectangle of the plotting area.
        xlim, ylim: data limits (positive when the axis is logarithmic).
        logx, logy: base-10 logarithmic axes.
    """

    canvas: np.ndarray
    box: tuple[int, int, int, int]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    logx: bool = False
    logy: bool = False

    def _norm(self, v: np.ndarray, lim: tuple[float, float], log: bool) -> np.ndarray:
        lo, hi = lim
        if log:
            v = np.log10(np.clip(v, lo, hi))
            lo, hi = math.log10(lo), math.log10(hi)
        return (np.clip(v, lo, hi) - lo) / (hi - lo)

    def to_px(self, x, y) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        u = self._norm(np.asarray(x, np.float64), self.xlim, self.logx)
        v = self._norm(np.asarray(y, np.float64), self.ylim, self.logy)
        return np.stack([x0 + u * (x1 - x0), y1 - v * (y1 - y0)], -1)

    def frame(self, title: str, xlabel: str, ylabel: str, xticks, yticks, xfmt=str, yfmt=str) -> None:
        """Grid lines at the ticks, tick labels, the border, a title and axis labels."""
        x0, y0, x1, y1 = self.box
        for t in xticks:
            px = round(float(self.to_px(t, self.ylim[0])[0]))
            cv2.line(self.canvas, (px, y0), (px, y1), GREY, 1)
            label = xfmt(t)
            (tw, _), _ = cv2.getTextSize(label, FONT, 0.4, 1)
            self.text(label, (px - tw // 2, y1 + 18), 0.4)
        for t in yticks:
            py = round(float(self.to_px(self.xlim[0], t)[1]))
            cv2.line(self.canvas, (x0, py), (x1, py), GREY, 1)
            self.text(yfmt(t), (x0 - 44, py + 4), 0.4)
        cv2.rectangle(self.canvas, (x0, y0), (x1, y1), BLACK, 1)
        self.text(title, (x0, y0 - 12), 0.55)
        self.text(xlabel, ((x0 + x1) // 2 - 4 * len(xlabel), y1 + 40), 0.5)
        # vertical label: draw rotated text into a strip and paste it
        flat = np.full((20, 8 * len(ylabel) + 10, 3), 255, np.uint8)
        cv2.putText(flat, ylabel, (2, 15), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
        strip = np.asarray(cv2.rotate(flat, cv2.ROTATE_90_COUNTERCLOCKWISE))
        h, w = strip.shape[:2]
        cy = (y0 + y1) // 2 - h // 2
        cx = max(x0 - 72, 0)
        if cy >= 0 and cy + h <= self.canvas.shape[0]:
            self.canvas[cy:cy + h, cx:cx + w] = np.minimum(self.canvas[cy:cy + h, cx:cx + w], strip)

    def text(self, s: str, org: tuple[int, int], scale: float = 0.45, color=BLACK) -> None:
        cv2.putText(self.canvas, s, org, FONT, scale, color, 1, cv2.LINE_AA)

    def line(self, x, y, color, thickness: int = 2) -> None:
        pts = self.to_px(x, y)
        if len(pts) < 2:
            return
        cv2.polylines(self.canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, color, thickness, cv2.LINE_AA)

    def vline(self, x: float, color, label: str | None = None) -> None:
        top = self.to_px(x, self.ylim[1])
        bottom = self.to_px(x, self.ylim[0])
        cv2.line(self.canvas, tuple(np.round(top).astype(int)), tuple(np.round(bottom).astype(int)), color, 1, cv2.LINE_AA)
        if label:
            self.text(label, (int(top[0]) + 4, int((top[1] + bottom[1]) / 2)), 0.4, color)

    def legend(self, items: list[tuple[str, tuple[int, int, int]]], corner: str = "br") -> None:
        x0, y0, x1, y1 = self.box
        width = 9 * max(len(s) for s, _ in items) + 30
        x = x1 - width if corner.endswith("r") else x0 + 10
        y = y1 - 18 * len(items) - 6 if corner.startswith("b") else y0 + 10
        for k, (label, color) in enumerate(items):
            yy = y + 18 * k + 10
            cv2.line(self.canvas, (x, yy - 4), (x + 18, yy - 4), color, 2)
            self.text(label, (x + 24, yy), 0.42)


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            if lo <= 10.0**e <= hi]


def _fmt_pow(v: float) -> str:
    if v >= 1:
        return "1"
    return f"1e{round(math.log10(v))}"


def _write(path: str | os.PathLike, canvas: np.ndarray) -> Path:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", canvas)
    if not ok:
        raise OSError(f"could not encode the plot for {p}")
    p.write_bytes(buf.tobytes())
    return p


def plot_verification(path: str | os.PathLike, roc: Roc, genuine: np.ndarray, impostor: np.ndarray,
                      threshold: float | None = None, title: str = "") -> Path:
    """ROC (TAR over log FAR) beside histograms of genuine and impostor similarities.

    Args:
        path: PNG file to write.
        roc: the curve.
        genuine, impostor: scores of the two classes (for the histograms).
        threshold: drawn as a vertical line on the histogram.
        title: shown above the ROC.

    Returns:
        The written path.
    """
    canvas = np.full((520, 1160, 3), 255, np.uint8)
    far_lo = 10.0 ** math.floor(math.log10(max(1.0 / max(roc.n_impostor, 1), 1e-6)))
    ax = Axes(canvas, (90, 50, 530, 440), (far_lo, 1.0), (0.0, 1.0), logx=True)
    ax.frame(title or "ROC", "false accept rate", "true accept rate",
             _log_ticks(far_lo, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], xfmt=_fmt_pow, yfmt=lambda v: f"{v:.1f}")
    far = np.maximum(roc.far, far_lo)
    ax.line(far, roc.tar, BLUE)

    lo = float(min(genuine.min(initial=1.0), impostor.min(initial=1.0), -0.2))
    hi = float(max(genuine.max(initial=-1.0), impostor.max(initial=-1.0), 1.0))
    bins = np.linspace(lo, hi, 61)
    hg = np.histogram(genuine, bins)[0] / max(len(genuine), 1)
    hi_ = np.histogram(impostor, bins)[0] / max(len(impostor), 1)
    top = float(max(hg.max(initial=0), hi_.max(initial=0), 1e-3)) * 1.1
    hx = Axes(canvas, (660, 50, 1120, 440), (lo, hi), (0.0, top))
    step = 0.2 if hi - lo > 1 else 0.1
    xt = [round(v, 2) for v in np.arange(math.ceil(lo / step) * step, hi + 1e-9, step)]
    hx.frame("similarity histograms", "cosine similarity", "fraction of pairs", xt,
             list(np.linspace(0, top, 5)), xfmt=lambda v: f"{v:.1f}", yfmt=lambda v: f"{v:.2f}")
    centres = np.repeat(bins, 2)[1:-1]
    hx.line(centres, np.repeat(hg, 2), GREEN)
    hx.line(centres, np.repeat(hi_, 2), RED)
    items = [(f"same ({len(genuine)})", GREEN), (f"different ({len(impostor)})", RED)]
    if threshold is not None:
        hx.vline(threshold, BLACK, f"thr {threshold:.3f}")
    hx.legend(items, "tr")
    return _write(path, canvas)


def plot_det(path: str | os.PathLike, det: Det, title: str = "") -> Path:
    """Open-set DET curve: FNIR over FPIR, both on log axes."""
    canvas = np.full((520, 620, 3), 255, np.uint8)
    lo_x = 10.0 ** math.floor(math.log10(max(1.0 / max(det.n_nonmated, 1), 1e-6)))
    lo_y = 10.0 ** math.floor(math.log10(max(1.0 / max(det.n_mated, 1), 1e-6)))
    ax = Axes(canvas, (100, 50, 580, 440), (lo_x, 1.0), (lo_y, 1.0), logx=True, logy=True)
    ax.frame(title or "DET (open-set identification)", "FPIR", "FNIR",
             _log_ticks(lo_x, 1.0), _log_ticks(lo_y, 1.0), xfmt=_fmt_pow, yfmt=_fmt_pow)
    ax.line(np.maximum(det.fpir, lo_x), np.maximum(det.fnir, lo_y), BLUE)
    return _write(path, canvas)
