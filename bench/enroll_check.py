"""How well ``facerec enroll check`` and the enrollment gate find wrong photos, on LFW.

The maintainers' acceptance setup on the photos in ``../shared/data/lfw``: ``--people``
people with three photos each (the first three that pass the quality floor), and one in
five of them also given a photo of someone else (half a spare photo of another enrolled
person, half a photo of a stranger). Enrolled with ``--force`` in a shuffled order, then
``facerec enroll check --json`` is run as a command; printed: the share of wrong photos
caught and of good photos flagged. Then the same photos are enrolled without ``--force`` in
a fresh gallery: the share of good photos refused (the gate) and of wrong ones refused.

Run ``python bench/enroll_check.py`` (about two minutes on two cores; ``--seed`` draws
other people).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/enroll_check.py``
    try:
        import facerec  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import random
import subprocess
import tempfile
from typing import Sequence

from facerec.config import load_config
from facerec.gallery.service import GalleryService

SHARED = Path(__file__).resolve().parents[2] / "shared"


def draw(people: int, seed: int) -> list[tuple[str, Path, bool]]:
    """``(name, photo, wrong)`` in a shuffled order; each person's photos come best-first."""
    root = SHARED / "data" / "lfw"
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    rng = random.Random(seed)
    many = rng.sample([d for d in dirs if len(list(d.iterdir())) >= 4], people)
    single = [d for d in dirs if len(list(d.iterdir())) == 1]
    victims = rng.sample(many, people // 5)
    donors = [d for d in many if d not in victims]
    strangers = rng.sample(single, len(victims))
    wrong: list[tuple[str, Path, bool]] = []
    for n, v in enumerate(victims):  # a donor's last photo is never one of their own samples
        photo = sorted(rng.choice(donors).iterdir())[-1] if n % 2 == 0 else sorted(strangers[n].iterdir())[0]
        wrong.append((v.name, photo, True))
    given = {p for _, p, _ in wrong}
    items = [(d.name, p, False) for d in many for p in sorted(d.iterdir()) if p not in given] + wrong
    rng.shuffle(items)
    return items


def enroll(root: Path, items: list[tuple[str, Path, bool]], force: bool) -> tuple[dict[str, bool], int, int, int, int]:
    """Enroll up to three good photos per person plus the wrong ones; returns the path -> wrong
    map of what was added and (good refused, good tried, wrong refused, wrong tried)."""
    cfg = load_config(None, {"gallery.data_dir": str(root)})
    added: dict[str, bool] = {}
    have: dict[str, int] = {}
    gr = gt = wr = wt = 0
    with GalleryService(cfg) as s:
        for name, photo, wrong in items:
            if not wrong and have.get(name, 0) >= 3:
                continue
            r = s.enroll_paths(name, [photo], progress=False, refuse_conflicts=not force)
            refused = any("--force" in why for _, why in r.failed)
            if r.done:
                added[str(photo)] = wrong
                have[name] = have.get(name, 0) + (not wrong)
            if wrong:
                wt, wr = wt + 1, wr + refused
            elif r.done or refused:  # photos under the quality floor are neither
                gt, gr = gt + 1, gr + refused
    return added, gr, gt, wr, wt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--people", type=int, default=100, help="people enrolled (default 100)")
    p.add_argument("--seed", type=int, default=0, help="which people and photos")
    args = p.parse_args(argv)
    os.environ.setdefault("FACEREC_WEIGHTS", str(SHARED / "models"))
    items = draw(args.people, args.seed)
    with tempfile.TemporaryDirectory(prefix="facerec-bench-check-") as tmp:
        added, *_ = enroll(Path(tmp) / "forced", items, force=True)
        out = subprocess.run([sys.executable, "-m", "facerec", "enroll", "check", "--json",
                              "--data-dir", str(Path(tmp) / "forced")], capture_output=True, text=True, check=True)
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        flagged = {f["source_path"] for f in doc["flagged"]}
        reasons: dict[str, int] = {}
        for f in doc["flagged"]:
            if not added.get(f["source_path"], True):
                reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        wrong = [q for q, w in added.items() if w]
        good = [q for q, w in added.items() if not w]
        caught = sum(q in flagged for q in wrong)
        false = sum(q in flagged for q in good)
        print(f"enroll check --json on {doc['people']} people, {doc['samples']} samples (--force, seed {args.seed}): "
              f"caught {caught}/{len(wrong)} wrong photos ({caught / max(1, len(wrong)):.1%}), "
              f"flagged {false}/{len(good)} good ones ({false / max(1, len(good)):.1%}; {reasons or 'none'})")
        _, gr, gt, wr, wt = enroll(Path(tmp) / "gated", items, force=False)
        print(f"enroll add without --force: refused {gr}/{gt} good photos ({gr / max(1, gt):.1%}) "
              f"and {wr}/{wt} wrong ones ({wr / max(1, wt):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
