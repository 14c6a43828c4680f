"""Fixtures for the library's own tests: a live server and raw clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from django_websocket.testing import LiveServer, WebSocketClient
from django_websocket.tests import views

if TYPE_CHECKING:
    from django_websocket.tests.wire import RawWebSocket

TIMEOUT = float(os.environ.get("STARTER_TEST_TIMEOUT", "5"))
ROOT = Path(__file__).resolve().parents[2]

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


@pytest.fixture
def raw(live_server: LiveServer) -> Iterator[Callable[..., RawWebSocket]]:
    """Factory of RawWebSocket clients of the live server; after the test
    the views holding a connection are released and the clients closed."""
    from django_websocket.tests.wire import RawWebSocket  # wire imports this module

    clients: list[RawWebSocket] = []

    def connect(path: str = "/echo/", **kwargs: object) -> RawWebSocket:
        client = RawWebSocket.open(live_server, path, **kwargs)
        clients.append(client)
        return client

    yield connect
    views.release.set()
    for client in clients:
        client.close()
    views.release.clear()


def raw_request(
    server: LiveServer | ServerProcess,
    path: str,
    headers: dict[str, str],
    method: str = "GET",
    version: str = "HTTP/1.1",
) -> RawResponse:
    """Send one HTTP request over a plain socket and read the response head
    and, when there is one, the body."""
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in headers.items()]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server started as a subprocess on 127.0.0.1:port, stopped by PID."""

    host = "127.0.0.1"

    def __init__(self, args: Sequence[str], port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        deadline = time.monotonic() + TIMEOUT * 4
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"server did not start:\n{self.output}"
                    ) from None
                time.sleep(0.05)

    output = ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        code = self.process.wait(timeout)
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.output = self.process.stdout.read()
            self.process.stdout.close()
        return code

    def rss_kib(self) -> int:
        """Resident memory of the server and every process it started, KiB."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # After the command's name: state, ppid, pgrp, session...
                session = int(stat.read_text().rsplit(")", 1)[1].split()[3])
                if session == self.process.pid:
                    status = (stat.parent / "status").read_text()
                    total += int(status.split("VmRSS:", 1)[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or a kernel thread
        return total

    def stop(self) -> None:
        """Kill the server and every process it started (its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.wait()

    def final_output(self) -> str:
        """Stop the server and return all it printed (for failure messages)."""
        self.stop()
        return f"server output:\n{self.output}"


# The ASGI servers tested, and how each is started on 127.0.0.1.
ASGI_SERVERS = ("uvicorn", "daphne", "granian")


def asgi_server_command(kind: str, port: int) -> list[str]:
    """The command line that starts ASGI server *kind* on 127.0.0.1:*port*,
    logging warnings only; the application comes last."""
    return [sys.executable, "-m", *{
        "uvicorn": ["uvicorn", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
        "daphne": ["daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"],
        "granian": ["granian", "--interface", "asgi", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning"],
    }[kind]]  # fmt: skip


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    """Factory of server subprocesses serving the library's test views;
    every one started is stopped by its PID after the test."""
    started: list[ServerProcess] = []

    def start(
        kind: str, *extra: str, env: dict[str, str] | None = None
    ) -> ServerProcess:
        port = free_port()
        env = {
            "DJANGO_SETTINGS_MODULE": "django_websocket.tests.settings",
            **(env or {}),
        }
        if kind == "runserver":
            args = [
                sys.executable,
                "-m",
                "django",
                "runserver",
                f"127.0.0.1:{port}",
                *extra,
            ]
        elif kind in ASGI_SERVERS:
            args = [
                *asgi_server_command(kind, port),
                *extra,
                "django_websocket.tests.asgi:application",
            ]
        else:
            args = [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:django_websocket.tests.gunicorn_conf",
                "--worker-class",
                kind,
                "--bind",
                f"127.0.0.1:{port}",
                *extra,
                "django.core.wsgi:get_wsgi_application()",
            ]
        process = ServerProcess(args, port, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class RedisServer:
    """A real redis-server on a free loopback port, stopped by its PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5
                ) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(TIMEOUT)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port for the duration of the test."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
