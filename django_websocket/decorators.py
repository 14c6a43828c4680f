"""``@require_websocket`` and ``@accept_websocket``: WebSocket views.

Both work bare or with options; an option left out falls back to its
``WEBSOCKET_*`` setting, then to the default in ``conf.py``::

    @require_websocket
    def echo(request): ...

    @accept_websocket(subprotocols=["chat.v1"], max_message_size=64 * 1024)
    def chat(request): ...

The decorated view runs inside Django's whole request stack (middleware,
sessions, ``request.user``) in the connection's own thread, outside any
``ATOMIC_REQUESTS`` transaction (one transaction for a socket's whole life
would hide its writes from everyone and hold the database's locks). It
returns nothing: once it returns, a session it modified is saved under the
client's existing session key, then the closing handshake completes (1000,
or 1011 if it raised, logged with the traceback) and the server writes
nothing more.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, overload

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.log import log_response
from websockets.protocol import State

from django_websocket.admission import Ticket, admit
from django_websocket.conf import get_setting
from django_websocket.connection import SocketWebSocket
from django_websocket.exceptions import CloseCode, ConnectionClosed, HandshakeError
from django_websocket.handshake import is_upgrade_request, perform_handshake
from django_websocket.inbox import Engine
from django_websocket.transport import ACCEPT_KEY, UpgradeResponse, take_over
from django_websocket.websocket import WebSocket

__all__ = ["accept_websocket", "require_websocket"]

logger = logging.getLogger("django_websocket")

P = ParamSpec("P")
# What the decorators take, and what they give back: a view Django's URL
# resolver accepts (it answers with a response), whatever the view returns.
View = Callable[P, object]
DjangoView = Callable[P, HttpResponseBase]

# Decorator keyword argument -> setting it overrides.
_OPTIONS = {
    "allowed_origins": "WEBSOCKET_ALLOWED_ORIGINS",
    "require_origin": "WEBSOCKET_REQUIRE_ORIGIN",
    "max_message_size": "WEBSOCKET_MAX_MESSAGE_SIZE",
    "ping_interval": "WEBSOCKET_PING_INTERVAL",
    "ping_timeout": "WEBSOCKET_PING_TIMEOUT",
    "close_timeout": "WEBSOCKET_CLOSE_TIMEOUT",
    "compression": "WEBSOCKET_COMPRESSION",
    "max_send_backlog": "WEBSOCKET_MAX_SEND_BACKLOG",
    "max_queue": "WEBSOCKET_MAX_QUEUE",
    "max_fragments": "WEBSOCKET_MAX_FRAGMENTS",
    "max_control_rate": "WEBSOCKET_MAX_CONTROL_RATE",
    "subprotocols": "WEBSOCKET_SUBPROTOCOLS",
}


@overload
def require_websocket(view: View[P], /) -> DjangoView[P]: ...
@overload
def require_websocket(**options: Any) -> Callable[[View[P]], DjangoView[P]]: ...
def require_websocket(view: Any = None, /, **options: Any) -> Any:
    """Serve *view* over WebSocket only; any other request gets a 400.

    Options (all optional): ``subprotocols``, ``allowed_origins``,
    ``require_origin``, ``max_message_size``, ``ping_interval``,
    ``ping_timeout``, ``close_timeout``, ``compression``, ``max_send_backlog``,
    ``max_queue``, ``max_fragments``, ``max_control_rate``.
    """
    return _decorate(view, options, required=True)


@overload
def accept_websocket(view: View[P], /) -> DjangoView[P]: ...
@overload
def accept_websocket(**options: Any) -> Callable[[View[P]], DjangoView[P]]: ...
def accept_websocket(view: Any = None, /, **options: Any) -> Any:
    """Serve *view* over WebSocket and plain HTTP alike.

    ``request.is_websocket()`` tells which; for plain HTTP
    ``request.websocket`` is ``None`` and the view returns a response as
    usual. Takes the same options as ``require_websocket``.
    """
    return _decorate(view, options, required=False)


def _decorate(view: Any, options: dict[str, Any], *, required: bool) -> Any:
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(
            f"unexpected option(s) {sorted(unknown)}; "
            f"expected some of {sorted(_OPTIONS)}"
        )
    if view is None:
        return lambda view: _decorate(view, options, required=required)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not is_upgrade_request(request):
            request.websocket = None  # type: ignore[attr-defined]
            request.is_websocket = _false  # type: ignore[attr-defined]
            if required:
                return _refuse(
                    request,
                    HandshakeError(
                        400,
                        "This URL only accepts WebSocket connections "
                        "(no 'Upgrade: websocket' header in the request)",
                    ),
                )
            return _atomic_as_django_would(view)(request, *args, **kwargs)
        return _serve(view, request, _resolve(options), args, kwargs)

    wrapper.websocket_options = options  # type: ignore[attr-defined]
    # Django wraps views in a transaction per database with ATOMIC_REQUESTS
    # unless the alias is in this set; the wrapper applies them itself to
    # plain HTTP requests only.
    wrapper._non_atomic_requests = _EVERY_DATABASE  # type: ignore[attr-defined]
    return wrapper


class _EveryDatabase(frozenset[str]):
    """Contains every database alias."""

    def __contains__(self, alias: object) -> bool:
        return True


_EVERY_DATABASE = _EveryDatabase()


def _atomic_as_django_would(view: Callable[..., Any]) -> Callable[..., Any]:
    """*view* wrapped as Django's handler wraps views (``make_view_atomic``)."""
    exempt: set[str] = getattr(view, "_non_atomic_requests", set())
    for alias, database in connections.settings.items():
        if database.get("ATOMIC_REQUESTS") and alias not in exempt:
            view = transaction.atomic(using=alias)(view)
    return view


