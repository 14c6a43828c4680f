"""``request.websocket``: one open WebSocket connection, used from a view.

The view's thread reads its own socket (``wait()``, ``read()``, iteration);
any thread may ``send()``. The socket is non-blocking from the handshake on:
a send writes what the kernel accepts at once and leaves the rest to the hub
(``hub.py``), so a client that stops reading never blocks the sender. Past
``WEBSOCKET_MAX_SEND_BACKLOG`` queued bytes the client is dropped with 1008;
only the connection's own view thread is made to wait instead (flow control).
Framing, masking, UTF-8 rules, size limits and compression are done by the
Sans-I/O ``websockets.server.ServerProtocol``; this module owns the socket.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from django.db import connections
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from django_websocket.exceptions import CloseCode, ConnectionClosed
from django_websocket.hub import TimerHandle, get_hub

__all__ = ["Message", "WebSocket"]

Message = str | bytes

_RECV_SIZE = 256 * 1024
_WOULD_BLOCK = (
    BlockingIOError,
    InterruptedError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class WebSocket:
    """An open WebSocket connection, available as ``request.websocket``.

    Messages arrive as ``str`` (text frames) or ``bytes`` (binary frames).
    Reading methods are meant for the view's own thread; ``send()``,
    ``close()`` and ``ping()`` may be called from any thread.
    """

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
    ) -> None:
        self.socket = sock
        self.path = path
        self.subprotocol = subprotocol
        self._protocol = protocol
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._max_send_backlog = max_send_backlog
        # Serializes every call into the protocol engine and every write to
        # the socket, so frames from concurrent senders never interleave.
        self._lock = threading.Lock()
        # Signalled (under _lock) when the outbound buffer shrinks or the
        # connection closes; the owner thread waits on it for flow control.
        # Created on first use: most connections never need it.
        self._drained: threading.Condition | None = None
        # Complete incoming messages not yet returned to the view. Lists, not
        # deques: they are short, and a deque costs 600 bytes even empty.
        self._messages: list[Message] = []
        # Outbound bytes the kernel did not accept yet, oldest first.
        self._outbox: list[bytes | memoryview] = []
        self._outbox_size = 0
        self._eof_pending = False
        # Reassembly of a fragmented message.
        self._fragments: list[bytes] = []
        self._fragments_text = False
        self._decoder: codecs.IncrementalDecoder | None = None
        # Keepalive: payload and send time of the ping awaiting its pong.
        self._pings: dict[bytes, threading.Event] = {}
        self._keepalive: tuple[bytes, float] | None = None
        self._closing_deadline: float | None = None
        # The pending keepalive and closing-deadline calls, cancelled on
        # finish() so that the hub's timer heap does not keep this object.
        self._ping_timer: TimerHandle | None = None
        self._close_timer: TimerHandle | None = None
        self._local_close: tuple[int, str] | None = None
        self._reading = False
        self._finished = False
        # Called once with this connection when it is released (groups use
        # it to drop their membership).
        self._finish_callbacks: list[Callable[[WebSocket], object]] = []
        self._owner = threading.get_ident()
        # poll() rather than a selectors object: no file descriptor and a
        # fraction of the memory. None under gevent, which waits on its hub.
        self._poller = _new_poller(sock)
        self._hub = get_hub()
        self._hub.add(self)
        if ping_interval:
            self._ping_timer = self._hub.call_at(
                time.monotonic() + ping_interval, self.on_timer
            )

    # Reading.

    def wait(self, timeout: float | None = None) -> Message | None:
        """Block until the next message arrives and return it.

        Returns:
            The message, or ``None`` once the connection is closed.

        Raises:
            TimeoutError: If *timeout* seconds pass without a message.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        released = False
        while True:
            with self._lock:
                if self._messages:
                    return self._messages.pop(0)
                if self._protocol.state is State.CLOSED:
                    return None
                self._reading = True
            readable = False
            try:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} seconds")
                if not released:
                    _release_database_connections()
                    released = True
                readable = self._readable(remaining)
            finally:
                with self._lock:
                    self._reading = False
                    if readable:
                        self._pump()

    def read(self) -> Message | None:
        """Return the next message if one has arrived, without blocking.

        Returns:
            The message, or ``None`` if none is waiting or the connection is
            closed.
        """
        with self._lock:
            if not self._messages:
                self._pump()
            return self._messages.pop(0) if self._messages else None

    def has_messages(self) -> bool:
        """Tell, without blocking, whether ``read()`` would return a message."""
        return self.count_messages() > 0

    def count_messages(self) -> int:
        """Return how many messages have arrived and not been read yet."""
        with self._lock:
            self._pump()
            return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        """Yield messages as they arrive; the loop ends when the connection closes."""
        while (message := self.wait()) is not None:
            yield message

    def receive_json(self, timeout: float | None = None) -> Any:
        """Wait for the next message and decode it as JSON.

        Returns:
            The decoded value, or ``None`` once the connection is closed.

        Raises:
            ValueError: If the message is not valid JSON.
            TimeoutError: If *timeout* seconds pass without a message.
        """
        message = self.wait(timeout)
        return None if message is None else json.loads(message)

    # Sending.

    def send(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message. Never blocks
        another thread; see the module docstring for slow clients.

        Raises:
            ConnectionClosed: If the connection is closing or closed.
            TypeError: If *message* is neither ``str`` nor bytes-like.
        """
        if isinstance(message, str):
            data, text = message.encode(), True
        elif isinstance(message, (bytes, bytearray, memoryview)):
            data, text = bytes(message), False
        else:
            raise TypeError(
                f"message must be str or bytes, not {type(message).__name__}"
            )
        with self._lock:
            self._check_open()
            if text:
                self._protocol.send_text(data)
            else:
                self._protocol.send_binary(data)
            self._flush()
            if threading.get_ident() == self._owner:
                self._wait_for_backlog()

    def send_shared(self, message: Message, cache: dict[str, bytes]) -> None:
        """``send()`` for a message that goes to many connections (groups).

        Connections without extensions send identical bytes, so the frame is
        serialized once, into *cache*, and reused; a connection that
        negotiated compression frames the message itself.
        """
        if self._protocol.extensions:
            self.send(message)
            return
        frame = cache.get("frame")
        if frame is None:
            if isinstance(message, str):
                opcode, data = Opcode.TEXT, message.encode()
            else:
                opcode, data = Opcode.BINARY, bytes(message)
            frame = cache["frame"] = Frame(opcode, data).serialize(
                mask=False, extensions=[]
            )
        with self._lock:
            self._check_open()
            self._outbox.append(frame)
            self._outbox_size += len(frame)
            self._flush()

    def send_json(self, value: Any) -> None:
        """Send *value* encoded as JSON in a text message."""
        self.send(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def ping(self, data: bytes = b"") -> threading.Event:
        """Send a ping; the returned event is set when its pong arrives.

        The pong is taken in while the connection is read (``wait()``,
        ``read()``, iteration), else at the next keepalive tick.
        """
        with self._lock:
            self._check_open()
            data = data or os.urandom(4)
            event = self._pings.setdefault(data, threading.Event())
            self._protocol.send_ping(data)
            self._flush()
        return event

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; does nothing if already closing.

        Does not wait: the next ``wait()`` returns ``None`` once the client
        has answered (or after ``WEBSOCKET_CLOSE_TIMEOUT``).
        """
        with self._lock:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code, reason)
                self._flush()

    # State.

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed."""
        return self._protocol.state is not State.OPEN

    @property
    def close_code(self) -> int | None:
        """The close code, once closed: the client's, else the server's,
        else 1006 (no close frame); ``None`` while open."""
        if self._protocol.state is not State.CLOSED:
            return None
        if self._local_close is not None:
            return self._local_close[0]
        for frame in (self._protocol.close_rcvd, self._protocol.close_sent):
            if frame is not None:
                return frame.code
        return CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str | None:
        """The close reason matching ``close_code``; ``None`` while open."""
        if self._protocol.state is not State.CLOSED:
            return None
        if self._local_close is not None:
            return self._local_close[1]
        for frame in (self._protocol.close_rcvd, self._protocol.close_sent):
            if frame is not None:
                return frame.reason
        return ""

    def __repr__(self) -> str:
        return f"<WebSocket {self.path} {self._protocol.state.name}>"

    # Internals. Methods named _x assume self._lock is held by the caller.

    def _check_open(self) -> None:
        if self._protocol.state is not State.OPEN:
            code = self.close_code or CloseCode.ABNORMAL_CLOSURE
            raise ConnectionClosed(code, self.close_reason or "")

    def _readable(self, timeout: float | None) -> bool:
        if isinstance(self.socket, ssl.SSLSocket) and self.socket.pending():
            return True
        if self._poller is None:
            return _gevent_wait_readable(self.socket, timeout)
        return bool(self._poller.poll(None if timeout is None else timeout * 1000))

    def start(self, response: bytes, buffered: bytes) -> None:
        """Send the handshake *response*, then process the bytes the server
        had already read past the request headers."""
        with self._lock:
            self._outbox.append(response)
            self._outbox_size += len(response)
            if buffered:
                self._protocol.receive_data(buffered)
                self._handle_frames()
            self._flush()

    def _pump(self) -> bool:
        """Read what the socket holds, without blocking. Returns True if
        anything was read or the connection ended."""
        progress = False
        while self._protocol.state is not State.CLOSED:
            try:
                data = self.socket.recv(_RECV_SIZE)
            except _WOULD_BLOCK:
                break
            except OSError:
                data = b""
            progress = True
            if data:
                self._protocol.receive_data(data)
                self._handle_frames()
            else:
                self._protocol.receive_eof()
                self._notify_drained()
            self._flush()
            if len(data) < _RECV_SIZE:
                break
        return progress

    def _handle_frames(self) -> None:
        for event in self._protocol.events_received():
            frame = cast(Frame, event)  # after the handshake, only frames
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._complete(frame, opcode is Opcode.TEXT)
                else:
                    self._fragments_text = opcode is Opcode.TEXT
                    self._decoder = _utf8_decoder() if self._fragments_text else None
                    self._fragment(frame)
            elif opcode is Opcode.CONT:
                self._fragment(frame)
            elif opcode is Opcode.PONG:
                self._on_pong(bytes(frame.data))
            if self._protocol.state is not State.OPEN and opcode is not Opcode.CLOSE:
                return

    def _complete(self, frame: Frame, text: bool) -> None:
        if not text:
            self._messages.append(bytes(frame.data))
            return
        try:
            self._messages.append(bytes(frame.data).decode())
        except UnicodeDecodeError:
            self._invalid_utf8()

    def _fragment(self, frame: Frame) -> None:
        data = bytes(frame.data)
        if self._decoder is not None:
            # Fail as soon as a fragment cannot be valid UTF-8 (RFC 6455
            # section 8.1) rather than buffering the whole message first.
            try:
                self._decoder.decode(data, final=frame.fin)
            except UnicodeDecodeError:
                self._invalid_utf8()
                return
        self._fragments.append(data)
        if frame.fin:
            joined = b"".join(self._fragments)
            self._fragments = []
            self._decoder = None
            self._messages.append(joined.decode() if self._fragments_text else joined)

    def _invalid_utf8(self) -> None:
        self._fragments = []
        self._decoder = None
        self._protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")

    def _on_pong(self, data: bytes) -> None:
        event = self._pings.pop(data, None)
        if event is not None:
            event.set()
        if self._keepalive is not None and self._keepalive[0] == data:
            self._keepalive = None

    def _flush(self) -> None:
        """Write the engine's output: directly while the kernel accepts it,
        else into the outbox for the hub to drain."""
        for chunk in self._protocol.data_to_send():
            if chunk:
                self._outbox.append(chunk)
                self._outbox_size += len(chunk)
            else:
                # The engine asks to half-close once everything is sent.
                self._eof_pending = True
        self._write_outbox()
        if self._outbox:
            if self._outbox_size > self._max_send_backlog and (
                threading.get_ident() != self._owner
            ):
                self._drop_slow_client()
            else:
                self._hub.want_write(self)
        if self._protocol.close_expected() and self._closing_deadline is None:
            self._closing_deadline = time.monotonic() + self._close_timeout
            self._close_timer = self._hub.call_at(self._closing_deadline, self.on_timer)

    def _write_outbox(self) -> None:
        while self._outbox:
            chunk = self._outbox[0]
            try:
                sent = self.socket.send(chunk)
            except _WOULD_BLOCK:
                return
            except OSError:
                self._outbox.clear()
                self._outbox_size = 0
                self._eof_pending = False
                self._abort()
                return
            self._outbox_size -= sent
            if sent < len(chunk):
                self._outbox[0] = memoryview(chunk)[sent:]
                self._notify_drained()
                return
            self._outbox.pop(0)
        self._notify_drained()
        if self._eof_pending:
            self._eof_pending = False
            self._shutdown(socket.SHUT_WR)

    def _wait_for_backlog(self) -> None:
        """Flow control for the owner thread: wait while the backlog is over
        the limit, as long as the client keeps reading."""
        while self._outbox_size > self._max_send_backlog and not self._finished:
            before = self._outbox_size
            self._drained_condition().wait(self._ping_timeout or self._close_timeout)
            if self._outbox_size >= before:
                self._drop_slow_client()
                self._check_open()

    def _drained_condition(self) -> threading.Condition:
        if self._drained is None:
            self._drained = threading.Condition(self._lock)
        return self._drained

    def _notify_drained(self) -> None:
        if self._drained is not None:
            self._drained.notify_all()

    def _drop_slow_client(self) -> None:
        # The close frame cannot overtake the bytes the kernel already holds,
        # so the client most likely sees 1006; 1008 is recorded here.
        self._local_close = (CloseCode.POLICY_VIOLATION, "send backlog exceeded")
        self._outbox.clear()
        self._outbox_size = 0
        self._abort()

    def _abort(self) -> None:
        """Tear the TCP connection down and mark the connection closed."""
        self._shutdown(socket.SHUT_RDWR)
        self._protocol.receive_eof()
        self._protocol.data_to_send()
        self._notify_drained()

    def _shutdown(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(how)

    # Called by the hub thread.

    def on_writable(self) -> None:
        with self._lock:
            if not self._finished:
                self._write_outbox()
            if not self._outbox:
                self._hub.done_writing(self)

    def on_timer(self) -> None:
        now = time.monotonic()
        with self._lock:
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
        if self._keepalive is not None:
            if self._ping_timeout and now >= self._keepalive[1] + self._ping_timeout:
                self._protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._flush()
                return
        else:
            payload = os.urandom(4)
            self._keepalive = (payload, now)
            self._protocol.send_ping(payload)
            self._flush()
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
        detaches the socket from the hub. The server closes the socket.
        """
        self.close(code, reason)
        deadline = time.monotonic() + self._close_timeout
        while self._protocol.state is not State.CLOSED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable = self._readable(remaining)
            with self._lock:
                if readable:
                    self._pump()
                self._messages.clear()
        with self._lock:
            while self._outbox and time.monotonic() < deadline:
                self._drained_condition().wait(deadline - time.monotonic())
            self._finished = True
            for timer in (self._ping_timer, self._close_timer):
                if timer is not None:
                    timer.cancel()
            if self._protocol.state is not State.CLOSED:
                self._protocol.receive_eof()
            self._notify_drained()
        self._hub.remove(self)
        self._shutdown(socket.SHUT_RDWR)
        if self._poller is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(self.socket)
        callbacks, self._finish_callbacks = self._finish_callbacks, []
        for callback in callbacks:
            callback(self)

    def add_finish_callback(self, callback: Callable[[WebSocket], object]) -> None:
        """Call *callback(websocket)* once the connection is released."""
        with self._lock:
            if not self._finished:
                self._finish_callbacks.append(callback)
                return
        callback(self)


def _release_database_connections() -> None:
    """Before blocking, let Django close this thread's database connections
    as it does between requests (``CONN_MAX_AGE`` applies), so that thousands
    of idle sockets do not hold thousands of database connections. Never
    inside a transaction."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def _new_poller(sock: socket.socket) -> select.poll | None:
    if _under_gevent():
        return None
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return poller


def _under_gevent() -> bool:
    """Whether gevent has patched the select module (its workers do)."""
    return getattr(select.poll, "__module__", "").startswith("gevent")


def _gevent_wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Block the greenlet until *sock* is readable, up to *timeout* seconds.

    Waiting on the hub directly, rather than through gevent's poll(), keeps
    no poll object per connection and a shallower stack, which gevent copies
    to the heap for every waiting greenlet: about 1 KiB less per connection.
    """
    from gevent.socket import wait_read  # type: ignore[import-untyped]

    try:
        wait_read(sock.fileno(), timeout)
    except TimeoutError:
        return False
    return True
