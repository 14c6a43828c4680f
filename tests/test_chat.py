"""The chat end to end: real servers (in-process, runserver subprocesses, two
processes sharing a real redis-server), websockets' client and raw sockets."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, closing
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from apps.chat import rooms
from apps.chat.models import Message, Room
from apps.chat.rooms import JoinCloseCode
from django_websocket.testing import LiveServer
from django_websocket.tests.conftest import (
    ASGI_SERVERS,
    RedisServer,
    ServerProcess,
    free_port,
)
from tests.conftest import TIMEOUT, start_asgi

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


# Helpers: a client that joins a room, and bounded waits for events.


def join(
    base: str, room: str, nick: str | None = "ada", after: int | None = None, **kwargs
) -> AbstractContextManager[ClientConnection]:
    """Connect to a room's socket on *base* (``ws://host:port``)."""
    query = {"nick": nick, "after": after}
    query_string = urlencode({k: v for k, v in query.items() if v is not None})
    return connect(
        f"{base}/chat/{room}/ws/?{query_string}",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **kwargs,
    )


# Who each connection sees in its room, from the presence snapshot and the
# deltas that follow it, as static/js/chat.js keeps it.
rosters: "weakref.WeakKeyDictionary[ClientConnection, set[str]]" = (
    weakref.WeakKeyDictionary()
)


def receive(ws: ClientConnection, timeout: float = TIMEOUT) -> Event:
    event: Event = json.loads(ws.recv(timeout))
    if event["type"] == "presence":
        rosters[ws] = set(event["users"])
    elif event["type"] == "presence_change":
        roster = rosters.setdefault(ws, set())
        roster.update(event["joined"])
        roster.difference_update(event["left"])
        if len(roster) != event["count"]:
            ws.send(json.dumps({"type": "presence"}))
    return event


def receive_until(
    ws: ClientConnection, done: Callable[[Event], bool], timeout: float = TIMEOUT
) -> list[Event]:
    """Every event up to and including the first one that is *done*."""
    deadline = time.monotonic() + timeout
    events = []
    while not events or not done(events[-1]):
        events.append(receive(ws, max(0.0, deadline - time.monotonic())))
    return events


def next_of(ws: ClientConnection, type: str) -> Event:
    """The next event of *type*, skipping others (presence, mostly)."""
    return receive_until(ws, lambda event: event["type"] == type)[-1]


def messages(events: list[Event]) -> list[Event]:
    return [event for event in events if event["type"] == "message"]


def history(ws: ClientConnection) -> list[Event]:
    """The history of a connection. Only live events published while it
    joined can come before it: presence changes, others' messages."""
    *before, event = receive_until(ws, lambda event: event["type"] == "history")
    assert {event["type"] for event in before} <= {"presence_change", "message"}
    return event["messages"]


def say(ws: ClientConnection, text: str) -> Event:
    """Post *text* and return it as the room sent it back."""
    ws.send(json.dumps({"type": "message", "text": text}))
    return receive_until(ws, lambda event: event.get("text") == text)[-1]


def presence_is(ws: ClientConnection, users: list[str]) -> Callable[[Event], bool]:
    """After a presence event: whether *ws* now sees exactly *users*."""
    return lambda event: (
        event["type"].startswith("presence") and sorted(rosters[ws]) == users
    )


def expect_refusal(base: str, path: str) -> tuple[int, str]:
    """Connect, expect the server to close before sending anything."""
    with (
        connect(base + path, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws,
        pytest.raises(ConnectionClosed),
    ):
        ws.recv(TIMEOUT)
    assert ws.close_code is not None and ws.close_reason is not None
    return ws.close_code, ws.close_reason


@pytest.fixture
def room(live_server: LiveServer) -> Room:
    return Room.objects.create(name="tea")


@pytest.fixture
def base(live_server: LiveServer) -> str:
    return live_server.ws_url


# One server: messages, history, resuming, errors.


def test_members_of_a_room_see_each_others_messages_and_no_other_room_does(
    base: str, room: Room
) -> None:
    Room.objects.create(name="coffee")
    with (
        join(base, "tea", "ada") as ada,
        join(base, "tea", "bob") as bob,
        join(base, "coffee", "cy") as cy,
    ):
        for ws in (ada, bob, cy):
            assert history(ws) == []
        receive_until(ada, presence_is(ada, ["ada", "bob"]))
        sent = say(ada, "hello bob")
        assert next_of(bob, "message") == sent
        assert say(bob, "hello ada") == next_of(ada, "message")
        # Had tea's messages reached cy, they would have come before this.
        cy.send(json.dumps({"type": "message", "text": "anyone?"}))
        events = receive_until(cy, lambda event: event.get("text") == "anyone?")
        assert [event["room"] for event in messages(events)] == ["coffee"]
    assert sent["type"] == "message"
    assert sent["room"] == "tea" and sent["user"] == "ada"
    assert sent["id"] == Message.objects.get(text="hello bob").id
    assert sent["ts"].endswith("Z") and len(sent["ts"]) == len("2026-11-21T16:00:00Z")


def test_joining_sends_the_last_50_messages_oldest_first(base: str, room: Room) -> None:
    stored = Message.objects.bulk_create(
        Message(room=room, author="ada", text=f"message {n}") for n in range(55)
    )
    Message.objects.create(room=Room.objects.create(name="other"), author="x", text="x")
    with join(base, "tea", "bob") as bob:
        sent = history(bob)
    assert [event["text"] for event in sent] == [f"message {n}" for n in range(5, 55)]
    assert [event["id"] for event in sent] == [message.id for message in stored[5:]]
    assert all(event["type"] == "message" for event in sent)


def test_reconnecting_with_after_gets_exactly_the_missed_messages_then_live(
    base: str, room: Room
) -> None:
    with join(base, "tea", "ada") as ada:
        history(ada)
        first = [say(ada, f"before {n}")["id"] for n in range(3)]
        with join(base, "tea", "bob") as bob:
            assert [event["id"] for event in history(bob)] == first
        missed = [say(ada, f"missed {n}")["id"] for n in range(3)]
        with join(base, "tea", "bob", after=first[-1]) as bob:
            assert [event["id"] for event in history(bob)] == missed
            live = say(ada, "live")
            assert messages(receive_until(bob, lambda e: e.get("text") == "live")) == [
                live
            ]


def test_after_the_last_id_sends_an_empty_history(base: str, room: Room) -> None:
    with join(base, "tea", "ada") as ada:
        history(ada)
        last = say(ada, "only")["id"]
    with join(base, "tea", "ada", after=last) as ada:
        assert history(ada) == []


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        ("{not json", "message is not valid JSON"),
        ("[" * 10_000, "message is not valid JSON"),
        ('["message"]', 'message must be a JSON object with a "type"'),
        ('{"type": "shout", "text": "hi"}', 'unknown message type: "shout"'),
        ('{"text": "hi"}', "unknown message type: null"),
        ('{"type": "message"}', '"text" must be a non-empty string'),
        ('{"type": "message", "text": "  "}', '"text" must be a non-empty string'),
        (
            json.dumps({"type": "message", "text": "x" * 2001}),
            "text is longer than 2000 characters",
        ),
        (b"\x00binary", 'send text frames: {"type": "message", "text": "..."}'),
    ],
    ids=[
        "bad-json",
        "too-deep",
        "not-an-object",
        "unknown-type",
        "no-type",
        "no-text",
        "blank-text",
        "oversize-text",
        "binary",
    ],
)
def test_a_bad_message_gets_an_error_event_and_the_connection_stays_usable(
    base: str, room: Room, sent: str | bytes, error: str
) -> None:
    with join(base, "tea", "ada") as ada:
        history(ada)
        ada.send(sent)
        assert next_of(ada, "error") == {
            "type": "error",
            "message": error,
            "stored": False,
        }
        say(ada, "x" * 2000)
    assert Message.objects.count() == 1


