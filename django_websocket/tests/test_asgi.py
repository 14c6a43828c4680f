"""The same views under ASGI servers: uvicorn, daphne and granian as real
processes, websockets' client. What test_server.py checks on every server
(shutdown, a flooding client) runs on them there too.

What the ASGI specification leaves to the server differs between them, and
the tests say so per server (docs/deploy.md lists it for users)."""

from __future__ import annotations

import time
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from django_websocket import CloseCode
from django_websocket.testing import WebSocketClient
from django_websocket.tests.conftest import TIMEOUT

# Whether the server answers a refused handshake with the view's own HTTP
# response (the websocket.http.response extension), sends close reasons,
# sends every close code (daphne: only 1000 and 3000-4999, the rest become
# 1011) and negotiates permessage-deflate.
ABLE = {
    "uvicorn": {
        "http_response": True,
        "reasons": True,
        "all_codes": True,
        "compression": True,
    },
    "daphne": {
        "http_response": False,
        "reasons": False,
        "all_codes": False,
        "compression": False,
    },
    "granian": {
        "http_response": True,
        "reasons": True,
        "all_codes": True,
        "compression": False,
    },
}


@pytest.fixture(params=list(ABLE))
def server(request, server_process):
    """Each ASGI server, serving the library's test views."""
    process = server_process(request.param)
    process.able = ABLE[request.param]
    return process


def test_http_goes_through_django_and_websockets_through_the_same_views(server):
    url = f"http://127.0.0.1:{server.port}/both/"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.read() == b"plain HTTP"
    with WebSocketClient(server.url, "/both/", timeout=TIMEOUT) as both:
        assert both.receive() == "websocket"
    with WebSocketClient(server.url, "/echo/", timeout=TIMEOUT) as echo:
        for message in ("text", b"\x00binary", "é" * 70_000):
            echo.send(message)
            assert echo.receive() == message
        echo.close()
    assert echo.close_code == CloseCode.NORMAL_CLOSURE


def test_refusals_are_http_responses_with_the_reason(server):
    """Or, where the server has no way to send the view's response, a 403."""
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}/echo/", origin="https://evil.test", open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    if server.able["http_response"]:
        assert (
            refused.value.response.body
            == (
                f"origin https://evil.test does not match http://127.0.0.1:{server.port}\n"
            ).encode()
        )
    with pytest.raises(InvalidStatus) as missing:
        connect(f"{server.url}/no-such-view/", open_timeout=TIMEOUT)
    assert missing.value.response.status_code == (
        404 if server.able["http_response"] else 403
    )


def test_subprotocols_close_codes_and_limits_are_the_views(server):
    with WebSocketClient(
        server.url, "/subprotocols/", subprotocols=["chat.v1", "chat.v2"]
    ) as chosen:
        assert chosen.subprotocol == "chat.v2"
        assert chosen.receive() == "chat.v2"
    with WebSocketClient(server.url, "/close/", timeout=TIMEOUT) as closed:
        assert closed.expect_close() == 4001
        assert closed.close_reason == ("bye" if server.able["reasons"] else "")
    with WebSocketClient(server.url, "/raises/", timeout=TIMEOUT) as failing:
        failing.send("go")
        assert failing.expect_close() == CloseCode.INTERNAL_ERROR
        assert failing.close_reason == (
            "internal server error" if server.able["reasons"] else ""
        )
    with WebSocketClient(server.url, "/small/", timeout=TIMEOUT) as small:
        small.send("x" * 2048)
        assert small.expect_close() == (
            CloseCode.MESSAGE_TOO_BIG
            if server.able["all_codes"]
            else CloseCode.INTERNAL_ERROR
        )


def test_the_view_sends_from_many_threads_and_the_server_compresses(server):
    with WebSocketClient(server.url, "/threads/", timeout=TIMEOUT) as client:
        compressed = bool(client.connection.protocol.extensions)
        assert compressed == server.able["compression"]
        client.send("go")
        received = [client.receive() for _ in range(50 * 20)]
    by_sender: dict[str, list[int]] = {}
    for message in received:
        sender, number, _ = str(message).split(":", 2)
        by_sender.setdefault(sender, []).append(int(number))
    assert by_sender == {str(n): list(range(20)) for n in range(50)}


def test_groups_reach_every_member(server):
    with (
        WebSocketClient(server.url, "/groups/room/", timeout=TIMEOUT) as ada,
        WebSocketClient(server.url, "/groups/room/", timeout=TIMEOUT) as bob,
    ):
        assert ada.receive() == "joined"
        assert bob.receive() == "joined"
        ada.send("hello, room")
        assert bob.receive() == "hello, room"
        assert ada.receive() == "hello, room"


def test_the_bridge_answers_the_views_keepalive_pings(server_process):
    """The view pings its end of the socket pair; were the pongs missing,
    the view would close an idle connection at the ping timeout."""
    server = server_process("uvicorn", env={"DJANGO_WEBSOCKET_TESTS_PING": "0.1,0.2"})
    with WebSocketClient(server.url, "/echo/", timeout=TIMEOUT) as echo:
        time.sleep(1.0)  # five ping intervals, idle
        echo.send("still here")
        assert echo.receive() == "still here"
        echo.close()
    assert echo.close_code == CloseCode.NORMAL_CLOSURE
