"""The chat in Chromium: two people, each in their own browser context."""

import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect
from websockets.sync.client import connect

from django_websocket import CloseCode, close_all
from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT

OpenRoom = Callable[[str, str], Page]


@pytest.fixture
def open_room(browser: Browser, live_server: LiveServer) -> Iterator[OpenRoom]:
    """Join a room through the form on /chat/, in a new browser context."""
    contexts = []

    def open_as(nickname: str, room: str) -> Page:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT * 1000)
        contexts.append(context)
        page = context.new_page()
        page.goto(live_server.url + "/chat/")
        page.fill("#join-nickname", nickname)
        page.fill("#join-room", room)
        page.click("#join-submit")
        expect(page).to_have_url(f"{live_server.url}/chat/{room}/")
        expect(page.locator('#chat-status[data-state="open"]')).to_have_text(
            "connected"
        )
        return page

    yield open_as
    for context in contexts:
        context.close()
    # Each of Chromium's connections ends in a request thread of the server,
    # which then closes its database connection: the in-memory test database
    # that the live server stops sharing when it stops.
    deadline = time.monotonic() + TIMEOUT
    for thread in threading.enumerate():
        if thread.name.endswith("(process_request_thread)"):
            thread.join(max(0.0, deadline - time.monotonic()))


def send(page: Page, text: str) -> None:
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def texts(page: Page) -> list[str]:
    return page.locator("#chat-messages .text").all_text_contents()


def test_two_people_in_one_room_chat_with_each_other(open_room: OpenRoom) -> None:
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    for page in (ada, bob):
        expect(page.locator("#chat-presence li")).to_have_text(["ada", "bob"])

    send(ada, "hello bob")
    expect(bob.locator("#chat-messages .text")).to_have_text(["hello bob"])
    expect(bob.locator("#chat-messages .user")).to_have_text(["ada"])
    expect(ada.locator("#chat-messages li.own .text")).to_have_text(["hello bob"])
    expect(bob.locator("#chat-messages li.own")).to_have_count(0)

    send(bob, "hi ada")
    expect(ada.locator("#chat-messages .text")).to_have_text(["hello bob", "hi ada"])
    expect(ada.locator("#chat-input")).to_have_value("")

    bob.context.close()
    expect(ada.locator("#chat-presence li")).to_have_text(["ada"])


def test_markup_in_a_message_or_a_nickname_shows_up_as_literal_text(
    open_room: OpenRoom,
) -> None:
    ada = open_room("ada", "tea")
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    ada.on("dialog", dismiss)
    eve = open_room("<b>eve</b>", "tea")
    send(eve, "<img src=x onerror=alert(1)>")

    expect(ada.locator("#chat-messages .text")).to_have_text(
        ["<img src=x onerror=alert(1)>"]
    )
    expect(ada.locator("#chat-messages .user")).to_have_text(["<b>eve</b>"])
    expect(ada.locator("#chat-presence li")).to_have_text(["<b>eve</b>", "ada"])
    expect(ada.locator("#chat img, #chat b")).to_have_count(0)
    # An injected image's error handler would have run by the next round trip.
    send(ada, "still here")
    expect(eve.locator("#chat-messages .text")).to_have_count(2)
    assert dialogs == []


def test_a_refused_message_shows_the_servers_error(open_room: OpenRoom) -> None:
    ada = open_room("ada", "tea")
    # The input's maxlength stops typing; a pasted value is not cut.
    ada.locator("#chat-input").evaluate("input => input.removeAttribute('maxlength')")
    send(ada, "x" * 2001)
    expect(ada.locator("#chat-error")).to_have_text(
        "text is longer than 2000 characters"
    )
    send(ada, "shorter")
    expect(ada.locator("#chat-error")).to_be_hidden()
    expect(ada.locator("#chat-messages .text")).to_have_text(["shorter"])


def test_pages_reconnect_and_show_what_they_missed_exactly_once(
    open_room: OpenRoom, live_server: LiveServer
) -> None:
    """The server closes every socket (as on shutdown); a message is posted
    while the pages are away."""
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    send(ada, "one")
    expect(bob.locator("#chat-messages .text")).to_have_text(["one"])
    send(bob, "two")
    expect(ada.locator("#chat-messages .text")).to_have_text(["one", "two"])

    close_all(CloseCode.GOING_AWAY, "server shutting down")
    status = ada.locator("#chat-status")
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_have_text(re.compile(r"^disconnected — reconnecting in \d+s$"))
    expect(ada.locator("#chat-send")).to_be_disabled()
    with connect(
        f"{live_server.ws_url}/chat/tea/ws/?nick=cy", open_timeout=TIMEOUT
    ) as cy:
        cy.send(json.dumps({"type": "message", "text": "while you were away"}))
        while json.loads(cy.recv(TIMEOUT))["type"] != "message":
            pass

    for page in (ada, bob):
        expect(page.locator("#chat-status")).to_have_attribute(
            "data-state", "open", timeout=TIMEOUT * 2000
        )
        expect(page.locator("#chat-messages .text")).to_have_text(
            ["one", "two", "while you were away"]
        )
    send(bob, "back")
    expect(ada.locator("#chat-messages .text")).to_have_text(
        ["one", "two", "while you were away", "back"]
    )
