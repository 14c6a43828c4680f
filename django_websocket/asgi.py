"""The same WebSocket views under an ASGI server (uvicorn, granian, daphne).

``get_asgi_application()`` serves HTTP through Django's own ``ASGIHandler``.
A WebSocket scope runs the site's WSGI stack (middleware, URL resolver, the
decorated view) in a thread of its own, as under runserver and gthread. The
decorator's handshake checks (origin, subprotocols, the process's limits)
are the same; once they pass, ``request.websocket`` is an ``AsgiWebSocket``
(``bridge.py``), which passes ASGI messages between the view's thread and
the event loop in memory, and the server gets ``websocket.accept``. A
refusal (400, 403, 503...) becomes an HTTP response where the server
supports the ``websocket.http.response`` extension, else a close before
accepting (which the server answers with 403).

The ASGI server speaks the protocol: frames, pings, permessage-deflate.
On lifespan shutdown every connection of the process gets 1001, as under
gunicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from django_websocket.bridge import AsgiWebSocket, Receive, Send
from django_websocket.transport import ACCEPT_KEY

__all__ = ["get_asgi_application"]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def get_asgi_application() -> ASGIApp:
    """The site's ASGI application: HTTP, WebSocket and lifespan scopes."""
    import django
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    django.setup(set_prefix=False)
    http = ASGIHandler()
    wsgi = WSGIHandler()

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            _close_first_on(signal.SIGTERM, signal.SIGINT)
            await _websocket(wsgi, scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await http(scope, receive, send)

    return application


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _close_first_on(signal.SIGTERM, signal.SIGINT)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _close_all()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _close_all() -> None:
    """Close every WebSocket of the process with 1001; wait for them to go,
    at most ``WEBSOCKET_CLOSE_TIMEOUT``."""
    from django_websocket.conf import get_setting
    from django_websocket.hub import close_all, connection_count

    close_all(1001, "server shutting down")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(get_setting("WEBSOCKET_CLOSE_TIMEOUT"))
    while connection_count() and loop.time() < deadline:
        await asyncio.sleep(0.05)


_wrapped: set[tuple[int, int]] = set()  # (id of the loop, signal) done


def _close_first_on(*signums: int) -> None:
    """Have the server's own handler of *signums* run only once the
    WebSockets are closed with 1001: servers close them themselves on the
    way out (uvicorn with 1012, granian and daphne by dropping them) before
    any lifespan shutdown comes, and daphne sends none.

    Done once per event loop, at the lifespan startup or, for a server
    without lifespan events, at the first WebSocket. A handler registered
    with the loop (granian's) is wrapped there; one set with
    ``signal.signal()`` (uvicorn's, twisted's under daphne) is replaced by
    a wrapper.
    """
    loop = asyncio.get_running_loop()
    # asyncio's own table of loop.add_signal_handler() handlers (private).
    registered: dict[int, asyncio.Handle] = getattr(loop, "_signal_handlers", {})
    for signum in signums:
        if (id(loop), signum) in _wrapped:
            continue
        _wrapped.add((id(loop), signum))
        handle = registered.get(signum)
        if handle is not None:
            callback: Callable[[], object] = functools.partial(
                handle._callback,  # type: ignore[attr-defined]
                *handle._args,
            )
            loop.add_signal_handler(signum, _close_then, loop, callback)
            continue
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def close_then(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(
                _close_then, loop, functools.partial(previous, signum, frame)
            )

        signal.signal(signum, close_then)


def _close_then(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], object]
) -> None:
    async def then() -> None:
        await _close_all()
        callback()

    _keep(loop.create_task(then()))


async def _websocket(wsgi: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket scope: the site's WSGI stack in a thread of its own,
    and, once the view accepts, its connection relayed to the server."""
    if (await receive())["type"] != "websocket.connect":
        return
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[AsgiWebSocket | None] = loop.create_future()
    done: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]]
    done = loop.create_future()

    def accept(**options: Any) -> AsgiWebSocket:  # in the view's thread
        websocket = AsgiWebSocket(loop, **options)
        loop.call_soon_threadsafe(_resolve, accepted, websocket)
        return websocket

    def serve() -> None:
        _yield_to_the_loop()
        status: list[Any] = []

        def start_response(line: str, headers: list[tuple[str, str]], *_: Any) -> Any:
            status[:] = [int(line.split()[0]), headers]
            return lambda data: None

        body = b""
        try:
            response = wsgi(_environ(scope, accept), start_response)
            try:
                body = b"".join(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
        finally:
            code, headers = status or (500, [])
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_resolve, accepted, None)
                loop.call_soon_threadsafe(_resolve, done, (code, headers, body))

    threading.Thread(target=serve, name="django-websocket-asgi", daemon=True).start()
    websocket = await accepted
    if websocket is None:  # refused: an ordinary HTTP response
        await _refuse(scope, send, *await done)
        return
    await websocket.relay(receive, send)
    await done


def _yield_to_the_loop() -> None:
    """Schedule this (view) thread as a batch thread (Linux): woken by the
    event loop, it runs once the loop waits or its time slice ends, rather
    than preempting the loop only to wait for the GIL the loop holds (2.6
    context switches of the loop per echoed message, 0.03 with this)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


async def _refuse(
    scope: Scope, send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close"})


_tasks: set[asyncio.Task[None]] = set()  # running, kept from the collector


def _keep(task: asyncio.Task[None]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _environ(scope: Scope, accept: Callable[..., AsgiWebSocket]) -> dict[str, Any]:
    """A WSGI environ for the WebSocket *scope*; the decorator opens the
    connection with *accept*.

    The client's Sec-WebSocket-Extensions header is left out: the ASGI
    server negotiates compression with the client itself.
    """
    host, port = (scope.get("server") or ("localhost", 80))[:2]
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(host),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.url_scheme": "https" if scope.get("scheme") == "wss" else "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        ACCEPT_KEY: accept,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name == "SEC_WEBSOCKET_EXTENSIONS":
            continue
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
