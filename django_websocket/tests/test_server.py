"""The servers that hand their socket to a WebSocket view: the library's
runserver and gunicorn's gthread and gevent workers, as real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.frames import Close, Frame, Opcode

from django_websocket import CloseCode
from django_websocket.testing import WebSocketClient
from django_websocket.tests.conftest import ASGI_SERVERS, HANDSHAKE, ROOT, TIMEOUT
from django_websocket.tests.wire import BINARY, Flood, RawWebSocket, client_frame

# The servers that hand the client's socket itself to the view...
SOCKET_SERVERS = [
    pytest.param(("runserver", "--noreload"), id="runserver"),
    pytest.param(("gthread",), id="gunicorn-gthread"),
    pytest.param(("gevent",), id="gunicorn-gevent"),
]
# ... and the ASGI servers, which parse the handshake and the frames
# themselves: what reaches the socket before the 101 is their business
# (uvicorn accepts HTTP/1.0 upgrades, and drops a frame sent along with the
# handshake).
SERVERS = [*SOCKET_SERVERS, *(pytest.param((name,), id=name) for name in ASGI_SERVERS)]
# daphne stops its reactor, dropping the sockets, before the views' 1001
# (which it cannot send: it takes only 1000 and 3000-4999) turns into its
# 1011: docs/deploy.md says so.
SHUTDOWN_SERVERS = [s for s in SERVERS if s.id != "daphne"]


def _handshake_bytes(path: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {path} {version}", *(f"{k}: {v}" for k, v in HANDSHAKE.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _client_frame(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=True, extensions=[])


def _read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"server kept the connection open; got {data!r}")


@pytest.mark.parametrize("server", SOCKET_SERVERS)
def test_echo_works_and_nothing_follows_the_closing_handshake(server_process, server):
    process = server_process(*server)
    with WebSocketClient(process.url, "/echo/", timeout=TIMEOUT) as client:
        client.send("over a real server")
        assert client.receive() == "over a real server"

    with socket.create_connection(("127.0.0.1", process.port), timeout=TIMEOUT) as sock:
        # The first frame travels with the handshake: the server must find it
        # behind the request headers it read ahead.
        sock.sendall(_handshake_bytes("/echo/") + _client_frame(Opcode.TEXT, b"early"))
        received = b""
        while not received.endswith(b"\r\n\r\n\x81\x05early"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early after {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 101 Switching Protocols")
        sock.sendall(_client_frame(Opcode.CLOSE, Close(1000, "").serialize()))
        assert _read_to_eof(sock) == b"\x88\x02\x03\xe8"


@pytest.mark.parametrize("server", SOCKET_SERVERS)
def test_an_http_10_upgrade_is_refused_with_400(server_process, server):
    process = server_process(*server)
    with socket.create_connection(("127.0.0.1", process.port), timeout=TIMEOUT) as sock:
        sock.sendall(_handshake_bytes("/echo/", "HTTP/1.0"))
        response = _read_to_eof(sock)
    assert response.startswith(b"HTTP/1.") and b" 400 " in response.split(b"\r\n")[0]
    assert b"WebSocket handshake requires HTTP/1.1 or later, got 'HTTP/1.0'" in response


@pytest.mark.parametrize("server", SHUTDOWN_SERVERS)
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_shutdown_closes_open_websockets_with_1001(server_process, server, signum):
    process = server_process(*server)
    with WebSocketClient(process.url, "/echo/", timeout=TIMEOUT) as client:
        client.send("hello")
        assert client.receive() == "hello"
        started = time.monotonic()
        process.signal(signum)
        try:
            code = client.expect_close(timeout=TIMEOUT)
        except TimeoutError:
            pytest.fail(f"no close within {TIMEOUT} s; {process.final_output()}")
        assert code == CloseCode.GOING_AWAY, process.final_output()
        assert time.monotonic() - started < 1.5
        assert client.close_reason == "server shutting down"
    process.wait(TIMEOUT * 2)
    assert "Bad file descriptor" not in process.output
    assert "Traceback" not in process.output


@pytest.mark.parametrize("server", SERVERS)
def test_a_flooding_client_does_not_hold_the_worker(server_process, server):
    """Each read handles at most 64 KiB, then lets other threads (under
    gevent, greenlets) run: echo and page loads are served during a flood."""
    process = server_process(*server)
    flooder = RawWebSocket("127.0.0.1", process.port, "/drain/")
    frame = client_frame(BINARY, b"x" * 65536)
    with flooder, Flood(flooder, frame) as flood:
        deadline = time.monotonic() + TIMEOUT
        while flood.sent < 8 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flood.sent >= 8 * 1024 * 1024, "the flood never got going"
        with WebSocketClient(process.url, "/echo/", timeout=TIMEOUT) as client:
            for n in range(5):
                client.send(f"during the flood {n}")
                assert client.receive() == f"during the flood {n}"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{process.port}/both/", timeout=TIMEOUT
        ) as response:
            assert response.read() == b"plain HTTP"
        assert not flood.ended.is_set()  # served while the flood went on


def test_runserver_logs_the_upgrade_and_nothing_else(server_process):
    process = server_process("runserver", "--noreload")
    with WebSocketClient(process.url, "/echo/", timeout=TIMEOUT) as client:
        client.send("x")
        client.receive()
    process.signal(signal.SIGTERM)
    process.wait(TIMEOUT)
    assert '"GET /echo/ HTTP/1.1" 101 0' in process.output
    assert "Traceback" not in process.output


def test_runserver_refuses_nothreading():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "runserver",
            "--nothreading",
            "--noreload",
            "127.0.0.1:0",
        ],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "django_websocket.tests.settings", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
    )
    assert result.returncode != 0
    assert "--nothreading cannot serve WebSocket views" in result.stderr


def test_runserver_accepts_the_original_multithreaded_flag(server_process):
    process = server_process("runserver", "--noreload", "--multithreaded")
    with WebSocketClient(process.url, "/echo/", timeout=TIMEOUT) as client:
        client.send("still served")
        assert client.receive() == "still served"


@pytest.mark.parametrize(
    ("staticfiles_first", "warned"),
    [(False, False), (True, True)],
    ids=["ours-first", "staticfiles-first"],
)
def test_system_check_warns_when_staticfiles_runserver_shadows_ours(
    staticfiles_first, warned
):
    env = {"DJANGO_SETTINGS_MODULE": "django_websocket.tests.settings", "PATH": ""}
    if staticfiles_first:
        env["DJANGO_WEBSOCKET_TESTS_STATICFILES_FIRST"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
    )
    assert ("django_websocket.W001" in result.stderr + result.stdout) is warned


def test_waiting_releases_the_views_database_connection(server_process, tmp_path):
    """Like Django between requests: with CONN_MAX_AGE = 0, an idle socket
    holds no database connection."""
    env = {"DJANGO_WEBSOCKET_TESTS_DB": str(tmp_path / "db.sqlite3")}
    process = server_process("runserver", "--noreload", env=env)
    with WebSocketClient(process.url, "/database/", timeout=TIMEOUT) as client:
        assert client.receive() == "open before waiting: True"
        assert client.receive() == "open after waiting: False"
        # Reconnected by the next query, and released again by the next wait.
        assert client.receive() == "open before waiting: True"
        client.send("go on")
        assert client.receive() == "open after waiting: False"
