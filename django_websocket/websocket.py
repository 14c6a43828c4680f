"""``request.websocket``: what a view sees of its connection, on any server.

``WebSocket`` is the interface, with what both engines share. Under a WSGI
server (runserver, gunicorn) the connection is a ``SocketWebSocket``
(``connection.py``): the view's thread reads and writes the client's socket
through websockets' protocol engine. Under an ASGI server it is an
``AsgiWebSocket`` (``bridge.py``): the server speaks the protocol, and
messages pass between the view's thread and the event loop in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from django.db import connections
from django.db.backends.signals import connection_created

from django_websocket.exceptions import CloseCode

__all__ = ["Backlog", "Message", "WebSocket"]

logger = logging.getLogger("django_websocket")

Message = str | bytes

T = TypeVar("T")


@dataclass(frozen=True)
class Backlog:
    """What a connection holds for its client, in both directions."""

    #: Complete messages the view has not read yet.
    unread_messages: int
    #: Their size: bytes, or characters for text.
    unread_size: int
    #: Bytes (or characters) of a fragmented message being reassembled.
    partial_size: int
    #: Outbound bytes and messages queued but not yet taken by the kernel.
    outbound_bytes: int


class WebSocket:
    """An open WebSocket connection, available as ``request.websocket``.

    Messages arrive as ``str`` (text frames) or ``bytes`` (binary frames).
    Reading methods are meant for the view's own thread; ``send()``,
    ``close()`` and ``ping()`` may be called from any thread.
    """

    #: The request path.
    path: str
    #: The negotiated subprotocol, or ``None``.
    subprotocol: str | None
    #: When the connection opened (``time.monotonic()``).
    opened_at: float
    _finished: bool
    # Called once with this connection when it is released (groups use it
    # to drop their membership).
    _finish_callbacks: list[Callable[[WebSocket], object]]

    # Reading.

    def wait(self, timeout: float | None = None) -> Message | None:
        """Block until the next message arrives and return it.

        Returns:
            The message, or ``None`` once the connection is closed.

        Raises:
            TimeoutError: If *timeout* seconds pass without a message
                (``timeout=0`` looks at the socket once).
        """
        raise NotImplementedError

    @overload
    def read(self) -> Message | None: ...
    @overload
    def read(self, fallback: T) -> Message | T: ...
    def read(self, fallback: Any = None) -> Any:
        """Return the next message if one has arrived, without blocking.

        Returns:
            The message, or *fallback* if none is waiting or the connection
            is closed.
        """
        raise NotImplementedError

    def count_messages(self) -> int:
        """Return how many messages have arrived and not been read yet."""
        raise NotImplementedError

    def has_messages(self) -> bool:
        """Tell, without blocking, whether ``read()`` would return a message."""
        return self.count_messages() > 0

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
        """Send a text (``str``) or binary (``bytes``) message.

        Never blocks another thread: from any thread but the view's own, a
        client that lets ``max_send_backlog`` bytes pile up is dropped with
        1008; the view's own thread waits for it to read instead.

        Raises:
            ConnectionClosed: If the connection is closing or closed.
            TypeError: If *message* is neither ``str`` nor bytes-like.
        """
        raise NotImplementedError

    def send_shared(self, message: Message, cache: dict[str, Any]) -> None:
        """``send()`` for a message that goes to many connections (groups):
        what can be prepared once for all of them is kept in *cache*."""
        raise NotImplementedError

    def send_json(self, value: Any) -> None:
        """Send *value* encoded as JSON in a text message."""
        self.send(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def ping(self, data: bytes = b"") -> threading.Event:
        """Send a ping; the returned event is set when its pong arrives."""
        raise NotImplementedError

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; does nothing if already closing.

        Does not wait: the next ``wait()`` returns ``None`` once the client
        has answered (or after ``WEBSOCKET_CLOSE_TIMEOUT``).
        """
        raise NotImplementedError

    # State.

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed."""
        raise NotImplementedError

    @property
    def close_code(self) -> int | None:
        """The close code, once closed: the client's, else the server's,
        else 1006 (no close frame); ``None`` while open."""
        info = self._close_info()
        return None if info is None else info[0]

    @property
    def close_reason(self) -> str | None:
        """The close reason matching ``close_code``; ``None`` while open."""
        info = self._close_info()
        return None if info is None else info[1]

    @property
    def backlog(self) -> Backlog:
        """What this connection holds right now (a snapshot)."""
        raise NotImplementedError

    def _close_info(self) -> tuple[int, str] | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "CLOSED" if self.closed else "OPEN"
        return f"<{type(self).__name__} {self.path} {state}>"

    # The end of the connection, driven by the decorator.

    def finish(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Complete the closing handshake once the view has returned, and
        run the finish callbacks."""
        raise NotImplementedError

    def release(self) -> None:
        """Forget the connection: the server is done with its request."""
        raise NotImplementedError

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        """The lock under which ``_finished`` changes."""
        raise NotImplementedError

    def add_finish_callback(self, callback: Callable[[WebSocket], object]) -> None:
        """Call *callback(websocket)* once the connection is released."""
        with self._guard():
            if not self._finished:
                self._finish_callbacks.append(callback)
                return
        self._run_callback(callback)

    def _run_finish_callbacks(self) -> None:
        callbacks, self._finish_callbacks = self._finish_callbacks, []
        for callback in callbacks:
            self._run_callback(callback)

    def _run_callback(self, callback: Callable[[WebSocket], object]) -> None:
        try:
            callback(self)
        except Exception:
            logger.exception("Finish callback %r of %r failed", callback, self)


def check_message(message: object) -> None:
    """Raise ``TypeError`` unless *message* can be sent."""
    if not isinstance(message, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"message must be str or bytes, not {type(message).__name__}")


# Per thread (as Django keeps its database connections): set when the last
# release left no connection open, cleared when one opens (connection_created).
_databases = threading.local()


def release_database_connections() -> None:
    """Before blocking, let Django close this thread's database connections
    as it does between requests (``CONN_MAX_AGE`` applies), so that thousands
    of idle sockets do not hold thousands of database connections. Never
    inside a transaction. Costs nothing while none has opened since the last
    call closed them all."""
    if getattr(_databases, "closed", False):
        return
    closed = True
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        closed = closed and connection.connection is None
    _databases.closed = closed


def _on_connection_created(**kwargs: Any) -> None:
    _databases.closed = False


connection_created.connect(
    _on_connection_created, dispatch_uid="django_websocket.connection_created"
)
