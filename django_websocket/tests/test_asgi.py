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
from django_websocket.tests.wire import (
    BINARY,
    CLOSE,
    TEXT,
    Flood,
    RawWebSocket,
    client_frame,
)

# Whether the server answers a refused handshake with the view's own HTTP
# response (the websocket.http.response extension), sends close reasons,
# sends every close code (daphne: only 1000 and 3000-4999, the rest become
# 1011), negotiates permessage-deflate, and has flow control: daphne reads
# on and queues every message a client sends whether or not the
# application asks for more, and drops the connection a second after its
# close frame even if the client is still reading what came before.
ABLE = {
    "uvicorn": {
        "http_response": True,
        "reasons": True,
        "all_codes": True,
        "compression": True,
        "flow_control": True,
    },
    "daphne": {
        "http_response": False,
        "reasons": False,
        "all_codes": False,
        "compression": False,
        "flow_control": False,
    },
    "granian": {
        "http_response": True,
        "reasons": True,
        "all_codes": True,
        "compression": False,
        "flow_control": True,
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


def test_the_server_keeps_connections_alive_and_a_views_ping_returns_at_once(
    server_process,
):
    """ASGI carries no pings: the view's keepalive settings (here a ping
    every 0.1 s, 0.2 s to answer) do not apply, the server's do, and a
    view's ping() returns an event already set."""
    server = server_process("uvicorn", env={"DJANGO_WEBSOCKET_TESTS_PING": "0.1,0.2"})
    with WebSocketClient(server.url, "/echo/", timeout=TIMEOUT) as echo:
        time.sleep(1.0)  # five of the view's ping intervals, idle
        echo.send("still here")
        assert echo.receive() == "still here"
    with WebSocketClient(server.url, "/ping/", timeout=TIMEOUT) as pinger:
        pinger.send("read")  # ends the view's wait for the pong
        assert pinger.receive() == "pong received"


FLOW_CONTROLLED = [kind for kind, able in ABLE.items() if able["flow_control"]]
MiB = 1024  # in KiB, as rss_kib() counts
BACKLOG = 4 * 1024 * 1024  # WEBSOCKET_MAX_SEND_BACKLOG's default, bytes


def _most_rss_kib(server, seconds: float) -> int:
    """The highest resident memory of *server* over *seconds*."""
    most = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        most = max(most, server.rss_kib())
        time.sleep(0.05)
    return most


def _still_serves(server) -> None:
    with WebSocketClient(server.url, "/echo/", timeout=TIMEOUT) as other:
        other.send("still served")
        assert other.receive() == "still served"


def test_a_client_that_reads_nothing_is_dropped_with_1008(server):
    """Another thread of the view sends 4,096 messages of 64 KiB (256 MiB):
    past the send backlog the client is dropped, and the server holds no
    more than the backlog and its own buffers meanwhile."""
    _still_serves(server)
    baseline = server.rss_kib()
    with RawWebSocket("127.0.0.1", server.port, "/flood/", rcvbuf=4096) as client:
        assert client.status == 101
        grown = _most_rss_kib(server, 2.0) - baseline
        assert grown < 48 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
        _still_serves(server)
        if not server.able["flow_control"]:
            return  # dropped before the client reads the close
        frames = client.frames_until_eof(timeout=TIMEOUT * 4)
    assert frames[-1].opcode == CLOSE
    assert frames[-1].close_code == CloseCode.POLICY_VIOLATION
    assert frames[-1].close_reason == "send backlog exceeded"
    assert sum(len(frame.payload) for frame in frames) < BACKLOG + 8 * 1024 * 1024


@pytest.mark.parametrize("kind", FLOW_CONTROLLED)
def test_the_views_own_sends_wait_for_a_slow_client(server_process, kind):
    """The view's own thread sends 16 MiB to a client that reads slowly: it
    waits at the backlog limit instead of dropping the client, and every
    message arrives in order."""
    server = server_process(kind)
    with RawWebSocket("127.0.0.1", server.port, "/streams/", rcvbuf=4096) as client:
        numbers = []
        while (frame := client.recv_frame(timeout=TIMEOUT)).opcode == BINARY:
            numbers.append(int.from_bytes(frame.payload[:4]))
            if len(numbers) % 16 == 0:
                time.sleep(0.02)  # slower than the view sends
        assert frame.opcode == TEXT
        most = int(frame.payload)
        assert client.recv_frame(timeout=TIMEOUT).close_code == CloseCode.NORMAL_CLOSURE
    assert numbers == list(range(256))
    assert 0 < most <= BACKLOG + 65536


@pytest.mark.parametrize("kind", FLOW_CONTROLLED)
def test_a_flood_into_a_view_that_reads_nothing_is_held_back(server_process, kind):
    """Past max_queue unread messages the bridge asks the server for no
    more, the server stops reading and TCP stops the client."""
    server = server_process(kind)
    _still_serves(server)
    baseline = server.rss_kib()
    flooder = RawWebSocket("127.0.0.1", server.port, "/never-reads/")
    frame = client_frame(BINARY, b"x" * 65536)
    with flooder, Flood(flooder, frame) as flood:
        assert flood.pushed_back.wait(TIMEOUT * 2), "the server took everything"
        grown = _most_rss_kib(server, 1.0) - baseline
        sent = flood.sent
        assert grown < 48 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
        _still_serves(server)
        assert flood.sent - sent < 8 * 1024 * 1024  # still held back
