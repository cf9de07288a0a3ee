"""Batch jobs on a Ray cluster: a pool of actors, each loading the models once.

The driver (the ``facerec`` process) keeps the gallery: it reads the crops (or photos)
batch by batch, puts each batch in Ray's object store and hands it to the least busy actor,
at most :data:`IN_FLIGHT` batches per actor at a time, so memory stays bounded however
large the job. Workers never open the gallery or the driver's files, so a SQLite gallery
on the driver's disk and a PostgreSQL gallery work alike, with workers on any host. The
driver writes each result as it returns, one transaction per batch, through the same code
as a local run.

An actor that dies (its node lost, killed, out of memory) is dropped and its batches go
to the others; when none is left the job stops with a message, keeping every batch
already written, and a rerun does the rest. A Python error inside a worker (weights
missing on that host, say) stops the job with that error.

Ray's own data pipelines (``ray.data``) were not used for the loop: on small nodes an
actor pool there holds every CPU so its read tasks never run, ``from_items`` would hold
every crop in the driver's memory at once, and a pool restarting on a lost node waits for
a CPU that may never come back.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from facerec.config import Config
from facerec.errors import FacerecError, ImageReadError
from facerec.gallery.service import CropItem, EmbeddedBatch, embed_crops, faces_of
from facerec.imageio import decode_image, read_image, read_image_bytes
from facerec.types import Detections, Embeddings

if TYPE_CHECKING:
    from facerec.distributed import Identified
    from facerec.gallery.service import GalleryService

log = logging.getLogger(__name__)

#: Batches handed to one actor at a time: one running, one waiting, so it never idles.
IN_FLIGHT = 2
#: A batch whose actor died is given to another actor at most this many times.
MAX_TRIES = 3
#: Seconds to wait for the actors to load their models.
START_TIMEOUT_S = 300.0

B = TypeVar("B")
R = TypeVar("R")


def import_ray() -> Any:
    """The ``ray`` module, or a message saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FacerecError("--executor ray needs Ray, which is not installed: pip install 'facerec[ray]' "
                           "(or run with --executor local)") from None
    return ray


@dataclass
class PhotoItem:
    """One photo of ``identify`` on its way to a worker: its name and undecoded bytes,
    or why this host could not read it."""

    name: str
    data: bytes | None
    error: str = ""


@dataclass
class PhotoFaces:
    """A worker's answer for one photo: the faces and their vectors, or why it was skipped."""

    detections: Detections | None
    embeddings: Embeddings | None
    error: str = ""


@dataclass
class ActorInfo:
    """Where an actor runs and what it loaded.

    Attributes:
        node_id: Ray's id of its node.
        host: the node's host name.
        pid: the worker process.
        key: the embedder key its models produce (must equal the driver's).
        load_s: seconds it took to build the models.
    """

    node_id: str
    host: str
    pid: int
    key: str
    load_s: float


class FaceWorker:
    """The models of one Ray actor, built once from the driver's configuration.

    Args:
        cfg_data: the driver's :class:`~facerec.config.Config` as a dict (``runtime:``
            included, so engine, precision and threads apply here).
        detector: also build the detector (``identify``); ``embed`` needs the embedder only.
    """

    def __init__(self, cfg_data: dict[str, Any], detector: bool) -> None:
        import ray

        from facerec.models import build_detector, build_embedder

        t0 = time.perf_counter()
        self.cfg = Config.model_validate(cfg_data)
        m = self.cfg.models
        self.embedder = build_embedder(self.cfg, None if m.embedder == "auto" else m.embedder)
        self.detector = build_detector(self.cfg, None if m.detector == "auto" else m.detector) if detector else None
        load_s = time.perf_counter() - t0
        self.about = ActorInfo(ray.get_runtime_context().get_node_id(), socket.gethostname(), os.getpid(),
                               str(self.embedder.key), load_s)
        print(f"facerec worker on node {self.about.node_id} ({self.about.host}, pid {self.about.pid}): "
              f"{'detector and ' if detector else ''}{self.about.key} loaded in {load_s:.2f} s", flush=True)

    def info(self) -> ActorInfo:
        return self.about

    def _embed(self, faces: Any) -> Embeddings:
        return self.embedder.embed(faces, flip=self.cfg.recognition.flip_tta)

    def embed(self, items: list[CropItem]) -> EmbeddedBatch:
        """Vectors of one batch of crops (see :func:`~facerec.gallery.service.embed_crops`)."""
        return embed_crops(self._embed, items, self.about.host)

    def identify(self, photos: list[PhotoItem]) -> list[PhotoFaces]:
        """Faces and vectors of each photo of a batch, decoded as a local run decodes them."""
        if self.detector is None:
            raise RuntimeError("this actor was started without a detector")
        out = []
        for p in photos:
            if p.data is None:
                out.append(PhotoFaces(None, None, p.error))
                continue
            try:
                image = decode_image(p.data, p.name)
            except ImageReadError as e:
                out.append(PhotoFaces(None, None, str(e)))
                continue
            det, emb = faces_of(self.detector, self._embed, image, self.cfg.gallery.pad_retry)
            out.append(PhotoFaces(det, emb))
        return out


