"""Measuring facerec: verification and identification metrics, LFW-format pair lists,
open-set identification on photo folders, leave-one-out gallery checks, detector
recall/precision, threshold calibration and OpenCV-drawn plots.

The command-line front end is :mod:`facerec.cli.eval_cmd` (``facerec eval ...`` and
``facerec calibrate``). Metrics live in :mod:`facerec.evaluate.metrics` and need nothing
but NumPy; the other modules import the models only when they run them.
"""

from __future__ import annotations
