"""Fixtures for the library's own tests: a live server and raw clients."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from django_websocket.testing import LiveServer, WebSocketClient
from django_websocket.tests import views

TIMEOUT = float(os.environ.get("STARTER_TEST_TIMEOUT", "5"))

HANDSHAKE = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture
def _live_server_helper() -> None:
    """Disable pytest-django's hook for its own ``live_server``, which this
    conftest replaces with the library's server."""


@pytest.fixture
def live_server(transactional_db: None) -> Iterator[LiveServer]:
    """The library's threaded server on a free port, stopped after the test."""
    with LiveServer() as server:
        yield server


@pytest.fixture
def ws(live_server: LiveServer) -> Callable[..., WebSocketClient]:
    """Factory of WebSocketClient connected to a path on the live server."""

    def connect(path: str, **kwargs: object) -> WebSocketClient:
        kwargs.setdefault("timeout", TIMEOUT)
        return WebSocketClient(live_server, path, **kwargs)  # type: ignore[arg-type]

    return connect


@pytest.fixture
def observed() -> Callable[[], object]:
    """Next thing a test view reported, waiting at most TIMEOUT."""
    while not views.observed.empty():
        views.observed.get_nowait()

    def next_observation() -> object:
        return views.observed.get(timeout=TIMEOUT)

    return next_observation


def raw_request(
    server: LiveServer, path: str, headers: dict[str, str], method: str = "GET"
) -> RawResponse:
    """Send one HTTP request over a plain socket and read the response head
    and, when there is one, the body."""
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = dict(line.split(": ", 1) for line in header_lines)
        length = int(parsed.get("Content-Length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return RawResponse(int(status_line.split()[1]), parsed, body)

