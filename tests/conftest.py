"""Fixtures for the demos end to end: a live server, a WebSocket client, a browser."""

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.sync.client import ClientConnection, connect

from django_websocket.testing import LiveServer
from django_websocket.tests.conftest import (
    ServerProcess,
    asgi_server_command,
    free_port,
)

# One unit for every wait; raise it on a slow machine.
TIMEOUT = float(os.environ.get("STARTER_TEST_TIMEOUT", "5"))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    """Each test starts with an empty cache: rate-limit counters included."""
    from django.core.cache import caches

    caches["default"].clear()
    yield


@pytest.fixture
def _live_server_helper() -> None:
    """Replace pytest-django's hook for its own live_server with nothing."""


@pytest.fixture
def live_server(transactional_db: None) -> Iterator[LiveServer]:
    """The library's threaded server on 127.0.0.1, a free port, static files on."""
    with LiveServer(host="127.0.0.1", port=0, static=True) as server:
        yield server


def start_asgi(kind: str, env: dict[str, str]) -> ServerProcess:
    """Serve ``config.asgi:application`` with the ASGI server *kind* (one of
    ``ASGI_SERVERS``) on a free port of 127.0.0.1, with *env* added to the
    environment."""
    port = free_port()
    command = [*asgi_server_command(kind, port), "config.asgi:application"]
    return ServerProcess(command, port, env)


@pytest.fixture
def ws_connect(
    live_server: LiveServer,
) -> Callable[[str], AbstractContextManager[ClientConnection]]:
    """Open websockets' sync client on a path of the live server."""

    def open_path(path: str) -> AbstractContextManager[ClientConnection]:
        return connect(
            live_server.ws_url + path, open_timeout=TIMEOUT, close_timeout=TIMEOUT
        )

    return open_path


def join_request_threads(timeout: float) -> None:
    """Wait, at most *timeout* seconds, for the live server's request threads
    (each of Chromium's connections ends in one) to end, so that none still
    uses the in-memory test database when the live server stops sharing it."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.endswith("(process_request_thread)"):
            thread.join(max(0.0, deadline - time.monotonic()))


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright, shared by the session."""
    expect.set_options(timeout=TIMEOUT * 1000)
    # Playwright's sync API runs an event loop in this thread, which makes
    # Django refuse database work here (the test database teardown included).
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser tab in its own context, every wait bounded by TIMEOUT."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT * 1000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def redis_server() -> Iterator[object]:
    """A real redis-server (Debian's package) on a free port, killed by PID.

    The library's own helper: ``url`` to connect; ``stop()`` then ``start()``
    kill it and bring it back, empty, on the same port.
    """
    from django_websocket.tests.conftest import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server (Debian's package) on a free port for the
    session, stopped by PID; ``create_database(name)`` gives a fresh URL."""
    from tests.postgres import PG_BIN, PostgresServer

    if PG_BIN is None:
        pytest.fail("needs Debian's postgresql package (`make deps` installs it)")
    # Under /tmp rather than pytest's private tmp_path: under root the
    # server runs as the postgres user and must reach its files.
    directory = Path(tempfile.mkdtemp(prefix="starter-postgres-"))
    directory.chmod(0o755)
    server = PostgresServer(directory / "postgres")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def search_api() -> Iterator[object]:
    """A real HTTP server on 127.0.0.1 standing in for the live search APIs."""
    from tests.search_api import SearchApi

    with SearchApi() as api:
        yield api
