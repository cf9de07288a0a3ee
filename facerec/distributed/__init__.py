"""Where the batch jobs ``facerec embed`` and ``facerec identify`` run.

``--executor local`` (the default) runs them in this process, as always. ``--executor ray``
runs the model work on a Ray cluster (:mod:`facerec.distributed.ray_exec`; Ray is the
optional extra ``facerec[ray]`` and is imported only then). Either way this host decides
what to do and writes the results: which samples need vectors and how they are committed
stay in :meth:`facerec.gallery.service.GalleryService.embed_all`, and identification
results are matched against the gallery and printed here, in the order of the photos.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from facerec.config import Config
from facerec.errors import FacerecError, ImageReadError
from facerec.imageio import read_image

if TYPE_CHECKING:
    from facerec.distributed.ray_exec import RayExecutor
    from facerec.gallery.service import GalleryService

EXECUTORS = ("local", "ray")
#: Photos per actor call of ``facerec identify --executor ray`` unless ``--batch-size``.
IDENTIFY_BATCH = 4


class Identified(NamedTuple):
    """One photo of ``facerec identify``, named.

    Attributes:
        path: the photo as given.
        image: its pixels when this host decoded them (local runs, ``--annotate``).
        faces: :meth:`~facerec.gallery.service.GalleryService.identify_image`'s answer.
        error: why the photo was skipped (unreadable, not an image); ``None`` when it was not.
    """

    path: Path
    image: np.ndarray | None
    faces: list[dict]
    error: str | None = None


def add_executor_options(parser: argparse.ArgumentParser, *, batch_size: bool) -> None:
    """``--executor``, ``--ray-address`` and ``--actors`` (and ``--batch-size`` when the
    command has none of its own)."""
    g = parser.add_argument_group("where the work runs")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: in this process (default); ray: on the Ray cluster at --ray-address")
    g.add_argument("--ray-address", metavar="HOST:PORT",
                   help="the Ray head's address, as `ray start --head` printed it (default: $RAY_ADDRESS)")
    g.add_argument("--actors", type=int, metavar="N",
                   help="Ray actors, each loading the models once (default: the cluster's CPUs / runtime.threads)")
    if batch_size:
        g.add_argument("--batch-size", type=int, metavar="N",
                       help=f"photos per Ray actor call (default: {IDENTIFY_BATCH})")


@contextmanager
def open_executor(args: argparse.Namespace, cfg: Config) -> Iterator[RayExecutor | None]:
    """The executor the command line asks for: ``None`` for local runs, else a connected
    :class:`~facerec.distributed.ray_exec.RayExecutor` (disconnected on leaving).

    Raises:
        FacerecError: a bad ``--actors`` / ``--batch-size``, Ray missing, no address, or
            the cluster cannot be reached.
    """
    for opt in ("actors", "batch_size"):
        value = getattr(args, opt, None)
        if value is not None and value < 1:
            raise FacerecError(f"--{opt.replace('_', '-')} must be at least 1 (got {value})")
    if getattr(args, "executor", "local") != "ray":
        yield None
        return
    from facerec.distributed.ray_exec import RayExecutor

    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise FacerecError("--executor ray needs --ray-address HOST:PORT (the address `ray start --head` printed) "
                           "or the RAY_ADDRESS environment variable")
    with RayExecutor(address, cfg, actors=args.actors, progress=not getattr(args, "no_progress", False)) as ex:
        yield ex


def identify_photos(service: GalleryService, files: list[Path], executor: RayExecutor | None = None, *,
                    batch_size: int | None = None, keep_images: bool = False) -> Iterator[Identified]:
    """Name the faces of every photo, in the order of ``files``.

    Args:
        executor: ``None`` to run here, photo by photo.
        batch_size: photos per actor call on a cluster.
        keep_images: also decode each photo here (``--annotate``); local runs always do.
    """
    if executor is not None:
        yield from executor.identify(service, files, batch_size or IDENTIFY_BATCH, keep_images=keep_images)
        return
    for f in files:
        try:
            image = read_image(f)
        except ImageReadError as e:
            yield Identified(f, None, [], str(e))
            continue
        yield Identified(f, image, service.identify_image(image))
