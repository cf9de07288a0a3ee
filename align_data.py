"""Align a folder of photos for the gallery (the seed's entry point).

    python align_data.py --folderdataset_dir data_recognition/raw --save_path data_recognition/preprocessed

turns ``RAW/<Person>/*`` photos into ``OUT/<Person>/<stem>.png`` aligned 112x112 crops; it is
``facerec align`` with the same options (``--weights``, ``--conf_thres``, ``--iou_thres``,
``--cpu-mode`` and every common option such as ``--detector`` or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import sys

from facerec.cli import build_parser, run


def main(argv: list[str]) -> int:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subs.choices["align"].prog = "align_data.py"  # usage and errors name the script that was run
    return run(prog_args=parser.parse_args(["align", *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
