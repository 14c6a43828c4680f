"""Hostile and broken clients: each is cut off and the server keeps serving."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from django_websocket import CloseCode, groups
from django_websocket.hub import get_hub
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT, raw_request
from django_websocket.tests.wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Flood,
    RawWebSocket,
    client_frame,
    close_payload,
)

pytestmark = pytest.mark.urls("django_websocket.tests.urls")


def _echo_still_works(ws) -> None:
    with ws("/echo/") as client:
        client.send("still serving")
        assert client.receive() == "still serving"


def test_trickling_handshake_is_cut_off_by_the_handshake_timeout(
    live_server, ws, settings
):
    settings.WEBSOCKET_HANDSHAKE_TIMEOUT = 0.5
    with socket.create_connection(
        (live_server.host, live_server.port), timeout=TIMEOUT
    ) as sock:
        sock.sendall(b"GET /echo/ HTTP/1.1\r\n")
        started = time.monotonic()
        received = b""
        while time.monotonic() - started < TIMEOUT:
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.05)
        sock.settimeout(TIMEOUT)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + TIMEOUT / 2
    assert received.startswith(b"HTTP/1.1 408 Request Timeout")
    _echo_still_works(ws)


def test_more_than_100_headers_is_refused(live_server, ws):
    headers = {**HANDSHAKE, **{f"X-Flood-{i}": "x" for i in range(101)}}
    response = raw_request(live_server, "/echo/", headers)
    assert response.status in (400, 431)
    _echo_still_works(ws)


def test_a_header_line_over_64_kib_is_refused(live_server, ws):
    response = raw_request(live_server, "/echo/", {**HANDSHAKE, "X-Big": "x" * 70_000})
    assert response.status in (400, 431)
    _echo_still_works(ws)


# Flow control and limits, each broken by a raw-frame client. Memory is
# asserted through the connections' own counters (WebSocket.backlog).

MIB = 1024 * 1024


def _connection(path: str):
    """The server-side WebSocket serving *path* (the server runs in-process),
    the one opened last: earlier tests' may still be finishing."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = [
            connection
            for connection in get_hub().connections()
            if connection.path == path and not connection.closed
        ]
        if found:
            return max(found, key=lambda connection: connection.opened_at)
        time.sleep(0.01)
    raise AssertionError(f"no open connection on {path}")


