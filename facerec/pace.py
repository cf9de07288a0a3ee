"""Holding the live loop's frame rate on a busy CPU.

The detector dominates the cost of a frame, and two knobs trade its cost against quality:
how often it runs (``detect_every``; tracks coast in between) and its input size. The
:class:`Pacer` measures what the frames of the last second cost and compares that with
the frame interval the loop has to hold (``live.target_fps``, or the source's own rate):

* too slow: it jumps to the best setting predicted to fit (first a wider detect interval,
  then a smaller input), within the configured bounds;
* fast enough with headroom: it steps back one setting at a time towards the configured
  ones, but only when the better setting is predicted to fit with a margin
  (``up_ratio``), and a setting that was just left for being too slow is not tried again
  for a while (the wait doubles each time it fails again), so the loop settles instead
  of oscillating.

The detect interval is bounded in frames and in seconds: a new face is named about two
detector runs after it appears, so ``max_detect_interval_s = 0.2`` keeps that within
about half a second whatever the frame rate.

The prediction splits the measured cost of a window of frames into a per-frame part (the
frames without a detector run) and a per-detection part (the detector's own time, which
scales with the input's pixel count, plus tracking and embedding on those frames).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

from facerec.config import LiveConfig
from facerec.detect import ResizableDetector

#: Detector input sizes are multiples of this, px (YOLO strides).
SIZE_STEP = 32
#: Frame rate assumed for a source that reports none, frames per second.
DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class PaceSetting:
    """What the live loop runs with.

    Attributes:
        detect_every: the detector runs on every Nth frame.
        input_size: long side of the detector input, px (a multiple of 32).
    """

    detect_every: int
    input_size: int

    @property
    def label(self) -> str:
        """``"1/3@320"``: detect one frame in 3 at 320 px (overlay, log line, stats)."""
        return f"1/{self.detect_every}@{self.input_size}"


@dataclass(frozen=True)
class PaceBounds:
    """The range the pacer may move in.

    Attributes:
        target_fps: frame rate to hold, frames per second.
        min_every: narrowest detect interval (the configured one), frames.
        max_every: widest detect interval, frames.
        max_interval_s: widest detect interval, seconds of loop time.
        max_size: largest detector input (the configured one), px.
        min_size: smallest detector input, px.
    """

    target_fps: float
    min_every: int
    max_every: int
    max_interval_s: float
    max_size: int
    min_size: int

    def __post_init__(self) -> None:
        if not self.target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {self.target_fps}")
        if not 1 <= self.min_every <= self.max_every:
            raise ValueError(f"need 1 <= min_every <= max_every, got {self.min_every}, {self.max_every}")
        if self.min_size % SIZE_STEP or self.max_size % SIZE_STEP or not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need sizes that are multiples of {SIZE_STEP} with min <= max, "
                             f"got {self.min_size}, {self.max_size}")

    @classmethod
    def from_config(cls, live: LiveConfig, input_size: int, source_fps: float | None) -> PaceBounds:
        """Bounds from the ``live:`` section; the configured interval and input are the best
        setting, and a bound on the other side of it is moved onto it.

        Args:
            live: the ``live:`` section.
            input_size: the detector input the loop starts at, px.
            source_fps: the source's frame rate; ``None`` or 0 = unknown (25 is assumed).
        """
        fps = live.target_fps or (source_fps if source_fps and source_fps > 0 else DEFAULT_FPS)
        size = max(SIZE_STEP, input_size // SIZE_STEP * SIZE_STEP)
        return cls(target_fps=float(fps), min_every=live.detect_every,
                   max_every=max(live.detect_every, live.max_detect_every),
                   max_interval_s=live.max_detect_interval_s, max_size=size, min_size=min(size, live.min_input_size))


class _Window:
    """Costs of the frames since the last decision, ms."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.frames = 0
        self.work = 0.0
        self.det_frames = 0
        self.det_ms = 0.0
        self.det_rest = 0.0
        self.plain_frames = 0
        self.plain_work = 0.0

    def add(self, work_ms: float, detect_ms: float | None) -> None:
        self.frames += 1
        self.work += work_ms
        if detect_ms is None:
            self.plain_frames += 1
            self.plain_work += work_ms
        else:
            self.det_frames += 1
            self.det_ms += detect_ms
            self.det_rest += max(0.0, work_ms - detect_ms)

    @property
    def mean(self) -> float:
        return self.work / self.frames if self.frames else 0.0


