"""``request.websocket`` under a WSGI server: the view's thread on the client's socket.

The view's thread reads its own socket (``wait()``, ``read()``, iteration);
any thread may ``send()``. Everything a client can make the server hold is
bounded:

- Inbound (``inbox.py``): each read takes at most 64 KiB from the socket,
  and reading stops while the view has ``max_queue`` messages unread, so TCP
  slows the client down.
- Outbound (``outbox.py``): the socket is non-blocking; past
  ``max_send_backlog`` queued bytes the client is dropped with 1008, except
  that the connection's own view thread waits for it instead (flow control).

Calls into the protocol engine (websockets' Sans-I/O ``ServerProtocol``,
which does framing, masking, UTF-8 rules, size limits and compression) are
serialized by one lock, held only for a bounded amount of work. A thread
that finds it taken, a publisher or the hub, never waits: it queues its
operation and whichever thread holds the lock runs it before letting go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from django_websocket.exceptions import CloseCode, ConnectionClosed
from django_websocket.hub import TimerHandle, get_hub
from django_websocket.inbox import Inbox
from django_websocket.outbox import WOULD_BLOCK, Outbox
from django_websocket.parking import Spot
from django_websocket.websocket import (
    Backlog,
    Message,
    WebSocket,
    check_message,
    release_database_connections,
)

__all__ = ["SocketWebSocket"]

logger = logging.getLogger("django_websocket")

# Bytes taken from the socket per read: the unit of work done under the
# engine lock, after which other threads (and, under gevent, greenlets) run.
RECV_SIZE = 64 * 1024


class SocketWebSocket(WebSocket):
    """``request.websocket`` on the client's own socket (runserver, gunicorn)."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ServerProtocol,
        *,
        path: str = "",
        subprotocol: str | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 5.0,
        max_send_backlog: int = 4 * 1024 * 1024,
        max_queue: int | None = 16,
    ) -> None:
        self.socket = sock
        self.path = path
        self.subprotocol = subprotocol
        self.opened_at = time.monotonic()
        self._protocol = protocol
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        # Serializes every call into the protocol engine and guards _inbox.
        # Held for bounded work only; see _engine() and _submit().
        self._lock = threading.Lock()
        self._inbox = Inbox(max_queue=max_queue)
        # Has its own lock: writing never waits for the engine.
        self._outbox = Outbox(sock, max_send_backlog)
        # Keepalive: payload and send time of the ping awaiting its pong.
        self._pings: dict[bytes, threading.Event] = {}
        self._keepalive: tuple[bytes, float] | None = None
        self._closing_deadline: float | None = None
        # The pending keepalive and closing-deadline calls, cancelled on
        # finish() so that the hub's timer heap does not keep this object.
        self._ping_timer: TimerHandle | None = None
        self._close_timer: TimerHandle | None = None
        self._reading = False
        self._finished = False
        # Bytes read since this greenlet last yielded (gevent fairness).
        self._unyielded = 0
        self._finish_callbacks: list[Callable[[WebSocket], object]] = []
        self._owner = threading.get_ident()
        self._hub = get_hub()
        # How the view's thread waits for its socket: through the process's
        # parking (parking.py: in poll() while few threads do, else parked
        # and woken by the hub a bounded number at a time); in poll() where
        # there is no epoll; on gevent's own hub under gevent.
        self._green = _under_gevent()
        self._parking = None if self._green else self._hub.parking()
        self._spot = None if self._parking is None else Spot(sock)
        self._poller = None if self._green or self._spot else _new_poller(sock)
        # A thread that waits for its socket directly (parking.py) waits in a
        # blocking recv(), which returns the bytes poll() would only announce:
        # the socket goes back to blocking mode, and every other read and
        # write passes MSG_DONTWAIT. TLS sockets take no flags: they poll.
        self._recv_flags = 0
        if self._spot is not None and not isinstance(sock, ssl.SSLSocket):
            sock.setblocking(True)
            self._recv_flags = self._outbox.flags = socket.MSG_DONTWAIT
        # Set (under the engine lock) while the view's thread may block in
        # recv(): no other thread reads the socket, so bytes are taken in in
        # the order they came. What that recv() returned, until taken in.
        self._receiving = False
        self._received: bytes | None = None
        self._hub.add(self)
        if ping_interval:
            self._ping_timer = self._hub.call_at(
                time.monotonic() + ping_interval, self.on_timer
            )

    # Reading.

    def wait(self, timeout: float | None = None) -> Message | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        released = False
        # Whether to read the socket before looking at the inbox: it was
        # readable, or the last read took bytes and more may be waiting (read
        # on rather than park between the 64 KiB reads of one large message).
        readable = more = False
        # Only the view's own thread blocks in recv(); another thread that
        # waits too polls beside it and leaves what it received alone.
        mine = threading.get_ident() == self._owner
        self._cooperate()
        while True:
            # One pass under the engine lock per wake-up: read, then take the
            # message, or mark the connection as being read before blocking.
            self._lock.acquire()
            try:
                self._reading = False
                received = None
                if mine:
                    self._receiving = False
                    received, self._received = self._received, None
                if received is not None:
                    more = self._take_in(received)
                elif readable or (
                    deadline is not None and deadline <= time.monotonic()
                ):
                    more = self._pump() and self._spot is not None
                if self._inbox:
                    return self._inbox.pop()
                if self._protocol.state is State.CLOSED:
                    return None
                self._reading = True
                receiving = (
                    mine and self._recv_flags != 0 and deadline is None and not more
                )
                if receiving:
                    self._receiving = True
            finally:
                self._release()
            try:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} seconds")
                if not released:
                    release_database_connections()
                    released = True
                readable = more or self._readable(remaining, receiving)
            except BaseException:
                with self._engine():
                    self._reading = False
                    if mine:
                        self._receiving = False
                        received, self._received = self._received, None
                        if received is not None:
                            self._take_in(received)
                raise

    def read(self, fallback: Any = None) -> Any:
        with self._engine():
            if not self._inbox:
                self._pump()
            return self._inbox.pop() if self._inbox else fallback

    def count_messages(self) -> int:
        with self._engine():
            self._pump()
            return len(self._inbox)

    # Sending.

    def send(self, message: Message) -> None:
        check_message(message)
        if isinstance(message, str):
            data, text = message.encode(), True
        else:
            data, text = bytes(message), False

        def frame() -> None:
            if self._protocol.state is State.OPEN:
                if text:
                    self._protocol.send_text(data)
                else:
                    self._protocol.send_binary(data)

        self._submit(frame, len(data))

    def send_shared(self, message: Message, cache: dict[str, Any]) -> None:
        """``send()`` for a message that goes to many connections (groups).

        Connections without extensions send identical bytes, so the frame is
        serialized once, into *cache*, and reused; a connection that
        negotiated compression frames the message itself.
        """
        if self._protocol.extensions:
            self.send(message)
            return
        serialized = cache.get("frame")
        if serialized is None:
            if isinstance(message, str):
                opcode, data = Opcode.TEXT, message.encode()
            else:
                opcode, data = Opcode.BINARY, bytes(message)
            serialized = cache["frame"] = Frame(opcode, data).serialize(
                mask=False, extensions=[]
            )
        frame_bytes = serialized

        def frame() -> None:
            if self._protocol.state is State.OPEN:
                # Behind whatever the engine has framed so far, in order.
                self._protocol.writes.append(frame_bytes)

        self._submit(frame, len(frame_bytes))

    def ping(self, data: bytes = b"") -> threading.Event:
        """Send a ping; the returned event is set when its pong arrives.

        The pong is taken in while the connection is read (``wait()``,
        ``read()``, iteration), else at the next keepalive tick.
        """
        data = data or os.urandom(4)
        event = self._pings.setdefault(data, threading.Event())

        def frame() -> None:
            if self._protocol.state is State.OPEN:
                self._protocol.send_ping(data)

        self._submit(frame, len(data))
        return event

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        def frame() -> None:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code, reason)

        if not self.closed:
            self._submit(frame, len(reason), check=False)

    # State.

    @property
    def closed(self) -> bool:
        return self._protocol.state is not State.OPEN or self._outbox.dropped

    @property
    def backlog(self) -> Backlog:
        inbox = self._inbox
        return Backlog(
            unread_messages=len(inbox),
            unread_size=inbox.unread_size,
            partial_size=inbox.partial_size,
            outbound_bytes=self._outbox.size + self._outbox.pending_size,
        )

    def _close_info(self) -> tuple[int, str] | None:
        if self._outbox.overflowed:
            return CloseCode.POLICY_VIOLATION, "send backlog exceeded"
        if self._protocol.state is not State.CLOSED and not self._outbox.dropped:
            return None
        for frame in (self._protocol.close_rcvd, self._protocol.close_sent):
            if frame is not None:
                return frame.code, frame.reason
        return CloseCode.ABNORMAL_CLOSURE, ""

    # The engine lock. Methods named _x below assume it is held.

    @contextlib.contextmanager
    def _engine(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._release()

    def _release(self, *, may_exceed: bool = False) -> None:
        """Run the operations other threads queued, write the engine's
        output, and let go of the lock; then look again, since an operation
        queued after the last look found the lock taken."""
        while True:
            try:
                while (operation := self._outbox.take()) is not None:
                    operation()
                self._flush(may_exceed=may_exceed)
            finally:
                self._lock.release()
            if not self._outbox.has_operations() or not self._lock.acquire(
                blocking=False
            ):
                return

    def _submit(
        self, operation: Callable[[], None], size: int, *, check: bool = True
    ) -> None:
        """Queue *operation* (*size* bytes to send) for the engine and run it
        now if the lock is free. The view's own thread takes the lock and
        waits for a slow client; any other thread never waits."""
        if check:
            self._check_open()
        owner = threading.get_ident() == self._owner
        if self._lock.acquire(blocking=owner):
            if self._outbox.has_operations():
                # Others queued before us: ours runs after theirs.
                self._outbox.submit(operation, size, may_exceed=owner)
            elif self._outbox.admit(size, may_exceed=owner):
                operation()
            self._release(may_exceed=owner)
        elif self._outbox.submit(operation, size) and self._lock.acquire(
            blocking=False
        ):
            # The holder let go before our operation was queued.
            self._release()
        if owner:
            self._outbox.wait_below(self._ping_timeout or self._close_timeout)
        if check and self._outbox.dropped:
            self._check_open()

    def _check_open(self) -> None:
        if self.closed:
            info = self._close_info() or (CloseCode.ABNORMAL_CLOSURE, "")
            raise ConnectionClosed(*info)

    def _readable(self, timeout: float | None, receive: bool = False) -> bool:
        """Wait until the socket is readable, up to *timeout* seconds; with
        *receive* (the view's thread, no timeout), block in recv() instead
        where the connection allows it."""
        if isinstance(self.socket, ssl.SSLSocket) and self.socket.pending():
            return True
        if self._parking is not None and self._spot is not None:
            receive_now = self._receive if receive else None
            woken = self._parking.wait(self._spot, timeout, receive_now)
            if woken is not None:
                return woken
            # Another thread waits on this connection: poll beside it.
            return _poll(_new_poller(self.socket), timeout)
        if self._poller is None:
            return _gevent_wait_readable(self.socket, timeout)
        return _poll(self._poller, timeout)

    def _cooperate(self) -> None:
        """Under gevent, let other greenlets run after every RECV_SIZE bytes
        read, so that a flooding client cannot hold the worker."""
        if self._unyielded >= RECV_SIZE and self._green:
            self._unyielded = 0
            _gevent_yield()

    def start(self, response: bytes, buffered: bytes) -> None:
        """Send the handshake *response*, then process the bytes the server
        had already read past the request headers."""
        with self._engine():
            if self._outbox.put([response]):
                self._hub.want_write(self)
            if buffered:
                self._protocol.receive_data(buffered)
                self._handle_frames()

    def _receive(self) -> None:
        """Block in recv() for the next bytes (the view's thread, in wait())."""
        try:
            self._received = self.socket.recv(RECV_SIZE)
        except WOULD_BLOCK:
            pass
        except OSError:
            self._received = b""

    def _pump(self) -> bool:
        """Take in at most RECV_SIZE bytes, without blocking; nothing while
        the view has max_queue messages unread, unless closing, nor while
        the view's thread receives. Returns True if bytes were taken."""
        if self._protocol.state is State.CLOSED or self._receiving:
            return False
        if self._inbox.full:
            if self._protocol.state is State.OPEN:
                return False  # paused until the view reads
            # Closing: read on for the client's close frame, and drop what
            # comes before it.
            self._inbox.discarding = True
        try:
            data = self.socket.recv(RECV_SIZE, self._recv_flags)
        except WOULD_BLOCK:
            return False
        except OSError:
            data = b""
        return self._take_in(data)

    def _take_in(self, data: bytes) -> bool:
        """Hand bytes read from the socket to the engine (``b""``: the end of
        the stream). Returns True if bytes were taken."""
        if self._protocol.state is State.CLOSED:
            return False
        if data:
            self._unyielded += len(data)
            self._protocol.receive_data(data)
            self._handle_frames()
            return True
        self._protocol.receive_eof()
        self._outbox.notify()
        return False

    def _handle_frames(self) -> None:
        failed = False
        for event in self._protocol.events_received():
            frame = cast(Frame, event)  # after the handshake, only frames
            if frame.opcode is Opcode.PONG:
                self._on_pong(bytes(frame.data))
            if failed:
                continue
            error = self._inbox.receive(frame)
            if error is not None:
                failed = True
                self._inbox.discarding = True
                self._protocol.fail(*error)

    def _on_pong(self, data: bytes) -> None:
        event = self._pings.pop(data, None)
        if event is not None:
            event.set()
        if self._keepalive is not None and self._keepalive[0] == data:
            self._keepalive = None

    def _flush(self, *, may_exceed: bool = False) -> None:
        """Hand the engine's output to the outbox; past the backlog limit the
        client is dropped, unless the view's own send is to wait for it."""
        if self._protocol.writes and self._outbox.put(
            self._protocol.data_to_send(), may_exceed=may_exceed
        ):
            self._hub.want_write(self)
        if self._protocol.close_expected() and self._closing_deadline is None:
            self._closing_deadline = time.monotonic() + self._close_timeout
            self._close_timer = self._hub.call_at(self._closing_deadline, self.on_timer)

    def _abort(self) -> None:
        """Tear the TCP connection down and mark the connection closed."""
        self._outbox.drop()
        if self._protocol.state is not State.CLOSED:
            self._protocol.receive_eof()
        self._protocol.data_to_send()

    # Called by the hub thread, which must never wait.

    def on_writable(self) -> None:
        if not self._outbox.write():
            self._hub.done_writing(self)

    def on_timer(self) -> None:
        """Keepalive and closing deadline: queued like any operation, so the
        hub never waits for a connection that is being read."""
        self._submit(self._tick, 0, check=False)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._finished:
            return
        if not self._reading:
            # Nobody is reading: take in pongs and close frames here.
            self._pump()
        state = self._protocol.state
        if state is State.CLOSED:
            return
        if state is State.CLOSING:
            if self._closing_deadline is not None and now >= self._closing_deadline:
                self._abort()
            return
        self._keepalive_tick(now)

    def _keepalive_tick(self, now: float) -> None:
        if not self._ping_interval:
            return
        if self._inbox.full:
            # Reading is paused until the view reads: the client's pong may
            # sit behind its unread messages, and it has just shown it is
            # alive. The timeout counts again once the view reads.
            self._keepalive = None
        elif self._keepalive is not None:
            if self._ping_timeout and now >= self._keepalive[1] + self._ping_timeout:
                self._protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return
        else:
            payload = os.urandom(4)
            self._keepalive = (payload, now)
            self._protocol.send_ping(payload)
        if self._keepalive is not None and self._ping_timeout:
            next_tick = min(
                self._keepalive[1] + self._ping_timeout, now + self._ping_interval
            )
        else:
            next_tick = now + self._ping_interval
        self._ping_timer = self._hub.call_at(next_tick, self.on_timer)

    # Called by the decorator once the view has returned.

    def finish(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Complete the closing handshake and release the connection.

        Waits at most ``close_timeout`` for the client's close frame, then
        stops its timers and runs the finish callbacks. The connection stays
        registered with the hub until ``release()``, when the server is done
        with the request, so that a shutdown never misses it.
        """
        self.close(code, reason)
        deadline = time.monotonic() + self._close_timeout
        with self._engine():
            self._inbox.discarding = True
            self._inbox.clear()
        while self._protocol.state is not State.CLOSED and not self._outbox.dropped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable = self._readable(remaining)
            with self._engine():
                if readable:
                    self._pump()
                self._inbox.clear()
            self._cooperate()
        self._outbox.drain(deadline)
        with self._engine():
            self._finished = True
            for timer in (self._ping_timer, self._close_timer):
                if timer is not None:
                    timer.cancel()
            if self._protocol.state is not State.CLOSED:
                self._protocol.receive_eof()
        self._outbox.notify()
        if self._parking is not None and self._spot is not None:
            self._parking.leave(self._spot)  # before the server closes it
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        if self._poller is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(self.socket)
        self._run_finish_callbacks()

    def release(self) -> None:
        self._hub.remove(self)

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        return self._engine()


def _new_poller(sock: socket.socket) -> select.poll:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return poller


def _poll(poller: select.poll, timeout: float | None) -> bool:
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _under_gevent() -> bool:
    """Whether gevent has patched the select module (its workers do)."""
    return getattr(select.poll, "__module__", "").startswith("gevent")


def _gevent_yield() -> None:
    import gevent  # type: ignore[import-untyped]

    gevent.sleep(0)


def _gevent_wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Block the greenlet until *sock* is readable, up to *timeout* seconds.

    gevent copies a waiting greenlet's C stack to the heap, so every C frame
    between the view and the switch to gevent's hub costs each idle
    connection its size. Starting the watchers here and switching to the hub
    directly leaves out the frames of ``gevent.socket.wait_read()`` and its
    ``Waiter`` (1 KiB per connection); a spurious switch back only makes
    ``wait()`` look at the socket once more.
    """
    from gevent import get_hub, getcurrent

    hub = get_hub()
    switch = getcurrent().switch
    watcher = hub.loop.io(sock.fileno(), 1)
    watcher.start(switch, True)
    timer = None
    if timeout is not None:
        timer = hub.loop.timer(max(timeout, 0.0))
        timer.start(switch, False)
    try:
        return bool(hub.switch())
    finally:
        watcher.close()
        if timer is not None:
            timer.close()
