"""The README's Run commands, in order, in a fresh copy of the repository.

A user's first hour: weights fetched by one command (here from a local HTTP mirror of
../shared/models, as ``FACEREC_WEIGHTS_MIRROR`` allows), photos in
``data_recognition/raw/<Person>/``, align, embed, then the live loop on a clip. Only the
webcam line is left out (no camera and no display here). Every command must succeed and
write nothing into the repository root.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_commands(readme: str) -> list[str]:
    """The lines of the ``<!-- ci:run -->`` bash block, comments stripped."""
    block = re.search(r"<!-- ci:run -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README: no <!-- ci:run --> bash block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def _fresh_copy(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def test_readme_run_commands_in_a_fresh_copy(tmp_path, models_dir, data_dir, progress) -> None:
    clone = tmp_path / "facerec"
    _fresh_copy(clone)
    fr = data_dir / "identities" / "face_recognition_examples"
    for person, photos in {"Barack_Obama": ("obama/obama.jpg", "obama/obama2.jpg"),
                           "Joe_Biden": ("biden/biden.jpg", "biden/biden2.jpg")}.items():
        raw = clone / "data_recognition" / "raw" / person
        raw.mkdir(parents=True)
        for p in photos:
            shutil.copy(fr / p, raw)
    shutil.copy(data_dir / "video" / "lp_driving_d0.mp4", clone / "clip.mp4")
    before = {p.name for p in clone.iterdir()}

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(models_dir))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("FACEREC_WEIGHTS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone), FACEREC_WEIGHTS_MIRROR=f"http://127.0.0.1:{server.server_address[1]}",
               OMP_NUM_THREADS="1")
    bindir = str(Path(sys.executable).parent)
    try:
        commands = run_commands((clone / "README.md").read_text())
        assert len(commands) >= 5
        for cmd in commands:
            if "--source 0" in cmd:
                continue  # a webcam and a window
            progress(f"README: {cmd[:90]}")
            line = cmd.replace(".venv/bin/", bindir + "/")
            proc = subprocess.run(line, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in (clone / "weights").iterdir() if p.suffix in (".pt", ".onnx"))
    assert (clone / "data_recognition" / "gallery.db").is_file()
    assert (clone / "out" / "tracks.jsonl").read_text().count("\n") == 78  # every frame of the clip
    assert (clone / "out" / "clip.mp4").stat().st_size > 0
    new = {p.name for p in clone.iterdir()} - before
    assert new <= {"out"}, f"written into the repository root: {new}"
