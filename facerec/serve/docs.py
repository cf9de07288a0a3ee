"""The interactive API documentation of ``facerec serve`` at ``/docs``, fully offline.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it fails on a machine without
internet access and breaks the page's content security policy (``script-src 'self'``, no
inline script). Here the page is ours: Swagger UI's script and style come from the
``fastapi-offline`` package (a dependency of the ``serve`` extra, which ships the Swagger UI
distribution inside the wheel), the start-up script is a file of our own
(``static/api-docs.js``), and the schema is the app's ``/openapi.json``. Nothing is fetched
from another host.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

#: Where the page and its assets are served.
DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>facerec HTTP API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" href="{assets}/favicon.png">
</head>
<body>
  <div id="swagger-ui" data-openapi="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="/static/api-docs.js"></script>
</body>
</html>
"""

_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facerec HTTP API</title></head>
<body><p>The interactive documentation needs the <code>fastapi-offline</code> package:
<code>pip install 'facerec[serve]'</code>. The schema is at <a href="{openapi}">{openapi}</a>.</p></body></html>
"""


def swagger_assets() -> Path | None:
    """The folder holding Swagger UI's ``swagger-ui-bundle.js`` and ``swagger-ui.css``, or
    ``None`` when ``fastapi-offline`` is not installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def add_api_docs(app: FastAPI) -> None:
    """Serve the interactive docs at :data:`DOCS_URL` (open, like ``/openapi.json``: the
    routes it lists still need the token, which the page's Authorize button sends)."""
    openapi = app.openapi_url or "/openapi.json"
    assets = swagger_assets()
    if assets is None:
        log.warning("fastapi-offline is not installed: %s shows how to install it", DOCS_URL)
        page = _MISSING.format(openapi=openapi)
    else:
        app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
        page = _PAGE.format(assets=ASSETS_URL, openapi=openapi)

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
