"""The outbound side of a connection: bytes queued for a client, and the
one backlog rule every send path follows.

An ``Outbox`` holds what the kernel has not accepted yet and writes it with
non-blocking sends, from whichever thread queued it or from the hub when the
socket becomes writable. It never touches the protocol engine, so the hub
and publishing threads never wait behind a connection's reader. Past
``limit`` queued bytes the client is dropped (close code 1008 recorded, TCP
torn down), except that the connection's own view thread may be made to
wait for the client to catch up (``wait_below()``), which is flow control.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["WOULD_BLOCK", "Outbox"]

WOULD_BLOCK = (
    BlockingIOError,
    InterruptedError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)


class Outbox:
    """Queued outbound bytes of one socket, oldest first.

    Its containers are created on first use: most connections write every
    frame at once and never queue anything, and an idle connection should
    cost as little as possible.
    """

    __slots__ = (
        "_chunks",
        "_drained",
        "_lock",
        "_operations",
        "dropped",
        "eof_pending",
        "flags",
        "limit",
        "overflowed",
        "pending_size",
        "size",
        "sock",
    )

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        # For send(): MSG_DONTWAIT when the socket is in blocking mode.
        self.flags = 0
        # Serializes writes to the socket and protects everything below.
        # Held only for appends and non-blocking sends, never while the
        # connection's engine lock is being taken.
        self._lock = threading.Lock()
        # Signalled (under _lock) when bytes are written or the client is
        # dropped; for the threads in wait_below() and drain().
        self._drained: threading.Condition | None = None
        self._chunks: deque[bytes | memoryview] | None = None
        self.size = 0
        # Sends not framed yet: (operation, bytes it will queue), run in
        # order by whichever thread holds the connection's engine lock.
        self._operations: deque[tuple[Callable[[], None], int]] | None = None
        self.pending_size = 0
        self.eof_pending = False
        # The TCP connection was torn down: the socket failed or, when
        # overflowed too, the client let the backlog pass the limit.
        self.dropped = False
        self.overflowed = False

    def admit(self, size: int, *, may_exceed: bool = False) -> bool:
        """Apply the backlog rule to *size* more bytes: past the limit the
        client is dropped, unless *may_exceed* (the owner's own sends, which
        then ``wait_below()``).

        Returns:
            False if the client is (or is now) dropped.
        """
        if not self.dropped and self.size + self.pending_size + size <= self.limit:
            # Within the limit, nothing to decide under the lock: a drop that
            # races with this is seen by put() before any byte is queued.
            return True
        with self._lock:
            return self._admit(size, may_exceed)

    def submit(
        self, operation: Callable[[], None], size: int, *, may_exceed: bool = False
    ) -> bool:
        """Queue *operation*, which will frame *size* bytes, under the
        backlog rule of ``admit()``. Returns False if the client is dropped."""
        with self._lock:
            if not self._admit(size, may_exceed):
                return False
            if self._operations is None:
                self._operations = deque()
            self._operations.append((operation, size))
            self.pending_size += size
            return True

    def _admit(self, size: int, may_exceed: bool) -> bool:
        if self.dropped:
            return False
        over = self.size + self.pending_size + size > self.limit
        if size and over and not may_exceed:
            self._drop(overflowed=True)
            return False
        return True

    def take(self) -> Callable[[], None] | None:
        """Return the oldest queued operation, or None."""
        if not self._operations:
            # Appended only under the lock, and taken only by the holder of
            # the engine lock (the caller), so this look needs no lock.
            return None
        with self._lock:
            if not self._operations:
                return None
            operation, size = self._operations.popleft()
            if not self._operations:
                self._operations = None
            self.pending_size -= size
            return operation

    def has_operations(self) -> bool:
        return bool(self._operations)

    def put(self, chunks: Iterable[bytes], *, may_exceed: bool = False) -> bool:
        """Queue *chunks* and write what the kernel accepts at once.

        An empty chunk asks for a half-close once everything before it is
        sent. Past the limit the client is dropped, unless *may_exceed*.

        Returns:
            True if bytes are left for the hub to write.
        """
        with self._lock:
            if self.dropped:
                return False
            if self._chunks is None:
                self._chunks = deque()
            for chunk in chunks:
                if chunk:
                    self._chunks.append(chunk)
                    self.size += len(chunk)
                else:
                    self.eof_pending = True
            if self.size > self.limit and not may_exceed:
                self._drop(overflowed=True)
                return False
            self._write()
            return bool(self._chunks)

    def write(self) -> bool:
        """Write what the kernel accepts (the hub calls this when the socket
        is writable). Returns True if bytes are still queued."""
        with self._lock:
            if not self.dropped:
                self._write()
            return bool(self._chunks)

    def wait_below(self, timeout: float) -> bool:
        """Block while more than ``limit`` bytes are queued and the client
        keeps reading; drop the client if *timeout* passes with no progress.

        Returns:
            False if the client was dropped.
        """
        if self.size <= self.limit:
            return not self.dropped
        with self._lock:
            while self.size > self.limit and not self.dropped:
                before = self.size
                self._condition().wait(timeout)
                if self.size >= before:
                    self._drop(overflowed=True)
            return not self.dropped

    def drain(self, deadline: float) -> None:
        """Wait until everything queued is written, or *deadline* passes."""
        with self._lock:
            while self._chunks and not self.dropped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._condition().wait(remaining)

    def notify(self) -> None:
        """Wake the threads in ``wait_below()`` and ``drain()`` (the
        connection has closed)."""
        with self._lock:
            self._notify()

    def drop(self) -> None:
        """Discard what is queued and tear the TCP connection down."""
        with self._lock:
            self._drop()

    def _condition(self) -> threading.Condition:
        if self._drained is None:
            self._drained = threading.Condition(self._lock)
        return self._drained

    def _notify(self) -> None:
        if self._drained is not None:
            self._drained.notify_all()

    def _drop(self, *, overflowed: bool = False) -> None:
        self.dropped = True
        self.overflowed = self.overflowed or overflowed
        self._chunks = self._operations = None
        self.size = self.pending_size = 0
        self.eof_pending = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._notify()

    def _write(self) -> None:
        chunks = self._chunks
        wrote = False
        while chunks:
            chunk = chunks[0]
            try:
                sent = self.sock.send(chunk, self.flags)
            except WOULD_BLOCK:
                break
            except OSError:
                self._drop()
                return
            wrote = True
            self.size -= sent
            if sent < len(chunk):
                chunks[0] = memoryview(chunk)[sent:]
                break
            chunks.popleft()
        if not chunks:
            self._chunks = None  # an empty deque still holds a 600-byte block
        if wrote:
            self._notify()
        if not chunks and self.eof_pending:
            self.eof_pending = False
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
