"""The same WebSocket views under an ASGI server (uvicorn, granian, daphne).

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
import collections
import contextlib
import functools
import io
import re
import signal
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django_websocket.transport import SOCKET_KEY, TAKE_BUFFERED_KEY

__all__ = ["get_asgi_application"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Messages from the view waiting for the ASGI server before the bridge stops
# reading the socket pair.
QUEUED = 16
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
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
            _close_first_on(signal.SIGTERM, signal.SIGINT)
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


class _Bridge(asyncio.Protocol):
    """One WebSocket scope: the view's thread on one end of a socket pair,
    the ASGI server on the other.

    The event loop's end is an asyncio protocol, so a message costs one
    write and one read of the socket pair, with no reader registered and
    removed each time. Its frames are the simplest RFC 6455 allows: each
    client message is one frame masked with a zero key (the view's protocol
    requires masking; nothing between the two ends needs its secrecy), and
    the view's unmasked frames are parsed here, pings answered.
    """

    def __init__(self, wsgi: Any, scope: Scope, receive: Receive, send: Send):
        self.wsgi, self.scope, self.receive, self.send = wsgi, scope, receive, send
        self.ours, self.theirs = socket.socketpair()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: asyncio.Future[str | None]
        # Messages from the view, waiting for the ASGI server to take them.
        self.outgoing: collections.deque[Message | None] = collections.deque()
        self.wake: asyncio.Future[None] | None = None
        self.parts: list[bytes] = []
        self.opcode = _TEXT
        self.close_rcvd: tuple[int, str] | None = None
        self.closed_by_client = False
        self.writable: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.response: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]]

    async def run(self) -> None:
        if (await self.receive())["type"] != "websocket.connect":
            return
        loop = asyncio.get_running_loop()
        self.response = loop.create_future()
        self.head = loop.create_future()
        await loop.connect_accepted_socket(lambda: self, self.ours)
        threading.Thread(
            target=self._serve, args=(loop,), name="django-websocket-asgi", daemon=True
        ).start()
        try:
            head = await self.head
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
            if self.transport is not None:
                self.transport.abort()

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

    # asyncio.Protocol: the event loop's end of the socket pair.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.head.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            found = re.search(rb"\r\nSec-WebSocket-Protocol: *([^\r]*)", head)
            self.head.set_result(found.group(1).decode() if found else "")
        self._parse()
        if len(self.outgoing) >= QUEUED and not self.reading_paused:
            # The ASGI server takes messages slower than the view sends
            # them: let the socket pair fill, so the view's backlog limits
            # apply as they do on TCP.
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        if self.writable is not None:
            _resolve(self.writable, None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None:
            _resolve(self.writable, None)
            self.writable = None

    def _finish(self) -> None:
        if not self.head.done():
            self.head.set_result(None)
        if not self.outgoing or self.outgoing[-1] is not None:
            self.outgoing.append(None)  # the view is done
        self._wake()

    def _wake(self) -> None:
        if self.wake is not None and self.outgoing:
            _resolve(self.wake, None)

    def _parse(self) -> None:
        """Take every whole frame of the view out of the buffer."""
        buffer = self.buffer
        start = 0
        while len(buffer) - start >= 2:
            first, length = buffer[start], buffer[start + 1] & 0x7F
            offset = start + 2
            if length == 126:
                if len(buffer) - offset < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset)
                offset += 2
            elif length == 127:
                if len(buffer) - offset < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset)
                offset += 8
            if len(buffer) - offset < length:
                break
            payload = bytes(buffer[offset : offset + length])
            start = offset + length
            self._frame(first & 0x80, first & 0x0F, payload)
        del buffer[:start]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == _PING:
            self._write(_PONG, payload)
            return
        if opcode == _CLOSE:
            if self.close_rcvd is None:
                code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
                self.close_rcvd = (code, payload[2:].decode(errors="replace"))
                if not self.closed_by_client:
                    self._write(_CLOSE, payload[:2])
            return
        if opcode == _CONT:
            self.parts.append(payload)
        elif opcode in (_TEXT, _BINARY):
            self.opcode, self.parts = opcode, [payload]
        else:
            return  # a pong
        if fin:
            data = payload if len(self.parts) == 1 else b"".join(self.parts)
            self.parts = []
            if self.opcode == _TEXT:
                self.outgoing.append({"type": "websocket.send", "text": data.decode()})
            else:
                self.outgoing.append({"type": "websocket.send", "bytes": data})

    def _write(self, opcode: int, payload: bytes) -> None:
        """Send *payload* to the view as one frame, masked with a zero key."""
        if self.transport is None or self.transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB4x", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH4x", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ4x", 0x80 | opcode, 0x80 | 127, length)
        self.transport.writelines((header, payload))

    # The ASGI server's side.

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
        """Relay the view's messages to the ASGI server until it closes."""
        loop = asyncio.get_running_loop()
        while True:
            while self.outgoing:
                message = self.outgoing.popleft()
                if message is None:
                    return await self._close_client()
                if self.closed_by_client:
                    continue  # sent after the client left, as on TCP: lost
                try:
                    await self.send(message)
                except Exception:  # noqa: BLE001
                    # The server's connection is gone (each server says so
                    # with its own exception): tell the view, as a TCP reset
                    # would, and drop what it still sends.
                    self.closed_by_client = True
                    if self.close_rcvd is None:
                        self._write(_CLOSE, b"")
            if self.reading_paused and self.transport is not None:
                self.reading_paused = False
                self.transport.resume_reading()
            self.wake = loop.create_future()
            await self.wake
            self.wake = None

    async def _close_client(self) -> None:
        if self.closed_by_client:
            return
        code, reason = self.close_rcvd or (1000, "")
        if code in _RESERVED:
            code, reason = 1000, ""
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except OSError:
            pass  # the client is gone
        except Exception as refused:
            if code == 1000:
                raise
            # The server refuses the code (daphne sends only 1000 and
            # 3000-4999): an application that fails is closed with 1011.
            raise CloseRefused(code, reason) from refused

    async def _from_client(self) -> None:
        """Relay the client's messages to the view as frames."""
        while True:
            message = await self.receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    self._write(_TEXT, message["text"].encode())
                else:
                    self._write(_BINARY, message.get("bytes") or b"")
                if self.writable is not None:
                    await self.writable
            elif message["type"] == "websocket.disconnect":
                self.closed_by_client = True
                if self.close_rcvd is None:
                    code = message.get("code", 1005)
                    reason = (message.get("reason") or "").encode()
                    self._write(
                        _CLOSE,
                        b"" if code in _RESERVED else code.to_bytes(2) + reason,
                    )
                return


class CloseRefused(Exception):
    """The ASGI server would not send the view's close code: raised out of
    the application, so that the server closes the connection with 1011."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused close code {code} ({reason!r})")


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
