"""The chat in Chromium: two people, each in their own browser context."""

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from playwright.sync_api import Browser, Dialog, Page, expect
from websockets.sync.client import connect

from apps.chat.models import Message, Room
from django_websocket import CloseCode, close_all
from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT, join_request_threads

OpenRoom = Callable[[str, str], Page]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(params=[PHONE, DESKTOP], ids=["phone", "desktop"])
def viewport(request: pytest.FixtureRequest) -> dict[str, int]:
    """Each test on a phone and on a desktop."""
    size: dict[str, int] = request.param
    return size


@pytest.fixture
def new_page(
    browser: Browser, live_server: LiveServer, viewport: dict[str, int]
) -> Iterator[Callable[[], Page]]:
    """A page in a browser context of its own (its own cookies: another person)."""
    contexts = []

    def open_page() -> Page:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(TIMEOUT * 1000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
    # Each of Chromium's connections ends in a request thread of the server,
    # which then closes its database connection: the in-memory test database
    # that the live server stops sharing when it stops.
    join_request_threads(TIMEOUT)


@pytest.fixture
def join_room(new_page: Callable[[], Page], live_server: LiveServer) -> OpenRoom:
    """Join a room through the form on /chat/, in a new browser context,
    without waiting for the room's socket."""

    def join(nickname: str, room: str) -> Page:
        page = new_page()
        page.goto(live_server.url + "/chat/")
        page.fill("#join-nickname", nickname)
        page.fill("#join-room", room)
        page.click("#join-submit")
        expect(page).to_have_url(f"{live_server.url}/chat/{room}/")
        return page

    return join


@pytest.fixture
def open_room(join_room: OpenRoom) -> OpenRoom:
    """Join a room as join_room does, and wait until its socket is open."""

    def open_as(nickname: str, room: str) -> Page:
        page = join_room(nickname, room)
        expect(page.locator('#chat-status[data-state="open"]')).to_have_text(
            "connected"
        )
        return page

    return open_as


def send(page: Page, text: str) -> None:
    """Post as a person does: once Send is enabled again, which it is not
    while the previous post waits for its answer."""
    expect(page.locator("#chat-send")).to_be_enabled()
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
    # Not stored: the text stays in the box, to be edited and sent again.
    expect(ada.locator("#chat-input")).to_have_value("x" * 2001)
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


# The log as a chat reader expects it.


def seed(room: str, count: int, author: str = "bob") -> list[Message]:
    """Store *count* messages in *room* (created if needed), oldest first."""
    stored, _ = Room.objects.get_or_create(name=room)
    return Message.objects.bulk_create(
        Message(room=stored, author=author, text=f"message {n}") for n in range(count)
    )


def expect_pinned(page: Page, pinned: bool = True) -> None:
    """The log is (or is not) scrolled all the way down to its newest message.

    Polled from here with a deadline: Playwright's wait_for_function would
    evaluate its predicate inside the page, which the CSP forbids."""
    log = page.locator("#chat-log")
    deadline = time.monotonic() + TIMEOUT
    while True:
        gap = log.evaluate("log => log.scrollHeight - log.scrollTop - log.clientHeight")
        if (gap < 2 if pinned else gap > 50) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(50)
    assert (gap < 2) if pinned else (gap > 50), f"{gap} px below the view"


def post(live_server: LiveServer, room: str, nickname: str, text: str) -> None:
    """Post as someone without a browser, and wait for the echo."""
    with connect(
        f"{live_server.ws_url}/chat/{room}/ws/?nick={nickname}", open_timeout=TIMEOUT
    ) as client:
        client.send(json.dumps({"type": "message", "text": text}))
        while json.loads(client.recv(TIMEOUT))["type"] != "message":
            pass


def test_the_log_shows_the_newest_message_after_a_reload(open_room: OpenRoom) -> None:
    seed("tea", 60)
    ada = open_room("ada", "tea")
    for _ in range(2):
        messages = ada.locator("#chat-messages .text")
        expect(messages).to_have_count(50)
        expect_pinned(ada)
        expect(messages.last).to_have_text("message 59")
        expect(messages.last).to_be_in_viewport()
        expect(messages.first).not_to_be_in_viewport()
        ada.reload()


def test_new_messages_keep_the_log_on_the_newest(
    open_room: OpenRoom, live_server: LiveServer
) -> None:
    seed("tea", 60)
    ada = open_room("ada", "tea")
    expect_pinned(ada)
    post(live_server, "tea", "bob", "from bob")
    newest = ada.locator("#chat-messages .text").last
    expect(newest).to_have_text("from bob")
    expect_pinned(ada)
    expect(newest).to_be_in_viewport()
    send(ada, "from ada")
    expect(newest).to_have_text("from ada")
    expect_pinned(ada)
    expect(ada.locator("#chat-new")).to_be_hidden()


def test_a_reader_who_scrolled_up_stays_there_with_a_new_messages_button(
    open_room: OpenRoom, live_server: LiveServer
) -> None:
    seed("tea", 60)
    ada = open_room("ada", "tea")
    expect_pinned(ada)
    ada.locator("#chat-log").hover()
    ada.mouse.wheel(0, -3000)
    expect_pinned(ada, False)

    post(live_server, "tea", "bob", "while you read")
    pill = ada.locator("#chat-new")
    expect(pill).to_have_text("1 new message ↓")
    expect_pinned(ada, False)
    expect(ada.locator("#chat-messages .text").last).not_to_be_in_viewport()
    pill.click()
    expect_pinned(ada)
    expect(pill).to_be_hidden()
    expect(ada.locator("#chat-messages .text").last).to_be_in_viewport()

    # Your own message brings you down, whatever you were reading.
    ada.locator("#chat-log").hover()
    ada.mouse.wheel(0, -3000)
    expect_pinned(ada, False)
    send(ada, "mine")
    expect(ada.locator("#chat-messages .text").last).to_have_text("mine")
    expect_pinned(ada)


def test_load_older_pages_back_without_moving_what_is_on_screen(
    open_room: OpenRoom,
) -> None:
    stored = seed("tea", 120)
    ada = open_room("ada", "tea")
    texts_shown = ada.locator("#chat-messages .text")
    expect(texts_shown).to_have_count(50)
    older = ada.locator("#chat-older")
    older.scroll_into_view_if_needed()
    expect(older).to_be_in_viewport()
    first = ada.locator(f'#chat-messages li[data-id="{stored[70].id}"]')
    before = first.bounding_box()

    older.click()
    expect(texts_shown).to_have_count(100)
    expect(texts_shown.first).to_have_text("message 20")
    after = first.bounding_box()
    assert before is not None and after is not None
    assert abs(after["y"] - before["y"]) < 2, (before, after)
    expect(older).not_to_be_in_viewport()

    older.click()
    expect(texts_shown).to_have_count(120)
    expect(texts_shown.first).to_have_text("message 0")
    expect(older).to_be_hidden()
    assert texts(ada) == [f"message {n}" for n in range(120)]


def test_a_room_without_older_messages_has_no_load_older(open_room: OpenRoom) -> None:
    seed("tea", 3)
    ada = open_room("ada", "tea")
    expect(ada.locator("#chat-messages .text")).to_have_count(3)
    expect(ada.locator("#chat-older")).to_be_hidden()


def test_days_are_marked_where_they_change(open_room: OpenRoom) -> None:
    old, new = seed("tea", 2)
    Message.objects.filter(id=old.id).update(
        created_at=timezone.now() - timedelta(days=1)
    )
    ada = open_room("ada", "tea")
    expect(ada.locator("#chat-messages li")).to_have_count(4)
    expect(ada.locator("#chat-messages .chat-day")).to_have_text(["Yesterday", "Today"])


def test_joins_and_leaves_show_in_the_log(open_room: OpenRoom) -> None:
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    notices = ada.locator("#chat-messages .chat-notice span")
    expect(notices).to_have_text(["bob joined"])
    bob.context.close()
    expect(notices).to_have_text(["bob joined", "bob left"])


# Who is who.


def test_own_messages_stand_apart_and_a_long_name_leaves_room_for_the_text(
    open_room: OpenRoom,
) -> None:
    name = "W" * 32
    ada = open_room("ada", "tea")
    long = open_room(name, "tea")
    send(long, "a sentence of several words that should read as one line or two")
    message = ada.locator("#chat-messages li.message").last
    expect(message).not_to_have_class(re.compile(r"\bown\b"))
    expect(long.locator("#chat-messages li.message.own")).to_have_count(1)
    expect(message.locator(".user")).to_have_attribute("title", name)
    log, text = ada.locator("#chat-log").bounding_box(), message.locator(".text")
    box = text.bounding_box()
    assert log is not None and box is not None
    assert box["width"] > log["width"] / 2, (box, log)


def test_the_room_page_never_scrolls_sideways(open_room: OpenRoom) -> None:
    name = "W" * 32
    ada = open_room(name, "tea")
    send(ada, "x" * 600)
    expect(ada.locator("#chat-messages .text")).to_have_text(["x" * 600])
    width, inner = ada.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width <= inner


def test_a_second_visitor_cannot_take_a_nickname_in_use(
    open_room: OpenRoom, join_room: OpenRoom
) -> None:
    bob = open_room("bob", "tea")
    impostor = join_room("bob", "tea")
    expect(impostor.locator("#chat-error")).to_have_text(
        "someone is already called bob in this room: pick another nickname"
    )
    expect(impostor.locator("#chat-status")).to_have_text("disconnected")
    expect(impostor.locator("#chat-send")).to_be_disabled()
    expect(bob.locator("#chat-presence li")).to_have_text(["bob"])


def test_a_full_room_says_so_and_does_not_keep_knocking(
    open_room: OpenRoom, join_room: OpenRoom, settings: Any
) -> None:
    settings.CHAT_MAX_MEMBERS = 1
    open_room("ada", "tea")
    bob = join_room("bob", "tea")
    expect(bob.locator("#chat-error")).to_contain_text("room tea is full")
    expect(bob.locator("#chat-error")).to_contain_text("tries again in a minute")
    expect(bob.locator("#chat-status")).to_have_text("disconnected")


def test_a_logged_in_user_chats_under_a_verified_name(
    new_page: Callable[[], Page],
    open_room: OpenRoom,
    live_server: LiveServer,
    django_user_model: type[AbstractBaseUser],
) -> None:
    django_user_model.objects.create_user(username="grace", password="hopper-1906")
    ada = open_room("ada", "tea")
    grace = new_page()
    grace.goto(live_server.url + "/accounts/login/?next=/chat/")
    grace.fill("#login-username", "grace")
    grace.fill("#login-password", "hopper-1906")
    grace.click("#login-submit")
    expect(grace).to_have_url(live_server.url + "/chat/")
    grace.fill("#join-room", "tea")
    grace.click("#join-submit")
    expect(grace.locator("#chat-status")).to_have_text("connected")
    expect(grace.locator("#chat-user")).to_have_text("grace")

    send(grace, "hello, I am grace")
    send(ada, "hello grace")
    for page in (ada, grace):
        messages = page.locator("#chat-messages li.message")
        expect(messages.locator(".user")).to_have_text(["grace", "ada"])
        expect(messages.first.locator(".chat-verified")).to_be_visible()
        expect(messages.last.locator(".chat-verified")).to_have_count(0)
    expect(grace.locator("#chat-messages li.own .text")).to_have_text(
        ["hello, I am grace"]
    )


# Live signs of the others.


def test_typing_shows_on_the_other_page_until_the_message_comes(
    open_room: OpenRoom,
) -> None:
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    ada.locator("#chat-input").press_sequentially("good")
    expect(bob.locator("#chat-typing")).to_have_text("ada is typing…")
    expect(ada.locator("#chat-typing")).to_have_text("")
    ada.locator("#chat-input").press_sequentially(" day")
    ada.press("#chat-input", "Enter")
    expect(bob.locator("#chat-messages .text")).to_have_text(["good day"])
    expect(bob.locator("#chat-typing")).to_have_text("")


def set_visibility(page: Page, state: str) -> None:
    """Make the page believe its tab is hidden or visible, as the browser says."""
    page.evaluate(
        """state => {
            Object.defineProperty(document, "visibilityState",
                {configurable: true, get: () => state});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_the_tab_title_counts_unread_messages_while_hidden(
    open_room: OpenRoom,
) -> None:
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    title = "tea · Chat · django-websocket starter"
    expect(ada).to_have_title(title)
    set_visibility(ada, "hidden")
    send(bob, "one")
    send(bob, "two")
    expect(ada).to_have_title(f"(2) {title}")
    send(ada, "mine does not count")
    expect(bob.locator("#chat-messages .text")).to_have_count(3)
    expect(ada).to_have_title(f"(2) {title}")
    set_visibility(ada, "visible")
    expect(ada).to_have_title(title)


def test_a_message_refused_for_speed_keeps_its_text_and_send_cools_down(
    open_room: OpenRoom, settings: Any
) -> None:
    settings.CHAT_RATE_LIMIT = (2, 3.0)
    ada = open_room("ada", "tea")
    box, button = ada.locator("#chat-input"), ada.locator("#chat-send")
    for text in ("one", "two"):
        send(ada, text)
        expect(box).to_have_value("")
    send(ada, "three")
    expect(ada.locator("#chat-error")).to_contain_text("slow down")
    expect(box).to_have_value("three")
    expect(button).to_be_disabled()
    expect(button).to_have_text(re.compile(r"^Send \(\d s\)$"))

    expect(button).to_be_enabled(timeout=TIMEOUT * 2000)
    expect(button).to_have_text("Send")
    expect(ada.locator("#chat-error")).to_be_hidden()
    ada.press("#chat-input", "Enter")
    expect(ada.locator("#chat-messages .text")).to_have_text(["one", "two", "three"])
    expect(box).to_have_value("")


def test_a_deleted_message_leaves_every_page(open_room: OpenRoom) -> None:
    ada = open_room("ada", "tea")
    bob = open_room("bob", "tea")
    send(ada, "keep this")
    send(ada, "oops")
    expect(bob.locator("#chat-messages .text")).to_have_text(["keep this", "oops"])
    Message.objects.get(text="oops").delete()
    for page in (ada, bob):
        expect(page.locator("#chat-messages .text")).to_have_text(["keep this"])


def test_here_now_is_emptied_while_disconnected(open_room: OpenRoom) -> None:
    ada = open_room("ada", "tea")
    expect(ada.locator("#chat-presence li")).to_have_text(["ada"])
    close_all(CloseCode.GOING_AWAY, "server shutting down")
    expect(ada.locator("#chat-presence li")).to_have_count(0)
    expect(ada.locator("#chat-presence-stale")).to_be_visible()
    expect(ada.locator("#chat-presence li")).to_have_text(
        ["ada"], timeout=TIMEOUT * 2000
    )
    expect(ada.locator("#chat-presence-stale")).to_be_hidden()


def test_the_room_list_counts_people_live(
    new_page: Callable[[], Page], open_room: OpenRoom, live_server: LiveServer
) -> None:
    Room.objects.create(name="tea")
    lister = new_page()
    lister.goto(live_server.url + "/chat/")
    count = lister.locator('#chat-rooms li[data-room="tea"] .count')
    expect(count).to_have_text("0 here")
    ada = open_room("ada", "tea")
    expect(count).to_have_text("1 here")
    ada.close()
    expect(count).to_have_text("0 here")


def test_an_unknown_room_offers_to_create_it_and_a_room_link_says_why_it_asks(
    new_page: Callable[[], Page], live_server: LiveServer
) -> None:
    page = new_page()
    page.goto(live_server.url + "/chat/kitchen/")
    expect(page.locator("h1")).to_have_text("No room named kitchen yet")
    page.fill("#create-nickname", "ada")
    page.click("#create-submit")
    expect(page).to_have_url(f"{live_server.url}/chat/kitchen/")
    expect(page.locator('#chat-status[data-state="open"]')).to_be_visible()

    stranger = new_page()
    stranger.goto(live_server.url + "/chat/kitchen/")
    expect(stranger.locator("#join-notice")).to_have_text(
        "Choose a nickname to join kitchen."
    )
    assert stranger.evaluate("document.documentElement.scrollWidth <= innerWidth"), (
        "the page scrolls sideways"
    )


def test_own_messages_are_the_visitors_not_the_nicknames(
    open_room: OpenRoom, new_page: Callable[[], Page], live_server: LiveServer
) -> None:
    """Someone who takes a nickname once its holder has left does not post
    as them: the page tells its own messages by the server's key for it."""
    first = open_room("bob", "tea")
    send(first, "from the first bob")
    expect(first.locator("#chat-messages li.own .text")).to_have_text(
        ["from the first bob"]
    )
    first.context.close()
    second = open_room("bob", "tea")
    send(second, "from the second bob")
    expect(second.locator("#chat-messages li.own .text")).to_have_text(
        ["from the second bob"]
    )
    expect(second.locator("#chat-messages li:not(.own) .text")).to_have_text(
        ["from the first bob"]
    )
