"""Exceptions raised by django_websocket.

Hierarchy::

    WebSocketError
    ├── HandshakeError      the request cannot become a WebSocket (carries
    │                       the HTTP status and the reason sent to the client)
    ├── ConnectionClosed    the connection is closed (carries the close code
    │                       and reason)
    └── BroadcastError      a groups backend cannot publish (e.g. Redis is
                            unreachable)

``CloseCode`` is re-exported from ``websockets.frames``: the registered close
codes of RFC 6455 section 7.4 as an ``IntEnum``.
"""

from __future__ import annotations

from websockets.frames import CloseCode

__all__ = [
    "BroadcastError",
    "CloseCode",
    "ConnectionClosed",
    "HandshakeError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of the library's exceptions."""


class HandshakeError(WebSocketError):
    """The opening handshake was refused.

    Attributes:
        status: HTTP status code of the refusal (400, 403, 405, 426, 501).
        reason: Human-readable reason, sent as the response body.
        headers: Extra response headers, e.g. ``Sec-WebSocket-Version``.
    """

    def __init__(
        self, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed; nothing more can be sent.

    Attributes:
        code: The close code (a ``CloseCode`` member when registered).
        reason: The close reason, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class BroadcastError(WebSocketError):
    """A groups backend could not publish a message; nobody received it."""
