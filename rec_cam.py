#!/usr/bin/env python
"""Live face recognition: ``python rec_cam.py --source 0 --view-img``.

The seed-compatible entry point: the same program and options as ``facerec run``
(``--source``, ``--view-img``, ``--save-img [PATH]``, ``--events``, ``--tracks``, ``--stats``, ...).
"""

import sys

from facerec.cli.live_cmd import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
