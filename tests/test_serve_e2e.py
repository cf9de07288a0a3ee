"""The web page of ``facerec serve`` in a real headless Chromium against a real server.

The server (uvicorn, in a thread of this process, on a free loopback port) uses the real
models and a fresh gallery. Playwright drives Debian's Chromium: the test does not
download a browser. Without Chromium the test fails (CI must install it), it does not skip.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facerec.serve.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "e2e-token-0123456789-abcdefghijkl"
EXAMPLES = "face_recognition_examples"
TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1, lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(service):
    """A running ``facerec serve`` app on 127.0.0.1 with a fresh gallery; yields its base URL."""
    with serving(create_app(service.cfg, service, token=TOKEN)) as url:
        yield url


@pytest.fixture
def page(tmp_path):
    """A page of a fresh headless Chromium profile."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's Chromium "
                    "(apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright's Python package: pip install playwright "
                    "(it drives the system Chromium; do not run `playwright install`)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, accept_downloads=False,
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def screenshots(page, folder: Path) -> tuple[list[Path], Callable[[str], None]]:
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = folder / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    return shots, shot


def log_in(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("login")).to_be_hidden()


def test_enroll_identify_rename_delete_through_the_page(server, page, photo, tmp_path):
    from playwright.sync_api import expect

    shots, shot = screenshots(page, tmp_path)

    def person(name: str):
        return page.locator(f'[data-testid="person"][data-name="{name}"]')

    def identify(rel: str) -> None:
        page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EXAMPLES}/{rel}")))

    def summary_mentions(text: str) -> None:
        expect(page.get_by_test_id("faces-summary")).to_contain_text(text)

    try:
        # the token: a wrong one is refused, the right one opens the page
        page.goto(server)
        expect(page.get_by_test_id("login")).to_be_visible()
        shot("login")
        page.get_by_label("API token").fill("not-the-token-0123456789")
        page.get_by_test_id("token-submit").click()
        expect(page.get_by_test_id("token-error")).to_contain_text("not right")
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_label("API token").press("Enter")  # the keyboard is enough
        expect(page.get_by_test_id("login")).to_be_hidden()
        expect(page.get_by_test_id("people-empty")).to_be_visible()
        expect(page.get_by_test_id("model-info")).to_contain_text("threshold")
        expect(page.get_by_test_id("gallery-warning")).to_contain_text("is empty")  # nobody can be named yet

        # enroll two people from photos, through "add as new person"
        for rel, name in (("obama/obama.jpg", "Barack Obama"), ("biden/biden.jpg", "Joe Biden")):
            identify(rel)
            summary_mentions("1 face found, 0 recognised")
            face = page.get_by_test_id("face").first
            expect(face.get_by_test_id("face-name")).to_contain_text("Unknown")
            face.get_by_label("New person's name").fill(name)
            face.get_by_test_id("add-new-person").click()
            expect(page.get_by_test_id("message")).to_contain_text(f"Added face 1 as {name}")
            expect(person(name)).to_be_visible()
            summary_mentions("1 face found, 1 recognised")
        expect(page.get_by_test_id("people-count")).to_have_text("(2)")
        expect(page.get_by_test_id("gallery-warning")).to_be_hidden()  # people are enrolled now
        thumb = person("Barack Obama").get_by_test_id("thumb").first
        expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))
        page.wait_for_function("img => img.complete && img.naturalWidth === 112", arg=thumb.element_handle())
        shot("two-people-enrolled")

        # a third photo of one of them is named on the page, in the list and on the overlay
        identify("obama/obama2.jpg")
        summary_mentions("1 face found, 1 recognised")
        expect(page.get_by_test_id("face-name")).to_contain_text("Barack Obama")
        expect(page.get_by_test_id("overlay").locator("text")).to_contain_text("Barack Obama")
        shot("identified")

        # the threshold slider re-decides on the page: at 0.99 nobody is recognised
        page.get_by_test_id("threshold").fill("0.99")
        expect(page.get_by_test_id("face-name")).to_contain_text("Unknown")
        page.get_by_role("button", name="Server default").click()
        expect(page.get_by_test_id("face-name")).to_contain_text("Barack Obama")

        # confirm the face as a sample of the person it was matched to
        page.get_by_role("button", name="Confirm as Barack Obama").click()
        expect(person("Barack Obama")).to_contain_text("2 samples")

        # move one of those samples to the other person, and back
        move = person("Barack Obama").get_by_role("button", name=re.compile(r"^Move sample")).first
        sample_id = re.match(r"Move sample (\d+) of", move.get_attribute("aria-label")).group(1)
        move.click()
        expect(page.get_by_test_id("move-select")).to_have_value("Joe Biden")
        page.get_by_role("button", name="Move", exact=True).click()
        expect(person("Barack Obama")).to_contain_text("1 sample")
        expect(person("Joe Biden")).to_contain_text("2 samples")
        person("Joe Biden").get_by_role("button", name=f"Move sample {sample_id} of Joe Biden", exact=True).click()
        page.get_by_role("button", name="Move", exact=True).click()
        expect(person("Barack Obama")).to_contain_text("2 samples")
        expect(person("Joe Biden")).to_contain_text("1 sample")
        moved_back = person("Barack Obama").get_by_role("button", name=f"Move sample {sample_id} of Barack Obama",
                                                        exact=True)
        expect(moved_back).to_be_visible()

        # compare two photos: a matrix and a verdict
        page.get_by_label("First photo").set_input_files(str(photo(f"{EXAMPLES}/obama/obama.jpg")))
        page.get_by_label("Second photo").set_input_files(str(photo(f"{EXAMPLES}/biden/biden.jpg")))
        page.get_by_test_id("compare-submit").click()
        expect(page.get_by_test_id("compare-result")).to_contain_text("Different people")
        expect(page.get_by_test_id("compare-result").locator("td")).to_have_count(1)

        # a group photo: both people named
        identify("_multi/obama_and_biden.jpg")
        summary_mentions("recognised")
        names = page.get_by_test_id("face-name")
        expect(names.filter(has_text="Barack Obama")).to_have_count(1)
        expect(names.filter(has_text="Joe Biden")).to_have_count(1)
        shot("group-photo")

        # rename a person
        person("Joe Biden").get_by_test_id("rename-open").click()
        page.get_by_test_id("rename-input").fill("Joseph Biden")
        page.get_by_test_id("rename-save").click()
        expect(page.get_by_test_id("message")).to_contain_text("Renamed Joe Biden to Joseph Biden")
        expect(person("Joseph Biden")).to_be_visible()
        expect(person("Joe Biden")).to_have_count(0)
        expect(names.filter(has_text="Joseph Biden")).to_have_count(1)  # the photo was re-identified
        shot("renamed")

        # delete a person (with a confirmation step)
        person("Barack Obama").get_by_test_id("delete-open").click()
        expect(person("Barack Obama")).to_contain_text("This cannot be undone")
        page.get_by_test_id("delete-confirm").click()
        expect(page.get_by_test_id("message")).to_contain_text("Deleted Barack Obama and 2 samples")
        expect(person("Barack Obama")).to_have_count(0)
        expect(page.get_by_test_id("people-count")).to_have_text("(1)")
        expect(names.filter(has_text="Barack Obama")).to_have_count(0)
        expect(names.filter(has_text="Joseph Biden")).to_have_count(1)  # Biden's own samples stayed
        shot("deleted")
    finally:
        if shots:
            print("\nscreenshots:\n  " + "\n  ".join(str(p) for p in shots))