def _cause(err: BaseException) -> str:
    """The worker's own error message out of a Ray error (its first line, without Ray's
    traceback)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and cause is not err:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    return str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail at once when nothing listens at ``HOST:PORT`` (``ray.init`` would wait for
    minutes); other address forms (``ray://``, ``auto``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise FacerecError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} (start its head with "
                           "`ray start --head --port PORT` and pass that host and port; see the README)") from None


class RayExecutor:
    """A connection to a Ray cluster that runs ``embed`` and ``identify`` batches.

    Args:
        address: the head's ``HOST:PORT``.
        cfg: the configuration the actors build their models from.
        actors: how many actors; default: the cluster's CPUs / CPUs per actor.
        progress: a tqdm bar on this host's stderr.

    Raises:
        FacerecError: Ray is not installed or the cluster cannot be reached.
    """

    def __init__(self, address: str, cfg: Config, *, actors: int | None = None, progress: bool = True) -> None:
        self.ray = import_ray()
        self.address = address
        self.cfg = cfg
        self.actors = actors
        self.progress = progress
        self.infos: list[ActorInfo] = []

    def __enter__(self) -> RayExecutor:
        _check_reachable(self.address)
        # the core worker's own log lines (a missing default route, ...) are not the user's business
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        try:
            self.ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            raise FacerecError(f"cannot reach the Ray cluster at {self.address}: {_cause(e)} (start it with "
                               "`ray start --head --port PORT` and pass that host and port; see the README)") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.ray.shutdown()

    # -------------------------------------------------------------- actors

    @property
    def cpus_per_actor(self) -> int:
        """``runtime.threads``, or 1: an actor reserves that many CPUs and runs that many threads."""
        return self.cfg.runtime.threads or 1

    def _worker_config(self) -> dict[str, Any]:
        """The config as the actors get it: threads pinned to their CPUs, paths absolute."""
        cfg = self.cfg.model_copy(deep=True)
        cfg.runtime.threads = self.cpus_per_actor
        for section, name in ((cfg.models, "weights_dir"), (cfg.runtime, "cache_dir")):
            value = getattr(section, name)
            if value:
                setattr(section, name, str(Path(value).expanduser().absolute()))
        return cfg.model_dump(mode="json")

    def start(self, detector: bool) -> list[Any]:
        """Start the actors and wait until each has loaded its models.

        Raises:
            FacerecError: an actor could not load the models (the message is the
                worker's), or none started in :data:`START_TIMEOUT_S`.
        """
        ray = self.ray
        cpus = self.cpus_per_actor
        total = int(ray.cluster_resources().get("CPU", 0))
        fit = max(1, total // cpus)
        n = self.actors or fit
        if n > fit:  # the rest would wait for CPUs until START_TIMEOUT_S
            print(f"warning: the cluster has {total} CPU(s), room for {fit} actor(s) of {cpus} CPU(s); "
                  f"starting {fit}, not {n}", file=sys.stderr)
            n = fit
        remote = ray.remote(num_cpus=cpus, max_restarts=0, max_task_retries=0)(FaceWorker)
        data = self._worker_config()
        handles = [remote.options(scheduling_strategy="SPREAD").remote(data, detector) for _ in range(n)]
        t0 = time.perf_counter()
        refs = [h.info.remote() for h in handles]
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT_S)
        actors, self.infos = [], []
        for h, ref in zip(handles, refs):
            if ref not in ready:
                ray.kill(h)
                continue
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise FacerecError(f"a Ray worker could not load the models: {_cause(e)}") from None
            actors.append(h)
            self.infos.append(info)
            log.info("actor on node %s (%s, pid %d): models loaded in %.2f s", info.node_id, info.host, info.pid,
                     info.load_s)
        if not actors:
            raise FacerecError(f"no Ray actor started within {START_TIMEOUT_S:.0f} s: the cluster has {total} CPU(s) "
                               f"and each actor needs {cpus} (runtime.threads); free some or pass --actors")
        if waiting:
            print(f"warning: {len(waiting)} of {n} Ray actors did not start within {START_TIMEOUT_S:.0f} s; "
                  f"going on with {len(actors)}", file=sys.stderr)
        loads = [i.load_s for i in self.infos]
        print(f"ray: {len(actors)} actor(s) on {len({i.node_id for i in self.infos})} node(s) of {self.address}, "
              f"{cpus} CPU each, models loaded in {min(loads):.2f}-{max(loads):.2f} s per actor "
              f"(ready after {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        return actors

    def _run(self, actors: list[Any], method: str, batches: Iterable[B], *, ordered: bool) -> Iterator[R]:
        """Hand every batch to an actor's ``method`` and yield the results as they come
        back (in the order of ``batches`` when ``ordered``).

        Raises:
            FacerecError: a worker raised, every actor was lost, or a batch lost its
                actor :data:`MAX_TRIES` times.
        """
        ray = self.ray
        alive = dict(enumerate(actors))
        load = dict.fromkeys(alive, 0)
        pending: dict[Any, tuple[int, int, Any]] = {}  # result ref -> (batch index, actor, batch ref)
        retry: deque[tuple[int, Any]] = deque()
        tries: dict[int, int] = {}
        ahead: dict[int, R] = {}
        source = iter(batches)
        exhausted, issued, emitted = False, 0, 0
        while True:
            while alive and (retry or not exhausted) and len(ahead) < 4 * len(alive):
                a = min(alive, key=lambda k: load[k])
                if load[a] >= IN_FLIGHT:
                    break
                if retry:
                    idx, batch_ref = retry.popleft()
                else:
                    try:
                        batch = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    idx, batch_ref = issued, ray.put(batch)
                    issued += 1
                pending[getattr(alive[a], method).remote(batch_ref)] = (idx, a, batch_ref)
                load[a] += 1
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            idx, a, batch_ref = pending.pop(ref)
            load[a] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise FacerecError(f"a Ray worker failed: {_cause(e)}") from None
            except ray.exceptions.RayError as e:  # the actor or its node is gone
                if alive.pop(a, None) is not None:
                    print(f"warning: lost a Ray actor ({_cause(e)}); {len(alive)} left, its work goes to them",
                          file=sys.stderr)
                tries[idx] = tries.get(idx, 0) + 1
                if not alive or tries[idx] >= MAX_TRIES:
                    what = "every Ray actor was lost" if not alive else f"a batch lost its actor {MAX_TRIES} times"
                    raise FacerecError(f"{what} (last: {_cause(e)}); every batch finished before was written, "
                                       "rerun to do the rest") from None
                retry.append((idx, batch_ref))
                continue
            if not ordered:
                yield result
                continue
            ahead[idx] = result
            while emitted in ahead:
                yield ahead.pop(emitted)
                emitted += 1

    # -------------------------------------------------------------- the jobs

    def embed(self, batches: Iterator[list[CropItem]]) -> Iterator[EmbeddedBatch]:
        """Vectors of every crop batch, in the order they finish (an
        :data:`~facerec.gallery.service.EmbedRunner` for ``embed_all``)."""
        first = next(batches, None)
        if first is None:  # nothing to embed: no actor is started
            return
        actors = self.start(detector=False)
        t0, n = time.perf_counter(), 0
        results: Iterator[EmbeddedBatch] = self._run(actors, "embed", itertools.chain([first], batches), ordered=False)
        for result in results:
            n += result.count
            yield result
        self._rate("crop", n, time.perf_counter() - t0, len(actors))

    @staticmethod
    def _rate(what: str, n: int, seconds: float, actors: int) -> None:
        """One line with the steady throughput (after the model loads), for sizing a cluster."""
        per = 1000 * seconds * actors / n if n else 0.0
        print(f"ray: {n} {what}(s) in {seconds:.1f} s once the actors were ready, {per:.1f} ms per {what} "
              f"per actor", file=sys.stderr)

    def identify(self, service: GalleryService, files: list[Path], batch_size: int, *,
                 keep_images: bool = False) -> Iterator[Identified]:
        """Detect and embed the faces of ``files`` on the cluster, match them against the
        gallery here, in the order of ``files``."""
        from facerec.distributed import Identified
        from facerec.gallery.service import _progress

        if not files:
            return
        actors = self.start(detector=True)

        def batches() -> Iterator[list[PhotoItem]]:
            for i in range(0, len(files), batch_size):
                chunk = []
                for f in files[i : i + batch_size]:
                    try:
                        chunk.append(PhotoItem(str(f), read_image_bytes(f)))
                    except ImageReadError as e:
                        chunk.append(PhotoItem(str(f), None, str(e)))
                yield chunk

        bar = _progress(total=len(files), desc="identify", enabled=self.progress, unit="photo")
        n, t0 = 0, time.perf_counter()
        try:
            results: Iterator[list[PhotoFaces]] = self._run(actors, "identify", batches(), ordered=True)
            for batch in results:
                for r in batch:
                    f = files[n]
                    n += 1
                    bar.update(1)
                    if r.detections is None:
                        yield Identified(f, None, [], r.error)
                        continue
                    image = read_image(f) if keep_images else None
                    yield Identified(f, image, service.describe_faces(r.detections, r.embeddings))
        finally:
            bar.close()
        self._rate("photo", n, time.perf_counter() - t0, len(actors))

