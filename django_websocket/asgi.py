"""The same WebSocket views under an ASGI server (uvicorn, daphne).

``get_asgi_application()`` serves HTTP through Django's own ``ASGIHandler``.
A WebSocket scope runs the site's WSGI stack (middleware, URL resolver, the
decorated view) in a thread of its own, as under runserver and gthread, with
one end of a socket pair as the client's socket: ``request.websocket`` reads
and writes it exactly as it reads and writes a TCP socket, so every limit,
timer, group and close code works unchanged. In the event loop, a bridge
relays between the other end and the ASGI server: the handshake's ``101``
becomes ``websocket.accept``, frames become ``websocket.send`` messages and
back, and a refusal (400, 403, 503...) becomes an HTTP response where the
server supports the ``websocket.http.response`` extension, else a close
before accepting (which the server answers with 403).

The ASGI server negotiates permessage-deflate with the client; between the
bridge and the view, frames go uncompressed. On lifespan shutdown every
connection of the process gets 1001, as under gunicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from django_websocket.transport import SOCKET_KEY, TAKE_BUFFERED_KEY

__all__ = ["get_asgi_application"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Bytes relayed per read of the socket pair.
CHUNK = 64 * 1024
# Codes a close frame cannot carry (RFC 6455 section 7.4.1).
_RESERVED = {1005, 1006, 1015}


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
            await _Bridge(wsgi, scope, receive, send).run()
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


def _close_first_on(*signums: int) -> None:
    """Have the server's own handler of *signums* run only once the
    WebSockets are closed with 1001: servers close them themselves on the
    way out (uvicorn with 1012) before the lifespan shutdown comes."""
    loop = asyncio.get_running_loop()
    for signum in signums:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def close_then(signum: int, frame: Any, previous: Any = previous) -> None:
            async def then() -> None:
                await _close_all()
                previous(signum, frame)

            loop.call_soon_threadsafe(lambda: _keep(loop.create_task(then())))

        signal.signal(signum, close_then)


class _Bridge:
    """One WebSocket scope: the view's thread on one end of a socket pair,
    the ASGI server on the other."""

    def __init__(self, wsgi: Any, scope: Scope, receive: Receive, send: Send):
        self.wsgi, self.scope, self.receive, self.send = wsgi, scope, receive, send
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        # The view's side of the protocol, spoken as its client would.
        self.protocol = ClientProtocol(
            parse_uri("ws://bridge/"), state=State.OPEN, max_size=None
        )
        self.closed_by_client = False
        self.response: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]]

    async def run(self) -> None:
        if (await self.receive())["type"] != "websocket.connect":
            return
        loop = asyncio.get_running_loop()
        self.response = loop.create_future()
        threading.Thread(
            target=self._serve, args=(loop,), name="django-websocket-asgi", daemon=True
        ).start()
        try:
            head = await self._read_head()
            if head is None:  # refused: an ordinary HTTP response
                await self._refuse(*await self.response)
                return
            await self.send({"type": "websocket.accept", "subprotocol": head or None})
            client = asyncio.ensure_future(self._from_client())
            try:
                await self._to_client()
            finally:
                client.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client
        finally:
            self.ours.close()

    # The view's thread.

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        status: list[Any] = []

        def start_response(line: str, headers: list[tuple[str, str]], *_: Any) -> Any:
            status[:] = [int(line.split()[0]), headers]
            return lambda data: None

        body = b""
        try:
            response = self.wsgi(_environ(self.scope, self.theirs), start_response)
            try:
                body = b"".join(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
        finally:
            with contextlib.suppress(OSError):
                self.theirs.shutdown(socket.SHUT_RDWR)
            self.theirs.close()
            code, headers = status or (500, [])
            loop.call_soon_threadsafe(_resolve, self.response, (code, headers, body))

    # The event loop's side.

    async def _read_head(self) -> str | None:
        """Wait for the view's ``101``: its subprotocol (or "" for none);
        ``None`` if the view answered anything else."""
        loop = asyncio.get_running_loop()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(self.ours, CHUNK)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if rest:
            self.protocol.receive_data(rest)
        found = re.search(rb"\r\nSec-WebSocket-Protocol: *([^\r]*)", head)
        return found.group(1).decode() if found else ""

    async def _refuse(
        self, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        if "websocket.http.response" in self.scope.get("extensions", {}):
            await self.send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
                }
            )
            await self.send({"type": "websocket.http.response.body", "body": body})
        else:
            await self.send({"type": "websocket.close"})

    async def _to_client(self) -> None:
        """Relay the view's frames as ASGI messages until it closes."""
        loop = asyncio.get_running_loop()
        parts: list[bytes] = []
        opcode = Opcode.TEXT
        while True:
            for frame in self.protocol.events_received():
                if not isinstance(frame, Frame):
                    continue
                if frame.opcode is Opcode.CONT:
                    parts.append(bytes(frame.data))
                elif frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    opcode, parts = frame.opcode, [bytes(frame.data)]
                else:
                    continue  # pings are answered below; the close at the end
                if frame.fin:
                    data = b"".join(parts)
                    message: Message = {"type": "websocket.send"}
                    if opcode is Opcode.TEXT:
                        message["text"] = data.decode()
                    else:
                        message["bytes"] = data
                    await self.send(message)
            await self._flush()
            if self.protocol.state is State.CLOSED or self.protocol.close_rcvd:
                break
            chunk = await loop.sock_recv(self.ours, CHUNK)
            if not chunk:
                self.protocol.receive_eof()
                break
            self.protocol.receive_data(chunk)
        await self._flush()
        if not self.closed_by_client:
            close = self.protocol.close_rcvd
            code = 1000 if close is None or close.code in _RESERVED else close.code
            reason = "" if close is None else close.reason
            with contextlib.suppress(Exception):
                await self.send(
                    {"type": "websocket.close", "code": code, "reason": reason}
                )

    async def _from_client(self) -> None:
        """Relay the client's messages to the view as frames."""
        while True:
            message = await self.receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    self.protocol.send_text(message["text"].encode())
                else:
                    self.protocol.send_binary(message.get("bytes") or b"")
                await self._flush()
            elif message["type"] == "websocket.disconnect":
                self.closed_by_client = True
                code = message.get("code", 1005)
                if self.protocol.state is State.OPEN:
                    if code in _RESERVED:
                        self.protocol.send_close()
                    else:
                        self.protocol.send_close(code, message.get("reason") or "")
                await self._flush()
                return

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(self.ours, data)


_tasks: set[asyncio.Task[None]] = set()  # running, kept from the collector


def _keep(task: asyncio.Task[None]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _environ(scope: Scope, sock: socket.socket) -> dict[str, Any]:
    """A WSGI environ for the WebSocket *scope*, with *sock* as its socket.

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
        SOCKET_KEY: sock,
        TAKE_BUFFERED_KEY: lambda: b"",
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name == "SEC_WEBSOCKET_EXTENSIONS":
            continue
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
