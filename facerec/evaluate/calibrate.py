"""Choosing ``recognition.threshold`` for a target false-accept rate, and writing it.

The operating point is the lowest threshold whose false-accept rate on the given data does
not exceed the target (so as many genuine comparisons as possible are accepted under that
limit). The value written lies in the middle of the gap between the lowest accepted and
the highest rejected score, as a short decimal (see :func:`gap_threshold`), so it makes
exactly the decisions of that point with the most margin on both sides.

Two sources of comparisons:

* a pair list (LFW format): one score per pair, as ``facerec eval verify`` computes it;
* the user's gallery: every sample against its own person's template without itself
  (genuine) and against every other person's template (impostor), which is how the live
  loop compares a face with the gallery (see :mod:`facerec.evaluate.gallery_eval`).

The config file is edited textually (only the ``threshold:`` line of the ``recognition:``
section changes, so comments and layout survive), validated with
:func:`~facerec.config.load_config`, backed up and replaced atomically.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.config import load_config
from facerec.errors import ConfigError, FacerecError
from facerec.evaluate.gallery_eval import loo_scores
from facerec.evaluate.metrics import check_scores, roc_curve, tar_at_far


class CalibrationError(FacerecError):
    """The data or the target cannot give a threshold."""


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen for a target FAR and what it achieves on the data.

    Attributes:
        target_far: the FAR asked for.
        threshold: the value written (mid-gap, usually 4 decimals).
        far, tar: rates achieved on the data at ``threshold``.
        genuine, impostor: numbers of comparisons of each kind.
        resolvable: False when there are fewer than ``1 / target_far`` impostor
            comparisons, so the data cannot show the target FAR (the threshold then only
            guarantees that no impostor comparison of the data is accepted).
    """

    target_far: float
    threshold: float
    far: float
    tar: float
    genuine: int
    impostor: int
    resolvable: bool


def check_far(far: float) -> float:
    """Validate a target FAR.

    Raises:
        CalibrationError: not a number strictly between 0 and 1.
    """
    try:
        f = float(far)
    except (TypeError, ValueError):
        raise CalibrationError(f"target FAR must be a number between 0 and 1 (e.g. 1e-3), got {far!r}") from None
    if not (0.0 < f < 1.0) or not math.isfinite(f):
        raise CalibrationError(f"target FAR must be between 0 and 1, exclusive (e.g. 1e-3), got {far}")
    return f


def gap_threshold(rejected: float, accepted: float | None, decimals: int = 4) -> float:
    """A short decimal threshold between the highest rejected and the lowest accepted score.

    The middle of the gap, rounded to ``decimals`` places, or to more places when the
    gap is too narrow for that; the decisions on the data are exactly those of the
    chosen ROC point, with the largest margin on both sides.

    Args:
        rejected: the highest score that must be rejected.
        accepted: the lowest score that must be accepted (``None``: accept nothing).
    """
    if accepted is None:
        q = 10.0**decimals
        return (math.floor(rejected * q) + 1) / q
    mid = (rejected + accepted) / 2.0
    for d in range(decimals, 13):
        cand = round(mid, d)
        if rejected < cand <= accepted:
            return cand
    return float(accepted)


def calibrate_scores(scores, labels, far: float, decimals: int = 4) -> Calibration:
    """The threshold for ``far`` on scored comparisons.

    Raises:
        CalibrationError: bad target, bad scores, a class missing, or no threshold in
            [-1, 1] reaches the target.
    """
    target = check_far(far)
    try:
        s, y = check_scores(scores, labels)
        roc = roc_curve(s, y)
    except ValueError as e:
        raise CalibrationError(f"cannot calibrate: {e}") from None
    point = tar_at_far(roc, target)
    i = int(np.flatnonzero(roc.thresholds == point.threshold)[0])
    thr = gap_threshold(roc.thresholds[i + 1], roc.thresholds[i] if i else None, decimals)
    if thr > 1.0:
        raise CalibrationError(
            f"no cosine threshold <= 1 keeps the FAR at or below {target:g} on this data "
            "(an impostor comparison scores as high as any genuine one)"
        )
    acc = s >= thr
    return Calibration(
        target_far=target,
        threshold=thr,
        far=float(acc[~y].mean()),
        tar=float(acc[y].mean()),
        genuine=int(y.sum()),
        impostor=int((~y).sum()),
        resolvable=point.resolvable,
    )


