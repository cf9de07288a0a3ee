"""``/api/cameras``, ``/api/events`` and ``/api/stream``: the live view of the daemon.

They read the :class:`~facerec.serve.state.LiveFeed` the server was started with and answer
503 (with the way to attach one) without it; a camera named in the query that the feed
does not have is a 404. The MJPEG stream sends a frame only when the feed has a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from facerec.serve.state import LiveFeed, ServeState

#: Most events one ``GET /api/events`` returns.
MAX_EVENTS = 500


def add_live_routes(api: APIRouter, srv: ServeState) -> None:
    """Register the live routes on ``api`` (the token-guarded ``/api`` router).

    Args:
        api: the ``/api`` router of the app.
        srv: the app's shared state (its ``feed`` may be ``None``).
    """

    def require_camera(feed: LiveFeed, camera: str | None) -> str | None:
        if camera is not None and camera not in feed.cameras():
            raise HTTPException(404, f"no camera named {camera!r}; the cameras are {feed.cameras()}")
        return camera

    @api.get("/cameras", tags=["live"], responses={503: {"description": "No live source attached."}})
    async def cameras() -> dict:
        """Every camera of the daemon with its stats (frames, fps, faces, tracks, events)."""
        feed = srv.require_feed()
        stats = feed.camera_stats()
        return {"cameras": [{"name": name, "stats": stats.get(name, {})} for name in feed.cameras()]}

    @api.get("/events", tags=["live"], responses={503: {"description": "No live source attached."},
                                                  404: {"description": "No such camera."}})
    async def events(n: Annotated[int, Query(ge=1, le=MAX_EVENTS, description="How many recent events.")] = 50,
                     camera: Annotated[str | None, Query(description="Only this camera's events.")] = None) -> dict:
        """Recent events of the live cameras (or of one), oldest first."""
        feed = srv.require_feed()
        return {"events": feed.recent_events(n, require_camera(feed, camera))}

    @api.get("/stream", tags=["live"], response_class=StreamingResponse,
             responses={200: {"content": {"multipart/x-mixed-replace; boundary=frame": {}}},
                        503: {"description": "No live source attached."}, 404: {"description": "No such camera."}})
    async def stream(
        request: Request,
        fps: Annotated[float, Query(gt=0, le=30, description="Most frames per second sent.")] = 10.0,
        frames: Annotated[int | None, Query(ge=1, description="Stop after this many frames (default: never).")] = None,
        camera: Annotated[str | None, Query(description="The camera shown (default: the first).")] = None,
    ) -> StreamingResponse:
        """The annotated live frames as MJPEG (``multipart/x-mixed-replace``); each part
        carries ``Content-Length`` so a script can cut the stream without scanning."""
        feed = srv.require_feed()
        return StreamingResponse(mjpeg(feed, request, 1.0 / fps, frames, require_camera(feed, camera)),
                                 media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})


async def mjpeg(feed: LiveFeed, request: Request, interval: float, frames: int | None,
                camera: str | None = None) -> AsyncIterator[bytes]:
    """The parts of a ``multipart/x-mixed-replace; boundary=frame`` stream of ``camera``.

    Args:
        feed: the live source.
        request: the client's request; the stream ends when it disconnects.
        interval: seconds between two looks at the feed (1 / the most frames per second).
        frames: stop after this many frames (``None``: until the client goes).
        camera: the camera shown (``None``: the feed's first).
    """
    last: bytes | None = None
    sent = 0
    while frames is None or sent < frames:
        if await request.is_disconnected():
            return
        jpg = feed.latest_jpeg(camera)
        if jpg is not None and jpg is not last:
            last = jpg
            sent += 1
            yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpg)).encode()
                   + b"\r\n\r\n" + jpg + b"\r\n")
        await asyncio.sleep(interval)
