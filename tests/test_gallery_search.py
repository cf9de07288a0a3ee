"""Gallery search: templates with known answers, thresholds, exact NumPy vs FAISS."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.errors import GalleryError
from facerec.gallery import search as search_mod
from facerec.gallery.search import NO_CANDIDATE, GalleryIndex
from facerec.align import align
from facerec.gallery.service import detect_faces
from facerec.imageio import list_images, read_image
from facerec.types import Embeddings


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


# Two people in 2-D. "A" has one sample on the x axis and one at 60 degrees; "B" sits at 90.
A1, A2, B1 = unit(1, 0), unit(0.5, np.sqrt(3) / 2), unit(0, 1)
NAMES = ["A", "A", "B"]
VECS = np.stack([A1, A2, B1])


@pytest.mark.parametrize("template", ["mean", "quality_mean", "max"])
def test_empty_gallery_every_face_unknown(template):
    idx = GalleryIndex([], np.zeros((0, 4), np.float32), template=template)
    assert len(idx) == 0 and idx.people == []
    m = idx.search(np.eye(4, dtype=np.float32)[:3], threshold=0.0)
    assert len(m) == 3
    assert all(x.name is None and x.top == [] and x.similarity == NO_CANDIDATE for x in m)
    assert len(idx.search(np.zeros((0, 4), np.float32), 0.3)) == 0


def test_mean_template():
    idx = GalleryIndex(NAMES, VECS, template="mean")
    # A's mean direction is 30 degrees; a query at 30 degrees matches A with cos 1
    q = unit(np.cos(np.pi / 6), np.sin(np.pi / 6))
    m = idx.search(q, threshold=0.5)[0]
    assert m.name == "A" and m.similarity == pytest.approx(1.0, abs=1e-6)
    assert [n for n, _ in m.top] == ["A", "B"]
    assert m.top[1][1] == pytest.approx(0.5, abs=1e-6)  # cos(60 degrees) to B


def test_max_template_vs_mean():
    # a query at 65 degrees: A2 (5 deg away) wins under max, while B (25 deg) beats A's
    # mean direction (30 deg, so 35 deg away) under mean
    q = unit(np.cos(np.radians(65)), np.sin(np.radians(65)))
    by_max = GalleryIndex(NAMES, VECS, template="max").search(q, 0.0)[0]
    by_mean = GalleryIndex(NAMES, VECS, template="mean").search(q, 0.0)[0]
    assert by_max.name == "A" and by_max.similarity == pytest.approx(np.cos(np.radians(5)), abs=1e-6)
    assert by_mean.name == "B" and by_mean.similarity == pytest.approx(np.cos(np.radians(25)), abs=1e-6)


def test_quality_mean_template():
    # A2 has most of the weight, so A's template points almost at 60 degrees
    q = unit(np.cos(np.radians(60)), np.sin(np.radians(60)))
    idx = GalleryIndex(NAMES, VECS, quality=np.array([1.0, 99.0, 1.0]), template="quality_mean")
    top = dict(idx.search(q, 0.0)[0].top)
    assert top["A"] > 0.999
    plain = dict(GalleryIndex(NAMES, VECS, template="mean").search(q, 0.0)[0].top)
    assert plain["A"] == pytest.approx(np.cos(np.radians(30)), abs=1e-6)
    # all-zero quality falls back to the plain mean instead of dividing by zero
    zero = GalleryIndex(NAMES, VECS, quality=np.zeros(3), template="quality_mean")
    assert dict(zero.search(q, 0.0)[0].top)["A"] == pytest.approx(plain["A"], abs=1e-6)
    with pytest.raises(GalleryError):
        GalleryIndex(NAMES, VECS, template="quality_mean").search(q, 0.0)


def test_threshold_gives_unknown_but_keeps_top():
    idx = GalleryIndex(NAMES, VECS)
    q = unit(-1, -1)  # far from everyone
    m = idx.search(q, threshold=0.3)[0]
    assert m.name is None
    assert len(m.top) == 2 and m.top[0][1] >= m.top[1][1]
    assert m.similarity == m.top[0][1]
    just = idx.search(unit(0, 1), threshold=1.0 - 1e-6)[0]
    assert just.name == "B"


def test_top_k_and_order(rng):
    vec = rng.normal(size=(40, 16)).astype(np.float32)
    names = [f"p{i % 10}" for i in range(40)]
    idx = GalleryIndex(names, vec, template="max")
    for m in idx.search(rng.normal(size=(5, 16)), 0.2, top_k=3):
        sims = [s for _, s in m.top]
        assert len(m.top) == 3 and sims == sorted(sims, reverse=True)
        assert len({n for n, _ in m.top}) == 3
    assert len(idx.search(vec[:1], 0.2, top_k=50)[0].top) == 10


def test_dimension_mismatch_refused():
    idx = GalleryIndex(NAMES, VECS)
    with pytest.raises(GalleryError, match="dimensions"):
        idx.search(np.ones((1, 3), np.float32), 0.3)


def test_faiss_missing_is_clear(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *a, **k):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(GalleryError, match=r"pip install 'facerec\[faiss\]'"):
        GalleryIndex(NAMES, VECS, index="faiss")
    # auto falls back to exact search
    idx = GalleryIndex(NAMES, VECS, index="auto", index_min_size=1)
    assert idx.backend == "exact"
    assert search_mod.import_faiss(required=False) is None


@pytest.mark.parametrize("template", ["mean", "max"])
def test_faiss_matches_exact_on_random(rng, template):
    vec = rng.normal(size=(3000, 64)).astype(np.float32)
    names = [f"p{i % 600}" for i in range(3000)]
    q = rng.normal(size=(200, 64)).astype(np.float32)
    exact = GalleryIndex(names, vec, template=template, index="exact").search(q, 0.1)
    flat = GalleryIndex(names, vec, template=template, index="faiss", faiss_kind="flat")
    hnsw = GalleryIndex(names, vec, template=template, index="faiss", faiss_kind="hnsw", ef_search=256)
    ivf = GalleryIndex(names, vec, template=template, index="faiss", faiss_kind="ivf", nprobe=64)
    assert (flat.backend, hnsw.backend, ivf.backend) == ("faiss-flat", "faiss-hnsw", "faiss-ivf")
    f = flat.search(q, 0.1)
    assert [m.top[0][0] for m in f] == [m.top[0][0] for m in exact]
    for a, b in zip(f, exact):
        assert a.top[0][1] == pytest.approx(b.top[0][1], abs=1e-5)
    # random vectors are the hardest case for approximate search; real ones cluster by person
    for approx in (hnsw, ivf):
        agree = np.mean([a.top[0][0] == b.top[0][0] for a, b in zip(approx.search(q, 0.1), exact)])
        assert agree >= 0.9, approx.backend


def test_auto_switches_to_faiss(rng):
    vec = rng.normal(size=(300, 16)).astype(np.float32)
    names = [str(i) for i in range(300)]
    assert GalleryIndex(names, vec, index="auto", index_min_size=1000).backend == "exact"
    assert GalleryIndex(names, vec, index="auto", index_min_size=100).backend == "faiss-hnsw"
    assert GalleryIndex(names, vec, index="faiss", index_min_size=1000).backend == "faiss-flat"
    assert GalleryIndex(names, vec, index="faiss", faiss_kind="ivf").backend == "faiss-ivf"
    with pytest.raises(GalleryError, match="FAISS index kind"):
        GalleryIndex(names, vec, index="faiss", faiss_kind="lsh")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def johns_embeddings(analyzer, data_dir, one_torch_thread):
    """Real MobileFaceNet vectors of the 55 dlib_johns photos (largest face each)."""
    names, faces = [], []
    for person in sorted((data_dir / "identities" / "dlib_johns").iterdir()):
        for p in list_images(person):
            img = read_image(p)
            det = detect_faces(analyzer.detector, img, pad=0.5)
            if len(det):
                names.append(person.name)
                faces.append(align(img, det.largest().landmarks).images[0])
    emb = analyzer.embed_faces(np.stack(faces))
    return names, emb.vectors, emb.key


@pytest.mark.parametrize("template", ["mean", "quality_mean", "max"])
def test_exact_and_faiss_same_top1_on_real_embeddings(johns_embeddings, template):
    names, vecs, key = johns_embeddings
    assert len(names) >= 50
    gal, probe = vecs[::2], vecs[1::2]
    gnames = names[::2]
    emb = Embeddings(probe, np.ones(len(probe)), key)
    quality = np.linspace(1, 2, len(gal))
    exact = GalleryIndex(gnames, gal, quality, template, "exact", key=key).search(emb, 0.3)
    for kind in ("flat", "hnsw", "ivf"):
        other = GalleryIndex(gnames, gal, quality, template, "faiss", faiss_kind=kind, key=key).search(emb, 0.3)
        assert [m.top[0][0] for m in other] == [m.top[0][0] for m in exact], kind
        assert [m.name for m in other] == [m.name for m in exact], kind


def _patched_vs_fresh(rng, template: str, index: str, steps: int = 60) -> None:
    """Random enroll / delete / rename steps applied with ``with_people`` equal a fresh build."""
    d = 16
    names = [f"p{i:02d}" for i in rng.integers(0, 8, 20)]
    vec = rng.normal(size=(20, d)).astype(np.float32)
    qual = rng.uniform(0, 1, 20).astype(np.float32)
    qual[:3] = 0  # quality 0 samples exercise the plain-mean fallback
    opts = dict(template=template, index=index, faiss_kind="flat")
    idx = GalleryIndex(names, vec, qual, **opts)
    probes = rng.normal(size=(40, d)).astype(np.float32)
    for step in range(steps):
        op = rng.choice(["enroll", "delete", "rename", "new"])
        if op == "enroll" or not names:
            n_new = int(rng.integers(1, 4))
            who = [f"p{i:02d}" for i in rng.integers(0, 10, n_new)]
            names += who
            vec = np.concatenate([vec, rng.normal(size=(n_new, d)).astype(np.float32)])
            qual = np.concatenate([qual, rng.uniform(0, 1, n_new).astype(np.float32)])
            touched = set(who)
        elif op == "delete":
            drop = set(rng.choice(len(names), size=min(len(names), int(rng.integers(1, 4))), replace=False).tolist())
            touched = {names[i] for i in drop}
            keep = [i for i in range(len(names)) if i not in drop]
            names, vec, qual = [names[i] for i in keep], vec[keep], qual[keep]
        elif op == "rename":  # one person becomes another (existing or new) person
            old = names[int(rng.integers(len(names)))]
            new = f"p{int(rng.integers(0, 12)):02d}"
            names = [new if n == old else n for n in names]
            touched = {old, new}
        else:  # someone new with one sample
            new = f"q{step:02d}"
            names, touched = names + [new], {new}
            vec = np.concatenate([vec, rng.normal(size=(1, d)).astype(np.float32)])
            qual = np.concatenate([qual, [0.5]]).astype(np.float32)
        mine = [i for i, n in enumerate(names) if n in touched]
        idx = idx.with_people(touched, [names[i] for i in mine], vec[mine], qual[mine], len(names))
        fresh = GalleryIndex(names, vec, qual, **opts)
        assert idx.people == fresh.people, (step, op)
        assert idx.backend == fresh.backend and idx.n_samples == fresh.n_samples == len(names)
        np.testing.assert_array_equal(idx.rows, fresh.rows)  # same template values, same order
        got, want = idx.search(probes, 0.3, top_k=3), fresh.search(probes, 0.3, top_k=3)
        for g, w in zip(got, want):
            assert g.name == w.name and [n for n, _ in g.top] == [n for n, _ in w.top]
            np.testing.assert_allclose([s for _, s in g.top], [s for _, s in w.top], atol=1e-5)


@pytest.mark.parametrize("template", ["mean", "quality_mean", "max"])
def test_patched_index_equals_fresh_build(rng, template):
    _patched_vs_fresh(rng, template, "exact")


@pytest.mark.parametrize("template", ["mean", "max"])
def test_patched_faiss_index_equals_fresh_build(rng, template):
    pytest.importorskip("faiss")
    _patched_vs_fresh(rng, template, "faiss", steps=25)


def test_patched_index_from_and_to_empty(rng):
    idx = GalleryIndex([], np.zeros((0, 0), np.float32))
    v = rng.normal(size=(2, 8)).astype(np.float32)
    idx = idx.with_people({"A"}, ["A", "A"], v, None, 2)
    assert idx.people == ["A"] and idx.search(v[:1], 0.1)[0].name == "A"
    idx = idx.with_people({"A"}, [], np.zeros((0, 8), np.float32), None, 0)
    assert len(idx) == 0 and idx.search(v[:1], 0.1)[0].name is None


def test_patched_index_keeps_negatives(rng):
    v = np.eye(4, dtype=np.float32)
    idx = GalleryIndex(["A", "B"], v[:2])
    idx.set_negatives(["A"], v[2:3] + 0.9 * v[0:1])
    idx = idx.with_people({"C"}, ["C"], v[3:4], None, 3)
    assert idx.people == ["A", "B", "C"]
    assert idx.search(v[2:3] + v[0:1], 0.3)[0].name is None  # the "not A" veto still applies


@pytest.mark.parametrize("template", ["mean", "max"])
def test_faiss_base_is_shared_across_small_changes(rng, template):
    """Small changes keep the built FAISS base (same object) and search its live rows plus
    an exact delta, with the answers of a fresh build; an older version answers as before;
    once dead + delta rows pass DELTA_MAX_FRACTION the base is built again."""
    pytest.importorskip("faiss")
    d, n = 16, 600
    names = [f"p{i:03d}" for i in rng.integers(0, 300, n)]
    vec = rng.normal(size=(n, d)).astype(np.float32)
    opts = dict(template=template, index="faiss", faiss_kind="flat")
    idx = GalleryIndex(names, vec, None, **opts)
    first_base = idx._base
    probes = np.concatenate([vec[:30] + 0.3 * rng.normal(size=(30, d)), rng.normal(size=(10, d))]).astype(np.float32)
    before = idx.search(probes, 0.3, top_k=3)
    old = idx
    rebuilt = False
    for step in range(40):
        if step % 3 == 0:  # a new person
            who = f"new{step:02d}"
            names, vec = names + [who], np.concatenate([vec, probes[step % 30][None] + 0.2 * rng.normal(size=(1, d))]).astype(np.float32)
            touched = {who}
        elif step % 3 == 1:  # someone's samples deleted
            gone = names[int(rng.integers(len(names)))]
            keep = [i for i, nm in enumerate(names) if nm != gone]
            names, vec, touched = [names[i] for i in keep], vec[keep], {gone}
        else:  # a rename onto someone else
            a, b = names[int(rng.integers(len(names)))], names[int(rng.integers(len(names)))]
            names, touched = [b if nm == a else nm for nm in names], {a, b}
        mine = [i for i, nm in enumerate(names) if nm in touched]
        prev_base = idx._base
        idx = idx.with_people(touched, [names[i] for i in mine], vec[mine], None, len(names))
        if idx._base is not prev_base:
            rebuilt = True
            assert idx._n_dead == 0 and len(idx._delta_rows) == 0
        else:
            assert idx._n_dead + len(idx._delta_rows) <= search_mod.DELTA_MAX_FRACTION * idx._base.n
        fresh = GalleryIndex(names, vec, None, **opts)
        assert idx.people == fresh.people and idx.backend == fresh.backend == "faiss-flat"
        for g, w in zip(idx.search(probes, 0.3, top_k=3), fresh.search(probes, 0.3, top_k=3)):
            assert g.name == w.name and [p for p, _ in g.top] == [p for p, _ in w.top], step
            np.testing.assert_allclose([s for _, s in g.top], [s for _, s in w.top], atol=1e-5)
        if step == 0:
            assert idx._base is first_base  # one new person: nothing rebuilt
            assert len(idx._delta_rows) >= 1
    assert rebuilt  # 40 changes of a 300-person gallery pass the 5 % bound at least once
    # the first version is untouched by everything derived from it
    for g, w in zip(old.search(probes, 0.3, top_k=3), before):
        assert g.name == w.name and g.top == w.top


def test_faiss_hnsw_base_is_shared_and_finds_new_people(rng):
    """An approximate base is shared too: a person enrolled after the build (in the delta)
    and a deleted one (dead in the base) are found / not found like in a fresh build."""
    pytest.importorskip("faiss")
    d, n = 64, 2000
    names = [f"p{i:04d}" for i in range(n)]
    vec = rng.normal(size=(n, d)).astype(np.float32)
    idx = GalleryIndex(names, vec, index="faiss", faiss_kind="hnsw")
    base = idx._base
    newcomer = rng.normal(size=(1, d)).astype(np.float32)
    idx2 = idx.with_people({"zed"}, ["zed"], newcomer, None, n + 1)
    idx3 = idx2.with_people({"p0007"}, [], np.zeros((0, d), np.float32), None, n)
    assert idx3._base is base and idx3.backend == "faiss-hnsw"
    assert idx3.search(newcomer, 0.5)[0].name == "zed"
    m = idx3.search(vec[7:8], 0.5)[0]
    assert m.name is None and "p0007" not in [p for p, _ in m.top]
    assert idx.search(vec[7:8], 0.5)[0].name == "p0007"  # the first version still has them
    probes = vec[100:200] + 0.2 * rng.normal(size=(100, d)).astype(np.float32)
    got = [m.name for m in idx3.search(probes, 0.5)]
    assert sum(g == f"p{100 + i:04d}" for i, g in enumerate(got)) >= 98