class Pacer:
    """Chooses the detect interval and detector input that hold the frame rate.

    Feed it every frame's cost with :meth:`update`; when it returns a setting, apply it
    (``detect_every`` to the pipeline, ``input_size`` to the detector).

    Args:
        bounds: the range to move in; the loop starts at the best setting.
        resizable: the detector accepts a new input size at run time (a fixed-size
            ONNX model does not: only the interval then moves).
        window_s: seconds of frames behind each decision.
        fit_ratio: when too slow, choose the best setting predicted to cost at most this
            share of the frame interval.
        up_ratio: step back to a better setting only when it is predicted to cost at most
            this share of the frame interval.
        hold_s: a setting left for being too slow is not tried again for this long, s;
            doubled each time a new try fails, up to ``max_hold_s``.
        max_hold_s: longest such wait, s.
        follow_source: :meth:`start` sets the target to the source's frame rate (no
            ``live.target_fps`` was configured).
    """

    def __init__(self, bounds: PaceBounds, *, resizable: bool = True, window_s: float = 1.0,
                 fit_ratio: float = 0.9, up_ratio: float = 0.75, hold_s: float = 5.0,
                 max_hold_s: float = 60.0, follow_source: bool = False) -> None:
        if not 0 < up_ratio <= fit_ratio <= 1:
            raise ValueError(f"need 0 < up_ratio <= fit_ratio <= 1, got {up_ratio}, {fit_ratio}")
        self.bounds = bounds
        self.resizable = resizable
        self.window_s = window_s
        self.fit_ratio = fit_ratio
        self.up_ratio = up_ratio
        self.hold_s = hold_s
        self.max_hold_s = max_hold_s
        self.follow_source = follow_source
        self.setting = PaceSetting(bounds.min_every, bounds.max_size)
        self.changes = 0
        self.history: list[dict] = []
        self._frames_at: Counter[str] = Counter()
        self._t0: float | None = None
        self._window: _Window | None = None
        self._entered_up = False
        self._entered_t = 0.0
        self._hold: dict[PaceSetting, float] = {}
        self._blocked: dict[PaceSetting, float] = {}
        self._await = 1
        self._last_now: float | None = None
        self._sizes_used = {bounds.max_size}
        self._period_s = 1.0 / bounds.target_fps

    @classmethod
    def from_config(cls, live: LiveConfig, input_size: int, source_fps: float | None = None,
                    resizable: bool = True) -> Pacer:
        """A pacer for the ``live:`` section; see :meth:`PaceBounds.from_config`."""
        return cls(PaceBounds.from_config(live, input_size, source_fps), resizable=resizable,
                   follow_source=live.target_fps is None)

    def start(self, source_fps: float | None) -> None:
        """Begin a run at the best setting; without a configured target the source's frame
        rate (when it reports one) becomes the rate to hold."""
        if self.follow_source and source_fps and 0 < source_fps <= 1000:
            self.bounds = replace(self.bounds, target_fps=float(source_fps))
        self.setting = PaceSetting(self.bounds.min_every, self.bounds.max_size)
        self._period_s = 1.0 / self.bounds.target_fps
        self._window = None
        self._t0 = None
        self._last_now = None
        self._await = 1
        self._entered_up = False

    @property
    def budget_ms(self) -> float:
        """Time one frame may take, ms."""
        return 1000.0 / self.bounds.target_fps

    def levels(self) -> list[PaceSetting]:
        """Settings from the best (configured) to the cheapest, at the current frame period:
        first the detect interval widens up to its bound, then the input shrinks."""
        b = self.bounds
        period = max(self._period_s, 1.0 / b.target_fps)
        widest = min(b.max_every, max(b.min_every, math.floor(b.max_interval_s / period + 1e-9)))
        out = [PaceSetting(e, b.max_size) for e in range(b.min_every, widest + 1)]
        if self.resizable:
            out += [PaceSetting(widest, s) for s in range(b.max_size - SIZE_STEP, b.min_size - 1, -SIZE_STEP)]
        return out

    def update(self, work_ms: float, detect_ms: float | None, now: float) -> PaceSetting | None:
        """Record one frame; returns the new setting when it changes, else ``None``.

        Args:
            work_ms: the frame's cost, ms: everything but the wait for the frame.
            detect_ms: the detector's share of it, ms; ``None`` when it did not run.
            now: a monotonic clock, s (``time.perf_counter()``).
        """
        self._frames_at[self.setting.label] += 1
        prev, self._last_now = self._last_now, now
        if prev is None:
            prev = self._t0 = now - work_ms / 1000.0
        if self._await:
            # windows hold whole detect cycles: one starts at a detector run (after a change,
            # at the first run with the new setting; a never used input size skips one more,
            # which prepares its kernels)
            if detect_ms is not None:
                self._await -= 1
                if not self._await:
                    self._window = _Window(prev)
                    self._window.add(work_ms, detect_ms)
            return None
        w = self._window
        if w is None:  # not reached: a window exists whenever nothing is awaited
            return None
        elapsed = prev - w.start
        if detect_ms is None or elapsed < self.window_s:
            w.add(work_ms, detect_ms)
            return None
        choice, up = self._decide(w, elapsed, now)
        if choice is None:
            self._window = _Window(prev)
            self._window.add(work_ms, detect_ms)
            return None
        return self._move(choice, up, now, w.mean)

    def _decide(self, w: _Window, elapsed: float, now: float) -> tuple[PaceSetting | None, bool]:
        """The setting after a window of whole detect cycles (``None`` = keep), and whether
        it is a step back up."""
        self._period_s = elapsed / w.frames
        levels = self.levels()
        cur = self.setting
        if cur not in levels:  # the frame period changed, and with it the widest interval in seconds
            widest = levels[-1].detect_every
            cur = PaceSetting(widest if cur.input_size < self.bounds.max_size else min(cur.detect_every, widest),
                              cur.input_size)
        i = levels.index(cur)
        mean, budget = w.mean, self.budget_ms
        choice: PaceSetting | None = cur if cur != self.setting else None
        up = False
        if mean > budget:
            fits = [s for s in levels[i + 1:] if self._predict(w, s) <= budget * self.fit_ratio]
            target = fits[0] if fits else levels[-1]
            if target != cur:
                self._block(self.setting, now)
                choice = target
        elif i > 0 and w.frames >= 2 * cur.detect_every and w.det_frames >= 2:
            better = levels[i - 1]
            if now >= self._blocked.get(better, -math.inf) and self._predict(w, better) <= budget * self.up_ratio:
                choice, up = better, True
        if self._entered_up and now - self._entered_t >= self.max_hold_s:
            self._hold.pop(self.setting, None)  # it held long enough: the next failure starts short again
            self._entered_up = False
        return (None, False) if choice is None or choice == self.setting else (choice, up)

    def _predict(self, w: _Window, s: PaceSetting) -> float:
        """Expected ms per frame at setting ``s``, from the window measured at the current one."""
        cur = self.setting
        det = w.det_ms / w.det_frames
        rest = w.det_rest / w.det_frames
        plain = w.plain_work / w.plain_frames if w.plain_frames else rest
        share = min(1.0, w.det_frames / w.frames * cur.detect_every / s.detect_every)
        scale = (s.input_size / cur.input_size) ** 2
        return plain + share * (det * scale + max(0.0, rest - plain))

    def _block(self, left: PaceSetting, now: float) -> None:
        hold = self._hold.get(left, self.hold_s / 2) * 2 if self._entered_up else self.hold_s
        hold = min(hold, self.max_hold_s)
        self._hold[left] = hold
        self._blocked[left] = now + hold

    def _move(self, to: PaceSetting, up: bool, now: float, mean_ms: float) -> PaceSetting:
        self._await = 1 if to.input_size in self._sizes_used else 2
        self._sizes_used.add(to.input_size)
        self._window = None
        self.setting = to
        self.changes += 1
        self._entered_up, self._entered_t = up, now
        self.history.append({"t": round(now - (self._t0 if self._t0 is not None else now), 2), "setting": to.label,
                             "frame_ms": round(mean_ms, 2), "budget_ms": round(self.budget_ms, 2)})
        del self.history[:-20]
        return to

    def summary(self) -> dict:
        """What the pacer chose, for ``--stats``: the bounds, the current setting, how many
        changes, frames run at each setting and the last 20 changes."""
        b = self.bounds
        return {
            "enabled": True,
            "target_fps": round(b.target_fps, 2),
            "setting": self.setting.label,
            "detect_every": self.setting.detect_every,
            "input_size": self.setting.input_size,
            "bounds": {"detect_every": [b.min_every, b.max_every], "max_detect_interval_s": b.max_interval_s,
                       "input_size": [b.min_size if self.resizable else b.max_size, b.max_size]},
            "changes": self.changes,
            "frames_at": dict(self._frames_at),
            "history": list(self.history),
        }


def detector_input_size(detector: object) -> int | None:
    """The input size a detector runs at now, px; ``None`` when it has no such setting."""
    if not isinstance(detector, ResizableDetector):
        return None
    if detector.fixed_size:
        return int(max(detector.fixed_size))
    return int(detector.input_size) if detector.input_size else None


def can_resize(detector: object) -> bool:
    """True when the detector reads its ``input_size`` on every call (YOLOv5-face on
    PyTorch or a dynamic-size ONNX model, the ultralytics detectors)."""
    return isinstance(detector, ResizableDetector) and isinstance(detector.input_size, int) \
        and not detector.fixed_size


def set_input_size(detector: object, size: int) -> bool:
    """Switch a detector to a new input size, px (a multiple of 32); False when it cannot."""
    if size % SIZE_STEP or size <= 0:
        raise ValueError(f"detector input sizes are positive multiples of {SIZE_STEP} px, got {size}")
    if not isinstance(detector, ResizableDetector) or not can_resize(detector):
        return False
    detector.input_size = int(size)
    return True
