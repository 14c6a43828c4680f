"""The request type of a WebSocket view, for annotations."""

from __future__ import annotations

from django.http import HttpRequest

from django_websocket.websocket import WebSocket

__all__ = ["WebSocketRequest"]


class WebSocketRequest(HttpRequest):
    """``request`` as a WebSocket view sees it: ``request.websocket`` is set.

    Only for type annotations (``def view(request: WebSocketRequest)``); the
    object Django passes is its usual ``WSGIRequest``.
    """

    websocket: WebSocket

    def is_websocket(self) -> bool:
        """Tell whether the request was upgraded (set by the decorators)."""
        raise NotImplementedError("set on each request by the decorators")
