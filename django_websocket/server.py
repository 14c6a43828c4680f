"""The threaded WSGI server behind ``runserver`` and the test server.

Django's development server with one change: a request that a WebSocket
view upgraded hands its socket to the view and gets nothing written after
it, no HTTP response and no keep-alive loop. Like Django's own server, it
is meant for development and tests. DON'T USE IT FOR PRODUCTION USE; use
gunicorn there.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from typing import Any, cast

from django.core.servers import basehttp

from django_websocket.conf import get_setting
from django_websocket.hub import TimerHandle, get_hub
from django_websocket.transport import SOCKET_KEY, TAKE_BUFFERED_KEY, UPGRADED_KEY

__all__ = [
    "ThreadedWebSocketWSGIServer",
    "cut_off",
    "WebSocketRequestHandler",
    "WebSocketServerHandler",
    "WebSocketWSGIServer",
]


class WebSocketServerHandler(basehttp.ServerHandler):
    """Writes nothing once the view has taken the socket over."""

    request_handler: WebSocketRequestHandler
    environ: dict[str, Any]

    def finish_response(self) -> None:
        if self.environ.get(UPGRADED_KEY):
            self.request_handler.close_connection = True
            self.close()
            return
        super().finish_response()


class WebSocketRequestHandler(basehttp.WSGIRequestHandler):
    """Puts the socket of an upgrade request in the environ, and cuts off
    clients that take longer than ``WEBSOCKET_HANDSHAKE_TIMEOUT`` to send
    their request headers (a trickling client would pin a thread forever)."""

    # Incremented per request; a deadline fires only for the request it was
    # armed for.
    _request_number = 0
    # The pending deadline call, cancelled once the headers are in so that
    # the hub's timer heap does not keep this handler (and its buffers).
    _deadline: TimerHandle | None = None
    requestline_ok = False

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if "websocket" in self.headers.get("Upgrade", "").lower():
            # Never read the WebSocket stream as a next HTTP request, even
            # when the view fails before the handshake completes.
            self.close_connection = True
            environ[SOCKET_KEY] = self.connection
            environ[TAKE_BUFFERED_KEY] = self._take_buffered
        return environ

    def _take_buffered(self) -> bytes:
        """Return the bytes the request reader buffered past the headers."""
        cast(socket.socket, self.connection).setblocking(False)
        try:
            return self.rfile.read1(65536) or b""
        except OSError:
            return b""

    def _arm_deadline(self) -> None:
        self._request_number += 1
        number = self._request_number
        timeout = get_setting("WEBSOCKET_HANDSHAKE_TIMEOUT")
        if timeout:
            when = time.monotonic() + timeout
            self._deadline = get_hub().call_at(
                when, lambda: self._headers_timed_out(number)
            )

    def _headers_timed_out(self, number: int) -> None:
        if number == self._request_number:
            cut_off(cast(socket.socket, self.connection))

    def handle_one_request(self) -> None:
        # Django's handle_one_request() with WebSocketServerHandler, and a
        # deadline on reading the request line and headers.
        self._arm_deadline()
        try:
            self._read_request_head()
        finally:
            self._request_number += 1  # disarms the deadline
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
        if not self.requestline_ok:
            return
        handler = WebSocketServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ()
        )
        handler.request_handler = self
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def _read_request_head(self) -> None:
        self.requestline_ok = False
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        self.requestline_ok = bool(self.parse_request())


class WebSocketWSGIServer(basehttp.WSGIServer):
    """Django's WSGIServer serving requests with WebSocketRequestHandler."""

    def shutdown_request(self, request: Any) -> None:
        # socketserver shuts a request down from the main thread when an
        # exception escapes process_request(). A CTRL-C or SIGTERM raises
        # KeyboardInterrupt or SystemExit wherever the main thread is, also
        # while it waits for a new request thread to start; that thread
        # owns the socket by then, and its WebSocket is about to be closed
        # with 1001: shutting the socket down under it would drop the
        # close frame (the client saw 1006). Whatever thread remains goes
        # with the process.
        exception = sys.exc_info()[1]
        if (
            threading.current_thread() is threading.main_thread()
            and exception is not None
            and not isinstance(exception, Exception)
        ):
            return
        super().shutdown_request(request)

    # Django's 10 makes the kernel drop connections when many clients (a
    # page of reconnecting sockets, say) arrive at once.
    request_queue_size = 1024

    def __init__(
        self, server_address: Any, handler_class: Any, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(server_address, WebSocketRequestHandler, *args, **kwargs)


class ThreadedWebSocketWSGIServer(basehttp.ThreadedWSGIServer):
    """Django's ThreadedWSGIServer (one daemon thread per connection, shared
    test database connections) serving requests with WebSocketRequestHandler.

    It also keeps track of its open connections, so that ``close_connections()``
    can end every request thread (keep-alive ones included) before the test
    database they share goes away.
    """

    request_queue_size = 1024

    def __init__(
        self, server_address: Any, handler_class: Any, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(server_address, WebSocketRequestHandler, *args, **kwargs)
        # Protects _open: connection socket -> the thread serving it.
        self._open_lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            daemon=True,
        )
        with self._open_lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        # Forgotten only once the thread has closed its database
        # connections (in close_request), so close_connections() waits for
        # that too: after it, the test database is no longer shared.
        try:
            super().shutdown_request(request)
        finally:
            with self._open_lock:
                self._open.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Disconnect every open connection and wait for their threads."""
        with self._open_lock:
            open_connections = list(self._open.items())
        for sock, _ in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_connections:
            thread.join(max(0.0, deadline - time.monotonic()))


def cut_off(sock: socket.socket) -> None:
    """Answer 408 to a client too slow to send its request headers, and
    disconnect it. Runs in the hub thread, which must never block:
    MSG_DONTWAIT, and a client whose receive buffer is full simply gets no
    408 before the disconnect."""
    with contextlib.suppress(OSError):
        sock.send(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n",
            socket.MSG_DONTWAIT,
        )
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
