"""request.websocket end to end: messages, reading semantics, closing, threads."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import weakref

import pytest
from websockets.frames import Opcode

from django_websocket import CloseCode
from django_websocket.hub import get_hub
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT

pytestmark = pytest.mark.urls("django_websocket.tests.urls")


def test_text_and_binary_messages_echo_with_their_type(ws):
    with ws("/echo/") as client:
        client.send("héllo")
        assert client.receive() == "héllo"
        client.send(b"\x00\xff")
        assert client.receive() == b"\x00\xff"


def test_one_mebibyte_message_round_trips(ws):
    message = bytes(range(256)) * 4096
    with ws("/echo/") as client:
        client.send(message)
        assert client.receive() == message


def test_fragmented_client_message_is_reassembled(ws):
    with ws("/echo/") as client:
        client.send(["frag", "men", "ted"])
        assert client.receive() == "fragmented"


def test_the_seed_example_view_runs_unchanged(ws):
    with ws("/seed/") as client:
        client.send("from 2010")
        assert client.receive() == "from 2010"


def test_invalid_utf8_closes_with_1007(ws):
    with ws("/echo/") as client:
        client.send_frame(Opcode.TEXT, b"\xff\xfe")
        assert client.expect_close() == CloseCode.INVALID_DATA
        assert client.close_reason == "invalid UTF-8 in text message"


def test_invalid_utf8_in_a_first_fragment_fails_before_the_message_ends(ws):
    with ws("/echo/") as client:
        client.send_frame(Opcode.TEXT, b"ok \xc3\x28", fin=False)
        assert client.expect_close() == CloseCode.INVALID_DATA


def test_oversized_message_closes_with_1009(ws):
    with ws("/small/") as client:
        client.send("x" * 1025)
        assert client.expect_close() == CloseCode.MESSAGE_TOO_BIG
        assert client.close_reason == "frame exceeds limit of 1024 bytes"


def test_max_message_size_setting_applies_without_decorator_option(ws, settings):
    settings.WEBSOCKET_MAX_MESSAGE_SIZE = 100
    with ws("/echo/") as client:
        client.send("x" * 100)
        assert client.receive() == "x" * 100
        client.send("x" * 101)
        assert client.expect_close() == CloseCode.MESSAGE_TOO_BIG


def test_read_returns_none_at_once_then_the_message_once_it_arrived(ws, observed):
    with ws("/nonblocking/") as client:
        assert observed() == ("first-read", None, False)
        assert client.receive() == "ready"
        client.send("one")
        assert observed() == ("waited", "one")
        assert client.receive() == "again"
        client.send("two")
        assert observed() == ("count", 1, "two")


def test_small_frames_are_not_held_back_for_the_previous_acknowledgement(ws, observed):
    with ws("/nagle/"):
        assert observed() == ("nodelay", True)


def test_wait_returns_none_after_the_client_closes(ws, observed):
    with ws("/wait/") as client:
        client.send("first")
        client.close(CloseCode.GOING_AWAY, "leaving")
    assert observed() == ("waited", "first", None, CloseCode.GOING_AWAY)


def test_iteration_ends_when_the_client_closes(ws, observed):
    with ws("/echo/") as client:
        client.send("x")
        client.receive()
    assert observed() == ("echo-ended", CloseCode.NORMAL_CLOSURE)


def test_server_close_reaches_the_client_with_code_and_reason(ws, observed):
    with ws("/close/") as client:
        assert client.expect_close() == 4001
        assert client.close_reason == "bye"
    assert observed() == ("after-close", None)


def test_view_that_raises_closes_with_1011_and_logs_the_traceback(ws, caplog):
    with ws("/raises/") as client:
        client.send("go")
        assert client.expect_close() == CloseCode.INTERNAL_ERROR
    assert "boom in a WebSocket view" in caplog.text
    assert "Traceback" in caplog.text


def test_json_helpers_round_trip(ws):
    with ws("/json/") as client:
        client.send_json({"n": [1, 2]})
        assert client.receive_json() == {"got": {"n": [1, 2]}}


def test_fifty_threads_sending_to_one_connection_never_corrupt_a_frame(ws):
    received = []
    with ws("/threads/", max_size=None) as client:
        client.send("go")
        while (message := client.receive(timeout=TIMEOUT * 2)) != "done":
            received.append(message)
    assert len(received) == 50 * 20
    for message in received:
        n, i, padding = message.split(":")
        assert padding == "x" * (int(n) * 97)
    for n in range(50):
        order = [int(m.split(":")[1]) for m in received if m.startswith(f"{n}:")]
        assert order == list(range(20))


def test_two_hundred_concurrent_clients_each_get_their_own_echo(live_server, ws):
    errors: list[BaseException] = []

    def client_session(n: int) -> None:
        try:
            with ws("/echo/", timeout=TIMEOUT * 4) as client:
                for i in range(5):
                    client.send(f"{n}-{i}")
                    assert client.receive() == f"{n}-{i}"
        except BaseException as err:  # noqa: BLE001 - collected for the assert
            errors.append(err)

    threads = [threading.Thread(target=client_session, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 6)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)


def _open_raw(live_server, path: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect((live_server.host, live_server.port))
    request = f"GET {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in HANDSHAKE.items()
    )
    sock.sendall(request.encode() + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def _wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _request_threads() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.name.startswith("Thread-") and t.daemon
    ]


def test_client_vanishing_without_close_frame_leaves_no_thread_or_socket(
    live_server, observed
):
    get_hub()  # created once per process, with its own fds
    baseline, fds = len(_request_threads()), _open_fds()
    sock = _open_raw(live_server, "/echo/")
    assert _wait_for(lambda: len(get_hub().connections()) == 1)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    sock.close()  # RST, no close frame
    assert observed() == ("echo-ended", CloseCode.ABNORMAL_CLOSURE)
    assert _wait_for(lambda: get_hub().connections() == [])
    assert _wait_for(lambda: len(_request_threads()) <= baseline)
    assert _wait_for(lambda: _open_fds() <= fds)


def test_finished_connection_is_not_kept_in_memory_by_its_timers(ws, observed):
    """The hub's timer heap held each connection until its next keepalive
    ping was due (20 s by default), so churn piled them up."""
    with ws("/echo/") as client:
        client.send("bye")
        assert client.receive() == "bye"
        (connection,) = [weakref.ref(c) for c in get_hub().connections()]
    assert observed() == ("echo-ended", CloseCode.NORMAL_CLOSURE)
    assert _wait_for(lambda: gc.collect() is not None and connection() is None)


def test_stalled_reader_is_dropped_and_leaves_no_thread_or_socket(
    live_server, observed, settings
):
    settings.WEBSOCKET_MAX_SEND_BACKLOG = 256 * 1024
    get_hub()  # created once per process, with its own fds
    baseline, fds = len(_request_threads()), _open_fds()
    sock = _open_raw(live_server, "/flood/", rcvbuf=4096)
    try:
        kind, error, sent = observed()
        assert (kind, error) == ("flood-stopped", "ConnectionClosed")
        assert sent < 4096
        assert observed() == (
            "flood-closed",
            CloseCode.POLICY_VIOLATION,
            "send backlog exceeded",
        )
    finally:
        sock.close()
    assert _wait_for(lambda: get_hub().connections() == [])
    assert _wait_for(lambda: len(_request_threads()) <= baseline)
    assert _wait_for(lambda: _open_fds() <= fds)


def test_keepalive_pings_keep_a_responsive_client_connected(ws, settings):
    settings.WEBSOCKET_PING_INTERVAL = 0.1
    settings.WEBSOCKET_PING_TIMEOUT = 0.5
    with ws("/echo/") as client:
        time.sleep(0.6)  # several ping intervals, each answered by the client
        client.send("still here")
        assert client.receive() == "still here"


def test_client_that_never_answers_pings_is_closed_after_the_ping_timeout(
    live_server, settings
):
    settings.WEBSOCKET_PING_INTERVAL = 0.1
    settings.WEBSOCKET_PING_TIMEOUT = 0.2
    sock = _open_raw(live_server, "/echo/")
    try:
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    assert received[:1] == b"\x89"  # a ping frame came first
    close_frame = received[received.rindex(b"\x88") :]
    assert int.from_bytes(close_frame[2:4], "big") == CloseCode.INTERNAL_ERROR
    assert close_frame[4:] == b"keepalive ping timeout"


def test_ping_event_is_set_when_the_pong_arrives(ws):
    with ws("/ping/") as client:
        assert client.receive() == "pong received"


def _raw_frame(first_byte: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


@pytest.mark.parametrize(
    "first_byte",
    [0x81 | 0x40, 0x83, 0x8B, 0x00],
    ids=[
        "rsv1-without-extension",
        "reserved-data-opcode",
        "reserved-control-opcode",
        "continuation-without-start",
    ],
)
def test_protocol_violations_close_with_1002(live_server, first_byte):
    sock = _open_raw(live_server, "/echo/")
    try:
        sock.sendall(_raw_frame(first_byte, b"bad"))
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and (chunk := sock.recv(4096)):
            received += chunk
    finally:
        sock.close()
    assert received[:1] == b"\x88"
    assert int.from_bytes(received[2:4], "big") == CloseCode.PROTOCOL_ERROR
