"""``WebSocketMiddleware``: the site-wide API of django-websocket 0.3.

With it in ``MIDDLEWARE``, every request has ``request.is_websocket()`` and
``request.websocket`` (``None`` until a WebSocket view accepts the
connection), and a WebSocket handshake to a view that is not a WebSocket view
gets a 400 with the reason. With ``WEBSOCKET_ACCEPT_ALL = True`` as well,
every view accepts WebSockets as if decorated with ``@accept_websocket``.

The decorators work without it; it exists for code written that way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from django_websocket.conf import get_setting
from django_websocket.decorators import _refuse, accept_websocket
from django_websocket.exceptions import HandshakeError
from django_websocket.handshake import is_upgrade_request

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Put it after the middleware a WebSocket view relies on (sessions,
    authentication): its ``process_view`` serves the socket, so the
    ``process_view`` of middleware listed below it does not run then."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        upgrade = is_upgrade_request(request)
        request.is_websocket = lambda: upgrade  # type: ignore[attr-defined]
        request.websocket = None  # type: ignore[attr-defined]
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not is_upgrade_request(request) or hasattr(view, "websocket_options"):
            return None  # plain HTTP, or a WebSocket view: it decides
        if get_setting("WEBSOCKET_ACCEPT_ALL"):
            response: HttpResponseBase = accept_websocket(view)(
                request, *args, **kwargs
            )
            return response
        return _refuse(
            request,
            HandshakeError(
                400,
                f"{request.path} does not accept WebSocket connections "
                "(not a WebSocket view, and WEBSOCKET_ACCEPT_ALL is off)",
            ),
        )
