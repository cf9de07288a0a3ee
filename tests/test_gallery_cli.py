"""The gallery subcommands in-process: enroll, identify, embed, cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.cli import run
from conftest import MODEL_FLAGS



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_enroll_manage_identify(tmp_path: Path, capsys, photo):
    d = ["--data-dir", str(tmp_path / "g"), *MODEL_FLAGS]
    fr = photo("face_recognition_examples")
    # listing a gallery that is not there (a typo in --data-dir) creates nothing
    code, out, err = cli(capsys, "enroll", "list", *d, "--json")
    assert code == 2 and "no gallery" in err and out == ""
    assert not (tmp_path / "g").exists()

    code, out, err = cli(capsys, "enroll", "add", "Barack Obama", str(fr / "obama" / "obama.jpg"),
                         str(fr / "obama" / "obama2.jpg"), "--no-progress", *d)
    assert code == 0 and "2 added" in out, err
    code, out, _ = cli(capsys, "enroll", "add", "biden", str(fr / "biden"), "--no-progress", *d)
    assert code == 0 and "2 added" in out
    code, out, err = cli(capsys, "enroll", "add", "kit", str(fr / "kit_harington" / "john1.jpeg"),
                         str(tmp_path / "missing.jpg"), "--no-progress", *d)
    assert code == 0 and "1 added" in out and "missing.jpg" in err
    code, out, _ = cli(capsys, "enroll", "list", *d, "--json")
    assert {p["name"]: p["samples"] for p in json_lines(out)[0]} == {"Barack Obama": 2, "biden": 2, "kit": 1}
    # enrolled crops are already in step: embed finds nothing to do
    code, out, _ = cli(capsys, "embed", "--no-progress", *d)
    assert code == 0 and "0 done, 5 unchanged" in out and "embedded 0 face(s)" in out

    # nothing usable: exit 1; a bad name: exit 2 with one message
    blank = tmp_path / "blank.jpg"
    blank.write_bytes(b"not a jpeg")
    assert cli(capsys, "enroll", "add", "x", str(blank), "--no-progress", *d)[0] == 1
    code, _, err = cli(capsys, "enroll", "add", "../x", str(fr / "biden" / "biden.jpg"), *d)
    assert code == 2 and "facerec: error:" in err and "Traceback" not in err

    code, out, _ = cli(capsys, "identify", str(fr / "_multi" / "obama_and_biden.jpg"), str(fr / "biden" / "biden.jpg"),
                       "--json", "--annotate", str(tmp_path / "ann"), *d)
    assert code == 0
    lines = json_lines(out)
    assert [Path(x["image"]).name for x in lines] == ["obama_and_biden.jpg", "biden.jpg"]
    names = sorted(f["name"] or "" for f in lines[0]["faces"])
    assert "Barack Obama" in names and "biden" in names
    for f in lines[0]["faces"]:
        assert set(f) == {"box", "score", "name", "similarity", "top"} and len(f["box"]) == 4
        sims = [s for _, s in f["top"]]
        assert sims == sorted(sims, reverse=True) and f["similarity"] == sims[0]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["biden.jpg", "obama_and_biden.jpg"]
    code, out, _ = cli(capsys, "identify", str(fr / "biden" / "biden.jpg"), *d)
    assert code == 0 and "biden" in out and "top:" in out

    assert cli(capsys, "enroll", "rename", "kit", "Kit Harington", *d)[0] == 0
    assert cli(capsys, "enroll", "rename", "biden", "Kit Harington", *d)[0] == 2
    code, out, _ = cli(capsys, "enroll", "samples", "biden", "--json", *d)
    sid = json_lines(out)[0][0]["id"]
    assert cli(capsys, "enroll", "move", str(sid), "Kit Harington", *d)[0] == 0
    assert cli(capsys, "enroll", "merge", "Kit Harington", "biden", *d)[0] == 0
    code, out, _ = cli(capsys, "enroll", "list", *d, "--json")
    assert {p["name"]: p["samples"] for p in json_lines(out)[0]} == {"Barack Obama": 2, "biden": 3}

    assert cli(capsys, "enroll", "export", str(tmp_path / "g.zip"), *d)[0] == 0
    code, out, _ = cli(capsys, "enroll", "delete", "biden", *d)
    assert code == 0 and "3 sample(s)" in out
    assert not (tmp_path / "g" / "preprocessed" / "biden").exists()
    assert cli(capsys, "enroll", "delete", "biden", *d)[0] == 2
    code, out, _ = cli(capsys, "enroll", "import", str(tmp_path / "g.zip"), *d)
    assert code == 0 and "imported 3" in out
    assert cli(capsys, "enroll", "clear", *d)[0] == 2  # needs --yes
    assert cli(capsys, "enroll", "clear", "--yes", *d)[0] == 0
    code, out, _ = cli(capsys, "enroll", "list", *d, "--json")
    assert json_lines(out) == [[]]
    assert not any(p.suffix == ".png" for p in (tmp_path / "g").rglob("*"))


def test_identify_without_gallery(tmp_path: Path, capsys, photo):
    code, _, err = cli(capsys, "identify", str(photo("face_recognition_examples/biden/biden.jpg")),
                       "--data-dir", str(tmp_path / "none"), *MODEL_FLAGS)
    assert code == 2 and "no gallery" in err
    assert not (tmp_path / "none").exists()


def test_align_embed_cluster(tmp_path: Path, capsys, photo):
    data = tmp_path / "data"
    for person in ("John_Salley", "John_Simm"):
        shutil.copytree(photo(f"dlib_johns/{person}"), data / "raw" / person)
    d = ["--data-dir", str(data), *MODEL_FLAGS]
    code, out, _ = cli(capsys, "align", "--no-progress", *d)
    assert code == 0 and "22 done" in out
    code, out, _ = cli(capsys, "embed", "--no-progress", *d)
    assert code == 0 and "embedded 22 face(s)" in out and "faces/s" in out
    code, out, _ = cli(capsys, "embed", "--no-progress", *d)
    assert "embedded 0 face(s)" in out and "22 unchanged" in out
    feats = tmp_path / "feat.list"
    assert cli(capsys, "embed", "--no-progress", "--export-feat-list", str(feats), *d)[0] == 0
    assert len(feats.read_text().splitlines()) == 22
    code, out, _ = cli(capsys, "identify", str(photo("dlib_johns/John_Simm")), "--json", *d)
    named = [f["name"] for line in json_lines(out) for f in line["faces"]]
    assert named.count("John_Simm") >= 10

    # cluster the same photos without their labels
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for person in ("John_Salley", "John_Simm"):
        for f in sorted(photo(f"dlib_johns/{person}").iterdir())[:5]:
            shutil.copy(f, mixed / f"{person}__{f.name}")
    code, out, _ = cli(capsys, "cluster", str(mixed), "--json", *MODEL_FLAGS)
    assert code == 0
    rep = json_lines(out)[0]
    groups = [{Path(f["image"]).name.split("__")[0] for f in g} for g in rep["groups"]]
    assert len(rep["groups"]) >= 2
    assert all(len(g) == 1 for g in groups[:2])  # the two biggest groups are pure
    assert groups[0] != groups[1]


def test_enroll_conflicts_merge_check_and_refusals(tmp_path: Path, capsys, photo):
    d = ["--data-dir", str(tmp_path / "g"), *MODEL_FLAGS]
    fr = photo("face_recognition_examples")
    biden2 = str(fr / "biden" / "biden2.jpg")
    # an empty gallery: identify says what to do instead of "unknown" for everyone
    assert cli(capsys, "enroll", "clear", "--yes", *d)[0] == 0
    # in the words of the daemon and the page (facerec.gallery.readiness), less "picked up without a restart"
    code, out, err = cli(capsys, "identify", biden2, *d)
    assert code == 2 and f"the gallery at {tmp_path / 'g'} is empty: every face is unknown" in err, err
    assert "enroll add" in err and "restart" not in err and out == ""

    assert cli(capsys, "enroll", "add", "biden", str(fr / "biden"), "--no-progress", *d)[0] == 0
    assert cli(capsys, "enroll", "add", "obama", str(fr / "obama" / "obama.jpg"), "--no-progress", *d)[0] == 0
    # vectors of another embedder (torch made them, onnx runs): the same words again
    code, out, err = cli(capsys, "identify", biden2, "--engine", "onnx", *d)
    assert code == 2 and "has 2 people but no vectors for the running embedder" in err and out == "", err
    assert "run facerec embed with the same --embedder/--engine as this command" in err and "daemon" not in err
    # a photo already enrolled as someone else: refused, nothing added, exit 1
    code, out, err = cli(capsys, "enroll", "add", "Kit_Harington", biden2, "--no-progress", *d)
    assert code == 1 and "already enrolled for 'biden'" in err and "--force" in err, err
    code, out, _ = cli(capsys, "enroll", "list", "--json", *d)
    assert {p["name"] for p in json_lines(out)[0]} == {"biden", "obama"}
    code, out, err = cli(capsys, "enroll", "add", "Kit_Harington", biden2, "--force", "--no-progress", *d)
    assert code == 0 and "1 added" in out, err

    # an empty folder: nothing added, exit 1, the folder named; identify the same
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    code, out, err = cli(capsys, "enroll", "add", "X", str(empty), "--no-progress", *d)
    assert code == 1 and f"no images found in the folder {empty}" in err and "nothing added for X" in err, err
    assert "1 failed" in out and "failed " + str(empty) in err
    code, out, err = cli(capsys, "identify", str(empty), *d)
    assert code == 1 and str(empty) in err and "no images found" in err, err
    # a photo without a usable face is 'failed' in the summary and in its own line
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((300, 300, 3), 127, np.uint8))
    code, out, err = cli(capsys, "enroll", "add", "Rex", str(grey), "--no-progress", *d)
    assert code == 1 and "0 added" in out and "1 failed" in out and f"failed {grey}" in err, (out, err)
    assert "no face found" in err and "skipped" not in err

    # merging clearly different people needs --force
    code, _, err = cli(capsys, "enroll", "merge", "obama", "biden", *d)
    assert code == 2 and "different people" in err and "--force" in err
    code, out, _ = cli(capsys, "enroll", "list", "--json", *d)
    assert "obama" in {p["name"] for p in json_lines(out)[0]}
    assert cli(capsys, "enroll", "merge", "Kit_Harington", "biden", *d)[0] == 0  # the same face: no question
    assert cli(capsys, "enroll", "merge", "obama", "biden", "--force", *d)[0] == 0

    # --annotate naming an existing file, export into a missing folder: clear errors
    existing = tmp_path / "taken.jpg"
    existing.write_bytes(b"x")
    code, _, err = cli(capsys, "identify", biden2, "--annotate", str(existing), *d)
    assert code == 2 and "is a file" in err and "Traceback" not in err
    code, _, err = cli(capsys, "enroll", "export", str(tmp_path / "nope" / "dir" / "g.zip"), *d)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "nope").exists()


def test_enroll_subcommands_have_descriptions(capsys):
    for action in ("add", "list", "samples", "rename", "merge", "move", "delete", "clear", "export", "import"):
        with pytest.raises(SystemExit):
            run(["enroll", action, "--help"])
        out = capsys.readouterr().out
        usage, _, rest = out.partition("\n\n")
        assert rest.split("\n\n")[0].strip() and not rest.startswith(("positional", "options")), (action, out)