def _resolve(options: dict[str, Any]) -> dict[str, Any]:
    """Decorator argument, else setting, else default; read per request."""
    return {
        name: options[name] if name in options else get_setting(setting)
        for name, setting in _OPTIONS.items()
    }


def _serve(
    view: Callable[..., Any],
    request: HttpRequest,
    options: dict[str, Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> HttpResponse:
    try:
        websocket, response_class, ticket = _open(request, options)
    except HandshakeError as error:
        return _refuse(request, error)
    del options  # an open connection keeps only what it uses
    request.websocket = websocket  # type: ignore[attr-defined]
    request.is_websocket = _true  # type: ignore[attr-defined]
    session = getattr(request, "session", None)
    # The key the client's cookie names: the one place its changes can go.
    session_key = session.session_key if isinstance(session, SessionBase) else None
    code, reason = CloseCode.NORMAL_CLOSURE, ""
    interrupted = False
    try:
        # The client leaving while the view was sending is a normal end.
        with contextlib.suppress(ConnectionClosed):
            view(request, *args, **kwargs)
        if isinstance(session, SessionBase):
            _save_session(request, session, session_key)
    except Exception:
        logger.exception(
            "WebSocket view %s raised", request.path, extra={"request": request}
        )
        code, reason = CloseCode.INTERNAL_ERROR, "internal server error"
        if isinstance(session, SessionBase):
            session.modified = False  # as Django saves nothing on a 500
    except BaseException:
        # The process is ending under the view: SystemExit from a signal
        # handler (under gevent it lands in whichever greenlet runs), or
        # GreenletExit when gevent kills the handlers.
        code, reason = CloseCode.GOING_AWAY, "server shutting down"
        interrupted = True
        raise
    finally:
        websocket.finish(code, reason)
        ticket.release()
        if interrupted:
            websocket.release()  # no response will be closed for it
    return response_class(websocket)


def _open(
    request: HttpRequest, options: dict[str, Any]
) -> tuple[WebSocket, type[UpgradeResponse], Ticket]:
    """Complete the handshake and take the socket over; return the open
    connection, the response class for when the view is done and the
    connection's place in this process's limit."""
    handshake = perform_handshake(
        request,
        subprotocols=options["subprotocols"],
        allowed_origins=options["allowed_origins"],
        require_origin=options["require_origin"],
        compression=options["compression"],
    )
    ticket = admit(request.META.get("REMOTE_ADDR"))
    try:
        accept = request.META.get(ACCEPT_KEY)
        if accept is not None:  # under an ASGI server (asgi.py): no socket
            websocket = accept(
                path=request.path,
                subprotocol=handshake.subprotocol,
                max_message_size=options["max_message_size"],
                max_send_backlog=options["max_send_backlog"],
                max_queue=options["max_queue"],
                send_timeout=options["ping_timeout"] or options["close_timeout"],
            )
            return websocket, UpgradeResponse, ticket
        transport = take_over(request)
        protocol = Engine(
            state=State.OPEN,
            max_size=options["max_message_size"],
            max_fragments=options["max_fragments"],
            max_control_rate=options["max_control_rate"],
        )
        protocol.extensions = handshake.extensions
        websocket = SocketWebSocket(
            transport.socket,
            protocol,
            path=request.path,
            subprotocol=handshake.subprotocol,
            ping_interval=options["ping_interval"],
            ping_timeout=options["ping_timeout"],
            close_timeout=options["close_timeout"],
            max_send_backlog=options["max_send_backlog"],
            max_queue=options["max_queue"],
        )
        websocket.start(handshake.response, transport.buffered)
    except BaseException:
        ticket.release()
        raise
    return websocket, transport.response_class, ticket


def _save_session(
    request: HttpRequest, session: SessionBase, cookie_key: str | None
) -> None:
    """Save a session the view changed under the key the client's cookie
    names; leave nothing for SessionMiddleware to save, since no cookie can
    follow the ``101`` (a new key would be a row no client ever comes back
    for)."""
    if not (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
        return
    if cookie_key is None or session.session_key is None:
        if session.modified:
            logger.warning(
                "WebSocket view %s changed a session the client has no cookie "
                "for; it is not saved, since no cookie can follow the 101",
                request.path,
                extra={"request": request},
            )
        session.clear()  # empty and keyless: SessionMiddleware saves nothing
        session.modified = False
        return
    if session.session_key != cookie_key:
        logger.warning(
            "WebSocket view %s gave the session a new key (login(), "
            "cycle_key()); the client's cookie still names the old one, since "
            "no cookie can follow the 101",
            request.path,
            extra={"request": request},
        )
        session.modified = False
        return
    try:
        session.save()
    except UpdateError:
        logger.warning(
            "WebSocket view %s: the session ended meanwhile (logout or "
            "expiry elsewhere); the view's changes are not saved",
            request.path,
            extra={"request": request},
        )
    else:
        if session.session_key != cookie_key:
            logger.warning(
                "WebSocket view %s: this session backend keeps the session in "
                "its cookie, so changes made after the 101 are lost",
                request.path,
                extra={"request": request},
            )
    session.modified = False


def _true() -> bool:
    return True


def _false() -> bool:
    return False


def _refuse(request: HttpRequest, error: HandshakeError) -> HttpResponse:
    response = HttpResponse(
        error.reason + "\n",
        status=error.status,
        content_type="text/plain; charset=utf-8",
    )
    for name, value in error.headers.items():
        response[name] = value
    log_response(
        "WebSocket handshake refused (%s): %s",
        request.path,
        error.reason,
        response=response,
        request=request,
    )
    return response
