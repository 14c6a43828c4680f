"""Hostile and broken clients: each is cut off and the server keeps serving."""

from __future__ import annotations

import socket
import time

import pytest

from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT, raw_request

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
