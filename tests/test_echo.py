"""The echo view end to end: the real threaded server, websockets' client."""

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from websockets.sync.client import ClientConnection

from django_websocket import CloseCode
from tests.conftest import TIMEOUT

WsConnect = Callable[[str], AbstractContextManager[ClientConnection]]


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
