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
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain
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
    protocol = meta.get("SERVER_PROTOCOL", "")
    if not _at_least_http_11(protocol):
        raise HandshakeError(
            400, f"WebSocket handshake requires HTTP/1.1 or later, got {protocol!r}"
        )
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
    _check_origin(request, allowed_origins, require_origin)

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


def _at_least_http_11(protocol: str) -> bool:
    name, _, version = protocol.partition("/")
    major, _, minor = version.partition(".")
    if name != "HTTP" or not major.isdigit() or not (minor or "0").isdigit():
        return False
    return (int(major), int(minor or "0")) >= (1, 1)


def _tokens(header: str) -> list[str]:
    return [token.strip().lower() for token in header.split(",") if token.strip()]


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (UnicodeEncodeError, binascii.Error):
        return False


def _check_origin(
    request: HttpRequest, allowed_origins: Sequence[str], require_origin: bool
) -> None:
    """Refuse cross-site handshakes (Cross-Site WebSocket Hijacking).

    The rule is Django's CSRF origin check: the Origin must be the request's
    own scheme, host and port, or one of ``CSRF_TRUSTED_ORIGINS`` or
    *allowed_origins* (exact, ``https://*.example.com`` for subdomains, or
    ``"*"`` for any). ``Origin: null`` passes only when listed as ``"null"``.
    """
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        if require_origin:
            raise HandshakeError(403, "Missing Origin header (this view requires one)")
        return
    if origin == "null":
        if "null" in allowed_origins:
            return
        raise HandshakeError(
            403,
            "origin null (a sandboxed frame or a local file) is refused unless "
            "'null' is in WEBSOCKET_ALLOWED_ORIGINS",
        )
    own = _own_origin(request)
    if origin == own:
        return
    trusted = [*settings.CSRF_TRUSTED_ORIGINS, *allowed_origins]
    if "*" in allowed_origins or _trusted(origin, trusted):
        return
    expected = own if own is not None else "this site (its host is not allowed)"
    also = " nor CSRF_TRUSTED_ORIGINS or WEBSOCKET_ALLOWED_ORIGINS" if trusted else ""
    raise HandshakeError(403, f"origin {origin} does not match {expected}{also}")


def _own_origin(request: HttpRequest) -> str | None:
    """``scheme://host[:port]`` of the request, as CsrfViewMiddleware sees it
    (so SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST apply)."""
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'https' if request.is_secure() else 'http'}://{host}"


def _trusted(origin: str, trusted: Sequence[str]) -> bool:
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        # urlsplit() raises on a broken IPv6 literal such as "http://[".
        return False
    for pattern in trusted:
        if "*" not in pattern or pattern == "*":
            continue
        allowed = urlsplit(pattern)
        if allowed.scheme == parsed.scheme and is_same_domain(
            parsed.netloc, allowed.netloc.lstrip("*")
        ):
            return True
    return False


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
