"""facerec: real-time face recognition on an ordinary CPU.

Data flows through small typed containers (see :mod:`facerec.types`)::

    frame -> Detections -> AlignedFaces -> Embeddings -> Matches -> tracks -> overlay + events
"""

from __future__ import annotations

__version__ = "0.1.0"