def test_the_eleventh_message_in_ten_seconds_gets_an_error_event(
    base: str, room: Room
) -> None:
    with join(base, "tea", "ada") as ada, join(base, "tea", "bob") as bob:
        history(ada)
        history(bob)
        for n in range(11):
            ada.send(json.dumps({"type": "message", "text": f"spam {n}"}))
        events = receive_until(ada, lambda event: event["type"] == "error")
        assert [event["text"] for event in messages(events)] == [
            f"spam {n}" for n in range(10)
        ]
        error = events[-1]
        assert (error["type"], error["stored"]) == ("error", False)
        assert re.fullmatch(
            r"slow down: at most 10 messages every 10 seconds; try again in \d+ s",
            error["message"],
        )
        # Still connected: it receives the others' messages.
        assert say(bob, "calm down") == next_of(ada, "message")
    assert Message.objects.count() == 11


def test_a_rate_limited_connection_can_post_again_once_the_window_passes(
    base: str, room: Room, settings: Any
) -> None:
    settings.CHAT_RATE_LIMIT = (2, 0.5)
    with join(base, "tea", "ada") as ada:
        history(ada)
        say(ada, "one")
        say(ada, "two")
        ada.send(json.dumps({"type": "message", "text": "three"}))
        assert next_of(ada, "error")["message"].startswith("slow down")
        time.sleep(0.5)
        say(ada, "four")
    assert list(Message.objects.values_list("text", flat=True)) == [
        "one",
        "two",
        "four",
    ]


def test_presence_lists_who_is_in_the_room_and_updates_when_someone_leaves(
    base: str, room: Room
) -> None:
    with join(base, "tea", "ada") as ada:
        history(ada)
        assert receive(ada) == {"type": "presence", "users": ["ada"]}
        with join(base, "tea", "bob") as bob, join(base, "tea", "bob") as bob_again:
            history(bob)
            history(bob_again)
            receive_until(ada, presence_is(ada, ["ada", "bob"]))
            receive_until(bob, presence_is(bob, ["ada", "bob"]))
        receive_until(ada, presence_is(ada, ["ada"]))


