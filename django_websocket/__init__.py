"""WebSockets in plain Django views.

    from django_websocket import require_websocket

    @require_websocket
    def echo(request):
        for message in request.websocket:   # ends when the client closes
            request.websocket.send(message)

Copy this folder into a project, add ``"django_websocket"`` to
``INSTALLED_APPS`` before ``django.contrib.staticfiles``, and ``runserver``
serves WebSocket views; gunicorn does in production.

Names are imported on first use, so that importing ``django_websocket.hooks``
from a gunicorn config file does not import Django before gevent patches
the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_websocket import groups
    from django_websocket.decorators import accept_websocket, require_websocket
    from django_websocket.exceptions import (
        BroadcastError,
        CloseCode,
        ConnectionClosed,
        HandshakeError,
        WebSocketError,
    )
    from django_websocket.hub import close_all
    from django_websocket.request import WebSocketRequest
    from django_websocket.websocket import Message, WebSocket

__all__ = [
    "BroadcastError",
    "CloseCode",
    "ConnectionClosed",
    "HandshakeError",
    "Message",
    "WebSocket",
    "WebSocketError",
    "WebSocketRequest",
    "accept_websocket",
    "close_all",
    "groups",
    "require_websocket",
]

_LOCATIONS = {
    "BroadcastError": "exceptions",
    "CloseCode": "exceptions",
    "ConnectionClosed": "exceptions",
    "HandshakeError": "exceptions",
    "Message": "websocket",
    "WebSocket": "websocket",
    "WebSocketError": "exceptions",
    "WebSocketRequest": "request",
    "accept_websocket": "decorators",
    "close_all": "hub",
    "groups": "groups",
    "require_websocket": "decorators",
}


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'django_websocket' has no attribute {name!r}")
    module = importlib.import_module(f"django_websocket.{_LOCATIONS[name]}")
    value = module if name == "groups" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