def _watch_backlog(connection, seconds: float):
    """The largest backlog figures seen over *seconds*."""
    most = {"unread_messages": 0, "unread_size": 0, "partial_size": 0, "out": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        backlog = connection.backlog
        most["unread_messages"] = max(most["unread_messages"], backlog.unread_messages)
        most["unread_size"] = max(most["unread_size"], backlog.unread_size)
        most["partial_size"] = max(most["partial_size"], backlog.partial_size)
        most["out"] = max(most["out"], backlog.outbound_bytes)
        time.sleep(0.005)
    return most


def test_a_view_that_never_reads_stops_reading_its_socket(raw, ws, settings):
    settings.WEBSOCKET_MAX_QUEUE = 4
    client = raw("/never-reads/")
    assert client.recv_frame().payload == b"holding"
    message = client_frame(BINARY, b"x" * (MIB - 16))
    with Flood(client, message) as flood:
        assert flood.pushed_back.wait(TIMEOUT), "TCP never pushed back"
        most = _watch_backlog(_connection("/never-reads/"), 0.5)
        _echo_still_works(ws)
    # 4 queued, plus at most the one message a 64 KiB read completes.
    assert most["unread_messages"] <= 5
    assert most["unread_size"] <= 5 * MIB
    assert flood.sent < 64 * MIB


def test_a_flood_at_a_reading_view_is_bounded_and_others_are_served(raw, ws):
    client = raw("/sink/")
    with Flood(client, client_frame(BINARY, b"x" * 65536)) as flood:
        most = _watch_backlog(_connection("/sink/"), 1.0)
        _echo_still_works(ws)
        assert not flood.ended.is_set()  # still flooding, still connected
    assert flood.sent > 4 * MIB
    assert most["unread_messages"] <= 16 + 1


def test_a_flooding_member_never_delays_another_members_publish(raw, ws):
    flooder = raw("/groups/room/sink/")
    assert flooder.recv_frame().payload == b"joined"
    with ws("/groups/room/listen/") as listener, ws("/groups/room/") as poster:
        assert listener.receive() == "joined"
        assert poster.receive() == "joined"
        with Flood(flooder, client_frame(BINARY, b"x" * 65536)) as flood:
            _watch_backlog(_connection("/groups/room/sink/"), 0.3)
            for n in range(5):
                poster.send(f"post {n}")
                assert listener.receive() == f"post {n}"
                assert poster.receive() == f"post {n}"
            assert not flood.ended.is_set()  # delivered during the flood
        assert flood.sent > MIB


def test_publishing_to_its_own_group_keeps_the_owner_to_the_backlog(
    raw, observed, settings
):
    settings.WEBSOCKET_MAX_SEND_BACKLOG = 2 * MIB
    settings.WEBSOCKET_PING_TIMEOUT = 0.5  # how long the owner waits for progress
    client = raw("/self-publisher/")  # and never reads
    kind, most, code, reason = observed()
    assert kind == "self-published"
    # The limit plus the one message in flight when the owner starts waiting.
    assert most <= 2 * MIB + MIB + 64
    assert (code, reason) == (CloseCode.POLICY_VIOLATION, "send backlog exceeded")
    client.close()


def test_a_ping_flood_is_closed_by_the_control_frame_rate(raw, ws, settings):
    settings.WEBSOCKET_MAX_CONTROL_RATE = 50
    client = raw("/sink/")
    client.send(client_frame(PING, b"p") * 500)
    frames = client.frames_until_eof()
    close = frames[-1]
    assert (close.opcode, close.close_code) == (CLOSE, CloseCode.POLICY_VIOLATION)
    assert close.close_reason == "too many control frames: more than 50 per second"
    assert sum(frame.opcode == PONG for frame in frames) <= 50
    _echo_still_works(ws)


def test_a_ping_flood_that_never_reads_its_pongs_is_dropped_at_the_backlog(
    live_server, ws, settings
):
    settings.WEBSOCKET_MAX_CONTROL_RATE = None
    settings.WEBSOCKET_MAX_SEND_BACKLOG = 256 * 1024
    client = RawWebSocket(live_server.host, live_server.port, "/sink/", rcvbuf=4096)
    connection = _connection("/sink/")
    most = 0
    with Flood(client, client_frame(PING, b"p" * 125) * 64) as flood:
        deadline = time.monotonic() + TIMEOUT * 2
        while not connection.closed and time.monotonic() < deadline:
            most = max(most, connection.backlog.outbound_bytes)
            time.sleep(0.002)
        assert connection.closed
        assert flood.ended.wait(TIMEOUT) or flood.sent
    assert most <= 256 * 1024
    assert connection.close_code == CloseCode.POLICY_VIOLATION
    assert connection.close_reason == "send backlog exceeded"
    client.close()
    _echo_still_works(ws)


@pytest.mark.parametrize("payload", [b"xy", b""], ids=["2-byte", "empty"])
def test_a_message_in_too_many_fragments_is_closed_with_1008(
    raw, ws, settings, payload
):
    settings.WEBSOCKET_MAX_FRAGMENTS = 100
    client = raw("/echo/")
    client.send(client_frame(TEXT, b"a", fin=False))
    client.send(client_frame(CONT, payload, fin=False) * 200)
    close = client.expect_close()
    assert close.close_code == CloseCode.POLICY_VIOLATION
    assert close.close_reason == "too many fragments: more than 100 in a message"
    _echo_still_works(ws)


def test_fragments_take_about_the_size_of_the_message(raw, settings):
    settings.WEBSOCKET_MAX_FRAGMENTS = None
    client = raw("/echo/")
    client.send(client_frame(BINARY, b"ab", fin=False))
    client.send(client_frame(CONT, b"xy", fin=False) * 100_000)
    connection = _connection("/echo/")
    deadline = time.monotonic() + TIMEOUT
    while connection.backlog.partial_size < 200_002 and time.monotonic() < deadline:
        time.sleep(0.01)
    # One buffer the size of the message so far, not a list of fragments.
    assert connection.backlog.partial_size == 200_002
    client.send(client_frame(CONT, b"!"))
    echoed = client.recv_frame()
    assert (echoed.opcode, len(echoed.payload)) == (BINARY, 200_003)
    assert connection.backlog.partial_size == 0


def test_a_close_frame_between_fragments_is_a_normal_close(raw):
    client = raw("/echo/")
    client.send(client_frame(TEXT, b"half a ", fin=False))
    client.send(client_frame(CLOSE, close_payload(CloseCode.NORMAL_CLOSURE)))
    assert client.expect_close().close_code == CloseCode.NORMAL_CLOSURE


def test_wait_with_a_zero_timeout_returns_a_message_that_is_waiting(raw, observed):
    client = raw("/polls/")
    assert client.recv_frame().payload == b"send it"
    client.send(client_frame(TEXT, b"here"))
    assert observed() == ("polled", "here")


def test_a_pong_behind_other_frames_is_not_lost_while_closing(raw, observed):
    client = raw("/pings-then-closes/")
    assert client.recv_frame().opcode == PING
    assert client.recv_frame().opcode == CLOSE
    # One write: the server is closing when it parses all three at once.
    client.send(
        client_frame(TEXT, b"late")
        + client_frame(PONG, b"last ping")
        + client_frame(CLOSE, close_payload(CloseCode.NORMAL_CLOSURE))
    )
    client.socket.shutdown(socket.SHUT_WR)  # as a client does after its close
    assert observed() == ("pong after close", True)


def test_a_failing_finish_callback_is_logged_and_the_others_still_run(ws, caplog):
    with ws("/failing-callback/") as client:
        assert client.receive() == "joined"
        assert groups.local_members("fails") != []
    deadline = time.monotonic() + TIMEOUT
    while groups.local_members("fails") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert groups.local_members("fails") == []
    assert groups.presence("fails") == {}
    assert "a broken finish callback" in caplog.text


def test_clients_that_trickle_headers_and_never_read_are_all_cut_off(
    live_server, ws, settings
):
    settings.WEBSOCKET_HANDSHAKE_TIMEOUT = 0.3
    socks = []
    for _ in range(50):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect((live_server.host, live_server.port))
        sock.sendall(b"GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(sock)
    try:
        _echo_still_works(ws)
        for sock in socks:
            sock.settimeout(TIMEOUT)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    received += chunk
            assert received.startswith(b"HTTP/1.1 408")
    finally:
        for sock in socks:
            sock.close()
