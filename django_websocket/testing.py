"""Test helpers for your own WebSocket views.

``LiveServer`` runs the library's threaded server in a thread of the test
process, on a free port, serving the project under the current settings
(static files included); ``WebSocketClient`` connects to a path on it with
websockets' real client. Every receive has a timeout, so a broken view fails
the test instead of hanging it::

    from django_websocket import CloseCode
    from django_websocket.testing import LiveServer, WebSocketClient

    def test_echo():
        with LiveServer() as server, WebSocketClient(server, "/echo/ws/") as ws:
            ws.send("hello")
            assert ws.receive() == "hello"
            ws.close()
        assert ws.close_code == CloseCode.NORMAL_CLOSURE

Views that use the database need pytest-django's ``transactional_db`` (or
Django's ``TransactionTestCase``): the server thread shares the test
process's in-memory SQLite connection, as Django's ``LiveServerTestCase`` does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from django.apps import apps
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from websockets.exceptions import ConnectionClosed as _ClientClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from django_websocket.exceptions import CloseCode, ConnectionClosed
from django_websocket.hub import close_all, get_hub
from django_websocket.server import ThreadedWebSocketWSGIServer

__all__ = ["LiveServer", "WebSocketClient"]

DEFAULT_TIMEOUT = 5.0


class LiveServer:
    """The library's threaded server, running in a thread of this process.

    Attributes:
        url: ``http://host:port`` once started.
        ws_url: ``ws://host:port`` once started.
        port: The port it listens on.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, static: bool = True):
        self.host = host
        self.port = port
        self.static = static
        self._server: ThreadedWebSocketWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._shared: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind, then serve in a daemon thread. Returns self."""
        override = {}
        for conn in connections.all():
            if conn.vendor == "sqlite" and conn.is_in_memory_db():  # type: ignore[attr-defined]
                conn.inc_thread_sharing()
                self._shared.append(conn)
                override[conn.alias] = conn
        handler: Any = WSGIHandler()
        if self.static and apps.is_installed("django.contrib.staticfiles"):
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            handler = StaticFilesHandler(handler)
        self._server = ThreadedWebSocketWSGIServer(
            (self.host, self.port),
            None,
            allow_reuse_address=False,
            connections_override=override,
        )
        self._server.set_app(handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"live-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close open WebSockets with 1001, stop serving and join the thread."""
        if self._server is None:
            return
        close_all(CloseCode.GOING_AWAY, "server shutting down")
        deadline = time.monotonic() + timeout
        while get_hub().connections() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server.shutdown()
        # Request threads share the test database connection: end them all
        # (idle keep-alive connections included) before it stops being shared.
        self._server.close_connections(max(0.0, deadline - time.monotonic()))
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        for conn in self._shared:
            conn.dec_thread_sharing()
        self._shared.clear()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class WebSocketClient:
    """A real WebSocket client for tests, used as a context manager.

    Args:
        server: A started ``LiveServer``, or a base URL such as
            ``"ws://127.0.0.1:8000"``.
        path: The path of the WebSocket view, with its query string.
        origin: The ``Origin`` header to send, if any.
        subprotocols: Subprotocols to offer.
        headers: Extra request headers (e.g. ``{"Cookie": ...}``).
        timeout: Default timeout in seconds for connecting and receiving.
        compression: ``"deflate"`` to offer permessage-deflate, or ``None``.
    """

    def __init__(
        self,
        server: LiveServer | str,
        path: str = "/",
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        compression: str | None = "deflate",
        max_size: int | None = None,
    ) -> None:
        base = server.ws_url if isinstance(server, LiveServer) else server.rstrip("/")
        self.url = base + path
        self.timeout = timeout
        self._connect = connect(
            self.url,
            origin=Origin(origin) if origin else None,
            subprotocols=[Subprotocol(p) for p in subprotocols]
            if subprotocols
            else None,
            additional_headers=headers,
            compression=compression,
            proxy=None,
            open_timeout=timeout,
            close_timeout=timeout,
            ping_interval=None,
            max_size=max_size,
        )
        self._connection: ClientConnection | None = None

    def __enter__(self) -> Self:
        self._connection = self._connect.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._connect.__exit__(exc_type, exc, traceback)

    @property
    def connection(self) -> ClientConnection:
        """The underlying ``websockets.sync.client.ClientConnection``."""
        if self._connection is None:
            raise RuntimeError("use WebSocketClient as a context manager")
        return self._connection

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected."""
        return self.connection.subprotocol

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        self.connection.send(message)

    def send_json(self, value: Any) -> None:
        self.send(json.dumps(value))

    def send_frame(self, opcode: Opcode, data: bytes, *, fin: bool = True) -> None:
        """Send one raw frame, e.g. invalid UTF-8 or a lone fragment, to test
        how a view copes with a misbehaving client."""
        connection = self.connection
        with connection.protocol_mutex:
            connection.protocol.send_frame(Frame(opcode, data, fin=fin))
            connection.send_data()

    def receive(self, timeout: float | None = None) -> str | bytes:
        """Return the next message.

        Raises:
            TimeoutError: If nothing arrives within *timeout* (default: the
                client's timeout).
            ConnectionClosed: If the server closed the connection.
        """
        try:
            return self.connection.recv(self.timeout if timeout is None else timeout)
        except _ClientClosed as err:
            raise ConnectionClosed(*self._close_info()) from err

    def receive_json(self, timeout: float | None = None) -> Any:
        return json.loads(self.receive(timeout))

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake from the client side."""
        self.connection.close(code, reason)

    def expect_close(self, timeout: float | None = None) -> int:
        """Wait for the server to close the connection and return the code.

        Raises:
            AssertionError: If a message arrives instead.
            TimeoutError: If the connection is still open after *timeout*.
        """
        try:
            message = self.connection.recv(self.timeout if timeout is None else timeout)
        except _ClientClosed:
            return self._close_info()[0]
        raise AssertionError(f"expected the server to close, received {message!r}")

    @property
    def close_code(self) -> int | None:
        """The close code the server sent, ``1006`` if none; ``None`` while open."""
        return self._close_info()[0] if self._closed() else None

    @property
    def close_reason(self) -> str | None:
        """The close reason the server sent; ``None`` while open."""
        return self._close_info()[1] if self._closed() else None

    def _closed(self) -> bool:
        from websockets.protocol import State

        return self.connection.protocol.state is State.CLOSED

    def _close_info(self) -> tuple[int, str]:
        received = self.connection.protocol.close_rcvd
        if received is None:
            return CloseCode.ABNORMAL_CLOSURE, ""
        return received.code, received.reason
