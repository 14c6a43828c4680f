"""The echo page in Chromium: round trips, then losing and regaining the server."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from django_websocket.testing import LiveServer
from tests.conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once 127.0.0.1:port accepts connections; fail with the server's log."""
    deadline = time.monotonic() + TIMEOUT * 2
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"runserver exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"runserver did not listen within {TIMEOUT * 2}s:\n{log.read_text()}")


@pytest.fixture
def runserver(tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start ``manage.py runserver --noreload`` on a port; stopped by PID afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        log = tmp_path / f"runserver-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    "--noreload",
                    f"127.0.0.1:{port}",
                ],
                cwd=ROOT,
                # The echo demo needs no tables; keep db.sqlite3 untouched.
                env={**os.environ, "DATABASE_URL": "sqlite://:memory:"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        wait_for_port(port, process, log)
        return process

    yield start
    for process in started:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID (runserver --noreload closes its sockets with 1001), then wait."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_echo_page(page: Page, base_url: str) -> None:
    page.goto(base_url + "/echo/")
    expect(page.locator('#echo-status[data-state="open"]')).to_have_text("connected")


def send(page: Page, text: str) -> None:
    page.fill("#echo-input", text)
    page.press("#echo-input", "Enter")


def test_message_comes_back_with_its_round_trip_time(
    live_server: LiveServer, page: Page
) -> None:
    open_echo_page(page, live_server.url)
    send(page, "hello <b>not bold</b>")
    sent = page.locator("#echo-log li.sent")
    received = page.locator("#echo-log li.received")
    expect(sent.locator(".text")).to_have_text(["hello <b>not bold</b>"])
    expect(received.locator(".text")).to_have_text(["hello <b>not bold</b>"])
    expect(received.locator(".latency")).to_have_text([re.compile(r"^\d+\.\d ms$")])
    expect(page.locator("#echo-log b")).to_have_count(0)


def test_status_shows_reconnecting_then_reconnects_to_a_restarted_server(
    page: Page, runserver: Callable[[int], subprocess.Popen[bytes]]
) -> None:
    """runserver, stopped by SIGTERM and started again on the same port."""
    port = free_port()
    server = runserver(port)
    open_echo_page(page, f"http://127.0.0.1:{port}")
    status = page.locator("#echo-status")

    stop(server)
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_have_text(re.compile(r"^disconnected — reconnecting in \d+s$"))
    expect(page.locator("#echo-send")).to_be_disabled()

    runserver(port)
    # Backoff: a few refused attempts may come first, the next within ~4 s.
    expect(status).to_have_attribute("data-state", "open", timeout=TIMEOUT * 3000)
    expect(status).to_have_text("connected")
    send(page, "welcome back")
    expect(page.locator("#echo-log li.received .text")).to_have_text(["welcome back"])
