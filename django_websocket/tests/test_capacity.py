"""Sockets never starve page loads: the per-process and per-address caps
(503 before the 101) and gthread's deadline on reading request headers."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus

from django_websocket.testing import WebSocketClient
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT, raw_request

THREADS = 8  # gthread's pool: "auto" keeps 2 for requests, so 6 sockets


def page_load(server) -> float:
    """Seconds a plain page takes to load."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{server.port}/both/"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.read() == b"plain HTTP"
    return time.monotonic() - started


def test_gthread_refuses_sockets_past_its_share_of_threads_with_503(server_process):
    server = server_process("gthread", "--threads", str(THREADS))
    sockets = [
        WebSocketClient(server.url, "/echo/", timeout=TIMEOUT).__enter__()
        for _ in range(THREADS - 2)
    ]
    try:
        for _ in range(3):
            response = raw_request(server, "/echo/", HANDSHAKE)
            assert response.status == 503
            assert response.headers["Retry-After"] == "10"
            assert response.body == (
                b"This server process holds its maximum of 6 WebSockets "
                b"(WEBSOCKET_MAX_CONNECTIONS); try again later\n"
            )
            assert page_load(server) < 1
        for client in sockets:  # the ones admitted work as ever
            client.send("still here")
            assert client.receive() == "still here"
        sockets.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while raw_request(server, "/echo/", HANDSHAKE).status != 101:
            assert time.monotonic() < deadline, "the closed socket kept its place"
            time.sleep(0.05)
    finally:
        for client in sockets:
            client.close()


def test_gthread_cuts_off_clients_that_trickle_their_headers(server_process):
    server = server_process(
        "gthread",
        "--threads",
        str(THREADS),
        env={"DJANGO_WEBSOCKET_TESTS_HANDSHAKE_TIMEOUT": "1"},
    )
    request = b"GET /both/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 100
    tricklers = [
        socket.create_connection(("127.0.0.1", server.port)) for _ in range(12)
    ]
    try:
        answers = {}
        deadline = time.monotonic() + TIMEOUT
        sent = 0
        while len(answers) < len(tricklers):
            assert time.monotonic() < deadline, f"{len(answers)} of 12 cut off"
            for n, trickler in enumerate(tricklers):
                if n in answers:
                    continue
                try:
                    trickler.send(request[sent : sent + 1])
                    trickler.settimeout(0.01)
                    data = trickler.recv(4096)
                    answers[n] = data
                except TimeoutError:
                    pass
                except OSError:
                    answers[n] = b""
            sent += 1
            time.sleep(0.1)
        # 408 for those a pool thread was reading; the others never got one.
        assert any(data.startswith(b"HTTP/1.1 408 ") for data in answers.values())
        assert page_load(server) < 1
    finally:
        for trickler in tricklers:
            trickler.close()


@pytest.mark.urls("django_websocket.tests.urls")
def test_the_caps_apply_per_process_and_per_address(live_server, ws, settings):
    settings.WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS = 2
    with ws("/echo/") as one, ws("/echo/") as two:
        with pytest.raises(InvalidStatus) as refused, ws("/echo/"):
            pass
        assert refused.value.response.status_code == 503
        assert b"127.0.0.1 holds its maximum of 2 WebSockets" in (
            refused.value.response.body
        )
        one.send("fine")
        assert one.receive() == "fine"
        two.close()
        settings.WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS = None
        settings.WEBSOCKET_MAX_CONNECTIONS = 1
        assert raw_request(live_server, "/echo/", HANDSHAKE).status == 503
        settings.WEBSOCKET_MAX_CONNECTIONS = 2
        # two's place comes back once its view has returned.
        deadline = time.monotonic() + TIMEOUT
        while raw_request(live_server, "/echo/", HANDSHAKE).status != 101:
            assert time.monotonic() < deadline, "the closed socket kept its place"
            time.sleep(0.05)
