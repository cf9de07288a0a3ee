"""Crash safety of the gallery: SIGKILL a writer (or the PostgreSQL server) at random
moments, then check that nothing is half-written.

A **writer** is a child process (forked from this one after the real detector and
embedder are loaded, so a trial starts at once) that runs a random sequence of gallery
operations through :class:`facerec.gallery.service.GalleryService` on real LFW photos:
``enroll`` (detect, align, embed, store), ``embed`` (``facerec embed`` after the vectors
were dropped: batches of three, each one transaction), ``drop`` (drop the embedder's
vectors), ``rename``, ``delete`` (a person) and ``delete-sample``. Before and after each
operation it appends a line to a journal file (``begin``/``end`` with what it did).

Half of the kills land at a uniform moment up to ``--max-delay`` s after the writer opened
the gallery, the other half within 10 ms after the writer began an operation of a kind
drawn at random (so the short ones, rename and delete, are hit too).

After each kill the parent reopens the gallery (SQLite: as the next writer would, which
removes crop files whose write never committed) and checks:

* the backend's own integrity check (``facerec db check``): every vector belongs to a
  sample, every sample to a person, every crop matches its hash, the change feed is not
  ahead of the version;
* the state is exactly what the journal predicts: every completed operation fully there,
  the interrupted one fully there or fully absent (``embed``: a whole number of batches),
  so no person without the sample that created them, no lost or extra sample or vector;
* SQLite: no crop file under ``preprocessed/`` that no sample references (temporary
  files of an interrupted atomic write are counted apart; the next writer removes them
  after an hour).

``--server-kills N`` then SIGKILLs the PostgreSQL server (the postmaster and every
backend at once, as a power cut would) N times while a writer runs, restarts it (crash
recovery replays the WAL) and checks the same way; the operation whose commit the writer
could not confirm may be either there or absent, everything confirmed must be there.

Run::

    python bench/crash.py --trials 100 --backend sqlite,postgres --server-kills 20

Prints one line per backend: trials, kills that landed inside an operation, operations
completed, failures (each failure is printed with what differed). Exit status 1 when a
check failed. PostgreSQL is started from the Debian package in a temporary folder (see
``tests/pg_server.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/crash.py``
    try:
        import facerec  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # pg_server.py

import argparse
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from facerec.config import Config, load_config
from facerec.gallery.backend import GalleryUnavailable, open_backend
from facerec.gallery.store import CROPS_DIR

SHARED = Path(os.environ.get("FACEREC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
NAMES = ["ada", "bo", "cy", "di", "ed", "flo", "gus", "hal"]
#: Most samples the writer lets the gallery grow to before it prefers deleting.
MAX_SAMPLES = 30
EMBED_BATCH = 3
#: Operation kinds a kill can be aimed at.
AIMS = ("enroll", "embed", "drop", "rename", "delete", "delete-sample")


# ---------------------------------------------------------------------------- state and its model

#: sample id -> (person, source sha256, has a vector for the embedder)
Samples = dict[int, tuple[str, str, bool]]


@dataclass
class State:
    """What the checks compare: the people and every sample with whether it has a vector."""

    people: frozenset[str] = frozenset()
    samples: Samples = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{len(self.people)} people {sorted(self.people)}, {len(self.samples)} samples, "
                f"{sum(v for _, _, v in self.samples.values())} vectors")


def read_state(backend: Any, key: Any) -> State:
    """The state of a gallery as the protocol shows it (no backend internals)."""
    with_vec = {int(i) for i in backend.vectors(key)[0]}
    samples = {s.id: (s.person, s.sha256, s.id in with_vec) for s in backend.samples()}
    return State(frozenset(p.name for p in backend.people()), samples)


def apply(state: State, op: dict, result: dict) -> State:
    """``state`` after ``op`` completed with ``result`` (the journal's ``end`` line)."""
    people, samples = set(state.people), dict(state.samples)
    kind = op["op"]
    if kind == "enroll":
        if result.get("sample") is not None:
            people.add(op["name"])
            samples[int(result["sample"])] = (op["name"], op["sha256"], True)
    elif kind == "rename":
        people.discard(op["old"])
        people.add(op["new"])
        samples = {i: ((op["new"] if p == op["old"] else p), s, v) for i, (p, s, v) in samples.items()}
    elif kind == "delete":
        people.discard(op["name"])
        samples = {i: t for i, t in samples.items() if t[0] != op["name"]}
    elif kind == "delete-sample":
        samples.pop(int(op["sample"]), None)
    elif kind == "drop":
        samples = {i: (p, s, False) for i, (p, s, _) in samples.items()}
    elif kind == "embed":
        done = set(op["todo"][: result.get("done", len(op["todo"]))])
        samples = {i: (p, s, v or i in done) for i, (p, s, v) in samples.items()}
    return State(frozenset(people), samples)


def matches_interrupted(before: State, op: dict, actual: State) -> bool:
    """Whether ``actual`` is ``before`` with the interrupted ``op`` fully absent or fully there."""
    if actual == before:
        return True
    if op["op"] == "enroll":
        new = set(actual.samples) - set(before.samples)
        if len(new) != 1:
            return False
        sid = new.pop()
        return apply(before, op, {"sample": sid}) == actual
    if op["op"] == "embed":
        todo = op["todo"]
        return any(apply(before, op, {"done": k}) == actual
                   for k in list(range(0, len(todo), EMBED_BATCH)) + [len(todo)])
    return apply(before, op, {}) == actual


def read_journal(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by the kill
            break
    return out


def check(before: State, journal: list[dict], actual: State) -> tuple[bool, int, str | None, str]:
    """Replay the journal on ``before``; returns ``(ok, completed ops, the interrupted op or None, why not)``."""
    state, pending, completed = before, None, 0
    for entry in journal:
        if entry["at"] == "begin":
            pending = entry
        elif entry["at"] == "end" and pending is not None:
            state = apply(state, pending, entry)
            pending, completed = None, completed + 1
    if pending is None:
        ok = actual == state
        return ok, completed, None, "" if ok else f"expected {state.describe()}, found {actual.describe()}"
    ok = matches_interrupted(state, pending, actual)
    why = "" if ok else (f"interrupted {pending['op']} {json.dumps({k: v for k, v in pending.items() if k != 'todo'})}: "
                         f"before {state.describe()}, after {apply(state, pending, {}).describe()}, "
                         f"found {actual.describe()}")
    return ok, completed, pending["op"], why


def orphan_files(cfg: Config, actual_paths: set[str]) -> tuple[list[str], int]:
    """SQLite: crop files no sample references, and temporary files of interrupted writes."""
    root = Path(cfg.gallery.data_dir) / CROPS_DIR
    orphans, tmp = [], 0
    if root.is_dir():
        for f in root.rglob("*"):
            if f.is_file() and not f.name.startswith(".align"):
                if f.name.startswith("."):
                    tmp += 1
                elif str(f.resolve()) not in actual_paths:
                    orphans.append(f.relative_to(root).as_posix())
    return orphans, tmp


# ---------------------------------------------------------------------------- the writer


def writer(cfg: Config, analyzer: Any, photos: list[tuple[Path, str]], journal: Path, seed: int) -> None:
    """Run random operations forever (until killed); never returns normally."""
    from facerec.gallery.service import GalleryService

    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(**entry: Any) -> None:
        os.write(fd, (json.dumps(entry) + "\n").encode())

    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # the server kills are expected
    rng = random.Random(seed)
    try:
        svc = GalleryService(cfg, analyzer)
        store, key = svc.store, svc.key
        note(at="ready")
        while True:
            people = [p.name for p in store.people()]
            samples = store.samples()
            r = rng.random()
            if not people or (r < 0.45 and len(samples) < MAX_SAMPLES):
                path, sha = rng.choice(photos)
                name = rng.choice(people + [n for n in NAMES if n not in people][:1])
                note(at="begin", op="enroll", name=name, sha256=sha, photo=path.name)
                rep = svc.enroll_paths(name, [path])
                added = store.find_sha256(sha) if rep.done else []
                note(at="end", sample=max((s.id for s in added if s.person == name), default=None))
            elif r < 0.60:
                old = rng.choice(people)
                new = rng.choice([n for n in NAMES if n not in people] or [f"{old}-{rng.randrange(10**6)}"])
                note(at="begin", op="rename", old=old, new=new)
                store.rename_person(old, new)
                note(at="end")
            elif r < 0.70 or len(samples) >= MAX_SAMPLES:
                name = rng.choice(people)
                note(at="begin", op="delete", name=name)
                store.delete_person(name)
                note(at="end")
            elif r < 0.80 and samples:
                s = rng.choice(samples)
                note(at="begin", op="delete-sample", sample=s.id)
                store.delete_sample(s.id)
                note(at="end")
            elif r < 0.88:
                note(at="begin", op="drop")
                store.delete_embeddings(key)
                note(at="end")
            else:
                todo = [s.id for s in store.missing_embeddings(key)]
                note(at="begin", op="embed", todo=todo)
                rep = svc.embed_all(progress=False, batch_size=EMBED_BATCH)
                note(at="end", done=len(rep.done))
    except GalleryUnavailable as e:
        note(at="unavailable", error=str(e)[:200])
    except BaseException as e:  # a bug: the parent reports it
        note(at="crashed", error=f"{type(e).__name__}: {e}"[:500])
    finally:
        os._exit(3)


# ---------------------------------------------------------------------------- trials


@dataclass
class Tally:
    backend: str
    trials: int = 0
    inside_op: int = 0
    interrupted: dict[str, int] = field(default_factory=dict)
    ops: int = 0
    failures: list[str] = field(default_factory=list)
    tmp_files: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.interrupted.items()))
        return (f"{self.backend:<22} {self.trials:>4} trials  {self.inside_op:>4} killed inside an operation ({kinds})  "
                f"{self.ops:>5} operations completed  {len(self.failures):>3} failures  "
                f"({self.tmp_files} temporary files left, {self.seconds:.0f} s)")


