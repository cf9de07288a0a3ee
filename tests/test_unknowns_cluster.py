"""Density clustering of unknown faces (facerec.unknowns) and ``facerec eval cluster``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerec.cli import run
from facerec.evaluate.cluster_eval import bcubed
from facerec.unknowns import NOISE, ClusterParams, DensityClusters, cluster_density
from conftest import MODEL_FLAGS

MODELS = (*MODEL_FLAGS, "--engine", "torch", "--threads", "1")


def unit(*rows) -> np.ndarray:
    v = np.asarray(rows, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def blobs(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three tight groups of 4, 3 and 1 faces in 16-d, far apart."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16, dtype=np.float32)[:3]
    rows, names = [], []
    for c, (centre, n) in enumerate(zip(centres, (4, 3, 1))):
        for _ in range(n):
            rows.append(centre + rng.normal(0, 0.05, 16))
            names.append(f"p{c}")
    return unit(*rows), names


def test_empty_input():
    assert cluster_density(np.zeros((0, 8), np.float32), ClusterParams(2, 0.5)).shape == (0,)
    dc = DensityClusters(ClusterParams(2, 0.5))
    assert dc.clusters() == {} and len(dc) == 0
    assert bcubed(np.zeros(0, np.int64), []) .f1 == 1.0


def test_bad_params_and_inputs():
    with pytest.raises(ValueError, match="min_faces"):
        ClusterParams(0, 0.5)
    with pytest.raises(ValueError, match="max_distance"):
        ClusterParams(2, 3.0)
    dc = DensityClusters(ClusterParams(2, 0.5))
    dc.add(1, unit([1, 0, 0])[0])
    with pytest.raises(ValueError, match="already"):
        dc.add(1, unit([1, 0, 0])[0])
    with pytest.raises(ValueError, match="length 2"):
        dc.add(2, unit([1, 0])[0])
    with pytest.raises(KeyError):
        dc.label(99)


def test_single_face_is_noise_unless_min_faces_is_one():
    v = unit([1, 0, 0])
    assert cluster_density(v, ClusterParams(2, 0.5)).tolist() == [NOISE]
    assert cluster_density(v, ClusterParams(1, 0.5)).tolist() == [0]


def test_groups_noise_and_ids():
    v, names = blobs()
    lab = cluster_density(v, ClusterParams(2, 0.3))
    # two groups named by their oldest core row; the lone face is noise
    assert lab.tolist() == [0, 0, 0, 0, 4, 4, 4, NOISE]
    b = bcubed(lab, names)
    assert b.precision == 1.0 and b.recall == 1.0
    # min_faces above a group's size leaves it as noise
    assert cluster_density(v, ClusterParams(4, 0.3)).tolist() == [0, 0, 0, 0] + [NOISE] * 4


def test_border_face_joins_its_nearest_core_whatever_the_order():
    # a - b are close (cores with min_faces 2); c is within reach of b only and is not core
    # itself at min_faces 3; the result must not depend on the arrival order
    a, b, c, d = unit([1, 0, 0], [0.9, 0.44, 0], [0.6, 0.8, 0], [0.95, 0.2, 0.2])
    v = np.stack([a, b, c, d])
    p = ClusterParams(3, 0.2)
    ref = DensityClusters(p)
    ref.add_many(range(4), v)
    expected = ref.labels()
    rng = np.random.default_rng(1)
    for _ in range(10):
        order = rng.permutation(4)
        dc = DensityClusters(p)
        dc.add_many(order.tolist(), v[order])
        assert dc.labels() == expected


def test_incremental_equals_batch_and_remove_regroups():
    v, names = blobs(3)
    p = ClusterParams(2, 0.3)
    dc = DensityClusters(p)
    for i, row in enumerate(v):
        dc.add(i, row)
    assert [dc.label(i) for i in range(len(v))] == cluster_density(v, p).tolist()
    # naming group 0 removes its sightings; group 1 keeps its id
    dc.remove([0, 1, 2, 3, 42])
    assert dc.clusters() == {4: [4, 5, 6]}
    # a removed core can leave its neighbour as noise
    dc.remove([5, 6])
    assert dc.labels() == {4: NOISE, 7: NOISE}


def test_bridge_merges_two_groups_under_the_older_id():
    a, b, c = unit([1, 0], [0.0, 1], [0.7, 0.7])
    dc = DensityClusters(ClusterParams(1, 0.35))
    dc.add(5, a)
    dc.add(9, b)
    assert dc.clusters() == {5: [5], 9: [9]}
    dc.add(12, c)  # within reach of both: one person
    assert dc.clusters() == {5: [5, 9, 12]}


def test_bcubed_hand_computed():
    # clusters {0,1,2} {3} and noise 4; truth a a b b b
    b = bcubed(np.array([0, 0, 0, 3, NOISE]), list("aabbb"))
    # precision: a:2/3,2/3  b:1/3  b:1  b:1 -> (2/3+2/3+1/3+1+1)/5
    assert b.precision == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    # recall: a:1,1  b:1/3,1/3,1/3
    assert b.recall == pytest.approx((1 + 1 + 1 / 3 * 3) / 5)
    with pytest.raises(ValueError):
        bcubed(np.array([0]), ["a", "b"])


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_eval_cluster_real_photos(data_dir, capsys):
    """Golden numbers: 9 photos of 5 people (one person has a single photo, left as noise)."""
    root = data_dir / "identities" / "facenet_pytorch_test_images"
    rc = run(["eval", "cluster", "--root", str(root), "--json", "--no-progress", *MODELS])
    out = capsys.readouterr().out
    assert rc == 0, out
    d = _last_json(out)
    assert {"bcubed_precision", "bcubed_recall", "bcubed_f1", "clusters"} <= d.keys()
    assert d["faces"] == 9 and d["people"] == 5 and d["min_faces"] == 2
    assert d["clusters"] == 4 and d["noise"] == 1
    assert d["bcubed_precision"] == pytest.approx(1.0) and d["bcubed_recall"] == pytest.approx(1.0)
    # a permissive distance fuses people: precision drops, recall stays
    rc = run(["eval", "cluster", "--root", str(root), "--json", "--no-progress", "--max-distance", "0.75", *MODELS])
    loose = _last_json(capsys.readouterr().out)
    assert loose["bcubed_precision"] < 0.9 and loose["bcubed_recall"] == pytest.approx(1.0)
    assert loose["clusters"] < 4


def test_eval_cluster_people_filters_and_errors(data_dir, tmp_path, capsys):
    root = data_dir / "identities" / "facenet_pytorch_test_images"
    rc = run(["eval", "cluster", "--root", str(root), "--min-photos", "2", "--max-people", "2", "--json",
              "--no-progress", *MODELS])
    d = _last_json(capsys.readouterr().out)
    assert rc == 0 and d["people"] == 2 and d["faces"] == 4 and d["people_left_out"] == 3
    (tmp_path / "empty").mkdir()
    assert run(["eval", "cluster", "--root", str(tmp_path / "empty"), *MODELS]) == 2
    assert "no <person> sub-folders" in capsys.readouterr().err
    assert run(["eval", "cluster", "--root", str(root), "--min-faces", "0", *MODELS]) == 2
    assert "min_faces" in capsys.readouterr().err
