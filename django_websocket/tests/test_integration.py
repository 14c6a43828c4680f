"""A WebSocket view inside Django's conventions, on a real server process:
transactions, sessions, WebSocketMiddleware and the rest of the 0.3 API."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from django_websocket import CloseCode
from django_websocket.testing import WebSocketClient
from django_websocket.tests.conftest import (
    ASGI_SERVERS,
    HANDSHAKE,
    ROOT,
    TIMEOUT,
    ServerProcess,
    raw_request,
)

SETTINGS = "django_websocket.tests.settings"


def get(server: ServerProcess, path: str, cookie: str | None = None) -> tuple[str, str]:
    """Body and session cookie (``name=value``, or ``""``) of a plain GET."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}")
    if cookie:
        request.add_header("Cookie", cookie)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        set_cookie = response.headers.get("Set-Cookie", "")
        return response.read().decode(), set_cookie.split(";", 1)[0]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A migrated SQLite file for the test server's sessions."""
    path = tmp_path / "db.sqlite3"
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput"],
        cwd=ROOT,
        env={
            "PATH": "",
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DJANGO_WEBSOCKET_TESTS_DB": str(path),
        },
        check=True,
        capture_output=True,
        timeout=TIMEOUT * 6,
    )
    return path


def session_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT COUNT(*) FROM django_session").fetchone()[0])


# Transactions.


@pytest.mark.parametrize("server", [("runserver", "--noreload"), ("gthread",)])
def test_with_atomic_requests_only_plain_http_runs_in_a_transaction(
    server_process, database, server
):
    env = {"DJANGO_WEBSOCKET_TESTS_DB": str(database)}
    plain = server_process(*server, env=env)
    atomic = server_process(*server, env={**env, "DJANGO_WEBSOCKET_TESTS_ATOMIC": "1"})
    assert get(plain, "/in-transaction/")[0] == "False"
    assert get(atomic, "/in-transaction/")[0] == "True"
    for process in (plain, atomic):
        with WebSocketClient(process.url, "/in-transaction/", timeout=TIMEOUT) as ws:
            assert ws.receive() == "False"


# Sessions.


@pytest.mark.parametrize(
    "server", [("runserver", "--noreload"), *((name,) for name in ASGI_SERVERS)]
)
def test_a_session_changed_by_a_socket_view_is_saved_under_the_clients_key(
    server_process, database, server
):
    """Under runserver and each ASGI server (whose HTTP requests Django's
    ASGIHandler serves)."""
    server = server_process(*server, env={"DJANGO_WEBSOCKET_TESTS_DB": str(database)})
    _, cookie = get(server, "/session/start/")
    assert cookie.startswith("sessionid=")
    for visit in (1, 2):
        with WebSocketClient(
            server.url, "/session/count/", headers={"Cookie": cookie}, timeout=TIMEOUT
        ) as ws:
            assert ws.receive() == str(visit)
            # Saved when the view returns, before its close frame leaves.
            assert ws.expect_close() == CloseCode.NORMAL_CLOSURE
        assert get(server, "/session/show/", cookie) == (f"count={visit}", "")
    assert session_rows(database) == 1


def test_a_socket_view_without_a_session_cookie_leaves_no_orphan_session(
    server_process, database
):
    server = server_process(
        "runserver", "--noreload", env={"DJANGO_WEBSOCKET_TESTS_DB": str(database)}
    )
    for cookie in (None, "sessionid=expired-or-made-up"):
        headers = {"Cookie": cookie} if cookie else None
        for _ in range(3):
            with WebSocketClient(
                server.url, "/session/count/", headers=headers, timeout=TIMEOUT
            ) as ws:
                assert ws.receive() == "1"
            assert ws.close_code == CloseCode.NORMAL_CLOSURE
    assert session_rows(database) == 0
    output = server.final_output()
    assert output.count("changed a session the client has no cookie for") == 6


# WebSocketMiddleware and WEBSOCKET_ACCEPT_ALL.


def test_with_the_middleware_every_request_has_the_websocket_api(server_process):
    server = server_process(
        "runserver", "--noreload", env={"DJANGO_WEBSOCKET_TESTS_MIDDLEWARE": "1"}
    )
    assert get(server, "/undecorated/")[0] == "plain HTTP, websocket=None"
    # A view that does not accept WebSockets says so.
    response = raw_request(server, "/undecorated/", HANDSHAKE)
    assert (response.status, response.body) == (
        400,
        b"/undecorated/ does not accept WebSocket connections "
        b"(not a WebSocket view, and WEBSOCKET_ACCEPT_ALL is off)\n",
    )
    # WebSocket views work as they do without it.
    with WebSocketClient(server.url, "/echo/", timeout=TIMEOUT) as ws:
        ws.send("hi")
        assert ws.receive() == "hi"


def test_accept_all_lets_any_view_accept_a_websocket(server_process):
    server = server_process(
        "runserver",
        "--noreload",
        env={
            "DJANGO_WEBSOCKET_TESTS_MIDDLEWARE": "1",
            "DJANGO_WEBSOCKET_TESTS_ACCEPT_ALL": "1",
        },
    )
    with WebSocketClient(server.url, "/undecorated/", timeout=TIMEOUT) as ws:
        assert ws.receive() == "nothing yet"  # read(fallback) with nothing waiting
        ws.send("then this")
        assert ws.receive() == "then this"
    assert ws.close_code == CloseCode.NORMAL_CLOSURE
    assert get(server, "/undecorated/")[0] == "plain HTTP, websocket=None"
    # Still same-origin only.
    response = raw_request(
        server, "/undecorated/", {**HANDSHAKE, "Origin": "https://evil.test"}
    )
    assert response.status == 403


# The 0.3 README's examples, and its read(fallback).


def test_a_view_that_answers_one_message_and_returns(server_process):
    server = server_process("runserver", "--noreload")
    with WebSocketClient(server.url, "/answers-once/", timeout=TIMEOUT) as ws:
        ws.send("hello")
        assert ws.receive() == "you said hello"
        assert ws.expect_close() == CloseCode.NORMAL_CLOSURE


def test_a_view_that_serves_a_page_and_a_websocket(server_process):
    server = server_process("runserver", "--noreload")
    assert "lower-case" in get(server, "/lower/")[0]
    with WebSocketClient(server.url, "/lower/", timeout=TIMEOUT) as ws:
        ws.send("Hello World")
        assert ws.receive() == "hello world"


@pytest.mark.urls("django_websocket.tests.urls")
def test_read_returns_its_fallback_when_nothing_is_waiting(ws):
    with ws("/fallback/") as client:
        assert client.receive() == "fallback: -"
        client.send("now")
        assert client.receive() == "read: now"