def gallery_comparisons(vectors: np.ndarray, names: list[str], quality: np.ndarray | None = None,
                        template: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out genuine and all impostor scores of a gallery, as ``(scores, labels)``."""
    if len(set(names)) < 2:
        raise CalibrationError("calibrating on a gallery needs at least two enrolled people")
    _, sc, own = loo_scores(vectors, names, quality, template)
    mask = np.zeros(sc.shape, bool)
    mask[np.arange(len(own)), own] = True
    gen = sc[mask]
    gen = gen[np.isfinite(gen)]  # people with one sample have no leave-one-out score
    if gen.size == 0:
        raise CalibrationError("calibrating on a gallery needs a person with at least two samples")
    imp = sc[~mask]
    return np.r_[gen, imp], np.r_[np.ones(gen.size, bool), np.zeros(imp.size, bool)]


# --------------------------------------------------------------------------------------
# writing the config file

_SECTION = re.compile(r"^recognition\s*:\s*(#.*)?$")
_TOP_LEVEL = re.compile(r"^[^\s#]")
_KEY = re.compile(r"^(?P<indent>[ \t]+)threshold\s*:(?P<sp>[ \t]*)(?P<value>[^#\n]*?)(?P<rest>[ \t]*(#.*)?)$")
_ANY_KEY = re.compile(r"^(?P<indent>[ \t]+)[A-Za-z_]")


def format_threshold(value: float) -> str:
    """At least four decimals, more only when the value needs them (``0.4123``, ``0.400005``)."""
    text = f"{value:.12f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(4, '0')}"


def set_threshold_text(text: str, value: float) -> tuple[str, str | None]:
    """Return ``text`` with ``recognition.threshold`` set to ``value``, and the old value.

    Only that one line changes (or one line is added when the key or the section is
    missing); every comment and blank line is kept.

    Raises:
        CalibrationError: the ``recognition`` section is written in a form this edit does
            not handle (e.g. flow style ``recognition: {...}``).
    """
    new_val = format_threshold(value)
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if _SECTION.match(ln.rstrip("\r\n"))), None)
    if start is None:
        if any(re.match(r"^recognition\s*:", ln) for ln in lines):
            raise CalibrationError("the recognition section is not in block style; set recognition.threshold by hand")
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + f"{sep}recognition:\n  threshold: {new_val}\n", None
    end = next((i for i in range(start + 1, len(lines)) if _TOP_LEVEL.match(lines[i])), len(lines))
    indent = None
    for i in range(start + 1, end):
        body = lines[i].rstrip("\r\n")
        m = _KEY.match(body)
        if m and (indent is None or m["indent"] == indent):
            eol = lines[i][len(body):]
            old = m["value"].strip()
            lines[i] = f"{m['indent']}threshold:{m['sp'] or ' '}{new_val}{m['rest']}{eol}"
            return "".join(lines), old
        k = _ANY_KEY.match(body)
        if k and indent is None:
            indent = k["indent"]
    eol = "\r\n" if lines[start].endswith("\r\n") else "\n"
    if not lines[start].endswith(("\n", "\r")):
        lines[start] += eol
    lines.insert(start + 1, f"{indent or '  '}threshold: {new_val}{eol}")
    return "".join(lines), None


@dataclass(frozen=True)
class ConfigChange:
    """What :func:`write_threshold` did."""

    path: Path
    old: str | None
    new: str
    backup: Path | None
    written: bool


def _backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cand = path.with_name(f"{path.name}.bak-{stamp}")
    k = 1
    while cand.exists():
        cand = path.with_name(f"{path.name}.bak-{stamp}-{k}")
        k += 1
    return cand


def write_threshold(path: str | os.PathLike, value: float, dry_run: bool = False) -> ConfigChange:
    """Set ``recognition.threshold`` in a config file, keeping a timestamped backup.

    The new text is validated with :func:`~facerec.config.load_config` before it replaces
    the file (atomically, through a temporary file in the same folder). A missing file is
    created with just that key.

    Raises:
        CalibrationError: the edit cannot be made or the result does not validate.
        ConfigError: the existing file is unreadable.
    """
    p = Path(path)
    if not -1.0 <= value <= 1.0:
        raise CalibrationError(f"threshold must be a cosine similarity in [-1, 1], got {value}")
    try:
        text = p.read_text(encoding="utf-8") if p.exists() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} cannot be read: {e}") from None
    new_text, old = set_threshold_text(text, value)
    new = format_threshold(value)
    if dry_run:
        return ConfigChange(p, old, new, None, False)
    folder = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new_text)
        try:
            cfg = load_config(tmp)
        except ConfigError as e:
            raise CalibrationError(f"the edited config would not be valid, {p} left unchanged:\n{e}") from None
        if cfg.recognition.threshold is None or abs(cfg.recognition.threshold - value) > 1e-9:
            raise CalibrationError(
                f"editing {p} did not set recognition.threshold (read back {cfg.recognition.threshold}); "
                "set it by hand"
            )
        backup = None
        if p.exists():
            backup = _backup_path(p)
            shutil.copy2(p, backup)
            shutil.copymode(p, tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ConfigChange(p, old, new, backup, True)
