"""Taking the client's socket over from the WSGI server.

Supported servers:

- the library's ``runserver`` and test server (``server.py``), which put the
  socket in ``environ["django_websocket.socket"]`` and write nothing after an
  upgraded request;
- gunicorn's gthread and gevent workers, through ``environ["gunicorn.socket"]``;
  the view's response then stops gunicorn from writing (see
  ``_GunicornUpgradeResponse``).

An ASGI server has no socket to give: ``asgi.py`` puts a callable in
``environ["django_websocket.accept"]`` that opens the connection in memory
(``bridge.py``).

Under any other server the handshake is refused with 501 and a reason naming
the servers that work.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from django.http import HttpRequest, HttpResponse

from django_websocket.exceptions import HandshakeError

if TYPE_CHECKING:
    from django_websocket.websocket import WebSocket

__all__ = [
    "ACCEPT_KEY",
    "SOCKET_KEY",
    "TAKE_BUFFERED_KEY",
    "UPGRADED_KEY",
    "Transport",
    "UpgradeResponse",
    "take_over",
]

# Keys the library's own WSGI server puts in the environ (server.py).
SOCKET_KEY = "django_websocket.socket"
TAKE_BUFFERED_KEY = "django_websocket.take_buffered"
UPGRADED_KEY = "django_websocket.upgraded"
# The key the ASGI application puts in the environ (asgi.py).
ACCEPT_KEY = "django_websocket.accept"


class UpgradeResponse(HttpResponse):
    """What the decorator returns once a WebSocket view is done.

    The server calls ``close()`` when it is done with the request (after
    its access log line); only then does the connection leave the hub's
    registry, so that a shutdown in between still waits for it.
    """

    status_code = 101

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__()
        self.websocket: WebSocket | None = websocket

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.websocket is not None:
                self.websocket.release()
                self.websocket = None


class _UpgradedResponse(UpgradeResponse):
    """Returned under runserver: the server recognises the upgraded
    request and writes nothing."""


class _GunicornUpgradeResponse(UpgradeResponse):
    """Returned after a WebSocket view under gunicorn.

    gunicorn iterates the response to write it. Raising ``StopIteration``
    from ``__iter__`` (not from ``__next__``) escapes its ``for`` loop, and
    gunicorn's workers treat it as "close the connection, write nothing";
    ``close()`` still runs, so Django's ``request_finished`` fires.
    """

    status_code = 101

    def __iter__(self) -> NoReturn:
        raise StopIteration("websocket finished")


@dataclass
class Transport:
    """The socket of an upgraded request and what the server had read ahead."""

    socket: socket.socket
    buffered: bytes
    # What the view returns once the socket is done with; instantiated only
    # then, so an open connection does not hold a response object.
    response_class: type[UpgradeResponse]


def take_over(request: HttpRequest) -> Transport:
    """Take the raw socket of *request* from the WSGI server.

    The socket is switched to non-blocking mode, and a TCP socket to
    ``TCP_NODELAY``.

    Raises:
        HandshakeError: 501 if the server does not expose its socket.
    """
    environ: dict[str, Any] = request.META
    if SOCKET_KEY in environ:
        sock = environ[SOCKET_KEY]
        buffered = environ[TAKE_BUFFERED_KEY]()
        environ[UPGRADED_KEY] = True
        response_class: type[UpgradeResponse] = _UpgradedResponse
    elif "gunicorn.socket" in environ:
        sock = environ["gunicorn.socket"]
        buffered = _gunicorn_buffered(environ)
        response_class = _GunicornUpgradeResponse
    else:
        raise HandshakeError(
            501,
            "This server cannot hand its socket to a WebSocket view; use "
            "django_websocket's runserver, gunicorn (gthread or gevent) or "
            "an ASGI server with django_websocket.asgi",
        )
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Frames go out as they are written: Nagle's algorithm would hold a
        # small frame back until the client acknowledged the previous one
        # (up to its delayed-ACK timeout). gunicorn sets this on its
        # listening socket already; runserver does not.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Transport(socket=sock, buffered=buffered, response_class=response_class)


def _gunicorn_buffered(environ: dict[str, Any]) -> bytes:
    # Bytes gunicorn's parser read past the request headers (a client may
    # send its first frame right behind the handshake). Private API, hence
    # getattr with a fallback.
    reader = getattr(environ.get("wsgi.input"), "reader", None)
    unreader = getattr(reader, "unreader", None)
    take = getattr(unreader, "take_buffered", None)
    if take is None:
        return b""
    data = take()
    return bytes(data) if data else b""
