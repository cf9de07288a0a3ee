"""CPU-burning processes for the contention benchmarks (``bench/live.py --contention``,
``bench/contention.py``): other programs using every core, started and stopped by the bench."""

from __future__ import annotations

import subprocess
import sys
import time

#: A pure-Python busy loop that ends on its own after ``argv[1]`` seconds, should the bench die.
BURNER = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


class Burners:
    """``n`` CPU-burning processes for the duration of a ``with`` block (each also stops
    on its own after ``limit_s``, should this process die first)."""

    def __init__(self, n: int, limit_s: float) -> None:
        self.n, self.limit_s = n, limit_s
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Burners:
        self.procs = [subprocess.Popen([sys.executable, "-c", BURNER, str(self.limit_s)]) for _ in range(self.n)]
        time.sleep(1.0)  # let the scheduler see them
        return self

    def alive(self) -> int:
        """How many burners still run (all of them, unless ``limit_s`` was too short)."""
        return sum(p.poll() is None for p in self.procs)

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