def kill_server(server: Any) -> None:
    """SIGKILL the postmaster and every process it started at the same moment."""
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    procs = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    procs.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    for p in procs:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:  # wait until they are gone (they are not our children)
        for _ in range(200):
            if not Path(f"/proc/{p}").exists() or "Z" in (Path(f"/proc/{p}/stat").read_text().split()[2:3] or ["Z"]):
                break
            time.sleep(0.02)


def run_trials(tally: Tally, cfg: Config, analyzer: Any, photos: list, trials: int, rng: random.Random,
               max_delay: float, server: Any = None, kill_the_server: bool = False, verbose: bool = False,
               aim_share: float = 0.5) -> None:
    """``trials`` kills; a share ``aim_share`` of them is aimed at the first 10 ms of an operation
    of a random kind (a short rename or delete is rarely hit by a kill at a uniform moment)."""
    t0 = time.perf_counter()
    key = analyzer.embedder.key
    with open_backend(cfg.gallery) as b:
        state = read_state(b, key)
    work = Path(tempfile.mkdtemp(prefix="facerec-crash-"))
    try:
        for trial in range(trials):
            journal = work / f"journal-{trial}.jsonl"
            pid = os.fork()
            if pid == 0:
                writer(cfg, analyzer, photos, journal, rng.randrange(2**31))
            try:  # whatever happens here, the writer never outlives its trial
                deadline = time.monotonic() + 60
                while not (started := journal.exists() and journal.stat().st_size > 0) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not started:
                    why = "the writer did not start within 60 s"
                    tally.failures.append(f"trial {trial}: {why}")
                    print(f"  FAIL {tally.backend} trial {trial}: {why}", flush=True)
                    continue
                aim = rng.choice(AIMS) if rng.random() < aim_share else None
                if aim is None:
                    time.sleep(rng.uniform(0.0, max_delay))
                else:  # kill within 10 ms after the writer began an operation of this kind
                    begin, end = f'{{"at": "begin", "op": "{aim}"'.encode(), time.monotonic() + 5
                    while time.monotonic() < end and not journal.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(begin):
                        time.sleep(0.0005)
                    time.sleep(rng.uniform(0.0, 0.01))
                if kill_the_server:
                    kill_server(server)
                    time.sleep(0.3)  # the writer sees the lost connection
            finally:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            if kill_the_server:
                server.start()
            entries = read_journal(journal)
            crashed = [e for e in entries if e["at"] == "crashed"]
            if kill_the_server:  # an operation the writer saw fail may have committed or not
                entries = [e for e in entries if e["at"] != "unavailable"]
            b = open_backend(cfg.gallery)  # writable: SQLite removes uncommitted crop files here
            try:
                problems = b.integrity_check()
                actual = read_state(b, key)
                paths = {str(Path(s.crop_path).resolve()) for s in b.samples()} if b.kind == "sqlite" else set()
            finally:
                b.close()
            ok, completed, inside, why = check(state, entries, actual)
            tally.trials += 1
            tally.ops += completed
            if inside is not None:
                tally.inside_op += 1
                tally.interrupted[inside] = tally.interrupted.get(inside, 0) + 1
            fails = [f"integrity: {p}" for p in problems] + ([why] if not ok else [])
            fails += [f"writer crashed: {e['error']}" for e in crashed]
            if b.kind == "sqlite":
                orphans, tmp = orphan_files(cfg, paths)
                tally.tmp_files = tmp
                fails += [f"crop file without a sample: {o}" for o in orphans]
            for f in fails:
                tally.failures.append(f"trial {trial}: {f}")
                print(f"  FAIL {tally.backend} trial {trial}: {f}", flush=True)
            if verbose or (trial + 1) % 10 == 0:
                print(f"  {tally.backend}: {trial + 1}/{trials} trials, {tally.ops} operations, "
                      f"{len(tally.failures)} failures; now {actual.describe()}", flush=True)
            state = actual
    finally:
        shutil.rmtree(work, ignore_errors=True)
        tally.seconds = time.perf_counter() - t0


