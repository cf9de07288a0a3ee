"""The package type-checks: ``python -m mypy facerec`` reports zero errors.

The strictness is pyproject.toml's ``[tool.mypy]``: mypy's defaults plus
``check_untyped_defs``, the pydantic plugin, untyped third-party packages and torch as
``Any``. The cache lives in the ignored ``.mypy_cache`` of the checkout: about 10 s from
an empty cache on the 2 shared cores, 3 s when it is warm.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_reports_no_errors():
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "facerec", "--cache-dir", str(REPO / ".mypy_cache"), "--no-color-output",
         "--no-error-summary"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert "No module named mypy" not in out.stderr, "mypy is a dev dependency: pip install -e '.[dev]'"
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert out.returncode == 0 and not errors, (
        f"mypy found {len(errors)} error(s) in facerec/ (fix them; strictness in pyproject.toml [tool.mypy]):\n"
        + out.stdout + out.stderr)
