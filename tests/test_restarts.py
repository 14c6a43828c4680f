"""However a gunicorn worker ends, its WebSockets get 1001 and it exits.

Real gunicorn, started with docs/deploy.md's command on a free loopback port:
one worker of each class, the project's default settings (the echo socket
needs no database). websockets' asyncio client holds a few echo sockets open
while the worker ends: signals to the worker or to its master, max_requests,
a failed heartbeat. Every server is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from django_websocket import CloseCode
from django_websocket.tests.conftest import TIMEOUT, ServerProcess, free_port

T = TypeVar("T")

GUNICORN = [
    str(Path(sys.executable).with_name("gunicorn")),
    "-c",
    "deploy/gunicorn.conf.py",
]
HOST = "127.0.0.1"
SOCKETS = 3  # open on the worker when it ends
CLOSE_TIMEOUT = 5.0  # WEBSOCKET_CLOSE_TIMEOUT's default
# Every close frame arrives, and the old worker exits, at most this long after
# it starts to end (a client that never answered would be aborted after
# CLOSE_TIMEOUT).
BOUND = CLOSE_TIMEOUT + 1.0
HEARTBEAT = 2  # gunicorn's --timeout in the heartbeat tests
BOOTING = re.compile(r"Booting worker with pid: (\d+)")


class Gunicorn(ServerProcess):
    """gunicorn's master, its output read as it comes so that a test can
    wait for a line."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self._lines: list[str] = []
        self._arrived = threading.Condition()  # guards _lines
        self._reader: threading.Thread | None = None
        super().__init__(GUNICORN, port, env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self._arrived:
                    self._lines.append(line)
                    self._arrived.notify_all()

    def wait_for(self, pattern: re.Pattern[str], count: int = 1) -> re.Match[str]:
        """The count-th line matching pattern, waiting at most TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        with self._arrived:
            while True:
                matches = [m for m in map(pattern.search, self._lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {pattern.pattern!r} in:\n{self.log()}")
                self._arrived.wait(remaining)

    def worker(self) -> int:
        """The PID of the worker that booted last."""
        return int(BOOTING.findall(self.log())[-1])

    def log(self) -> str:
        """What it has printed so far."""
        with self._arrived:
            return "".join(self._lines)

    def wait(self, timeout: float = TIMEOUT) -> int:
        if self._reader is None:  # did not start: ServerProcess reads it all
            return super().wait(timeout)
        code = self.process.wait(timeout)
        self._reader.join(TIMEOUT)  # the pipe ends once the workers are gone too
        self.output = self.log()
        return code

    def stop_gracefully(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(TIMEOUT * 2)
        self.stop()  # SIGKILL if it is still running


@pytest.fixture
def gunicorn() -> Iterator[Callable[..., Gunicorn]]:
    """Factory of gunicorn instances with one worker of a class and extra
    options; each is stopped by its PID after the test."""
    started: list[Gunicorn] = []

    def start(worker_class: str, *options: str) -> Gunicorn:
        port = free_port()
        env = {
            "GUNICORN_BIND": f"{HOST}:{port}",
            "GUNICORN_WORKER_CLASS": worker_class,
            "GUNICORN_WORKERS": "1",
            "GUNICORN_CMD_ARGS": " ".join(options),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "REDIS_URL": "",  # the in-process groups backend
            "PYTHONDEVMODE": "",  # as in production: no debug allocator
        }
        server = Gunicorn(port, env)
        started.append(server)
        server.wait_for(BOOTING)
        return server

    yield start
    for server in started:
        server.stop_gracefully()


# Ways to end the worker. Each returns when the worker started to end.


async def _signal_worker(server: Gunicorn, signum: int) -> float:
    os.kill(server.worker(), signum)
    return time.monotonic()


async def _signal_master(server: Gunicorn, signum: int) -> float:
    server.signal(signum)
    return time.monotonic()


async def _request_page(server: Gunicorn) -> float:
    """The request that reaches max_requests (SOCKETS + 1) is a page load."""
    ended = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        response = await client.get(f"http://{HOST}:{server.port}/echo/")
    assert response.status_code == 200
    return ended


async def _open_one_more(server: Gunicorn, sockets: list[ClientConnection]) -> float:
    """The request that reaches max_requests is a handshake: the worker
    starts to end just before this socket's view runs, and the socket must
    get its 1001 too."""
    ended = time.monotonic()
    sockets.append(await _open(server))
    return ended


def _stall_heartbeat(server: Gunicorn) -> float:
    """Stop the worker until the master gives up on it and sends SIGABRT.

    The worker then has until the master's next check (a second at most)
    to notify. SIGCONT would wake the master at once, though (SIGCHLD with
    CLD_CONTINUED), for a check the worker cannot win: so the master is held
    until the worker's heartbeat file shows a notification after the resume,
    as for a worker that recovered between two checks.
    """
    worker, master = server.worker(), server.process.pid
    with _heartbeat_file(worker) as heartbeat:
        os.kill(worker, signal.SIGSTOP)
        try:
            server.wait_for(re.compile(rf"WORKER TIMEOUT \(pid:{worker}\)"))
        except BaseException:
            os.kill(worker, signal.SIGCONT)
            raise
        os.kill(master, signal.SIGSTOP)
        try:
            resumed = time.monotonic()
            os.kill(worker, signal.SIGCONT)
            deadline = resumed + TIMEOUT
            # gunicorn's heartbeat: the file's mtime is a time.monotonic().
            while os.fstat(heartbeat).st_mtime < resumed:
                assert time.monotonic() < deadline, "the worker did not notify"
                time.sleep(0.01)
        finally:
            os.kill(master, signal.SIGCONT)
    return resumed


@contextlib.contextmanager
def _heartbeat_file(pid: int) -> Iterator[int]:
    """Open gunicorn's heartbeat file of a worker (unlinked, as the master
    holds it) and yield its descriptor."""
    for link in Path(f"/proc/{pid}/fd").iterdir():
        if "wgunicorn-" in os.readlink(link):
            fd = os.open(link, os.O_RDONLY)
            try:
                yield fd
            finally:
                os.close(fd)
            return
    raise AssertionError(f"worker {pid} has no heartbeat file")


@dataclass(frozen=True)
class Ending:
    """One way for the worker to end: what the test does, the options it
    needs, and whether the master outlives the worker."""

    name: str
    trigger: Callable[[Gunicorn, list[ClientConnection]], Awaitable[float]]
    options: tuple[str, ...] = ()
    master_survives: bool = True


ENDINGS = [
    Ending("SIGTERM to the worker", lambda s, _: _signal_worker(s, signal.SIGTERM)),
    Ending("SIGQUIT to the worker", lambda s, _: _signal_worker(s, signal.SIGQUIT)),
    Ending("SIGINT to the worker", lambda s, _: _signal_worker(s, signal.SIGINT)),
    Ending("SIGHUP to the master", lambda s, _: _signal_master(s, signal.SIGHUP)),
    Ending(
        "SIGTERM to the master",
        lambda s, _: _signal_master(s, signal.SIGTERM),
        master_survives=False,
    ),
    Ending(
        "SIGQUIT to the master",
        lambda s, _: _signal_master(s, signal.SIGQUIT),
        master_survives=False,
    ),
    Ending(
        "SIGINT to the master",
        lambda s, _: _signal_master(s, signal.SIGINT),
        master_survives=False,
    ),
    Ending(
        "max_requests after a page",
        lambda s, _: _request_page(s),
        options=("--max-requests", str(SOCKETS + 1)),
    ),
    Ending(
        "max_requests on a handshake",
        _open_one_more,
        options=("--max-requests", str(SOCKETS + 1)),
    ),
    Ending(
        "a failed heartbeat",
        lambda s, _: asyncio.to_thread(_stall_heartbeat, s),
        options=("--timeout", str(HEARTBEAT)),
    ),
]


# Clients.


def _run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` in a thread of its own: once the browser tests
    have started Playwright, its event loop runs in this one for the rest of
    the session."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main, debug=False).result()


async def _open(server: Gunicorn) -> ClientConnection:
    return await connect(
        f"ws://{HOST}:{server.port}/echo/ws/",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    )


async def _close_received(websocket: ClientConnection) -> tuple[Close | None, float]:
    """The close frame the server sent, and when it came."""
    try:
        while True:
            await websocket.recv()
    except ConnectionClosed as closed:
        return closed.rcvd, time.monotonic()


async def _end_with_sockets_open(
    server: Gunicorn, ending: Ending
) -> tuple[float, list[tuple[Close | None, float]]]:
    sockets: list[ClientConnection] = []
    try:
        for n in range(SOCKETS):
            websocket = await _open(server)
            sockets.append(websocket)
            await websocket.send(f"before the end {n}")
            async with asyncio.timeout(TIMEOUT):
                assert await websocket.recv() == f"before the end {n}"
        ended = await ending.trigger(server, sockets)
        try:
            async with asyncio.timeout(ended + BOUND - time.monotonic()):
                closes = await asyncio.gather(*map(_close_received, sockets))
        except TimeoutError:
            pytest.fail(f"not every socket closed within {BOUND} s:\n{server.log()}")
        return ended, closes
    finally:
        await asyncio.gather(*(websocket.close() for websocket in sockets))


def _wait_for_exit(pid: int, until: float) -> bool:
    """Whether the process (not a child of ours) is gone by ``until``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        remaining = max(0.0, until - time.monotonic())
        return bool(select.select([pidfd], [], [], remaining)[0])
    finally:
        os.close(pidfd)


@pytest.mark.parametrize(
    "ending", ENDINGS, ids=[ending.name.replace(" ", "-") for ending in ENDINGS]
)
@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_the_worker_closes_its_websockets_with_1001_and_exits(
    gunicorn, worker_class, ending
):
    server = gunicorn(worker_class, *ending.options)
    worker = server.worker()
    ended, closes = _run_async(_end_with_sockets_open(server, ending))

    for close, received in closes:
        assert close is not None, f"no close frame:\n{server.log()}"
        assert (close.code, close.reason) == (
            CloseCode.GOING_AWAY,
            "server shutting down",
        )
        assert received - ended < BOUND
    assert _wait_for_exit(worker, ended + BOUND), (
        f"worker still running:\n{server.log()}"
    )

    if ending.master_survives:
        # A new worker serves the next request at once.
        with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
            response = client.get(f"http://{HOST}:{server.port}/echo/")
        assert response.status_code == 200
        assert int(server.wait_for(BOOTING, count=2)[1]) != worker
        server.stop_gracefully()
    else:
        assert server.wait(max(0, ended + BOUND - time.monotonic())) == 0
    assert "Traceback" not in server.output
    assert "was sent SIG" not in server.output  # no worker was killed