class MovingFeed:
    """A live feed stub with two cameras: a new JPEG (a moving bar) per call, 160 px wide
    for "door" and 200 px for "yard", two face events on each, and "yard" offline (its
    ``camera`` event and its stats say so)."""

    WIDTH = {"door": 160, "yard": 200}

    def __init__(self) -> None:
        self.n = 0

    def cameras(self) -> list[str]:
        return list(self.WIDTH)

    def recent_events(self, n: int, camera: str | None = None) -> list[dict]:
        from facerec.events import Event

        out = []
        for cam, who in (("door", "Alice"), ("yard", "Bob")):
            if camera in (None, cam):
                out += [Event("recognized", who, 0.71, 1, 0.0, cam, ts=time.time() - 5).to_json(),
                        Event("unknown", None, 0.12, 2, 5.0, cam).to_json()]
        if camera in (None, "yard"):
            out.append(Event.camera_state("yard", "offline", 9.0, "no frame for 10 s (stream silent)").to_json())
        return out[-n:]

    def latest_jpeg(self, camera: str | None = None) -> bytes | None:
        import cv2
        import numpy as np

        self.n += 1
        w = self.WIDTH[camera or "door"]
        img = np.full((120, w, 3), 60, np.uint8)
        img[:, (self.n * 7) % w:][:, :10] = (0, 200, 255)
        return cv2.imencode(".jpg", img)[1].tobytes()

    def camera_stats(self) -> dict[str, dict]:
        return {cam: {"frames": 10 * (i + 1), "fps": 5.0, "faces_seen": 3, "tracks": 2, "events": 2,
                      "dropped": 0, "running": True, "online": cam == "door",
                      "offline_for_s": 0.0 if cam == "door" else 12.0} for i, cam in enumerate(self.WIDTH)}


