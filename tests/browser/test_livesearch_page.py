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


def test_an_upstream_error_shows_in_plain_words_until_the_source_heals(
    api: SearchApi, live_server: LiveServer, page: Page
) -> None:
    api.fail("500")
    open_page(page, live_server)
    search(page, "wiki", "wikipedia")
    problem = page.locator("#livesearch-problem")
    # The retry as the server schedules it: INTERVAL * 2, capped at 1 s.
    expect(problem.locator("p").first).to_have_text(
        re.compile(r"^Wikipedia has a problem on its side; retrying (in 1 s|now…)\.?$")
    )
    expect(page.locator("#livesearch-updated")).not_to_have_text("Searching…")
    # The detail is there on request.
    detail = page.locator("#livesearch-detail-text")
    expect(detail).to_be_hidden()
    page.click("#livesearch-detail summary")
    expect(detail).to_have_text(
        re.compile(r"^127\.0\.0\.1:\d+ answered HTTP 500 Internal Server Error$")
    )
    # Retried after the backoff, on the same subscription.
    snippet = page.locator("#livesearch-results li.result .snippet").first
    expect(snippet).to_have_text("The wiki article number 11 & more")
    expect(problem).to_be_hidden()


def test_the_retry_countdown_follows_the_real_backoff(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    """The first retry comes after twice the interval: 2 s, counted down."""
    settings.LIVESEARCH_MAX_BACKOFF = 300.0
    api.fail("500")
    open_page(page, live_server)
    search(page, "wiki", "wikipedia")
    retry = page.locator("#livesearch-retry")
    expect(retry).to_have_text("; retrying in 2 s.")
    expect(retry).to_have_text("; retrying in 1 s.")
    expect(page.locator("#livesearch-results li.result")).to_have_count(10)


def test_a_new_source_clears_the_old_results_and_shows_its_own_error(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 60.0  # no push but the ones asked for
    open_page(page, live_server)
    search(page, "django", "hn")
    results = page.locator("#livesearch-results li.result")
    expect(results).to_have_count(10)
    page.click("#livesearch-refresh")
    expect(page.locator("#livesearch-results li.result.new")).to_have_count(1)
    api.fail("500")
    page.select_option("#livesearch-source", "wikipedia")  # searches again
    expect(page.locator("#livesearch-error")).to_have_text(
        "Wikipedia has a problem on its side"
    )
    expect(results).to_have_count(0)
    expect(page.locator("#livesearch-updated")).to_have_text("")


def test_a_new_query_shows_searching_until_its_first_push(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 60.0
    api.slow_seconds = 0.5  # within the source's timeout: results, later
    open_page(page, live_server)
    search(page, "django", "hn")
    results = page.locator("#livesearch-results li.result")
    expect(results).to_have_count(10)
    api.fail("slow")
    search(page, "flask", "hn")
    updated = page.locator("#livesearch-updated")
    expect(updated).to_have_text("Searching…")
    expect(results).to_have_count(0)
    expect(updated).to_have_text(re.compile(r"^10 results for “flask”"))
    expect(results.first.locator(".title")).to_have_text(re.compile(r"^flask story"))


def test_refresh_now_brings_a_fresh_push_and_restarts_the_countdown(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 60.0
    open_page(page, live_server)
    refresh = page.locator("#livesearch-refresh")
    expect(refresh).to_be_disabled()  # nothing to refresh yet
    search(page, "django", "hn")
    countdown = page.locator("#livesearch-countdown")
    expect(countdown).to_have_text(re.compile(r"^Next refresh in (1 min|59 s)\.$"))
    expect(refresh).to_be_enabled()
    refresh.click()
    new = page.locator("#livesearch-results li.result.new")
    expect(new.locator(".title")).to_have_text(["django story 12"])
    expect(countdown).to_have_text(re.compile(r"^Next refresh in (1 min|59 s)\.$"))
    assert api.count("django") == 2
    # What "new" means is said on the page.
    expect(page.locator(".search-note").last).to_have_text(
        "new marks a result that was not in the previous push."
    )


def test_a_refused_refresh_says_why(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 60.0
    settings.LIVESEARCH_REFRESH_RATE_LIMIT = (1, 60.0)
    open_page(page, live_server)
    search(page, "django", "hn")
    expect(page.locator("#livesearch-results li.result")).to_have_count(10)
    page.click("#livesearch-refresh")
    expect(page.locator("#livesearch-results li.result.new")).to_have_count(1)
    page.click("#livesearch-refresh")
    expect(page.locator("#livesearch-refresh-note")).to_have_text(
        re.compile(r"^too many refreshes: 1 every 60 s at most; try again in \d+ s$")
    )
    # The countdown is the server's again, and the results stay.
    expect(page.locator("#livesearch-countdown")).to_have_text(
        re.compile(r"^Next refresh in \d+ s\.$")
    )
    expect(page.locator("#livesearch-results li.result")).to_have_count(10)
    assert api.count("django") == 2


def test_searching_again_keeps_the_countdown_of_the_real_next_push(
    api: SearchApi, live_server: LiveServer, page: Page, settings: Any
) -> None:
    """The same search again gets the latest push, with the time really left
    until the next one: the countdown does not start again at the interval."""
    settings.LIVESEARCH_INTERVAL = 4.0
    open_page(page, live_server)
    search(page, "django", "hn")
    countdown = page.locator("#livesearch-countdown")
    expect(countdown).to_have_text("Next refresh in 2 s.")
    page.press("#livesearch-query", "Enter")
    expect(page.locator("#livesearch-updated")).to_have_text(
        re.compile(r"^10 results for “django”")
    )
    expect(countdown).to_have_text(
        re.compile(r"^(Next refresh in [12] s\.|Refreshing…)$")
    )
    assert api.count("django") == 1


def test_result_times_use_the_site_format_with_the_full_time_on_hover(
    api: SearchApi, live_server: LiveServer, page: Page
) -> None:
    open_page(page, live_server)
    search(page, "django", "hn")
    published = page.locator("#livesearch-results li.result time.published").first
    expect(published).to_have_attribute("datetime", "2025-01-01T00:11:00Z")
    expect(published).to_have_attribute("title", re.compile(r"2025"))
    # Not today, another year: day, month and year, then the clock.
    expect(published).to_have_text(re.compile(r"2025.*\d\d:\d\d|\d\d:\d\d.*2025"))
