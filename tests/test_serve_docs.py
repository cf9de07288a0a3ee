"""The interactive API docs at ``/docs`` in a real headless Chromium: they load with no
request to any other host (the assets come from the installed package), list every route
of ``/openapi.json``, and can call a guarded route with the token.

The app runs without loading models (the routes used here need none).
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from test_serve_e2e import TOKEN, page, serving  # noqa: F401  (page is a fixture)

from facerec.config import load_config
from facerec.gallery.service import GalleryService
from facerec.serve.app import create_app


@pytest.fixture
def docs_server(tmp_path):
    svc = GalleryService(load_config(None, {"gallery.data_dir": str(tmp_path / "gallery")}))
    try:
        with serving(create_app(svc.cfg, svc, token=TOKEN)) as url:
            yield url
    finally:
        svc.close()


def test_docs_page_is_offline_and_lists_every_route(docs_server, page):  # noqa: F811
    from playwright.sync_api import expect

    schema = json.loads(urllib.request.urlopen(docs_server + "/openapi.json", timeout=10).read())
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert ("GET", "/api/people") in operations and ("POST", "/api/identify") in operations and len(operations) > 15

    requests: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(docs_server + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    shown = set()
    for block in page.locator(".opblock").all():
        method = block.locator(".opblock-summary-method").inner_text().strip().upper()
        path = block.locator(".opblock-summary-path").get_attribute("data-path")
        shown.add((method, path))
    assert shown == operations
    assert requests and all(u.startswith(docs_server) or u.startswith(("data:", "blob:")) for u in requests), requests
    assert docs_server + "/docs/assets/swagger-ui-bundle.js" in requests
    assert not [c for c in console if "Content Security Policy" in c], console

    # interactive: the Authorize button takes the token, "Try it out" calls a guarded route
    page.locator("button.authorize").first.click()
    page.locator(".auth-container input").first.fill(TOKEN)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.locator(".auth-btn-wrapper button.btn-done").click()
    people = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/api/people"])')
    people.locator(".opblock-summary").click()
    people.locator("button.try-out__btn").click()
    people.locator("button.execute").click()
    answer = people.locator(".live-responses-table tbody")
    expect(answer.locator("td.response-col_status").first).to_have_text("200")
    assert '"people"' in answer.inner_text()


def test_docs_answer_without_a_token_and_api_still_needs_one(docs_server):
    html = urllib.request.urlopen(docs_server + "/docs", timeout=10).read().decode()
    assert "/docs/assets/swagger-ui-bundle.js" in html and "://" not in html  # no other host named
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(docs_server + "/api/people", timeout=10)
    assert e.value.code == 401
