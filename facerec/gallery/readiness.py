"""Whether a gallery can name anyone with the running embedder, and what to do if not.

A daemon started on an empty gallery, or on one whose vectors were made by another
embedder (``--engine onnx`` after enrolling with the default, another ``--embedder``, a
typo in ``--data-dir``), calls every face unknown. :func:`gallery_warning` says so in one
sentence that names the fix; the daemon logs it at start, its ``--stats`` file and the
web page show it while it holds, and ``facerec identify`` refuses to run with it. The
daemon keeps watching the gallery, so people enrolled or embedded later are picked up
without a restart.
"""

from __future__ import annotations

from typing import Protocol

from facerec.types import EmbedderKey


class _Gallery(Protocol):
    def people(self) -> list: ...

    def embedder_keys(self) -> dict[str, int]: ...


def gallery_warning(store: _Gallery | None, key: EmbedderKey | str, where: str, *,
                    live: bool = True) -> str | None:
    """``None`` when ``store`` holds vectors of ``key``; else why nobody can be named and
    how to fix it.

    Args:
        store: an open gallery backend (``None``: no gallery was found at all).
        key: the running embedder's key.
        where: the gallery as the user knows it (:func:`gallery_where`).
        live: for the daemon and the page, which pick up a gallery that changes later;
            ``False`` for a command that reads the gallery once (``facerec identify``):
            the fix is then to run the command again.
    """
    keys = store.embedder_keys() if store is not None else {}
    if keys.get(str(key), 0) > 0:
        return None
    people = len(store.people()) if store is not None else 0
    if people == 0:
        return (f"the gallery at {where} is empty: every face is unknown until people are enrolled "
                f"(facerec enroll add NAME PHOTO..., or photos in raw/<Person>/ then facerec align and "
                f"facerec embed)" + ("; they are picked up without a restart" if live else ""))
    others = ", ".join(f"{k} ({n} vectors)" for k, n in sorted(keys.items(), key=lambda kv: -kv[1]))
    made = f"its vectors were made with {others}" if others else "none of its samples has a vector yet"
    fix = ("as this daemon, or start the daemon with the embedder the vectors were made with" if live else
           "as this command, or run the command with the embedder the vectors were made with")
    return (f"the gallery at {where} has {people} people but no vectors for the running embedder {key} "
            f"({made}): every face is unknown until you run facerec embed with the same --embedder/--engine "
            f"{fix}")
