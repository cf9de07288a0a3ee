"""facerec: real-time face recognition on an ordinary CPU.

Data flows through small typed containers (see :mod:`facerec.types`)::

    frame -> Detections -> AlignedFaces -> Embeddings -> Matches -> tracks -> overlay + events

Importing the package first (``rec_cam.py``, ``align_data.py`` and ``python -m facerec``
all do) stops idle OpenMP threads from spin-waiting: that has to be in the environment
before PyTorch starts its thread pool, and on a CPU shared with other programs a
spinning pool costs more than it saves (see :mod:`facerec.runtime.base`).
"""

from __future__ import annotations

from facerec.runtime.base import no_spin_environment as _no_spin_environment

_no_spin_environment()  # before anything imports torch; a user's own setting wins

__version__ = "0.1.0"
