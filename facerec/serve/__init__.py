"""``facerec serve``: the HTTP API and the web page of the gallery manager.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart)::

    pip install 'facerec[serve]'

:func:`~facerec.serve.app.create_app` builds the application; :class:`~facerec.serve.state.LiveFeed`
is what a live source must offer to be shown on the page.
"""

from __future__ import annotations

from facerec.serve.app import LiveFeed, create_app

__all__ = ["LiveFeed", "create_app"]
