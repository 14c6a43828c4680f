"""Validation of the opening handshake (RFC 6455 section 4.2.1).

Reads the upgrade request from Django's ``request.META``, checks it and
negotiates the subprotocol and permessage-deflate (RFC 7692), producing the
bytes of the ``101 Switching Protocols`` response. Every refusal is a
``HandshakeError`` carrying the HTTP status and a reason that names the
offending value. This module does not touch the socket.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.headers import parse_subprotocol
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from django_websocket.exceptions import HandshakeError

__all__ = ["Handshake", "is_upgrade_request", "perform_handshake"]

SUPPORTED_VERSION = "13"


@dataclass
class Handshake:
    """The outcome of an accepted handshake."""

    response: bytes
    subprotocol: str | None = None
    extensions: list[Extension] = field(default_factory=list)


def is_upgrade_request(request: HttpRequest) -> bool:
    """Tell whether *request* asks to be upgraded to a WebSocket."""
    return "websocket" in _tokens(request.META.get("HTTP_UPGRADE", ""))


def perform_handshake(
    request: HttpRequest,
    *,
    subprotocols: Sequence[str],
    allowed_origins: Sequence[str],
    require_origin: bool,
    compression: bool,
) -> Handshake:
    """Validate the upgrade request and build the ``101`` response.

    Raises:
        HandshakeError: If the request is not a valid WebSocket handshake
            (400, 405 or 426) or its origin is not allowed (403).
    """
    meta = request.META
    connection = meta.get("HTTP_CONNECTION", "")
    if "upgrade" not in _tokens(connection):
        raise HandshakeError(
            400, f"Connection header must contain 'upgrade', got {connection!r}"
        )
    upgrade = meta.get("HTTP_UPGRADE", "")
    if _tokens(upgrade) != ["websocket"]:
        raise HandshakeError(
            400, f"Upgrade header must be 'websocket', got {upgrade!r}"
        )
    if request.method != "GET":
        raise HandshakeError(
            405,
            f"WebSocket handshake must use GET, not {request.method}",
            {"Allow": "GET"},
        )
    version = meta.get("HTTP_SEC_WEBSOCKET_VERSION")
    if version is None:
        raise HandshakeError(400, "Missing Sec-WebSocket-Version header")
    if version.strip() != SUPPORTED_VERSION:
        raise HandshakeError(
            426,
            f"Unsupported Sec-WebSocket-Version {version!r}; this server speaks 13",
            {"Sec-WebSocket-Version": SUPPORTED_VERSION},
        )
    key = meta.get("HTTP_SEC_WEBSOCKET_KEY")
    if key is None:
        raise HandshakeError(400, "Missing Sec-WebSocket-Key header")
    if not _valid_key(key):
        raise HandshakeError(
            400, f"Invalid Sec-WebSocket-Key {key!r}: must be 16 bytes in base64"
        )
    _check_origin(meta.get("HTTP_ORIGIN"), allowed_origins, require_origin)

    headers = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    handshake = Handshake(response=b"")
    offered = meta.get("HTTP_SEC_WEBSOCKET_PROTOCOL")
    if offered and subprotocols:
        handshake.subprotocol = _select_subprotocol(offered, subprotocols)
        if handshake.subprotocol is not None:
            headers.append(f"Sec-WebSocket-Protocol: {handshake.subprotocol}")
    offered_extensions = meta.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    if offered_extensions and compression:
        header, handshake.extensions = _negotiate_extensions(offered_extensions)
        if header is not None:
            headers.append(f"Sec-WebSocket-Extensions: {header}")
    handshake.response = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    return handshake


def _tokens(header: str) -> list[str]:
    return [token.strip().lower() for token in header.split(",") if token.strip()]


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (UnicodeEncodeError, binascii.Error):
        return False


def _check_origin(
    origin: str | None, allowed_origins: Sequence[str], require_origin: bool
) -> None:
    """Refuse cross-site handshakes (Cross-Site WebSocket Hijacking)."""
    if origin is None:
        if require_origin:
            raise HandshakeError(403, "Missing Origin header")
        return
    if "*" in allowed_origins or origin in allowed_origins:
        return
    try:
        host, _ = (
            split_domain_port(urlsplit(origin).netloc) if origin != "null" else ("", "")
        )
    except ValueError:
        # urlsplit() raises on a broken IPv6 literal such as "http://[".
        host = ""
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        # Django's own rule for an empty ALLOWED_HOSTS in DEBUG.
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if host and validate_host(host, allowed_hosts):
        return
    raise HandshakeError(403, f"Origin {origin!r} is not allowed")


def _select_subprotocol(offered: str, subprotocols: Sequence[str]) -> str | None:
    try:
        client = parse_subprotocol(offered)
    except InvalidHandshake as err:
        raise HandshakeError(
            400, f"Invalid Sec-WebSocket-Protocol {offered!r}"
        ) from err
    for candidate in subprotocols:
        if candidate in client:
            return candidate
    return None


def _negotiate_extensions(offered: str) -> tuple[str | None, list[Extension]]:
    # Small windows and memLevel keep each connection's zlib state near
    # 64 KiB instead of 256 KiB, as websockets' own servers do.
    factory = ServerPerMessageDeflateFactory(
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )
    negotiator = ServerProtocol(extensions=[factory])
    headers = Headers()
    try:
        # Assigning validates too: control characters raise here.
        headers["Sec-WebSocket-Extensions"] = offered
        return negotiator.process_extensions(headers)
    except InvalidHandshake as err:
        raise HandshakeError(
            400, f"Invalid Sec-WebSocket-Extensions {offered!r}: {err}"
        ) from err
