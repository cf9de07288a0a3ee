"""``facerec compare``: a folder of person folders, and the multi-face matrix order."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from facerec.cli import run
from conftest import MODEL_FLAGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_compare_dir_of_person_folders_says_it_does_not_recurse(capsys, photo) -> None:
    root = photo("face_recognition_examples")
    assert run(["compare", str(root), *MODEL_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "does not look into subfolders" in err and "facerec compare" in err and "no face found" not in err


def test_compare_matrix_faces_numbered_left_to_right(capsys, photo) -> None:
    """obama_and_biden.jpg has Biden on the left: biden2.jpg matches column B0 best."""
    multi = photo("face_recognition_examples/_multi")
    with open(multi / "labels.csv", newline="") as fh:
        order = {r["file"]: r["identities_left_to_right"].split(";") for r in csv.DictReader(fh)}
    for probe, who in (("biden/biden2.jpg", "biden"), ("obama/obama.jpg", "obama")):
        assert run(["compare", str(photo("face_recognition_examples/" + probe)), str(multi / "obama_and_biden.jpg"),
                    *MODEL_FLAGS]) == 0
        out = capsys.readouterr().out
        assert "left to right" in out
        best = re.search(r"^A0 .* best B(\d+): ([0-9.]+) same$", out, re.M)
        assert best, out
        assert int(best.group(1)) == order["obama_and_biden.jpg"].index(who), out


def test_compare_dir_of_photos_still_works(tmp_path: Path, capsys, photo) -> None:
    folder = photo("face_recognition_examples/biden")
    assert run(["compare", str(folder), *MODEL_FLAGS, "--output", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "m.csv")))
    assert rows[0][0] == "image" and len(rows) == 3
