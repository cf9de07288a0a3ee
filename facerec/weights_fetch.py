"""Fetching weight files on request: ``facerec weights fetch``.

This is the only place facerec downloads anything, and only when a user asks; loading a
model never does (see :mod:`facerec.weights`). A file comes from, in this order of choice:

- ``from_dir``: a local folder (an offline copy, a USB stick); no network at all;
- ``mirror``: ``<mirror>/<file name>``, then ``<mirror>/<upstream name>`` where the
  upstream file is called differently (e.g. ``mobilefacenet.pt``);
- otherwise the spec's published addresses (:attr:`WeightsSpec.urls`), in order.

Downloads go to ``<dest>/<file>.part`` and resume with an HTTP ``Range`` request when the
connection breaks or the command is run again. The sha256 is checked on the ``.part`` file;
only a match is moved into place (``os.replace``, atomic on one file system), a mismatch is
deleted, so a wrong file never sits under the model's name. A file whose upstream publishes
no sha256 is kept but reported as *unverified*.
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from facerec import __version__
from facerec.weights import Backend, WeightsSpec, sha256_file

log = logging.getLogger(__name__)

MIRROR_ENV = "FACEREC_WEIGHTS_MIRROR"

#: Seconds without a byte before a connection is given up (and resumed).
TIMEOUT_S = 30.0
#: Connection attempts per address, each resuming where the last one stopped.
ATTEMPTS = 4
_CHUNK = 1 << 16

Status = Literal["verified", "unverified", "failed"]


@dataclass(frozen=True)
class WeightsFile:
    """One file a model needs.

    Attributes:
        model: registry name, e.g. ``"mobilefacenet"``.
        backend: ``"torch"`` (the checkpoint) or ``"onnx"`` (the upstream export).
        file: the name it lands under (the models table's name).
        sha256: published hash, or ``None``.
        urls: published direct addresses, in the order to try.
        upstream_names: other names the same file has (aliases, the names in ``urls``).
        page: where a person gets it by hand (shown when nothing else works).
    """

    model: str
    backend: Backend
    file: str
    sha256: str | None
    urls: tuple[str, ...]
    upstream_names: tuple[str, ...]
    page: str


@dataclass
class FetchResult:
    """What happened to one :class:`WeightsFile`.

    Attributes:
        item: the file asked for.
        status: ``verified`` (sha256 matches), ``unverified`` (present, no published hash)
            or ``failed`` (not present afterwards).
        path: where it is now (``None`` when failed).
        how: ``"already present"``, ``"copied from DIR"``, ``"downloaded from URL"``.
        problems: one line per address or folder that did not give a good file.
    """

    item: WeightsFile
    status: Status
    path: Path | None = None
    how: str = ""
    problems: list[str] = field(default_factory=list)


def files_of(model: str, spec: WeightsSpec) -> list[WeightsFile]:
    """The files of one model: its checkpoint and, where published, its ONNX export."""
    out = []
    for backend in ("torch", "onnx"):
        names = spec.names(backend)
        if not names:
            continue
        urls = spec.download_urls(backend)
        upstream = list(names[1:])
        for u in urls:
            base = Path(urllib.parse.urlparse(u).path).name
            if base and "." in base and base not in upstream and base != names[0]:
                upstream.append(base)
        out.append(WeightsFile(model, backend, names[0], spec.expected_sha256(backend),
                               urls, tuple(upstream), spec.url))
    return out


def mirror_urls(item: WeightsFile, mirror: str) -> tuple[str, ...]:
    """``<mirror>/<file>`` then ``<mirror>/<upstream name>`` for each other name."""
    base = mirror.rstrip("/")
    return tuple(f"{base}/{urllib.parse.quote(n)}" for n in (item.file, *item.upstream_names))


class _Rejected(Exception):
    """This source gives no good file (HTTP error, HTML page, wrong hash); try the next."""


def _check_and_place(part: Path, item: WeightsFile, final: Path) -> Status:
    """Verify ``part`` and move it to ``final``; a mismatch deletes it and raises."""
    if part.stat().st_size == 0:
        part.unlink()
        raise _Rejected("empty file")
    with part.open("rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        part.unlink()
        raise _Rejected("got an HTML page, not a weights file (the address wants a browser)")
    if item.sha256:
        actual = sha256_file(part)
        if actual != item.sha256:
            part.unlink()
            raise _Rejected(f"sha256 {actual} is not the published {item.sha256}; discarded")
    os.replace(part, final)
    return "verified" if item.sha256 else "unverified"


def _bar(total: int | None, initial: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)


def _download(url: str, part: Path, desc: str, progress: bool) -> None:
    """Bring ``part`` to the full content of ``url``, resuming with ``Range``.

    Raises:
        _Rejected: the address answers with an error, or keeps breaking off.
    """
    last: str = ""
    for _attempt in range(ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": f"facerec/{__version__}"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                code = resp.getcode()
                if have and code == 200:  # the server ignores Range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                with part.open("ab" if have else "wb") as out, _bar(total, have, desc, progress) as bar:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                last = f"connection closed at {part.stat().st_size} of {total} bytes"
                log.info("%s: %s; resuming", url, last)
                continue
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # asked past the end: the .part is already whole
                return
            raise _Rejected(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:  # refused, reset, timeout, cut short
            last = str(getattr(e, "reason", None) or e) or type(e).__name__
            log.info("%s: %s; resuming", url, last)
            if isinstance(e, urllib.error.URLError) and not part.exists():
                raise _Rejected(last) from None  # nothing came at all: no point in retrying
    raise _Rejected(f"gave up after {ATTEMPTS} attempts: {last}")


def fetch_one(item: WeightsFile, dest: Path, *, from_dir: Path | None = None, mirror: str | None = None,
              progress: bool = True) -> FetchResult:
    """Make ``dest/item.file`` present and checked; see the module docstring for the order."""
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / item.file
    part = dest / (item.file + ".part")
    problems: list[str] = []
    if final.is_file():
        if not item.sha256:
            return FetchResult(item, "unverified", final, "already present")
        if sha256_file(final) == item.sha256:
            return FetchResult(item, "verified", final, "already present")
        problems.append(f"{final}: sha256 does not match the published one; replacing it")

    if from_dir is not None:
        for name in (item.file, *item.upstream_names):
            src = from_dir / name
            if not src.is_file():
                continue
            try:
                with src.open("rb") as fin, part.open("wb") as fout, \
                        _bar(src.stat().st_size, 0, item.file, progress) as bar:
                    for chunk in iter(lambda: fin.read(1 << 20), b""):
                        fout.write(chunk)
                        bar.update(len(chunk))
                status = _check_and_place(part, item, final)
                return FetchResult(item, status, final, f"copied from {src}", problems)
            except _Rejected as e:
                problems.append(f"{src}: {e}")
        if not any("sha256" in p for p in problems):
            problems.append(f"{from_dir}: has none of {', '.join((item.file, *item.upstream_names))}")
        return FetchResult(item, "failed", None, "", problems)

    urls = mirror_urls(item, mirror) if mirror else item.urls
    if not urls:
        problems.append(f"no direct download address is published; get {item.file} by hand from {item.page}")
    for url in urls:
        try:
            _download(url, part, item.file, progress)
            status = _check_and_place(part, item, final)
            return FetchResult(item, status, final, f"downloaded from {url}", problems)
        except _Rejected as e:
            problems.append(f"{url}: {e}")  # a .part left by a broken connection stays: the next try resumes it
    return FetchResult(item, "failed", None, "", problems)


def copy_tree_hint(results: list[FetchResult]) -> str:
    """One sentence on what to do when some files failed."""
    failed = [r for r in results if r.status == "failed"]
    if not failed:
        return ""
    return ("Get the missing files by hand from the pages named above (or from a machine that has them: "
            "`facerec weights fetch --from DIR`), or point --mirror / FACEREC_WEIGHTS_MIRROR at a server "
            "that serves them by file name.")


__all__ = ["MIRROR_ENV", "FetchResult", "WeightsFile", "fetch_one", "files_of", "mirror_urls", "copy_tree_hint"]
