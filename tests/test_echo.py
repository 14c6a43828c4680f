"""The echo view end to end, websockets' client against each kind of server:
the library's threaded server (in this process) and each ASGI server (a
process)."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from websockets.sync.client import ClientConnection, connect

from django_websocket import CloseCode
from django_websocket.tests.conftest import ASGI_SERVERS, ServerProcess
from tests.conftest import TIMEOUT, start_asgi

WsConnect = Callable[[str], AbstractContextManager[ClientConnection]]


@pytest.fixture(scope="module")
def asgi_servers() -> Iterator[Callable[[str], ServerProcess]]:
    """Each ASGI server serving ``config.asgi:application``, started when a
    test first asks for it and stopped after the module."""
    started: dict[str, ServerProcess] = {}

    def start(kind: str) -> ServerProcess:
        if kind not in started:
            started[kind] = start_asgi(
                kind,
                {
                    "DJANGO_SETTINGS_MODULE": "tests.server_settings",
                    "STARTER_TEST_URLS": "1",
                },
            )
        return started[kind]

    yield start
    for server in started.values():
        server.stop()


@pytest.fixture(params=["threaded", *ASGI_SERVERS])
def ws_connect(request: pytest.FixtureRequest) -> WsConnect:
    """Open websockets' client on a path of each server in turn."""
    if request.param == "threaded":
        base = request.getfixturevalue("live_server").ws_url
    else:
        base = request.getfixturevalue("asgi_servers")(request.param).url

    def open_path(path: str) -> AbstractContextManager[ClientConnection]:
        return connect(base + path, open_timeout=TIMEOUT, close_timeout=TIMEOUT)

    return open_path


def test_text_message_comes_straight_back(ws_connect: WsConnect) -> None:
    with ws_connect("/echo/ws/") as ws:
        ws.send("hello, échø 👋")
        assert ws.recv(TIMEOUT) == "hello, échø 👋"


def test_binary_message_comes_back_as_binary(ws_connect: WsConnect) -> None:
    with ws_connect("/echo/ws/") as ws:
        ws.send(b"\x00\xff binary")
        assert ws.recv(TIMEOUT) == b"\x00\xff binary"


def test_messages_come_back_in_order(ws_connect: WsConnect) -> None:
    with ws_connect("/echo/ws/") as ws:
        for n in range(20):
            ws.send(f"message {n}")
        assert [ws.recv(TIMEOUT) for _ in range(20)] == [
            f"message {n}" for n in range(20)
        ]


def test_client_close_ends_the_view_with_a_normal_closure(
    ws_connect: WsConnect,
) -> None:
    with ws_connect("/echo/ws/") as ws:
        ws.send("bye")
        assert ws.recv(TIMEOUT) == "bye"
    assert ws.close_code == CloseCode.NORMAL_CLOSURE


@pytest.mark.urls("tests.urls")
def test_announcement_example_runs_unchanged(ws_connect: WsConnect) -> None:
    """The 2010 seed's while/wait() loop still echoes, text and binary."""
    with ws_connect("/seed/") as ws:
        ws.send("from 2010")
        assert ws.recv(TIMEOUT) == "from 2010"
        ws.send(b"\x01\x02")
        assert ws.recv(TIMEOUT) == b"\x01\x02"
    assert ws.close_code == CloseCode.NORMAL_CLOSURE