def test_live_view_shows_frames_and_events(service, page, tmp_path):
    from playwright.sync_api import expect

    shots, shot = screenshots(page, tmp_path)
    try:
        with serving(create_app(service.cfg, service, token=TOKEN, feed=MovingFeed())) as url:
            log_in(page, url)
            expect(page.get_by_test_id("live")).to_be_visible()
            events = page.get_by_test_id("event")
            expect(events).to_have_count(2)
            expect(events.first).to_contain_text("unknown")  # newest first
            expect(events.last).to_contain_text("Alice")
            live = page.get_by_test_id("live-img")
            expect(live).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function("img => img.complete && img.naturalWidth === 160", arg=live.element_handle())
            first = live.get_attribute("src")
            expect(live).not_to_have_attribute("src", first)  # the stream keeps delivering frames
            expect(page.get_by_test_id("camera-stats")).to_contain_text("door: 10 frames")
            page.get_by_test_id("camera-picker").select_option("yard")  # the other camera's view
            page.wait_for_function("img => img.complete && img.naturalWidth === 200", arg=live.element_handle())
            expect(events.last).to_contain_text("Bob")
            expect(events.first).to_contain_text("camera yard offline: no frame for 10 s")
            expect(page.get_by_test_id("camera-stats")).to_contain_text("yard: 20 frames")
            expect(page.get_by_test_id("camera-stats")).to_contain_text("offline for 12 s")
            expect(page.locator("#camera-picker option[value=yard]")).to_have_text("yard (offline)")
            # the service's gallery is empty: the page says so, naming the fix
            expect(page.get_by_test_id("gallery-warning")).to_contain_text("facerec embed")
            page.get_by_test_id("live").scroll_into_view_if_needed()
            shot("live")
            page.get_by_test_id("logout").click()  # stops the stream before the server goes
            expect(page.get_by_test_id("login")).to_be_visible()
    finally:
        if shots:
            print("\nscreenshots:\n  " + "\n  ".join(str(p) for p in shots))


def test_page_rough_edges_confirm_buttons_group_photo_error_banner(server, page, photo, data_dir):
    """No "Confirm as X" for a face far below the threshold; a group photo scrolls inside
    the faces panel; an error banner clears on the next success."""
    from playwright.sync_api import expect

    log_in(page, server)
    page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EXAMPLES}/obama/obama.jpg")))
    face = page.get_by_test_id("face").first
    face.get_by_label("New person's name").fill("Barack Obama")
    face.get_by_test_id("add-new-person").click()
    expect(page.get_by_test_id("message")).to_contain_text("Added face 1 as Barack Obama")

    # Biden matches Obama far below the threshold: no button inviting a wrong enrollment
    page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EXAMPLES}/biden/biden.jpg")))
    expect(page.get_by_test_id("faces-summary")).to_contain_text("1 face found, 0 recognised")
    expect(page.get_by_test_id("confirm")).to_have_count(0)
    page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EXAMPLES}/obama/obama2.jpg")))
    expect(page.get_by_test_id("faces-summary")).to_contain_text("1 face found, 1 recognised")
    expect(page.get_by_test_id("confirm")).to_have_count(1)

    # an eight-face group photo: the panel scrolls, the page stays about one screen tall
    page.get_by_test_id("identify-file").set_input_files(str(data_dir / "detection" / "compreface_samples" / "016_8.jpg"))
    expect(page.get_by_test_id("faces-summary")).to_contain_text("faces found")
    assert page.get_by_test_id("face").count() >= 6
    panel = page.get_by_test_id("faces").bounding_box()
    assert panel["height"] <= 0.8 * 900 + 1, panel
    assert page.evaluate("document.getElementById('faces').scrollHeight") > panel["height"]

    # a failed action shows an error; the next successful one clears it
    page.get_by_test_id("identify-file").set_input_files(
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"})
    expect(page.get_by_test_id("message")).to_have_class(re.compile(r"\berror\b"))
    page.get_by_test_id("identify-file").set_input_files(str(photo(f"{EXAMPLES}/obama/obama2.jpg")))
    expect(page.get_by_test_id("faces-summary")).to_contain_text("1 face found, 1 recognised")
    expect(page.get_by_test_id("message")).not_to_have_class(re.compile(r"\berror\b"))
    expect(page.get_by_test_id("message")).to_have_text("")
