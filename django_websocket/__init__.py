"""WebSockets in plain Django views.

    from django_websocket import require_websocket

    @require_websocket
    def echo(request):
        for message in request.websocket:   # ends when the client closes
            request.websocket.send(message)

Copy this folder into a project, add ``"django_websocket"`` to
``INSTALLED_APPS`` before ``django.contrib.staticfiles``, and ``runserver``
serves WebSocket views; gunicorn does in production.
"""

from __future__ import annotations

from django.http import HttpRequest

from django_websocket.connection import Message, WebSocket
from django_websocket.decorators import accept_websocket, require_websocket
from django_websocket.exceptions import (
    CloseCode,
    ConnectionClosed,
    HandshakeError,
    WebSocketError,
)
from django_websocket.hub import close_all

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "HandshakeError",
    "Message",
    "WebSocket",
    "WebSocketError",
    "WebSocketRequest",
    "accept_websocket",
    "close_all",
    "require_websocket",
]


class WebSocketRequest(HttpRequest):
    """Type of ``request`` in a WebSocket view, for annotations only."""

    websocket: WebSocket

    def is_websocket(self) -> bool:  # pragma: no cover - set per request
        return True
