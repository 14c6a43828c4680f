"""Churn without leaks: thousands of short-lived connections, ended every way
a client can end them, leave the server as they found it.

The live server runs in this process, so its threads, file descriptors and
resident memory are this process's: they are measured from ``/proc/self``
after a warm-up and again once the churn has drained, and printed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_websocket.hub import get_hub
from django_websocket.server import WebSocketRequestHandler
from django_websocket.tests import views
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT
from django_websocket.tests.wire import (
    CLOSE,
    TEXT,
    RawWebSocket,
    client_frame,
    close_payload,
)
from django_websocket.websocket import WebSocket

pytestmark = pytest.mark.urls("django_websocket.tests.urls")

CYCLES = int(os.environ.get("STARTER_CHURN_CYCLES", "5000"))
# A first round of the same size brings the allocators (pymalloc arenas,
# glibc's per-thread arenas, its cache of thread stacks) to their working
# size: they then plateau, while a leak grows with every cycle.
WARM_UP = CYCLES
WORKERS = 4
# Allowed RSS growth over the second round. Keeping each finished
# connection in memory (about 14 KiB) would add some 50 MiB.
RSS_TOLERANCE = 8 * 1024 * 1024
REQUEST = (
    "GET /echo/ HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in HANDSHAKE.items())
).encode()


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _clean_close(server) -> None:
    with RawWebSocket.open(server) as client:
        client.send_frame(TEXT, b"hello")
        assert client.recv_frame().payload == b"hello"
        client.send_frame(CLOSE, close_payload(1000))
        assert client.expect_close().close_code == 1000


def _abrupt_reset(server) -> None:
    client = RawWebSocket.open(server)
    client.send_frame(TEXT, b"hello")
    assert client.recv_frame().payload == b"hello"
    _reset(client.socket)


def _mid_handshake_drop(server, n: int) -> None:
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.sendall(REQUEST[: 10 + n % (len(REQUEST) - 10)])
    if n % 2:
        _reset(sock)
    else:
        sock.close()


def _mid_frame_drop(server, n: int) -> None:
    client = RawWebSocket.open(server)
    frame = client_frame(TEXT, b"x" * 300)
    client.send(frame[: 1 + n % (len(frame) - 1)])
    if n % 2:
        _reset(client.socket)
    else:
        client.close()


def _cycle(server, n: int) -> None:
    kind = n % 4
    if kind == 0:
        _clean_close(server)
    elif kind == 1:
        _abrupt_reset(server)
    elif kind == 2:
        _mid_handshake_drop(server, n // 4)
    else:
        _mid_frame_drop(server, n // 4)


@contextlib.contextmanager
def _logging_disabled() -> Iterator[None]:
    """pytest keeps every captured log record (tracebacks included) until the
    test ends, which would count as the server's memory."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _churn(server, cycles: int) -> None:
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="churn") as pool:
        for future in [pool.submit(_cycle, server, n) for n in range(cycles)]:
            future.result(timeout=TIMEOUT * 4)
    while not views.observed.empty():  # what the echo view reports, unread
        views.observed.get_nowait()


def _usage() -> tuple[int, int, int]:
    """Threads, open file descriptors and resident bytes of this process."""
    threads = len(os.listdir("/proc/self/task"))
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return threads, fds, rss


def _drained(baseline: tuple[int, int, int], timeout: float) -> tuple[int, int, int]:
    """Wait (bounded) until every connection is gone and the thread and fd
    counts are back at the baseline; return the usage then."""
    deadline = time.monotonic() + timeout
    while True:
        usage = _usage()
        settled = not get_hub().connections() and usage[:2] <= baseline[:2]
        if settled or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def test_thousands_of_connect_disconnect_cycles_leave_no_trace(live_server, capsys):
    get_hub()  # created once per process, with its own thread and fds
    with _logging_disabled():
        _churn(live_server, WARM_UP)
        baseline = _drained(_usage(), TIMEOUT)
        started = time.monotonic()
        _churn(live_server, CYCLES)
        churned = time.monotonic() - started
        during = _usage()
        after = _drained(baseline, TIMEOUT * 2)
    with capsys.disabled():
        print(  # noqa: T201 - the measurements are part of the report
            f"\n{CYCLES} cycles by {WORKERS} workers in {churned:.1f} s"
            f" ({CYCLES / churned:.0f}/s)\n"
            f"{'':10}{'threads':>8}{'fds':>6}{'RSS MiB':>9}\n"
            + "\n".join(
                f"{name:10}{t:8}{f:6}{r / 2**20:9.1f}"
                for name, (t, f, r) in (
                    ("baseline", baseline),
                    ("churned", during),
                    ("drained", after),
                )
            )
        )
    assert get_hub().connections() == []
    gc.collect()
    # Neither a connection nor a request handler outlives its client (the
    # hub's timers once held both until their deadline).
    kept = (WebSocket, WebSocketRequestHandler)
    assert not [obj for obj in gc.get_objects() if isinstance(obj, kept)]
    assert after[0] <= baseline[0], "server threads left behind"
    assert threading.active_count() <= baseline[0]
    assert after[1] <= baseline[1], "file descriptors left open"
    assert after[2] - baseline[2] <= RSS_TOLERANCE, "resident memory grew"