def drain(ws: ClientConnection, quiet: float = 1.0) -> None:
    """Read until nothing has come for *quiet* seconds (at most TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            receive(ws, quiet)
        except TimeoutError:
            return
    raise AssertionError("the connection never went quiet")


def test_a_join_costs_each_member_one_small_delta_whatever_the_room_size(
    base: str, room: Room
) -> None:
    members = [join(base, "tea", f"member{n:02}").__enter__() for n in range(30)]
    try:
        for ws in members:
            history(ws)
        everyone = sorted(f"member{n:02}" for n in range(30))
        for ws in members:
            receive_until(ws, presence_is(ws, everyone))
        for ws in members:
            drain(ws, quiet=0.1 if ws is not members[0] else 1.0)
        with join(base, "tea", "newcomer") as newcomer:
            history(newcomer)
            snapshot = receive(newcomer)  # the whole list once, to the joiner
            assert snapshot["type"] == "presence" and len(snapshot["users"]) == 31
            for ws in members:
                raw = ws.recv(TIMEOUT)
                assert json.loads(raw) == {
                    "type": "presence_change",
                    "joined": ["newcomer"],
                    "left": [],
                    "count": 31,
                }
                assert len(raw) < 100
    finally:
        for ws in members:
            ws.close()


def test_presence_churn_is_coalesced_per_room(
    base: str, room: Room, settings: Any
) -> None:
    settings.CHAT_PRESENCE_INTERVAL = 0.5
    with join(base, "tea", "watcher") as watcher:
        history(watcher)
        receive(watcher)  # the snapshot
        started = time.monotonic()
        for cycle in range(10):
            with join(base, "tea", f"churn{cycle % 3}") as ws:
                history(ws)
        elapsed = time.monotonic() - started
        events = receive_until(watcher, presence_is(watcher, ["watcher"]))
        # Within at most one interval of the last leave, at most one delta
        # per interval: not one per join and leave.
        changes = [event for event in events if event["type"] == "presence_change"]
        assert len(changes) <= elapsed / 0.5 + 2, changes
        assert len(changes) < 20


def test_a_full_room_refuses_newcomers_with_4503_but_not_another_tab(
    base: str, room: Room, settings: Any
) -> None:
    settings.CHAT_MAX_MEMBERS = 2
    with join(base, "tea", "ada") as ada, join(base, "tea", "bob") as bob:
        history(ada)
        history(bob)
        assert expect_refusal(base, "/chat/tea/ws/?nick=cy") == (
            JoinCloseCode.ROOM_FULL,
            "room tea is full (2 people): try again later",
        )
        with join(base, "tea", "ada") as ada_again:
            assert history(ada_again) == []


def test_a_stalled_member_does_not_delay_the_others_and_is_dropped(
    live_server: LiveServer, base: str, room: Room, settings: Any
) -> None:
    """A raw client with a tiny receive buffer joins, then never reads: once
    the kernel's buffers and its backlog are full, it is dropped."""
    settings.WEBSOCKET_MAX_SEND_BACKLOG = 64 * 1024
    settings.CHAT_RATE_LIMIT = (100_000, 10.0)
    settings.CHAT_ADDRESS_RATE_LIMIT = (100_000, 10.0)

    def dropped(event: Event) -> bool:
        return event["type"] == "presence_change" and "sloth" in event["left"]

    # ada reads everything as it comes, so only the stalled member lags.
    with (
        join(base, "tea", "ada", max_queue=None) as ada,
        join(base, "tea", "bob") as bob,
        closing(socket.socket()) as stalled,
    ):
        history(ada)
        history(bob)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(TIMEOUT)
        stalled.connect((live_server.host, live_server.port))
        stalled.sendall(
            b"GET /chat/tea/ws/?nick=sloth HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        receive_until(bob, presence_is(bob, ["ada", "bob", "sloth"]))

        # About 800 kB a batch (4-byte characters), until the kernel's send
        # buffer (up to 4 MiB here) and the backlog overflow.
        deadline = time.monotonic() + TIMEOUT
        sent, events = 0, []
        while not any(map(dropped, events)):
            assert time.monotonic() < deadline, "the stalled member was not dropped"
            for _ in range(100):
                ada.send(
                    json.dumps({"type": "message", "text": f"{sent} " + "😀" * 1990})
                )
                sent += 1
            last = f"{sent - 1} "
            events += receive_until(
                bob, lambda e, last=last: e.get("text", "").startswith(last)
            )
        numbers = [int(event["text"].split()[0]) for event in messages(events)]
        assert numbers == list(range(sent))


def test_socket_without_a_nickname_closes_with_4403(base: str, room: Room) -> None:
    assert expect_refusal(base, "/chat/tea/ws/") == (
        JoinCloseCode.NO_IDENTITY,
        "choose a nickname first",
    )


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("nick=", "invalid nickname: Use 1 to 32 characters."),
        ("nick=" + "n" * 33, "invalid nickname: Use 1 to 32 characters."),
        (
            "nick=%20ada",
            "invalid nickname: Use printable characters, without spaces at either end.",
        ),
        (
            "nick=a%0Ab",
            "invalid nickname: Use printable characters, without spaces at either end.",
        ),
        ("nick=ada&after=last", "after must be a message id"),
        ("nick=ada&after=-1", "after must be a message id"),
    ],
)
def test_socket_with_a_bad_query_closes_with_4400(
    base: str, room: Room, query: str, reason: str
) -> None:
    code, actual = expect_refusal(base, f"/chat/tea/ws/?{query}")
    assert (code, actual) == (JoinCloseCode.BAD_REQUEST, reason)


def test_socket_of_a_room_that_does_not_exist_closes_with_4404(base: str) -> None:
    assert expect_refusal(base, "/chat/nowhere/ws/?nick=ada") == (
        JoinCloseCode.NO_SUCH_ROOM,
        "no room named nowhere",
    )


def test_socket_uses_the_nickname_chosen_on_the_page(
    base: str, room: Room, client: Client
) -> None:
    client.post("/chat/", {"nickname": "Ada Lovelace", "room": "tea"})
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with join(base, "tea", None, additional_headers={"Cookie": cookie}) as ws:
        history(ws)
        assert receive(ws) == {"type": "presence", "users": ["Ada Lovelace"]}
        assert say(ws, "hi")["user"] == "Ada Lovelace"


