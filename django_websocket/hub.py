"""The process-wide I/O hub: one thread that serves every open connection.

The hub keeps the registry of open connections (so that ``close_all()`` can
send 1001 to each on shutdown), drains the outbound buffers of clients that
read slower than the server writes, runs the timers (keepalive pings and the
deadline of each closing handshake) and watches the sockets of parked view
threads, waking a bounded number at a time (``parking.py``). Views never
wait on the hub for anything else; they read their own socket. Under gevent
the hub is a greenlet like any thread, and views wait on gevent's own hub.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django_websocket.parking import Parking, supported

if TYPE_CHECKING:
    from django_websocket.connection import SocketWebSocket
    from django_websocket.websocket import WebSocket

__all__ = ["Hub", "TimerHandle", "close_all", "connection_count", "get_hub"]

logger = logging.getLogger("django_websocket")


class TimerHandle:
    """A call scheduled with ``Hub.call_at()``."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Drop the call, and with it the reference to the callback's owner:
        a finished connection must not stay in memory until its next ping
        would have been due. A call the hub has already started still runs."""
        self.callback = None


class Hub:
    """Registry, writer and timer thread for the connections of a process."""

    def __init__(self) -> None:
        # Protects _connections, _timers, _writers and the selector's
        # registrations; never held while a connection's own lock is taken.
        self._lock = threading.Lock()
        self._connections: set[WebSocket] = set()
        self._writers: set[SocketWebSocket] = set()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._selector = selectors.DefaultSelector()
        self._wakeup_recv, self._wakeup_send = socket.socketpair()
        self._wakeup_recv.setblocking(False)
        self._wakeup_send.setblocking(False)
        self._selector.register(self._wakeup_recv, selectors.EVENT_READ)
        self._thread: threading.Thread | None = None
        # Created on first use, by a thread (never under gevent).
        self._parking: Parking | None = None

    def connections(self) -> list[WebSocket]:
        """Return a snapshot of the open connections."""
        with self._lock:
            return list(self._connections)

    def add(self, connection: WebSocket) -> None:
        with self._lock:
            self._connections.add(connection)
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="django-websocket-hub", daemon=True
            )
            self._thread.start()

    def remove(self, connection: WebSocket) -> None:
        with self._lock:
            self._connections.discard(connection)
            if connection in self._writers:
                self._writers.discard(connection)
                self._unregister(connection)

    def want_write(self, connection: SocketWebSocket) -> None:
        """Drain *connection*'s outbound buffer as its socket becomes writable."""
        with self._lock:
            if connection in self._writers or connection not in self._connections:
                return
            self._writers.add(connection)
            try:
                self._selector.register(
                    connection.socket, selectors.EVENT_WRITE, connection
                )
            except (ValueError, OSError):
                self._writers.discard(connection)
                return
        self._wake()

    def done_writing(self, connection: SocketWebSocket) -> None:
        with self._lock:
            if connection in self._writers:
                self._writers.discard(connection)
                self._unregister(connection)

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Call *callback()* in the hub thread at monotonic time *when*.

        The callback must not block; it runs with no lock held.

        Returns:
            A handle whose ``cancel()`` drops the call.
        """
        handle = TimerHandle(callback)
        with self._lock:
            earliest = self._timers[0][0] if self._timers else None
            heapq.heappush(self._timers, (when, next(self._sequence), handle))
            self._start()
        if earliest is None or when < earliest:
            self._wake()
        return handle

    def parking(self) -> Parking | None:
        """Return this process's parking for view threads, or None where
        epoll is missing (then views wait in ``poll()``)."""
        if self._parking is None and supported():
            with self._lock:
                if self._parking is None:
                    parking = Parking()
                    self._selector.register(parking, selectors.EVENT_READ, parking)
                    self._parking = parking
                    self._start()
            self._wake()  # the hub's next select() watches it
        return self._parking

    def _unregister(self, connection: SocketWebSocket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(connection.socket)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wakeup_send.send(b"\0")

    def _run(self) -> None:
        while True:
            with self._lock:
                due = self._timers[0][0] if self._timers else None
            parking = self._parking
            lease = parking.deadline() if parking is not None else None
            if lease is not None and (due is None or lease < due):
                due = lease
            timeout = None if due is None else max(0.0, due - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._drain_wakeups()
                elif isinstance(key.data, Parking):
                    try:
                        key.data.on_ready()
                    except Exception:
                        # The hub must outlive any bug here: it runs every
                        # timer and wakes every parked thread.
                        logger.exception("Waking parked view threads failed")
                else:
                    key.data.on_writable()
            self._fire_timers()
            if parking is not None:
                parking.expire(time.monotonic())

    def _drain_wakeups(self) -> None:
        try:
            while self._wakeup_recv.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _fire_timers(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                callback = heapq.heappop(self._timers)[2].callback
                if callback is not None:  # else cancelled
                    due.append(callback)
        for callback in due:
            try:
                callback()
            except Exception:
                logger.exception("Timer callback %r failed", callback)


_hub: Hub | None = None
# Serializes the lazy creation of the process's hub.
_hub_lock = threading.Lock()


def get_hub() -> Hub:
    """Return this process's hub, creating it on first use."""
    global _hub
    if _hub is None:
        with _hub_lock:
            if _hub is None:
                _hub = Hub()
    return _hub


def _forget_hub() -> None:
    # A forked worker must not share its parent's hub thread or sockets.
    global _hub
    _hub = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hub)


def close_all(code: int = 1001, reason: str = "server shutting down") -> int:
    """Start the closing handshake on every open connection of this process.

    Does not wait: each view sees the client's reply and its ``wait()``
    returns ``None``. Safe to call from any thread (not from a signal handler
    under gevent: write to a pipe there and call this from a thread).

    Returns:
        How many connections were asked to close.
    """
    if _hub is None:
        return 0
    connections = _hub.connections()
    for connection in connections:
        connection.close(code, reason)
    return len(connections)


def connection_count() -> int:
    """Return how many connections of this process the hub still holds.

    A connection counts until the server is done with its request, so after
    ``close_all()`` this reaches 0 once every closing handshake is over and
    every view has returned. Safe to call from any thread.
    """
    hub = _hub
    return 0 if hub is None else len(hub.connections())
