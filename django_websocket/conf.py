"""Library settings: the defaults and the one function that reads them.

Settings are read when they are needed, never at import time, so
``override_settings`` and pytest-django's ``settings`` fixture apply. A view's
decorator arguments win over settings, which win over these defaults.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Origins allowed besides the site's own and CSRF_TRUSTED_ORIGINS, in the
    # same syntax: ["https://app.example.com", "https://*.example.com"];
    # "*" allows any origin, "null" the origin of sandboxed frames and files.
    "WEBSOCKET_ALLOWED_ORIGINS": [],
    # Refuse handshakes without an Origin header (non-browser clients).
    "WEBSOCKET_REQUIRE_ORIGIN": False,
    # Largest incoming message, in bytes, after decompression; None: no limit.
    "WEBSOCKET_MAX_MESSAGE_SIZE": 1024 * 1024,
    # Seconds between keepalive pings, and how long to wait for the pong.
    "WEBSOCKET_PING_INTERVAL": 20.0,
    "WEBSOCKET_PING_TIMEOUT": 20.0,
    # Seconds a client may take to send its request headers (runserver).
    "WEBSOCKET_HANDSHAKE_TIMEOUT": 10.0,
    # Seconds to wait for the client to complete the closing handshake.
    "WEBSOCKET_CLOSE_TIMEOUT": 5.0,
    # Negotiate permessage-deflate (RFC 7692) when the client offers it.
    "WEBSOCKET_COMPRESSION": True,
    # Bytes queued for a client that reads too slowly before it is dropped.
    "WEBSOCKET_MAX_SEND_BACKLOG": 4 * 1024 * 1024,
    # Unread messages at which the connection stops reading its socket
    # until the view reads; None: no limit.
    "WEBSOCKET_MAX_QUEUE": 16,
    # Frames one fragmented message may take (empty ones count); None: no limit.
    "WEBSOCKET_MAX_FRAGMENTS": 1024,
    # Pings and pongs a client may send per second (bursts of as many).
    "WEBSOCKET_MAX_CONTROL_RATE": 100.0,
    # Subprotocols a view accepts, in order of preference.
    "WEBSOCKET_SUBPROTOCOLS": [],
    # With WebSocketMiddleware installed: every view accepts WebSockets, as
    # if decorated with @accept_websocket (django-websocket 0.3's setting).
    "WEBSOCKET_ACCEPT_ALL": False,
    # Open WebSockets per process: past it a handshake gets 503. "auto": a
    # share of the gunicorn worker's threads or connections (admission.py);
    # None: no limit.
    "WEBSOCKET_MAX_CONNECTIONS": "auto",
    # Open WebSockets per client address (REMOTE_ADDR); None: no limit.
    # Behind a proxy every client has the proxy's address: leave it off.
    "WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS": None,
    # Groups backend, shaped like CACHES["default"].
    "WEBSOCKET_GROUPS": {"BACKEND": "django_websocket.groups.local.LocalBackend"},
}


def get_setting(name: str) -> Any:
    """Return the project's value for setting *name*, or its default."""
    return getattr(settings, name, DEFAULTS[name])