def test_a_logged_in_user_chats_under_their_username_whatever_the_nick(
    base: str, room: Room, client: Client, django_user_model: type[AbstractUser]
) -> None:
    client.force_login(django_user_model.objects.create_user("grace"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with join(base, "tea", "mallory", additional_headers={"Cookie": cookie}) as ws:
        history(ws)
        assert receive(ws) == {"type": "presence", "users": ["grace"]}


@pytest.mark.django_db
def test_the_socket_url_refuses_plain_http(client: Client) -> None:
    Room.objects.create(name="tea")
    response = client.get("/chat/tea/ws/")
    assert response.status_code == 400


# Names.


@pytest.mark.parametrize("name", ["lobby", "a", "R2-D2_x", "z" * 64])
def test_valid_room_names(name: str) -> None:
    rooms.validate_room_name(name)


@pytest.mark.parametrize("name", ["", "z" * 65, "two words", "café", "a/b", "a.b"])
def test_invalid_room_names(name: str) -> None:
    with pytest.raises(ValidationError):
        rooms.validate_room_name(name)


@pytest.mark.parametrize("nickname", ["ada", "Ada Lovelace", "é👋", "x" * 32, "!"])
def test_valid_nicknames(nickname: str) -> None:
    rooms.validate_nickname(nickname)


@pytest.mark.parametrize(
    "nickname", ["", "x" * 33, " ada", "ada ", "a\tb", "a\nb", "\x00", "a\u200bb"]
)
def test_invalid_nicknames(nickname: str) -> None:
    with pytest.raises(ValidationError):
        rooms.validate_nickname(nickname)


# Pages.


@pytest.mark.django_db
def test_index_lists_rooms_and_the_join_form(client: Client) -> None:
    Room.objects.create(name="tea")
    html = client.get("/chat/").content.decode()
    assert '<a href="/chat/tea/">tea</a>' in html
    assert '<span class="count" data-count="0">0 here</span>' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<form id="join-form" class="join-form" method="post"' in html


def test_index_counts_the_people_in_each_room(
    base: str, room: Room, client: Client
) -> None:
    with join(base, "tea", "ada") as ada, join(base, "tea", "bob") as bob:
        history(ada)
        history(bob)
        receive_until(ada, presence_is(ada, ["ada", "bob"]))
        html = client.get("/chat/").content.decode()
    assert '<span class="count" data-count="2">2 here</span>' in html


@pytest.mark.django_db
def test_joining_creates_the_room_keeps_the_nickname_and_redirects(
    client: Client,
) -> None:
    response = client.post("/chat/", {"nickname": "ada", "room": "new-room"})
    assert response.status_code == 302
    assert response["Location"] == "/chat/new-room/"
    assert Room.objects.filter(name="new-room").exists()
    assert client.session[rooms.SESSION_KEY] == "ada"
    html = client.get("/chat/new-room/").content.decode()
    assert 'data-socket-url="/chat/new-room/ws/"' in html
    assert 'data-user="ada"' in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"nickname": "ada", "room": "two words"}, "Use 1 to 64 letters"),
        ({"nickname": "ada", "room": ""}, "This field is required."),
        ({"nickname": "a\tb", "room": "tea"}, "Use printable characters"),
        ({"nickname": "x" * 33, "room": "tea"}, "at most 32 characters"),
        ({"room": "tea"}, "This field is required."),
    ],
)
def test_joining_with_a_bad_name_shows_why_and_creates_nothing(
    client: Client, data: dict[str, str], error: str
) -> None:
    response = client.post("/chat/", data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert 'aria-invalid="true"' in response.content.decode()
    assert not Room.objects.exclude(name="lobby").exists()
    assert rooms.SESSION_KEY not in client.session


@pytest.mark.django_db
def test_joining_needs_the_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/chat/", {"nickname": "ada", "room": "tea"})
    assert response.status_code == 403
    assert not Room.objects.filter(name="tea").exists()


@pytest.mark.django_db
def test_get_never_creates_a_room(client: Client) -> None:
    assert client.get("/chat/?room=tea&nickname=ada").status_code == 200
    assert client.get("/chat/tea/").status_code == 404
    assert client.get("/chat/not a room/").status_code == 404
    assert not Room.objects.filter(name="tea").exists()


@pytest.mark.django_db
def test_room_page_without_a_nickname_sends_you_to_the_form(client: Client) -> None:
    Room.objects.create(name="tea")
    response = client.get("/chat/tea/")
    assert response.status_code == 302
    assert response["Location"] == "/chat/?room=tea"
    assert 'name="room" value="tea"' in client.get("/chat/?room=tea").content.decode()


@pytest.mark.django_db
def test_room_page_for_a_logged_in_user_shows_the_chat_and_its_view(
    client: Client, django_user_model: type[AbstractUser]
) -> None:
    Room.objects.create(name="tea")
    client.force_login(django_user_model.objects.create_user("grace"))
    html = client.get("/chat/tea/").content.decode()
    assert 'data-user="grace"' in html
    assert '<script type="module" src="/static/js/chat.js"></script>' in html
    assert 'id="chat-status" class="status" data-state="connecting"' in html
    assert "<code>apps.chat.views.socket</code>" in html
    assert "@require_websocket" in html
    assert 'name="nickname"' not in client.get("/chat/").content.decode()


# Server processes: a restart, and two processes sharing Redis.


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every migration applied, made once per session."""
    path = tmp_path_factory.mktemp("chat") / "template.sqlite3"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{path}"},
        check=True,
        capture_output=True,
        timeout=TIMEOUT * 6,
    )
    return path


@pytest.fixture
def runserver(
    migrated_database: Path, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``manage.py runserver --noreload`` on a port, all of them on one
    copy of the migrated database; every process is stopped by its PID."""
    database = tmp_path / "db.sqlite3"
    shutil.copy(migrated_database, database)
    started: list[ServerProcess] = []

    def start(port: int | None = None, **env: str) -> ServerProcess:
        port = port or free_port()
        args = [sys.executable, "manage.py", "runserver", "--noreload"]
        server = ServerProcess(
            [*args, f"127.0.0.1:{port}"],
            port,
            {"DATABASE_URL": f"sqlite:///{database}", **env},
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_after_resumes_exactly_across_a_server_restart(
    runserver: Callable[..., ServerProcess],
) -> None:
    server = runserver()
    with join(server.url, "lobby", "ada") as ada:
        history(ada)
        seen = [say(ada, f"before {n}")["id"] for n in range(2)]
        missed = [say(ada, "posted before the restart")["id"]]
    server.signal(signal.SIGTERM)
    assert server.wait() == 0

    server = runserver(server.port)
    with join(server.url, "lobby", "ada") as ada:
        history(ada)
        missed.append(say(ada, "posted after the restart")["id"])
        with join(server.url, "lobby", "bob", after=seen[-1]) as bob:
            assert [event["id"] for event in history(bob)] == missed
            live = say(ada, "live")
            assert messages(receive_until(bob, lambda e: e.get("text") == "live")) == [
                live
            ]
    assert seen + missed == sorted(set(seen + missed))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, migrated_database: Path, tmp_path: Path
) -> str:
    """A migrated database of each kind the site supports, made for one test."""
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite3"
        shutil.copy(migrated_database, path)
        return f"sqlite:///{path}"
    postgres = request.getfixturevalue("postgres_server")
    url: str = postgres.create_database(f"chat_{os.urandom(4).hex()}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
        timeout=TIMEOUT * 12,
    )
    return url


@pytest.fixture
def site(
    database_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """Start runserver processes (those of an ASGI server, for a test that
    parametrizes ``site`` indirectly with its name) on *database_url* with
    tests/server_settings.py and its environment switches; each one is
    stopped by its PID."""
    started: list[ServerProcess] = []
    kind = getattr(request, "param", "runserver")

    def start(**env: str) -> ServerProcess:
        env = {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            **env,
        }
        if kind in ASGI_SERVERS:
            server = start_asgi(kind, env)
        else:
            port = free_port()
            server = ServerProcess(
                [sys.executable, "manage.py", "runserver", "--noreload",
                 f"127.0.0.1:{port}"],
                port,
                env,
            )  # fmt: skip
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("site", ["runserver", *ASGI_SERVERS], indirect=True)
def test_with_atomic_requests_members_see_each_other_and_nothing_is_lost(
    site: Callable[..., ServerProcess],
) -> None:
    """A socket's whole life in one transaction hid each member's messages
    from the others and, on SQLite, failed the second member's post."""
    server = site(STARTER_TEST_ATOMIC="1")
    try:
        with join(server.url, "lobby", "ada") as ada:
            history(ada)
            first = say(ada, "first")
            with join(server.url, "lobby", "bob") as bob:
                assert [event["id"] for event in history(bob)] == [first["id"]]
                second = say(bob, "second")
                assert next_of(ada, "message") == second
        with join(server.url, "lobby", "cy") as cy:
            assert [event["id"] for event in history(cy)] == [first["id"], second["id"]]
    finally:
        output = server.final_output()
    assert "Traceback" not in output, output


def http_get(server: ServerProcess, path: str) -> str:
    url = f"http://127.0.0.1:{server.port}{path}"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return str(response.read().decode())


def wait_for_count(server: ServerProcess, count: int) -> None:
    """Wait until /chat/ shows *count* people in the lobby, which with Redis
    means that every process has (re)connected and (re)stored its presence."""
    deadline = time.monotonic() + TIMEOUT * 2
    expected = f'data-count="{count}"'
    while expected not in http_get(server, "/chat/"):
        assert time.monotonic() < deadline, f"the lobby never showed {expected}"
        time.sleep(0.1)


def test_two_server_processes_share_rooms_and_presence_through_redis(
    runserver: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    """Then Redis is killed and restarted: nothing crashes, delivery resumes,
    and the message posted meanwhile is stored."""
    one = runserver(REDIS_URL=redis_server.url)
    two = runserver(REDIS_URL=redis_server.url)
    with join(one.url, "lobby", "ada") as ada:
        history(ada)
        receive_until(ada, presence_is(ada, ["ada"]))
        with join(two.url, "lobby", "bob") as bob:
            history(bob)
            receive_until(ada, presence_is(ada, ["ada", "bob"]))
            receive_until(bob, presence_is(bob, ["ada", "bob"]))
            assert say(ada, "hello from one") == next_of(bob, "message")
            assert say(bob, "hello from two") == next_of(ada, "message")

            redis_server.stop()
            # Both are told, by their own process.
            for member in (ada, bob):
                assert next_of(member, "unreachable")["message"].startswith(
                    "the room cannot be reached for now"
                )
            ada.send(json.dumps({"type": "message", "text": "while redis is down"}))
            unsent = next_of(ada, "message")
            assert unsent["text"] == "while redis is down"
            assert next_of(ada, "error") == {
                "type": "error",
                "message": f"message {unsent['id']} is saved, but the room cannot "
                "be reached right now: the others will see it when they reconnect",
                "stored": True,
            }

            redis_server.start()
            # The author always gets an answer, even before this process has
            # resubscribed.
            for n in range(3):
                assert say(ada, f"just after the restart {n}")["type"] == "message"
            # Once back, each member is made to catch up from the database.
            resync = next_of(bob, "resync")
            bob.send(json.dumps({"type": "history", "after": resync["after"]}))
            caught_up = [event["text"] for event in next_of(bob, "history")["messages"]]
            assert "while redis is down" in caught_up
            wait_for_count(one, 2)
            wait_for_count(two, 2)
            back = say(ada, "redis is back")
            assert back["id"] in all_ids_received(bob, {back["id"]})
        receive_until(ada, presence_is(ada, ["ada"]))

    with join(two.url, "lobby", "cy", after=0) as cy:
        assert [event["text"] for event in history(cy)] == [
            "hello from one",
            "hello from two",
            "while redis is down",
            *(f"just after the restart {n}" for n in range(3)),
            "redis is back",
        ]
    assert one.process.poll() is None and two.process.poll() is None


def stored_ids(base: str, room: str = "lobby") -> list[int]:
    """Every message id of *room*, read as a client resuming from 0 would."""
    with join(base, room, "auditor", after=0) as auditor:
        return [event["id"] for event in history(auditor)]


SENDERS, POSTS, READERS = 6, 30, 4


@pytest.mark.parametrize("site", ["runserver", *ASGI_SERVERS], indirect=True)
def test_concurrent_senders_leave_no_gap_in_any_readers_stream(
    site: Callable[..., ServerProcess],
) -> None:
    """Every post gets one answer: its message back, or an error saying
    whether it was stored. Every stored message reaches every reader."""
    server = site(STARTER_TEST_CHAT_RATE_LIMIT="100000,1")
    answers: list[Event] = []

    def send_all(sender: int) -> None:
        with join(server.url, "lobby", f"sender{sender}") as ws:
            history(ws)
            for n in range(POSTS):
                answer = post_raw(
                    ws, json.dumps({"type": "message", "text": f"{sender}:{n}"})
                )
                # Someone else's message is not an answer to this post.
                while answer["type"] == "message" and answer["text"] != f"{sender}:{n}":
                    answer = post_raw_next(ws)
                answers.append(answer)

    readers = [join(server.url, "lobby", f"reader{n}") for n in range(READERS)]
    try:
        connections = [reader.__enter__() for reader in readers]
        for ws in connections:
            history(ws)
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(send_all, range(SENDERS)))
        assert len(answers) == SENDERS * POSTS
        errors = [event for event in answers if event["type"] == "error"]
        assert all(not event["stored"] for event in errors), errors
        assert not any("slow down" in event["message"] for event in errors)
        stored = stored_ids(server.url)
        assert sorted(e["id"] for e in answers if e["type"] == "message") == stored
        for ws in connections:
            # Publishing order may differ from id order: wait for them all.
            assert sorted(all_ids_received(ws, set(stored))) == stored
    finally:
        for reader in readers:
            reader.__exit__(None, None, None)
        output = server.final_output()
    assert "Traceback" not in output, output


def all_ids_received(ws: ClientConnection, wanted: set[int]) -> set[int]:
    """The ids of *wanted* that arrive on *ws* within TIMEOUT."""
    seen: set[int] = set()
    with contextlib.suppress(TimeoutError):
        receive_until(ws, lambda e: seen.add(e.get("id", 0)) or seen >= wanted)
    return seen & wanted


def post_raw(ws: ClientConnection, data: str) -> Event:
    """Send *data* as it is; the next error or message event."""
    ws.send(data)
    return post_raw_next(ws)


def post_raw_next(ws: ClientConnection) -> Event:
    return receive_until(ws, lambda e: e["type"] in ("error", "message"))[-1]


@pytest.mark.parametrize(
    "data",
    [
        '{"type": "message", "text": "lone \\ud800 surrogate"}',
        '{"type": "message", "text": "a NUL \\u0000 inside"}',
        '{"type": "message", "text": "x", "deep": ' + "[" * 30000 + "]" * 30000 + "}",
    ],
    ids=["surrogate", "nul", "deep-json"],
)
def test_unstorable_input_gets_an_error_event_and_the_connection_stays_usable(
    site: Callable[..., ServerProcess], data: str
) -> None:
    server = site()
    with join(server.url, "lobby", "ada") as ada:
        history(ada)
        answer = post_raw(ada, data)
        assert answer["type"] == "error" and answer["stored"] is False, answer
        kept = say(ada, "still here")
    assert stored_ids(server.url) == [kept["id"]]
    output = server.final_output()
    assert "Traceback" not in output, output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("pragma", "reason"),
    [
        ("PRAGMA query_only=ON;", "it is read-only"),
        ("PRAGMA max_page_count={pages};", "its disk is full"),
    ],
    ids=["read-only", "disk-full"],
)
def test_a_database_that_refuses_writes_gets_an_error_saying_not_stored(
    site: Callable[..., ServerProcess], database_url: str, pragma: str, reason: str
) -> None:
    path = database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    server = site(STARTER_TEST_SQLITE_INIT=pragma.format(pages=pages))
    answers = []
    with join(server.url, "lobby", "ada") as ada:
        history(ada)
        for n in range(100):  # until the file has to grow
            answers.append(
                post_raw(ada, json.dumps({"type": "message", "text": f"{n:04} " * 300}))
            )
            if answers[-1]["type"] == "error":
                break
        error = answers[-1]
        assert error == {
            "type": "error",
            "stored": False,
            "message": f"your message was not stored: the database refused it "
            f"({reason}); try again in a moment",
        }
        assert not ada.close_code
    stored = [answer["id"] for answer in answers if answer["type"] == "message"]
    output = server.final_output()
    assert "Traceback" not in output, output
    assert "not stored" in output
    with closing(sqlite3.connect(path)) as db:
        assert [row[0] for row in db.execute("SELECT id FROM chat_message")] == stored


# Abuse: limits that outlive a connection, names that are someone else's.


def fresh_window(period: float, needed: float = 3.0) -> None:
    """Sleep into the next fixed rate-limit window unless the current one
    (aligned on multiples of *period*, as apps/ratelimit.py counts) has
    *needed* seconds left, so a test's attempts all count in one window."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.01)


def test_reconnecting_does_not_reset_the_rate_limit(base: str, room: Room) -> None:
    fresh_window(10.0)
    for n in range(10):
        with join(base, "tea", "ada") as ada:
            history(ada)
            assert say(ada, f"post {n}")["type"] == "message"
    with join(base, "tea", "ada") as ada:
        history(ada)
        answer = post_raw(ada, json.dumps({"type": "message", "text": "one more"}))
    assert answer["type"] == "error" and answer["stored"] is False
    assert answer["message"].startswith(
        "slow down: at most 10 messages every 10 seconds; try again in "
    )
    assert Message.objects.count() == 10


def test_many_nicknames_from_one_address_share_its_limit(
    base: str, room: Room, settings: Any
) -> None:
    settings.CHAT_ADDRESS_RATE_LIMIT = (15, 10.0)
    fresh_window(10.0)
    answers = []
    for n in range(20):
        with join(base, "tea", f"sock{n}") as ws:
            history(ws)
            answers.append(post_raw(ws, json.dumps({"type": "message", "text": "hi"})))
    assert [answer["type"] for answer in answers] == ["message"] * 15 + ["error"] * 5
    assert Message.objects.count() == 15


@pytest.mark.django_db
def test_creating_rooms_is_limited_per_client_but_joining_is_not(
    client: Client, settings: Any
) -> None:
    settings.CHAT_ROOM_CREATION_LIMIT = (3, 600.0)
    fresh_window(600.0)
    for n in range(3):
        assert (
            client.post("/chat/", {"nickname": "ada", "room": f"r{n}"}).status_code
            == 302
        )
    response = client.post("/chat/", {"nickname": "ada", "room": "r3"})
    assert response.status_code == 200
    assert "You have created 3 rooms in a short while" in response.content.decode()
    assert not Room.objects.filter(name="r3").exists()
    assert client.post("/chat/", {"nickname": "ada", "room": "r0"}).status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("nickname", ["admin", "ADMIN", "\u0430dmin", "ａｄｍｉｎ"])
def test_a_registered_username_or_its_lookalike_is_not_a_nickname(
    client: Client, django_user_model: type[AbstractUser], nickname: str
) -> None:
    django_user_model.objects.create_user("admin")
    response = client.post("/chat/", {"nickname": nickname, "room": "tea"})
    assert response.status_code == 200
    assert "That name belongs to a registered user" in response.content.decode()


def test_nick_cannot_borrow_a_registered_username_and_messages_say_who_is_verified(
    base: str, room: Room, client: Client, django_user_model: type[AbstractUser]
) -> None:
    django_user_model.objects.create_user("admin")
    assert expect_refusal(base, "/chat/tea/ws/?nick=%D0%B0dmin") == (
        JoinCloseCode.BAD_REQUEST,
        "invalid nickname: That name belongs to a registered user: log in to use "
        "it, or pick another.",
    )
    client.force_login(django_user_model.objects.get(username="admin"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with (
        join(base, "tea", None, additional_headers={"Cookie": cookie}) as admin,
        join(base, "tea", "ada") as ada,
    ):
        history(admin)
        history(ada)
        assert say(admin, "from the admin")["verified"] is True
        assert say(ada, "from a nickname")["verified"] is False


# History in pages.


def test_a_long_absence_comes_in_bounded_pages_asked_for_one_by_one(
    base: str, room: Room, settings: Any
) -> None:
    settings.CHAT_HISTORY_PAGE = 200
    Message.objects.bulk_create(
        Message(room=room, author="ada", text=f"{n} " + "x" * 1990) for n in range(450)
    )
    ids = list(room.messages.values_list("id", flat=True))
    with join(base, "tea", "bob", after=0, max_size=1024 * 1024) as bob:
        pages, received = [], []
        event = next_of(bob, "history")
        while True:
            pages.append(len(event["messages"]))
            received += [message["id"] for message in event["messages"]]
            if not event["more"]:
                break
            bob.send(json.dumps({"type": "history", "after": received[-1]}))
            event = next_of(bob, "history")
    assert pages == [200, 200, 50]
    assert received == ids


def test_older_messages_come_a_page_at_a_time_before_the_oldest_shown(
    base: str, room: Room
) -> None:
    Message.objects.bulk_create(
        Message(room=room, author="ada", text=str(n)) for n in range(120)
    )
    ids = list(room.messages.values_list("id", flat=True))
    with join(base, "tea", "bob") as bob:
        first = next_of(bob, "history")
        assert [m["id"] for m in first["messages"]] == ids[-50:]
        assert first["older"] is True and first["more"] is False
        shown = [m["id"] for m in first["messages"]]
        while True:
            bob.send(json.dumps({"type": "older", "before": shown[0]}))
            page = next_of(bob, "older")
            shown = [m["id"] for m in page["messages"]] + shown
            if not page["older"]:
                break
    assert shown == ids


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"type": "history", "after": "1"}, '"after" must be a message id'),
        ({"type": "history"}, '"after" must be a message id'),
        ({"type": "older", "before": -1}, '"before" must be a message id'),
        ({"type": "older", "before": True}, '"before" must be a message id'),
    ],
)
def test_a_malformed_page_request_gets_an_error_event(
    base: str, room: Room, request_: Event, error: str
) -> None:
    with join(base, "tea", "bob") as bob:
        history(bob)
        assert post_raw(bob, json.dumps(request_)) == {
            "type": "error",
            "message": error,
            "stored": False,
        }


@pytest.mark.django_db
def test_the_room_list_comes_in_pages(client: Client, settings: Any) -> None:
    settings.CHAT_ROOMS_PER_PAGE = 50
    Room.objects.bulk_create(Room(name=f"room{n:04}") for n in range(120))
    total = Room.objects.count()  # with the lobby migrate makes
    first = client.get("/chat/").content.decode()
    assert first.count('class="count"') == 50
    assert "Page 1 of 3" in first and 'rel="next" href="?page=2"' in first
    last = client.get("/chat/?page=3").content.decode()
    assert last.count('class="count"') == total - 100
    assert 'rel="prev" href="?page=2"' in last
    assert client.get("/chat/?page=junk").content.decode().count('class="count"') == 50


# The page's server side: typing, moderation, unique nicknames, the room list.


def test_typing_reaches_the_others_thinned_out_and_is_never_stored(
    base: str, room: Room
) -> None:
    with join(base, "tea", "ada") as ada, join(base, "tea", "bob") as bob:
        history(ada)
        history(bob)
        for _ in range(5):
            ada.send(json.dumps({"type": "typing"}))
        assert next_of(bob, "typing") == {"type": "typing", "user": "ada"}
        say(ada, "done typing")
        events = receive_until(bob, lambda e: e.get("text") == "done typing")
        assert not [event for event in events if event["type"] == "typing"]
    assert Message.objects.count() == 1


def test_a_message_deleted_in_the_admin_leaves_every_page_of_its_room(
    base: str, room: Room, client: Client, django_user_model: type[AbstractUser]
) -> None:
    client.force_login(django_user_model.objects.create_superuser("mod", "", "pw"))
    assert client.get("/admin/chat/message/").status_code == 200
    with join(base, "tea", "ada") as ada, join(base, "tea", "bob") as bob:
        history(ada)
        history(bob)
        rude = say(ada, "something rude")
        url = f"/admin/chat/message/{rude['id']}/delete/"
        assert client.post(url, {"post": "yes"}).status_code == 302
        for member in (ada, bob):
            assert next_of(member, "deleted") == {"type": "deleted", "id": rude["id"]}
    assert not Message.objects.exists()


def test_a_nickname_is_held_by_its_visitor_while_connected(
    live_server: LiveServer, base: str, room: Room
) -> None:
    def session_cookie(nickname: str) -> dict[str, str]:
        client = Client()
        client.post("/chat/", {"nickname": nickname, "room": "tea"})
        return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}

    bob, impostor = session_cookie("Bob"), session_cookie("bob")
    with join(base, "tea", None, additional_headers=bob) as first:
        history(first)
        refused = expect_refusal_with(base, "/chat/tea/ws/", impostor)
        assert refused == (
            JoinCloseCode.NICKNAME_TAKEN,
            "someone is already called bob in this room: pick another nickname",
        )
        assert (
            expect_refusal(base, "/chat/tea/ws/?nick=B%D0%BEb")[0] == 4409
        )  # Cyrillic о
        with join(base, "tea", None, additional_headers=bob) as second_tab:
            assert history(second_tab) == []
    with join(base, "tea", None, additional_headers=impostor) as now_free:
        history(now_free)


def expect_refusal_with(
    base: str, path: str, headers: dict[str, str]
) -> tuple[int, str]:
    with (
        connect(
            base + path,
            additional_headers=headers,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws,
        pytest.raises(ConnectionClosed),
    ):
        ws.recv(TIMEOUT)
    assert ws.close_code is not None and ws.close_reason is not None
    return ws.close_code, ws.close_reason


def test_the_room_list_counts_follow_joins_and_leaves_live(
    base: str, room: Room
) -> None:
    with connect(base + "/chat/@live/", open_timeout=TIMEOUT) as directory:
        with join(base, "tea", "ada") as ada:
            history(ada)
            assert receive_until(directory, lambda e: e.get("count") == 1)[-1] == {
                "type": "count",
                "room": "tea",
                "count": 1,
            }
        assert (
            receive_until(directory, lambda e: e.get("count") == 0)[-1]["room"] == "tea"
        )


@pytest.mark.django_db
def test_an_unknown_room_offers_to_create_it(client: Client) -> None:
    response = client.get("/chat/kitchen/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "No room named kitchen yet" in html
    assert '<input type="hidden" name="room" value="kitchen">' in html
    assert (
        client.post("/chat/", {"nickname": "ada", "room": "kitchen"}).status_code == 302
    )
    assert client.get("/chat/kitchen/").status_code == 200


@pytest.mark.django_db
def test_a_room_link_without_a_nickname_says_why_it_asks_for_one(
    client: Client,
) -> None:
    Room.objects.create(name="tea")
    response = client.get("/chat/tea/", follow=True)
    assert (
        "Choose a nickname to join <strong>tea</strong>." in response.content.decode()
    )


@pytest.mark.django_db
def test_log_in_then_chat_as_the_user_then_log_out(
    client: Client, django_user_model: type[AbstractUser]
) -> None:
    django_user_model.objects.create_user("grace", password="hopper-1906")
    page = client.get("/accounts/login/?next=/chat/")
    assert page.status_code == 200 and 'id="login-form"' in page.content.decode()
    response = client.post(
        "/accounts/login/",
        {"username": "grace", "password": "hopper-1906", "next": "/chat/"},
    )
    assert response.status_code == 302 and response["Location"] == "/chat/"
    html = client.get("/chat/").content.decode()
    assert "You chat as <strong>grace</strong>." in html
    assert 'id="logout-form"' in html
    assert client.post("/accounts/logout/").status_code == 302
    assert 'id="login-link"' in client.get("/chat/").content.decode()


def test_the_author_key_names_the_visitor_not_the_nickname(
    base: str, room: Room
) -> None:
    with join(base, "tea", "ada") as ada:
        history(ada)
        first = say(ada, "one")
        second = say(ada, "two")
    with join(base, "tea", "bob") as bob:
        history(bob)
        other = say(bob, "three")
    assert re.fullmatch("[0-9a-f]{16}", first["by"])
    assert first["by"] == second["by"]  # one visitor (here: one address)...
    assert other["by"] == first["by"]  # ...whatever the nickname
