"""The live search page in Chromium, against the local stand-in search APIs."""

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT
from tests.search_api import SearchApi, pollers_stopped

INTERVAL = 1.0  # long enough to look at the first push before the second


@pytest.fixture(autouse=True)
def _pollers_stop() -> Iterator[None]:
    """After each test, every poller thread ends (set up first, torn down last)."""
    yield from pollers_stopped(TIMEOUT)


@pytest.fixture
def page(page: Page, live_server: LiveServer) -> Iterator[Page]:
    """The shared ``page``, closed before the live server stops.

    ``LiveServer.stop()`` ends the test database's thread sharing without
    waiting for the threads of Chromium's keep-alive connections; one that
    ends later fails in ``connections.close_all()``. Closing the tab first
    and letting those threads end avoids that race.
    """
    yield page
    page.context.close()
    deadline = time.monotonic() + TIMEOUT
    while any(
        thread.name.endswith("(process_request_thread)")
        for thread in threading.enumerate()
    ):
        if time.monotonic() > deadline:
            break  # leave it to the live server's own teardown
        time.sleep(0.01)


@pytest.fixture
def api(settings: Any, search_api: SearchApi) -> SearchApi:
    """The fake APIs, with LIVESEARCH_* settings pointing the sources at them."""
    settings.LIVESEARCH_INTERVAL = INTERVAL
    settings.LIVESEARCH_MAX_BACKOFF = INTERVAL
    settings.LIVESEARCH_SOURCES = search_api.sources(timeout=TIMEOUT)
    return search_api


def open_page(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/livesearch/")
    expect(page.locator("#livesearch-status")).to_have_attribute("data-state", "open")


def search(page: Page, query: str, source: str) -> None:
    page.select_option("#livesearch-source", source)
    page.fill("#livesearch-query", query)
    page.press("#livesearch-query", "Enter")


def test_results_appear_then_new_ones_are_highlighted(
    api: SearchApi, live_server: LiveServer, page: Page
) -> None:
    open_page(page, live_server)
    search(page, "django", "hn")
    results = page.locator("#livesearch-results li.result")
    expect(results).to_have_count(10)
    expect(results.first.locator(".title")).to_have_text("django story 11")
    expect(results.first.locator("a.title")).to_have_attribute(
        "href", "https://news.example/django/11"
    )
    # Titles go in as text: the markup in story 3's title stays visible.
    expect(page.get_by_text("django story 3 <b>not bold</b>")).to_be_visible()
    expect(page.locator("#livesearch-results b")).to_have_count(0)
    expect(page.locator("#livesearch-updated")).to_have_text(
        re.compile(r"^10 results for “django” on Hacker News at .+\.$")
    )
    expect(page.locator("#livesearch-countdown")).to_have_text(
        re.compile(r"^(Next refresh in 1 s\.|Refreshing…)$")
    )

    # The next push brings story 12, highlighted; the rest are not new.
    new = page.locator("#livesearch-results li.result.new")
    expect(new.locator(".title")).to_have_text(["django story 12"])
    expect(new.locator(".badge")).to_have_text(["new"])
    expect(results).to_have_count(10)
    expect(results.nth(1).locator(".title")).to_have_text("django story 11")


def test_an_upstream_error_shows_until_the_source_heals(
    api: SearchApi, live_server: LiveServer, page: Page
) -> None:
    api.fail("500")
    open_page(page, live_server)
    search(page, "wiki", "wikipedia")
    error = page.locator("#livesearch-error")
    expect(error).to_have_text(
        re.compile(r"^Wikipedia: .+ answered HTTP 500 Internal Server Error; retrying")
    )
    # Retried after the backoff, on the same subscription.
    snippet = page.locator("#livesearch-results li.result .snippet").first
    expect(snippet).to_have_text("The wiki article number 11 & more")
    expect(error).to_be_hidden()
