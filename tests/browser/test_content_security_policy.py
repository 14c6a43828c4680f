"""Each demo in Chromium under the site's Content-Security-Policy: the page
loads, its socket connects and works (connect-src 'self' covers ws: to the
same host), and the browser reports no violation."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT, join_request_threads
from tests.search_api import SearchApi, pollers_stopped

# Chromium reports every blocked load or inline run on the console, and
# fires securitypolicyviolation; the init script logs the event too, so that
# a violation no console message names is caught as well.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(
    `Content Security Policy violation: ${event.violatedDirective} ${event.blockedURI}`
  );
});
"""


@pytest.fixture(autouse=True)
def _pollers_stop() -> Iterator[None]:
    """After each test, every live search poller thread ends."""
    yield from pollers_stopped(TIMEOUT)


@pytest.fixture
def page(page: Page, live_server: LiveServer) -> Iterator[Page]:
    """The shared ``page``, closed before the live server stops (see
    test_livesearch_page.py for the race this avoids)."""
    page.add_init_script(REPORT_VIOLATIONS)
    yield page
    page.context.close()
    join_request_threads(TIMEOUT)


@pytest.fixture
def violations(page: Page) -> list[str]:
    """The console messages of ``page`` that name the Content Security Policy."""
    messages: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            messages.append(message.text)

    page.on("console", record)
    return messages


def goto(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_echo_page_round_trips_without_a_violation(
    live_server: LiveServer, page: Page, violations: list[str]
) -> None:
    goto(page, live_server.url + "/echo/")
    expect(page.locator('#echo-status[data-state="open"]')).to_have_text("connected")
    page.fill("#echo-input", "hello")
    page.press("#echo-input", "Enter")
    expect(page.locator("#echo-log li.received .text")).to_have_text(["hello"])
    assert violations == []


def test_livesearch_page_shows_results_without_a_violation(
    live_server: LiveServer,
    page: Page,
    violations: list[str],
    search_api: SearchApi,
    settings: Any,
) -> None:
    settings.LIVESEARCH_SOURCES = search_api.sources(timeout=TIMEOUT)
    goto(page, live_server.url + "/livesearch/")
    expect(page.locator("#livesearch-status")).to_have_attribute("data-state", "open")
    page.select_option("#livesearch-source", "hn")
    page.fill("#livesearch-query", "django")
    page.press("#livesearch-query", "Enter")
    expect(page.locator("#livesearch-results li.result")).to_have_count(10)
    assert violations == []


def test_chat_room_joined_through_the_form_chats_without_a_violation(
    live_server: LiveServer, page: Page, violations: list[str]
) -> None:
    goto(page, live_server.url + "/chat/")
    page.fill("#join-nickname", "ada")
    page.fill("#join-room", "tea")
    page.click("#join-submit")  # form-action 'self'
    expect(page).to_have_url(f"{live_server.url}/chat/tea/")
    expect(page.locator('#chat-status[data-state="open"]')).to_have_text("connected")
    expect(page.locator("#chat-presence li")).to_have_text(["ada"])
    page.fill("#chat-input", "hello")
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-messages .text")).to_have_text(["hello"])
    assert violations == []


def test_home_and_404_pages_load_without_a_violation(
    live_server: LiveServer, page: Page, violations: list[str]
) -> None:
    goto(page, live_server.url + "/")
    expect(page.locator("main h1")).to_be_visible()
    response = page.goto(live_server.url + "/no-such-page/")
    assert response is not None and response.status == 404
    expect(page.locator("main h1")).to_have_text("Page not found")
    assert violations == []


def test_admin_pages_work_without_a_violation(
    live_server: LiveServer, page: Page, violations: list[str], admin_user: Any
) -> None:
    """Django's admin has no inline script (its one inline <style>, on a
    change list without actions, is cosmetic): it needs no exemption."""
    goto(page, live_server.url + "/admin/login/")
    page.fill("#id_username", "admin")  # pytest-django's admin_user
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    for path in [
        "/admin/",
        "/admin/auth/user/",
        f"/admin/auth/user/{admin_user.pk}/change/",
        "/admin/auth/user/add/",
    ]:
        goto(page, live_server.url + path)
        expect(page.locator("#content")).to_be_visible()
    page.click("button.theme-toggle")  # a script of the admin's own
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert violations == []


def test_inline_script_is_refused_and_reported(
    live_server: LiveServer, page: Page, violations: list[str]
) -> None:
    """The check above can fail: markup that sneaks in an inline script or a
    style attribute is blocked, and the violation is seen."""
    goto(page, live_server.url + "/echo/")
    page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "document.body.dataset.ran = 'yes'";
          document.body.append(script);
          document.body.insertAdjacentHTML("beforeend", '<p style="color: red">x</p>');
        }"""
    )
    expect(page.locator("body")).not_to_have_attribute("data-ran", "yes")
    deadline = time.monotonic() + TIMEOUT
    while len(violations) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert any("script-src" in text for text in violations), violations
    assert any("style-src" in text for text in violations), violations
