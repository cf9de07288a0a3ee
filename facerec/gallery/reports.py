"""What the gallery's jobs report: one photo's enrollment, a batch job's items.

:class:`EnrollResult` carries a :data:`ReasonCode` beside its human message, so callers
decide on the code (``already_enrolled`` counts as unchanged, ``multiple_faces`` as
skipped) and the message stays free to change.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from tqdm import tqdm

if TYPE_CHECKING:
    from facerec.gallery.store import SampleInfo

#: Why a photo was not enrolled (or was, with a gate verdict): the code callers decide on.
ReasonCode = Literal[
    "already_enrolled",  # the same photo is a sample of this person: nothing to do
    "enrolled_for_other",  # the same photo is a sample of someone else (refused with refuse_conflicts)
    "no_face",
    "multiple_faces",  # several faces and gallery.multiple_faces is skip
    "face_too_small",
    "low_quality",
    "check_failed",  # the enroll check gate (outlier, closer_to_other, ...) refused it
]

#: Codes of a ``skipped`` result (nothing wrong, nothing to do); every other code fails.
SKIPPED_CODES: frozenset[str] = frozenset({"already_enrolled", "multiple_faces"})


@dataclass
class EnrollResult:
    """The outcome of enrolling one photo.

    Attributes:
        name: the person (canonical form).
        source: the photo's path, when known.
        status: ``added``, ``skipped`` (nothing wrong, nothing to do: already enrolled,
            several faces with ``multiple_faces: skip``) or ``failed`` (no usable face).
        reason: why it was skipped or failed, naming the file and the measured value.
        sample: the new sample when added.
        quality: the measured quality (MagFace norm or sharpness), when a face was found.
        warnings: near-duplicates, a better match with another person, several faces.
        check: the reason ``enroll check`` gives this photo (``outlier``, ``closer_to_other``,
            ``not_a_face``; see :mod:`facerec.gallery.check`), ``None`` when it passes.
        code: why it was skipped or failed, as a :data:`ReasonCode` (decide on this, not
            on ``reason``'s text); ``None`` when added.
    """

    name: str
    source: str | None
    status: Literal["added", "skipped", "failed"]
    reason: str = ""
    sample: SampleInfo | None = None
    quality: float | None = None
    warnings: list[str] = field(default_factory=list)
    check: str | None = None
    code: ReasonCode | None = None

    @property
    def ok(self) -> bool:
        return self.status == "added"


@dataclass
class BatchReport:
    """What a batch job did, item by item.

    Attributes:
        done: items processed (crops written, samples added or embedded).
        unchanged: items already up to date (incremental runs).
        skipped: ``(item, reason)`` left out on purpose (no face, too small, hidden...).
        failed: ``(item, reason)`` that could not be processed (unreadable...).
        removed: items that disappeared since the last run (reported; see ``--prune``).
        refused: of ``failed``, the items the enrollment gate refused (``check_failed``:
            they look like someone else; ``--force`` adds them).
        warnings: messages that did not stop an item.
        seconds: wall time of the job.
    """

    done: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.unchanged) + len(self.skipped) + len(self.failed)

    def merge(self, other: BatchReport) -> BatchReport:
        for f in ("done", "unchanged", "skipped", "failed", "removed", "refused", "warnings"):
            getattr(self, f).extend(getattr(other, f))
        self.seconds += other.seconds
        return self

    def summary(self, what: str = "items", details: bool = False) -> str:
        """Counts on one line, then reasons grouped (or every item with ``details``)."""
        head = (f"{what}: {len(self.done)} done, {len(self.unchanged)} unchanged, "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed")
        if self.removed:
            head += f", {len(self.removed)} removed"
        lines = [head + f" ({self.seconds:.1f} s)"]
        for label, items in (("skipped", self.skipped), ("failed", self.failed)):
            if not items:
                continue
            if details:
                lines += [f"  {label}: {item}: {reason}" for item, reason in items]
            else:
                groups: dict[str, int] = {}
                for _, reason in items:
                    groups[_reason_kind(reason)] = groups.get(_reason_kind(reason), 0) + 1
                lines += [f"  {label} {n}: {kind}" for kind, n in sorted(groups.items(), key=lambda kv: -kv[1])]
        if self.removed:
            shown = self.removed if details else self.removed[:5]
            lines += [f"  gone: {r}" for r in shown]
            if len(shown) < len(self.removed):
                lines.append(f"  ... and {len(self.removed) - len(shown)} more (--details lists all)")
        if details:
            lines += [f"  done: {d}" for d in self.done]
        lines += [f"  warning: {w}" for w in (self.warnings if details else self.warnings[:20])]
        if not details and len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings (--details lists all)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done, "unchanged": self.unchanged,
            "skipped": [{"item": i, "reason": r} for i, r in self.skipped],
            "failed": [{"item": i, "reason": r} for i, r in self.failed],
            "removed": self.removed, "warnings": self.warnings, "seconds": round(self.seconds, 3),
        }


_THREAD_LOCK = threading.RLock()


def _strip_name(message: str, name: str) -> str:
    """``"photo.jpg: not a readable image"`` -> ``"not a readable image"`` (the item is listed anyway)."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def _reason_kind(reason: str) -> str:
    """The reason without its measured numbers, for grouping (``face too small``)."""
    return reason.split(":")[0].split("(")[0].strip()


def _progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
              unit: str = "it") -> tqdm:
    """A progress bar on a terminal's stderr (off otherwise).

    tqdm's default lock is a semaphore shared with forked children: a child killed while
    holding it (the crash tests kill writers at random moments) would leave every later
    bar of this process waiting forever. A thread lock is all these bars need.
    """
    if getattr(tqdm, "_lock", None) is not _THREAD_LOCK:
        tqdm.set_lock(_THREAD_LOCK)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, leave=False)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- work shared by every executor
