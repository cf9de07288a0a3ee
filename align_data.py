"""Align a folder of photos for the gallery (the seed's entry point).

    python align_data.py --folderdataset_dir data_recognition/raw --save_path data_recognition/preprocessed

turns ``RAW/<Person>/*`` photos into ``OUT/<Person>/<stem>.png`` aligned 112x112 crops; it is
``facerec align`` with the same options (``--weights``, ``--conf_thres``, ``--iou_thres``,
``--cpu-mode`` and every common option such as ``--detector`` or ``--data-dir``).
"""

from __future__ import annotations

import sys

from facerec.cli import run

if __name__ == "__main__":
    sys.exit(run(["align", *sys.argv[1:]]))
