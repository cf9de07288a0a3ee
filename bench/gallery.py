"""Gallery speed: search latency of exact NumPy vs FAISS, and incremental enrollment vs a
full rebuild.

Part 1, search (synthetic): ``n`` enrolled people, one unit template each (``d`` = 128 as
MobileFaceNet, 512 as MagFace). Every probe is a noisy copy of a random template with
cosine about 0.65 to it, like a real genuine match, so recall is measured where it matters.
Each row is :class:`facerec.gallery.search.GalleryIndex` as the product builds it (template
``mean``, top-5 per face), timed on one batch of ``--queries`` faces (an offline job) and on
single faces (the live loop asks for one or a few at a time): ``exact`` (NumPy),
``faiss-flat`` (``IndexFlatIP``), and the approximate index ``auto`` picks at that size:
``faiss-hnsw`` (``IndexHNSWFlat``, M=32, efConstruction=40, efSearch=512) up to 500k rows,
``faiss-ivf`` (``IndexIVFFlat``, ~sqrt(n) lists capped at 1024, nprobe=256) above. HNSW is
not built at 1M: on two shared cores a graph of 100k x 512 already takes about a minute,
a million would take well over ten. ``recall@1`` is the share of probes whose FAISS top-1
equals the exact top-1. Uniformly random templates are the hardest case for approximate
search (no cluster structure to exploit), so these recalls are a floor.

Part 2, enrollment (real): a gallery of ``--gallery-samples`` real LFW face crops
(aligned with typical LFW landmarks, no detector needed; flips added when LFW runs out),
embedded with the real MobileFaceNet. Timed:

* full build: sync ``preprocessed/`` into a new store, embed everything, build the index
  (``facerec embed`` on a fresh gallery);
* enroll one photo: detect, align, embed, store, refresh the index (``facerec enroll add``);
* ``facerec embed`` after one new crop appears in ``preprocessed/``: hash-check every
  crop, add the new one, embed it, refresh the index;
* full re-embed: drop the embedder's vectors and embed everything again, then the index.

Part 3, ``--check PEOPLE...``: ``facerec enroll check`` (:func:`facerec.gallery.check.check_gallery`)
on SQLite galleries of synthetic people, three samples each around a centre of their own,
end to end, beside the all-pairs near-duplicate search it replaced (every sample against
every sample, up to 10k people), whose pairs must equal the check's. Measured with
``OPENBLAS_NUM_THREADS=1 python bench/gallery.py --check 1000 10000 100000 --threads 1`` on
two shared cores: 1,000 people 0.12 s (all pairs alone 0.03 s); 10,000 people 2.2 s (all
pairs alone 3.9 s; the whole check was 6.7 s with it); 100,000 people 154 s (the all-pairs
search alone, at 100x its 10k time, would be about 390 s). The check grows with people x
samples (one pass of BLAS products against the templates), so 10x the people cost about 70x.

Run ``python bench/gallery.py`` (about 5-10 minutes on two cores) or ``--quick`` (10k and
100k rows, a 1,000-sample gallery). Other busy processes on the same cores inflate every
number; compare rows of one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/gallery.py``
    try:
        import facerec  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import hashlib
import os
import platform
import shutil
import tempfile
import time
from typing import Sequence

import cv2
import numpy as np

from facerec.align import align
from facerec.config import load_config
from facerec.gallery.search import GalleryIndex, import_faiss
from facerec.gallery.service import GalleryService
from facerec.imageio import read_image
from facerec.types import EmbedderKey, Embeddings

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Typical five landmarks of an LFW deep-funneled 250x250 image (see bench/bench_embed.py).
LFW_LANDMARKS = np.array([[104.0, 112.3], [148.5, 112.2], [125.7, 137.0], [107.7, 156.6], [145.6, 156.1]])
GENUINE_COSINE = 0.65


# ---------------------------------------------------------------------------- part 1: search


def synthetic(n: int, d: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit templates, ``queries`` probes near random templates, and their owners."""
    rng = np.random.default_rng(seed)
    gal = rng.standard_normal((n, d), dtype=np.float32)
    gal /= np.linalg.norm(gal, axis=1, keepdims=True)
    owners = rng.choice(n, queries, replace=False)
    # noise of norm s*sqrt(d) gives cosine 1/sqrt(1 + s^2 d) to the template
    s = np.sqrt((1 / GENUINE_COSINE**2 - 1) / d)
    q = gal[owners] + s * rng.standard_normal((queries, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return gal, q, owners


def time_search(index: GalleryIndex, q: np.ndarray, repeats: int, singles: int = 10) -> tuple[float, float, list[str]]:
    """Median ms per query of a batched top-5 search, median ms of one-face searches, top-1 names."""
    index.search(q[:2], 0.3, top_k=5)  # warm-up
    times, top1 = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        m = index.search(q, 0.3, top_k=5)
        times.append(time.perf_counter() - t)
        top1 = [x.top[0][0] for x in m]
    one = []
    for i in range(min(singles, len(q))):
        t = time.perf_counter()
        index.search(q[i : i + 1], 0.3, top_k=5)
        one.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000 / len(q), float(np.median(one)) * 1000, top1


def bench_search(sizes: Sequence[int], dims: Sequence[int], queries: int, repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        for n in sizes:
            t = time.perf_counter()
            gal, q, owners = synthetic(n, d, queries)
            names = [f"p{i:07d}" for i in range(n)]
            gen_s = time.perf_counter() - t
            exact_top1: list[str] = []
            approx = "faiss-ivf" if n >= 500_000 else "faiss-hnsw"
            for backend in ("exact", "faiss-flat", approx):
                kind = backend.split("-")[1] if "-" in backend else "auto"
                t = time.perf_counter()
                index = GalleryIndex(names, gal, template="mean", index="exact" if backend == "exact" else "faiss",
                                     faiss_kind=kind)  # type: ignore[arg-type]
                build_s = time.perf_counter() - t
                ms, single_ms, top1 = time_search(index, q, repeats)
                if backend == "exact":
                    exact_top1 = top1
                    truth = np.mean([names[o] == t1 for o, t1 in zip(owners, top1)])
                recall = float(np.mean([a == b for a, b in zip(top1, exact_top1)]))
                # one enrollment reaching the index (the watcher's with_people): a FAISS base is
                # shared and the newcomer searched in the exact delta; before, the index was
                # built again (build_s)
                change = []
                for _ in range(3):
                    t = time.perf_counter()
                    changed = index.with_people({"newcomer"}, ["newcomer"], q[:1], None, n + 1)
                    change.append(time.perf_counter() - t)
                assert changed.search(q[:1], 0.3)[0].name == "newcomer", "the change did not reach the index"
                assert backend == "exact" or changed._base is index._base, "the FAISS base was rebuilt"
                change_ms = float(np.median(change)) * 1000
                del changed
                rows.append({"n": n, "d": d, "backend": index.backend, "build_s": build_s, "ms_per_query": ms,
                             "single_ms": single_ms, "recall@1": recall, "owner@1": truth, "gen_s": gen_s,
                             "change_ms": change_ms})
                print(f"  n={n:>9,} d={d:>3} {index.backend:<11} build {build_s:7.1f} s  "
                      f"{ms:8.3f} ms/query  {single_ms:8.3f} ms single  recall@1 {recall:.3f}  "
                      f"one change {change_ms:7.1f} ms", file=sys.stderr, flush=True)
                del index
                gc.collect()
            del gal, q, names
            gc.collect()
    return rows


# ---------------------------------------------------------------------------- part 2: enrollment


def lfw_crops(count: int) -> dict[str, list[np.ndarray]]:
    """``count`` aligned crops of real LFW photos, grouped by person (flips when LFW runs out)."""
    files = sorted((SHARED / "data" / "lfw").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no LFW images under {SHARED / 'data' / 'lfw'}")
    out: dict[str, list[np.ndarray]] = {}
    n = 0
    while n < count:
        flip = n >= len(files)
        for f in files:
            if n >= count:
                break
            crop = align(read_image(f), LFW_LANDMARKS).images[0]
            out.setdefault(f.parent.name, []).append(crop[:, ::-1] if flip else crop)
            n += 1
    return out


def bench_enroll(samples: int, probe: Path) -> list[tuple[str, float, str]]:
    crops = lfw_crops(samples)
    root = Path(tempfile.mkdtemp(prefix="facerec-bench-gallery-"))
    try:
        for person, items in crops.items():
            d = root / "preprocessed" / person
            d.mkdir(parents=True)
            for i, c in enumerate(items):
                cv2.imwrite(str(d / f"{i:04d}.png"), c)
        cfg = load_config(None, {"gallery.data_dir": str(root), "models.detector": "yolov5n-0.5-face",
                                 "models.embedder": "mobilefacenet"})
        svc = GalleryService(cfg)
        svc.analyzer.embedder.embed(np.stack([crops[next(iter(crops))][0]] * 2))  # load and warm up both models
        svc.detector(read_image(probe))
        rows = []

        t = time.perf_counter()
        svc.sync_preprocessed()
        svc.embed_all(progress=False)
        svc.index()
        full = time.perf_counter() - t
        n = svc.store.count(svc.key)
        rows.append(("full build (sync + embed all + index)", full, f"{n} samples, {n / full:.0f} faces/s overall"))

        t = time.perf_counter()
        r = svc.enroll_image("Probe Person", read_image(probe), source_path=str(probe))
        svc.index()
        rows.append(("enroll one photo (detect + embed + store + index)", time.perf_counter() - t,
                     f"status {r.status}"))

        one = root / "preprocessed" / "New Person"
        one.mkdir()
        cv2.imwrite(str(one / "0000.png"), np.ascontiguousarray(crops[next(iter(crops))][0][:, ::-1]))
        t = time.perf_counter()
        sync = svc.sync_preprocessed()
        emb = svc.embed_all(progress=False)
        svc.index()
        rows.append(("facerec embed after one new crop (sync + embed 1 + index)", time.perf_counter() - t,
                     f"{len(sync.unchanged)} crops hash-checked, {len(emb.done)} embedded"))

        t = time.perf_counter()
        svc.store.delete_embeddings(svc.key)
        emb = svc.embed_all(progress=False)
        svc.index()
        rows.append(("full re-embed (drop vectors + embed all + index)", time.perf_counter() - t,
                     f"{len(emb.done)} embedded"))
        svc.close()
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- part 3: backends

SYNTH_KEY = EmbedderKey("synthetic-512", "0" * 64)
SAMPLES_PER_PERSON = 10


def _synthetic_vectors(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill_sqlite(root: Path, n: int, d: int, chunk: int = 50_000, per_person: int | None = None) -> None:
    """``n`` synthetic templates straight into a new SQLite gallery (bulk SQL: set-up, not timed
    as enrollment; the crop files are not written, nothing here reads them). With
    ``per_person``, each person gets that many samples around a centre of their own (cosine
    about 0.74 to it, like real photos of one face) instead of unrelated vectors."""
    import sqlite3

    from facerec.gallery.store import DB_NAME, GalleryStore

    GalleryStore(root).close()  # the schema
    con = sqlite3.connect(root / DB_NAME, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    spp = per_person or SAMPLES_PER_PERSON
    people = (n + spp - 1) // spp
    centres = _synthetic_vectors(people, d, 10**9) if per_person else None
    now = time.time()
    con.executemany("INSERT INTO people(id, name, created) VALUES (?,?,?)",
                    ((i + 1, f"person {i:07d}", now) for i in range(people)))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        vec = _synthetic_vectors(m, d, start)
        ids = range(start + 1, start + m + 1)
        if centres is not None:
            vec = centres[np.arange(start, start + m) // spp] + 0.9 * vec
            vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        con.executemany("INSERT INTO samples(id, person_id, source_path, sha256, crop_path, crop_sha256, quality, added) "
                        "VALUES (?,?,NULL,?,?,?,1.0,?)",
                        ((i, (i - 1) // spp + 1, f"{i:064x}", f"preprocessed/synthetic/{i}.png",
                          f"{i:064x}", now) for i in ids))
        con.executemany("INSERT INTO embeddings(sample_id, embedder, dim, vector, norm) VALUES (?,?,?,?,1.0)",
                        ((i, str(SYNTH_KEY), d, vec[j].tobytes()) for j, i in enumerate(ids)))
    con.execute("UPDATE meta SET value='1' WHERE key='version'")
    con.execute("COMMIT")
    con.close()


def _all_pairs_duplicates(vec: np.ndarray, owner: np.ndarray, threshold: float, batch: int = 512) -> np.ndarray:
    """The search ``enroll check`` used before: every sample against every sample (``samples^2
    x d`` flops, blocked), each sample's most similar sample of another person at or above
    ``threshold`` (-1 where none)."""
    out = np.full(len(vec), -1, np.int64)
    for b in range(0, len(vec), batch):
        sims = vec[b : b + batch] @ vec.T
        sims[owner[b : b + batch, None] == owner[None, :]] = -np.inf
        j = np.argmax(sims, axis=1)
        hit = sims[np.arange(len(j)), j] >= threshold
        out[b : b + batch][hit] = j[hit]
    return out


def bench_check(people: Sequence[int], per_person: int = 3, d: int = 128, all_pairs_max: int = 10_000) -> list[dict]:
    """``enroll check`` (:func:`facerec.gallery.check.check_gallery`) on SQLite galleries of
    synthetic people, ``per_person`` samples each, end to end (reading included), and beside
    it the all-pairs near-duplicate search it replaced (up to ``all_pairs_max`` people), which
    must find the same pairs as the check's one pass."""
    from facerec.gallery.check import CheckRules, Profile, _scan, check_gallery
    from facerec.gallery.store import GalleryStore

    rules = CheckRules.from_threshold(0.32, 0.98, 0.5)
    out = []
    for n in people:
        with tempfile.TemporaryDirectory(prefix="facerec-bench-check-") as tmp:
            t0 = time.perf_counter()
            fill_sqlite(Path(tmp), n * per_person, d, per_person=per_person)
            fill_s = time.perf_counter() - t0
            with GalleryStore(tmp, readonly=True) as store:
                t0 = time.perf_counter()
                report = check_gallery(store, SYNTH_KEY, rules)
                check_s = time.perf_counter() - t0
                _, names, vec, _ = store.vectors(SYNTH_KEY)
            row = {"people": n, "samples": report.samples, "fill_s": fill_s, "check_s": check_s,
                   "flagged": len(report.flagged), "pairs_s": None, "same": None}
            if n <= all_pairs_max:
                vec = np.asarray(vec, np.float32)
                prof = Profile(names, vec)
                t0 = time.perf_counter()
                dup = _all_pairs_duplicates(vec, prof.inverse, rules.duplicate_similarity)
                row["pairs_s"] = time.perf_counter() - t0
                row["same"] = bool((dup == _scan(prof, vec, rules.duplicate_similarity).dup).all())
            out.append(row)
            print(f"  {n:,} people: check {check_s:.2f} s, all pairs {row['pairs_s']}", file=sys.stderr, flush=True)
    return out


def _copy_binary(rows: np.ndarray) -> bytes:
    return b"PGCOPY\n\xff\r\n\0" + b"\0" * 8 + rows.tobytes() + b"\xff\xff"


def fill_postgres(dsn: str, n: int, d: int, chunk: int = 50_000) -> None:
    """``n`` synthetic templates into a new PostgreSQL gallery with binary ``COPY`` (set-up)."""
    import psycopg

    from facerec.gallery.postgres_db import upgrade

    upgrade(dsn)
    people = (n + SAMPLES_PER_PERSON - 1) // SAMPLES_PER_PERSON
    key = str(SYNTH_KEY).encode()
    now = time.time()
    crop = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with psycopg.connect(dsn) as con:
        con.execute("SET synchronous_commit = off")
        with con.cursor().copy("COPY people(id, name, created) FROM STDIN") as cp:
            for i in range(people):
                cp.write_row((i + 1, f"person {i:07d}", now))
        crop_sha = hashlib.sha256(crop).hexdigest()
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            with con.cursor().copy("COPY samples(id, person_id, sha256, crop_name, crop, crop_sha256, quality, added) "
                                   "FROM STDIN") as cp:
                for i in range(start + 1, start + m + 1):
                    cp.write_row((i, (i - 1) // SAMPLES_PER_PERSON + 1, f"{i:064x}", f"{i}.png", crop, crop_sha, 1.0, now))
            # embeddings(sample_id int8, embedder text, dim int4, vector float4[], norm float4), PostgreSQL binary rows
            dt = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("id", ">i8"), ("l1", ">i4"), ("key", f"S{len(key)}"),
                           ("l2", ">i4"), ("dim", ">i4"), ("l3", ">i4"), ("ndim", ">i4"), ("flags", ">i4"),
                           ("oid", ">i4"), ("size", ">i4"), ("lb", ">i4"), ("el", [("len", ">i4"), ("v", ">f4")], (d,)),
                           ("l4", ">i4"), ("norm", ">f4")])
            rows = np.zeros(m, dt)
            rows["nf"], rows["l0"], rows["id"] = 5, 8, np.arange(start + 1, start + m + 1)
            rows["l1"], rows["key"], rows["l2"], rows["dim"] = len(key), key, 4, d
            rows["l3"], rows["ndim"], rows["flags"], rows["oid"], rows["size"], rows["lb"] = 20 + 8 * d, 1, 0, 700, d, 1
            rows["el"]["len"], rows["el"]["v"] = 4, _synthetic_vectors(m, d, start)
            rows["l4"], rows["norm"] = 4, 1.0
            with con.cursor().copy("COPY embeddings(sample_id, embedder, dim, vector, norm) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(_copy_binary(rows))
        for table in ("people", "samples"):
            con.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        con.execute("UPDATE facerec_meta SET version = 1")
        con.execute("ANALYZE")


class Camera:
    """A daemon's camera loop reduced to what matters here: asks for the index every frame (25 fps)."""

    def __init__(self, watcher) -> None:
        import threading

        self.watcher = watcher
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.04):
            self.watcher.index  # noqa: B018  (reads a reference: the watcher's thread applies changes)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def bench_backends(backends: Sequence[str], sizes: Sequence[int], d: int, enrolls: int, changes: int,
                   poll_s: float) -> list[dict]:
    """Per backend and size: bulk fill, start-up load, enrollment throughput, propagation latency."""
    from facerec.config import GalleryConfig
    from facerec.gallery.backend import open_backend
    from facerec.gallery.watch import GalleryWatcher

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    crops = [c for cs in lfw_crops(50).values() for c in cs]
    server = None
    out = []
    root = Path(tempfile.mkdtemp(prefix="facerec-bench-backends-"))
    try:
        for n in sizes:
            for backend in backends:
                row: dict = {"backend": backend, "n": n}
                t = time.perf_counter()
                if backend == "postgres":
                    if server is None:
                        from pg_server import PgServer

                        server = PgServer().init().start()
                    dsn = server.create_db(f"bench_{n}")
                    cfg = GalleryConfig(backend="postgres", dsn=dsn, index="exact")
                    fill_postgres(dsn, n, d)
                else:
                    cfg = GalleryConfig(backend="sqlite", data_dir=str(root / f"sqlite-{n}"), index="exact")
                    fill_sqlite(Path(cfg.data_dir), n, d)
                row["fill_s"] = time.perf_counter() - t
                print(f"  {backend} {n:,}: filled in {row['fill_s']:.0f} s", flush=True)

                gc.collect()
                t = time.perf_counter()
                watcher = GalleryWatcher(cfg.data_dir, SYNTH_KEY, cfg, poll_s)
                assert watcher.index is not None and len(watcher._ids) == n, "the watcher did not load the gallery"
                row["load_s"] = time.perf_counter() - t
                print(f"  {backend} {n:,}: daemon start-up load {row['load_s']:.1f} s", flush=True)

                store = open_backend(cfg)
                rng = np.random.default_rng(1)
                t = time.perf_counter()
                for i in range(enrolls):
                    emb = Embeddings(_synthetic_vectors(1, d, 10**7 + i), np.ones(1, np.float32), SYNTH_KEY)
                    store.add_sample(f"new {i % 20}", crops[i % len(crops)], source_path=None,
                                     source_sha256=f"{rng.integers(2**62):064x}", quality=1.0, embeddings=emb)
                row["enroll_per_s"] = enrolls / (time.perf_counter() - t)

                camera = Camera(watcher)
                v, end = store.version(), time.monotonic() + 60
                while (watcher.version or 0) < v and time.monotonic() < end:  # the enrollments above first
                    time.sleep(0.01)
                lat = []
                for i in range(changes):
                    time.sleep(0.15 + 0.1 * rng.random())  # changes arrive at random moments of the poll cycle
                    emb = Embeddings(_synthetic_vectors(1, d, 2 * 10**7 + i), np.ones(1, np.float32), SYNTH_KEY)
                    before = watcher._index
                    t = time.time()
                    s = store.add_sample("latency probe", crops[i % len(crops)], source_path=None,
                                         source_sha256=f"{rng.integers(2**62):064x}", quality=1.0, embeddings=emb)
                    end, seen = time.monotonic() + 30, before
                    while time.monotonic() < end:
                        if watcher._index is not seen:
                            seen = watcher._index
                            if int(s.id) in seen.sample_ids:
                                break
                        time.sleep(0.001)
                    else:
                        raise AssertionError(f"{backend}: a change did not reach the index within 30 s")
                    lat.append((time.time() - t) * 1000)
                camera.close()
                row["latency_ms"] = float(np.median(lat))
                row["latency_max_ms"] = float(np.max(lat))
                row["full_reloads"] = watcher.full_reloads
                watcher.close()
                store.close()
                del watcher
                gc.collect()
                print(f"  {backend} {n:,}: {row['enroll_per_s']:.0f} enrollments/s, change reaches the index in "
                      f"{row['latency_ms']:.0f} ms (median, max {row['latency_max_ms']:.0f})", flush=True)
                out.append(row)
                if backend == "sqlite":
                    shutil.rmtree(cfg.data_dir, ignore_errors=True)
                else:
                    import psycopg

                    with psycopg.connect(server.dsn(), autocommit=True) as c:
                        c.execute(f'DROP DATABASE "bench_{n}" WITH (FORCE)')  # a listener may still be closing
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10k and 100k rows only, a 1,000-sample gallery")
    p.add_argument("--sizes", type=int, nargs="+", metavar="N", help="gallery rows (default 10k 100k 1M)")
    p.add_argument("--dims", type=int, nargs="+", default=[128, 512], metavar="D", help="vector sizes")
    p.add_argument("--queries", type=int, default=100, metavar="Q", help="faces per search batch")
    p.add_argument("--repeats", type=int, default=3, metavar="R", help="timed runs per row (median)")
    p.add_argument("--gallery-samples", type=int, metavar="N", help="samples of the enrollment part (default 5000)")
    p.add_argument("--threads", type=int, metavar="N", help="PyTorch and FAISS threads (default: library default)")
    p.add_argument("--skip-search", action="store_true", help="only the enrollment part")
    p.add_argument("--check", type=int, nargs="+", metavar="PEOPLE",
                   help="only time enroll check on galleries of PEOPLE synthetic people x 3 samples (e.g. 10000)")
    p.add_argument("--skip-enroll", action="store_true", help="only the search part")
    p.add_argument("--backend", metavar="LIST",
                   help="compare gallery backends instead (comma-separated: sqlite,postgres): start-up load, "
                        "enrollment throughput, change propagation; parts 1 and 2 are skipped")
    p.add_argument("--backend-sizes", type=int, nargs="+", default=[100_000, 1_000_000], metavar="N",
                   help="templates (dim 512) in the gallery for --backend (default 100k 1M)")
    p.add_argument("--enrolls", type=int, default=200, metavar="N", help="samples enrolled for the throughput (--backend)")
    p.add_argument("--changes", type=int, default=20, metavar="N", help="changes timed for the propagation (--backend)")
    args = p.parse_args(argv)
    os.environ.setdefault("FACEREC_WEIGHTS", str(SHARED / "models"))
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    samples = args.gallery_samples or (1000 if args.quick else 5000)

    import torch

    faiss = import_faiss(required=True)
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
          f"numpy {np.__version__}")

    if args.check:
        rows4 = bench_check(args.check)
        print("\n## enroll check: synthetic people x 3 samples, d=128 (check = facerec enroll check end to end, "
              "one pass of exact BLAS products of the samples against the templates; all pairs = the "
              "sample-against-sample near-duplicate search it replaced, alone)\n")
        print("| people | samples | bulk fill s | check s | flagged | all-pairs duplicates s | all pairs / check | same pairs |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows4:
            pairs = "-" if r["pairs_s"] is None else f"{r['pairs_s']:.2f}"
            ratio = "-" if r["pairs_s"] is None else f"{r['pairs_s'] / r['check_s']:.1f}x"
            same = "-" if r["same"] is None else ("yes" if r["same"] else "NO")
            print(f"| {r['people']:,} | {r['samples']:,} | {r['fill_s']:.1f} | {r['check_s']:.2f} | {r['flagged']} | "
                  f"{pairs} | {ratio} | {same} |")
        return 0

    if args.backend:
        backends = [b.strip() for b in args.backend.split(",") if b.strip()]
        if not backends or any(b not in ("sqlite", "postgres") for b in backends):
            p.error(f"--backend takes sqlite, postgres or both, comma-separated (got {args.backend!r})")
        poll_s = load_config(None).live.gallery_poll_s
        t0 = time.perf_counter()
        rows3 = bench_backends(backends, args.backend_sizes, 512, args.enrolls, args.changes, poll_s)
        print(f"\n## Backends side by side: synthetic unit vectors (d=512), {SAMPLES_PER_PERSON} per person "
              f"({time.perf_counter() - t0:.0f} s)\n")
        print(f"start-up load = a daemon's GalleryWatcher reading every vector and building the exact index; "
              f"enroll = add_sample (crop + vector, one transaction each, {args.enrolls} of them); propagation = "
              f"commit to the watcher's index update, median of {args.changes}, applied on the watcher's own thread "
              f"while a 25 fps camera loop reads the index (SQLite: PRAGMA data_version checked every 0.25 s, a "
              f"version check at least every {poll_s:g} s (live.gallery_poll_s); PostgreSQL: LISTEN/NOTIFY)\n")
        print("| templates | backend | bulk fill s | start-up load s | enrollments / s | propagation ms (median / max) |")
        print("|---:|---|---:|---:|---:|---:|")
        for r in rows3:
            print(f"| {r['n']:,} | {r['backend']} | {r['fill_s']:.0f} | {r['load_s']:.2f} | {r['enroll_per_s']:.0f} | "
                  f"{r['latency_ms']:.0f} / {r['latency_max_ms']:.0f} |")
        return 0

    if not args.skip_search:
        t0 = time.perf_counter()
        rows = bench_search(sizes, args.dims, args.queries, args.repeats)
        print(f"\n## Search: top-5, batches of {args.queries} faces, median of {args.repeats} "
              f"({time.perf_counter() - t0:.0f} s)\n")
        print("| rows | d | backend | build s | ms / query (batch) | ms, one face | recall@1 vs exact | one change ms |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['n']:,} | {r['d']} | {r['backend']} | {r['build_s']:.2f} | {r['ms_per_query']:.3f} | "
                  f"{r['single_ms']:.2f} | {r['recall@1']:.3f} | {r['change_ms']:.1f} |")
        truth = min(r["owner@1"] for r in rows)
        print(f"\nexact search put the probe's own template first in at least {truth:.1%} of probes "
              "(the synthetic data is as intended).")

    if not args.skip_enroll:
        probe = SHARED / "data" / "identities" / "face_recognition_examples" / "kit_harington" / "john1.jpeg"
        t0 = time.perf_counter()
        rows2 = bench_enroll(samples, probe)
        print(f"\n## Enrollment: {samples:,}-sample gallery of real LFW crops, MobileFaceNet "
              f"({time.perf_counter() - t0:.0f} s)\n")
        print("| operation | seconds | note |")
        print("|---|---:|---|")
        for name, s, note in rows2:
            print(f"| {name} | {s:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