def lfw_photos(count: int, seed: int = 0) -> list[tuple[Path, str]]:
    """``count`` real LFW photos of different people, with their sha256 (what enrollment keys on)."""
    import hashlib

    root = SHARED / "data" / "lfw"
    people = sorted(d for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    picked = random.Random(seed).sample(people, count)
    out = []
    for d in picked:
        f = sorted(d.glob("*.jpg"))[0]
        out.append((f, hashlib.sha256(f.read_bytes()).hexdigest()))
    return out


def build_analyzer(cfg: Config) -> Any:
    """The real detector and embedder, warmed up (so a forked writer does no lazy set-up)."""
    import numpy as np

    from facerec.gallery.service import GalleryService
    from facerec.imageio import read_image

    with tempfile.TemporaryDirectory() as tmp:
        svc = GalleryService(cfg.model_copy(update={"gallery": cfg.gallery.model_copy(
            update={"backend": "sqlite", "data_dir": tmp})}))
        analyzer = svc.analyzer
        svc.identify_image(read_image(lfw_photos(1)[0][0]))
        analyzer.embed_faces(np.zeros((1, 112, 112, 3), np.uint8))
        svc.close()
    return analyzer


def make_config(backend: str, data_dir: str, dsn: str | None) -> Config:
    # one thread: the writer is forked after the models loaded, and an OpenMP pool of
    # several threads does not survive a fork (the child would hang in its first model call)
    return load_config(None, {"gallery.backend": backend, "gallery.data_dir": data_dir, "gallery.dsn": dsn,
                              "models.detector": "yolov5n-0.5-face", "models.embedder": "mobilefacenet",
                              "runtime.engine": "torch", "runtime.threads": 1, "detection.input_size": 320})


def db_check_cli(cfg: Config, folder: Path) -> tuple[int, str]:
    """``facerec db check --json`` on the gallery, as an operator would run it (a partial config file)."""
    import subprocess

    conf = folder / "db-check.yaml"
    g = cfg.gallery
    conf.write_text(f"gallery:\n  backend: {g.backend}\n  data_dir: {g.data_dir}\n"
                    + (f"  dsn: {g.dsn}\n" if g.dsn else ""), encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", "from facerec.cli import main; main()", "db", "check", "--json", "--config", str(conf)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, " ".join((r.stdout or r.stderr).split())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=100, help="writer kills per backend")
    p.add_argument("--backend", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--server-kills", type=int, default=20, help="PostgreSQL server kills (0: none)")
    p.add_argument("--max-delay", type=float, default=1.5, help="latest kill after the writer is ready, s")
    p.add_argument("--photos", type=int, default=12, help="LFW photos the writer enrolls from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="one line per trial")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("sqlite", "postgres")]
    if bad:
        p.error(f"unknown backend {bad[0]!r}: use sqlite, postgres or both")

    import torch

    torch.set_num_threads(1)  # the writers are forked: no OpenMP pool may be running
    rng = random.Random(args.seed)
    photos = lfw_photos(args.photos, args.seed)
    root = Path(tempfile.mkdtemp(prefix="facerec-crash-"))
    analyzer = build_analyzer(make_config("sqlite", str(root / "warm"), None))
    tallies: list[Tally] = []
    server = None
    try:
        for backend in backends:
            dsn = None
            if backend == "postgres":
                from pg_server import PgServer

                server = PgServer().init().start()
                dsn = server.create_db("crash")
            cfg = make_config(backend, str(root / "gallery"), dsn)
            tally = Tally(f"{backend} writer kills")
            print(f"{backend}: {args.trials} SIGKILLs to a writer at random moments ...", flush=True)
            run_trials(tally, cfg, analyzer, photos, args.trials, rng, args.max_delay, verbose=args.verbose)
            tallies.append(tally)
            if backend == "postgres" and args.server_kills:
                tally = Tally("postgres server kills")
                print(f"postgres: {args.server_kills} SIGKILLs to the server during writes ...", flush=True)
                run_trials(tally, cfg, analyzer, photos, args.server_kills, rng, args.max_delay, server=server,
                           kill_the_server=True, verbose=args.verbose)
                tallies.append(tally)
            rc, out = db_check_cli(cfg, root)
            print(f"facerec db check ({backend}): exit {rc}: {out}", flush=True)
            if rc != 0:
                tallies[-1].failures.append(f"facerec db check exit {rc}: {out}")
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {os.cpu_count()} cores (shared with other jobs); kills at uniform 0..{args.max_delay} s "
          "after the writer opened the gallery")
    for t in tallies:
        print(t.line())
    return 1 if any(t.failures for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
