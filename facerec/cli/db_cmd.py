"""``facerec db``: schema upgrades, integrity checks and copies between gallery backends."""

from __future__ import annotations

import argparse
import time

from facerec.cli.common import print_json
from facerec.config import Config, GalleryConfig
from facerec.errors import GalleryError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import plain_parser

    common = plain_parser()  # no model runs here: no --detector/--embedder/--threshold/--flip

    p = sub.add_parser("db", parents=[common], help="gallery database: upgrade, check, copy between backends",
                       description="Maintain the gallery database named by gallery.backend / gallery.dsn "
                                   "(or gallery.data_dir for SQLite).")
    dsub = p.add_subparsers(dest="db_command", metavar="COMMAND")
    u = dsub.add_parser("upgrade", parents=[common], help="apply pending schema migrations",
                        description="Apply the schema migrations this facerec knows to the configured gallery. "
                                    "Safe to run while daemons read it; hosts starting at once take turns.")
    u.set_defaults(func=cmd_upgrade)
    c = dsub.add_parser("check", parents=[common], help="integrity check of the configured gallery",
                        description="Check that every vector belongs to a sample, every sample to a person, every "
                                    "crop matches its hash. Exit status 1 when a problem is found.")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_check)
    cp = dsub.add_parser(
        "copy", parents=[common], help="copy a whole gallery between SQLite and PostgreSQL (either direction)",
        description="Copy people, samples with their crops, every embedder's vectors, names and times from one "
                    "gallery into an empty one, in one transaction. A gallery is named by a PostgreSQL DSN "
                    "(postgresql://...) or a folder (SQLite). Sample ids are assigned anew.")
    cp.add_argument("--from", dest="src", metavar="GALLERY", help="source (default: the configured gallery)")
    cp.add_argument("--to", dest="dst", metavar="GALLERY", required=True, help="destination; must be empty")
    cp.set_defaults(func=cmd_copy)
    p.set_defaults(func=lambda args, cfg: (p.print_help(), 2)[1])


def gallery_config(spec: str | None, cfg: Config) -> GalleryConfig:
    """A ``gallery:`` section for ``spec`` (DSN or folder), or the configured one."""
    if spec is None:
        return cfg.gallery
    if spec.startswith(("postgresql://", "postgres://")) or "dbname=" in spec:
        return cfg.gallery.model_copy(update={"backend": "postgres", "dsn": spec})
    return cfg.gallery.model_copy(update={"backend": "sqlite", "data_dir": spec})


def cmd_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.backend import open_backend

    with open_backend(cfg.gallery) as b:  # opening for writing applies what is pending
        before, after = b.schema_upgrade
        print(f"{b.label}: schema {before} -> {after}" if before != after else f"{b.label}: schema {after}, up to date")
    return 0


def cmd_check(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.backend import open_backend

    b = open_backend(cfg.gallery, readonly=True)
    try:
        problems = b.integrity_check()
        people, samples = len(b.people()), b.count()
        label = b.label
    finally:
        b.close()
    if args.json:
        print_json({"gallery": label, "people": people, "samples": samples, "problems": problems})
    else:
        print(f"{label}: {people} people, {samples} samples, "
              + ("no problem found" if not problems else f"{len(problems)} problem(s):"))
        for p in problems:
            print(f"  {p}")
    return 1 if problems else 0


def copy_gallery(src: GalleryConfig, dst: GalleryConfig) -> tuple[int, int, str, str]:
    """Copy everything of ``src`` into the empty gallery ``dst``; returns ``(people, samples,
    source label, destination label)``.

    Raises:
        GalleryError: ``dst`` is not empty, or source and destination are the same.
    """
    from facerec.gallery.backend import open_backend

    a = open_backend(src, readonly=True)
    try:
        b = open_backend(dst)
        try:
            if a.label == b.label:
                raise GalleryError(f"source and destination are the same gallery ({a.label})")
            if b.people() or b.count():
                raise GalleryError(f"the destination {b.label} is not empty ({len(b.people())} people, {b.count()} "
                                   "samples); copy into an empty gallery (facerec enroll import merges archives)")
            people, samples = a.dump()
            b.add_dumped(people, samples)
            problems = b.integrity_check()
            if problems:
                raise GalleryError(f"the copy in {b.label} failed its integrity check: {'; '.join(problems[:5])}")
            return len(people), len(samples), a.label, b.label
        finally:
            b.close()
    finally:
        a.close()


def cmd_copy(args: argparse.Namespace, cfg: Config) -> int:
    src, dst = gallery_config(args.src, cfg), gallery_config(args.dst, cfg)
    t0 = time.perf_counter()
    people, samples, src_label, dst_label = copy_gallery(src, dst)
    print(f"copied {people} people and {samples} samples (crops and vectors) from {src_label} to {dst_label} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
