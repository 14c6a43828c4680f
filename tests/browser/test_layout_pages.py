"""Every page in Chromium on a phone and on a desktop: nothing wider than the
screen, the controls on it, the main input focused, the favicon served."""

import contextlib
from collections.abc import Iterator

import pytest
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import NoReverseMatch, reverse
from playwright.sync_api import Page, expect

from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT, join_request_threads
from tests.search_api import pollers_stopped

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
# The narrowest and widest phones in common use, besides the usual one.
PHONES = [{"width": 360, "height": 780}, PHONE, {"width": 430, "height": 932}]
VIEWPORTS = [*PHONES, DESKTOP]

# The controls each page needs within reach, by path.
CONTROLS = {
    "/echo/": ["#echo-input", "#echo-send"],
    "/livesearch/": [
        "#livesearch-query",
        "#livesearch-source",
        "#livesearch-submit",
        "#livesearch-refresh",
    ],
    "/chat/": ["#join-room", "#join-submit"],
}


@pytest.fixture(autouse=True)
def _pollers_stop() -> Iterator[None]:
    """After each test, every live search poller thread ends."""
    yield from pollers_stopped(TIMEOUT)


@pytest.fixture
def page(page: Page, live_server: LiveServer) -> Iterator[Page]:
    """The shared ``page``, closed before the live server stops (see
    test_livesearch_page.py for the race this avoids)."""
    yield page
    page.context.close()
    join_request_threads(TIMEOUT)


def paths() -> list[str]:
    """Every kind of page; the login page and the unknown room's page if the
    project has them."""
    found = ["/", "/echo/", "/livesearch/", "/chat/", "/no-such-page/"]
    with contextlib.suppress(NoReverseMatch):
        found.append(reverse("login"))
    with contextlib.suppress(TemplateDoesNotExist):
        get_template("chat/missing.html")
        found.append("/chat/no-such-room/")
    return found


def join_room(page: Page, live_server: LiveServer, room: str) -> None:
    """Open the room's page through the join form, as a visitor does."""
    page.goto(live_server.url + "/chat/")
    nickname = page.locator("#join-nickname")
    if nickname.count():
        nickname.fill("ada")
    page.fill("#join-room", room)
    page.click("#join-submit")
    page.wait_for_url(f"**/chat/{room}/")


def assert_fits(page: Page, what: str) -> None:
    """Nothing wider than the viewport: no horizontal scroll."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{what}: {widths[0]} px wide in {widths[1]}"


def assert_within_reach(page: Page, selector: str) -> None:
    """The element is visible and lies inside the viewport's width."""
    box = page.locator(selector).bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box is not None, f"{selector} is not displayed"
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda size: str(size["width"]))
def test_no_page_scrolls_sideways(
    live_server: LiveServer, page: Page, viewport: dict[str, int]
) -> None:
    page.set_viewport_size(viewport)
    for path in paths():
        page.goto(live_server.url + path)
        assert_fits(page, path)
        for selector in CONTROLS.get(path, []):
            assert_within_reach(page, selector)
    join_room(page, live_server, "layout")
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
    assert_fits(page, "a chat room")
    for selector in ["#chat-input", "#chat-send"]:
        assert_within_reach(page, selector)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_code_panel_scrolls_inside_itself(
    live_server: LiveServer, page: Page, viewport: dict[str, int]
) -> None:
    """The view's source keeps its lines whole and scrolls in its own box."""
    page.set_viewport_size(viewport)
    page.goto(live_server.url + "/livesearch/")
    code = page.locator(".view-source pre")
    expect(code).to_be_visible()
    scroll, client = code.evaluate("pre => [pre.scrollWidth, pre.clientWidth]")
    if viewport is PHONE:
        assert scroll > client  # long lines: it scrolls, the page does not
    box = code.bounding_box()
    assert box is not None and box["x"] + box["width"] <= viewport["width"]


def test_the_code_panel_folds_away(live_server: LiveServer, page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.goto(live_server.url + "/echo/")
    code = page.locator(".view-source pre")
    expect(code).to_be_visible()
    page.click(".view-source summary")
    expect(code).to_be_hidden()


@pytest.mark.parametrize(
    ("path", "selector"),
    [
        ("/echo/", "#echo-input"),
        ("/livesearch/", "#livesearch-query"),
        ("/chat/", "#join-nickname"),
    ],
)
def test_the_main_input_has_focus_on_load(
    live_server: LiveServer, page: Page, path: str, selector: str
) -> None:
    page.goto(live_server.url + path)
    expect(page.locator(selector)).to_be_focused()


def test_every_page_links_the_favicon_and_it_is_served(
    live_server: LiveServer, page: Page
) -> None:
    for path in paths():
        page.goto(live_server.url + path)
        icon = page.locator('link[rel="icon"]')
        expect(icon).to_have_attribute("type", "image/svg+xml")
    href = icon.get_attribute("href")
    assert href is not None
    response = page.request.get(live_server.url + href)
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.text().startswith("<svg")
