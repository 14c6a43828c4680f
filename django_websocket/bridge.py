"""``request.websocket`` under an ASGI server: the view's thread and the
event loop, passing ASGI messages in memory.

The server speaks the protocol (framing, masking, UTF-8, pings,
compression, the closing handshake); the view's thread and the event loop
share two queues and no socket:

- Inbound, the loop puts each ``websocket.receive`` message in the view's
  queue (a ``SimpleQueue``, which wakes a waiting thread directly). It
  stops asking the server for more while the view has ``max_queue``
  messages unread, so the server's own flow control slows the client down;
  a message over ``max_message_size`` closes with 1009.
- Outbound, ``send()`` appends the ASGI message to the connection's queue,
  from any thread, and rings the loop's doorbell unless it has already
  (``_Doorbell``): one ``call_soon_threadsafe()`` wakes the loop for every
  connection that rang meanwhile, so a broadcast to a thousand members, or
  a hundred views sending at once, costs the loop one wake-up. In that
  callback each connection's messages go to the server's ``send()``, run
  at once rather than as tasks (``_drain``). Past ``max_send_backlog``
  bytes (characters for text) queued, the client is dropped with 1008;
  the view's own thread waits instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from django_websocket.exceptions import CloseCode, ConnectionClosed
from django_websocket.hub import get_hub
from django_websocket.websocket import (
    Backlog,
    Message,
    WebSocket,
    check_message,
    release_database_connections,
)

__all__ = ["AsgiWebSocket", "CloseRefused"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

# Codes a close frame cannot carry (RFC 6455 section 7.4.1).
_RESERVED = {1005, 1006, 1015}
_SENT = "websocket.send"


class AsgiWebSocket(WebSocket):
    """``request.websocket`` under an ASGI server (``asgi.py``)."""

    socket = None

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        path: str = "",
        subprotocol: str | None = None,
        max_message_size: int | None = 1024 * 1024,
        max_send_backlog: int = 4 * 1024 * 1024,
        max_queue: int | None = 16,
        send_timeout: float = 20.0,
    ) -> None:
        self.path = path
        self.subprotocol = subprotocol
        self.opened_at = time.monotonic()
        self._loop = loop
        self._doorbell = _Doorbell.of(loop)
        self._owner = threading.get_ident()
        self._max_size = max_message_size
        self._max_queue = max_queue
        self._limit = max_send_backlog
        self._send_timeout = send_timeout
        # Guards the close state, the outbound queue and its size, and the
        # order of what goes into the inbound queue after a close.
        self._lock = threading.Lock()
        self._below_limit: threading.Condition | None = None
        # (code, reason) once closed: the client's, else the server's.
        self._close: tuple[int, str] | None = None
        self._overflowed = False
        # Inbound: messages, then None once closed. Counts written by the
        # loop (received) and by readers under _lock (taken).
        self._inbound: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._received = self._received_size = 0
        self._taken = self._taken_size = 0
        # The loop stopped receiving at max_queue unread; a reader that
        # takes one then wakes it.
        self._paused: asyncio.Future[None] | None = None
        # Outbound: ASGI messages for the server, their size, and whether
        # this connection is on the doorbell's list.
        self._outbound: deque[tuple[Mapping[str, Any], int]] = deque()
        self._outbound_size = 0
        self._rung = False
        # Set by the loop once the server said the client is gone.
        self._client_gone = False
        # In the loop: the server's send(), a send the server has not
        # finished taking (nothing more goes to it meanwhile), and the end
        # of relay().
        self._send: Send | None = None
        self._pending: asyncio.Task[None] | None = None
        self._relayed: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._finished = False
        self._finish_callbacks = []
        self._hub = get_hub()
        self._hub.add(self)

    # Reading (the view's thread).

    def wait(self, timeout: float | None = None) -> Message | None:
        try:
            message = self._inbound.get_nowait()
        except queue.Empty:
            if timeout is not None and timeout <= 0:
                raise TimeoutError(f"no message within {timeout} seconds") from None
            release_database_connections()
            try:
                message = self._inbound.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no message within {timeout} seconds") from None
        return self._taking(message)

    def read(self, fallback: Any = None) -> Any:
        try:
            message = self._inbound.get_nowait()
        except queue.Empty:
            return fallback
        message = self._taking(message)
        return fallback if message is None else message

    def count_messages(self) -> int:
        with self._lock:
            return self._received - self._taken

    def _taking(self, message: Message | None) -> Message | None:
        if message is None:
            self._inbound.put(None)  # for every later read, and other readers
            return None
        with self._lock:
            self._taken += 1
            self._taken_size += len(message)
        if self._paused is not None and (
            self._max_queue is None or self._received - self._taken < self._max_queue
        ):
            self._call_in_loop(self._resume_reading)  # once below the limit
        return message

    # Sending (any thread).

    def send(self, message: Message) -> None:
        check_message(message)
        if isinstance(message, str):
            self._queue({"type": _SENT, "text": message}, len(message))
        else:
            data = bytes(message)
            self._queue({"type": _SENT, "bytes": data}, len(data))

    def send_shared(self, message: Message, cache: dict[str, Any]) -> None:
        """``send()`` for a message that goes to many connections (groups):
        one ASGI message, built once into *cache*, goes to all of them."""
        shared = cache.get("asgi")
        if shared is None:
            check_message(message)
            key = "text" if isinstance(message, str) else "bytes"
            value = message if isinstance(message, str) else bytes(message)
            shared = cache["asgi"] = ({"type": _SENT, key: value}, len(value))
        self._queue(*shared)

    def ping(self, data: bytes = b"") -> threading.Event:
        """Set at once: the ASGI server sends the pings, and answers them."""
        if self.closed:
            raise ConnectionClosed(*self._close_info_or_abnormal())
        event = threading.Event()
        event.set()
        return event

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; does nothing if already closing.

        The server completes it; the next ``wait()`` returns ``None``, after
        the messages that arrived before.
        """
        self._closing(code, reason)

    def _queue(self, message: Mapping[str, Any], size: int) -> None:
        owner = threading.get_ident() == self._owner
        with self._lock:
            if self._close is not None:
                raise ConnectionClosed(*self._close_info_or_abnormal())
            overflow = (
                not owner and size > 0 and self._outbound_size + size > self._limit
            )
            if not overflow:
                self._outbound.append((message, size))
                self._outbound_size += size
                self._ring()
        if overflow:
            self._overflow()
            raise ConnectionClosed(*self._close_info_or_abnormal())
        if owner and self._outbound_size > self._limit:
            self._wait_below_limit()
            if self._close is not None:
                raise ConnectionClosed(*self._close_info_or_abnormal())

    def _wait_below_limit(self) -> None:
        """The view's own thread, past the limit: wait while the server
        takes messages; drop the client if ``timeout`` passes without."""
        with self._lock:
            if self._below_limit is None:
                self._below_limit = threading.Condition(self._lock)
            while self._outbound_size > self._limit and self._close is None:
                before = self._outbound_size
                self._below_limit.wait(self._send_timeout)
                if self._close is None and self._outbound_size >= before:
                    break
            else:
                return
        self._overflow()

    def _overflow(self) -> None:
        """Drop what is queued for the client and close with 1008."""
        with self._lock:
            if self._overflowed or self._close is not None:
                return  # already closing: that close stands
            self._overflowed = True
            self._outbound.clear()
            self._outbound_size = 0
            self._closed_with(CloseCode.POLICY_VIOLATION, "send backlog exceeded")
            self._queue_close(CloseCode.POLICY_VIOLATION, "send backlog exceeded")
        self._call_in_loop(self._abandon)

    def _abandon(self) -> None:
        """In the loop, after an overflow or once the close has waited
        ``send_timeout``: stop waiting for the server to take a message the
        client does not read, and hand it what is queued (the close)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            with self._lock:
                while self._outbound and self._outbound[0][0]["type"] == _SENT:
                    self._outbound_size -= self._outbound.popleft()[1]
            self._drain()

    def _closing(self, code: int, reason: str, *, send: bool = True) -> None:
        """Mark the connection closed with *code*, unless it is already,
        and, with *send*, queue the close for the server."""
        with self._lock:
            if self._close is not None:
                return
            self._closed_with(code, reason)
            if send:
                self._queue_close(code, reason)
        if send:
            self._call_in_loop(self._bound_close)

    def _bound_close(self) -> None:
        """In the loop, once a close is queued: a client that reads nothing
        keeps the relay at most ``send_timeout`` more (as the closing
        handshake is bounded on a socket), then the close goes out."""
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(self._send_timeout, self._abandon)

    # Under the lock.

    def _closed_with(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._inbound.put(None)  # the view's reading ends
        if self._below_limit is not None:
            self._below_limit.notify_all()

    def _queue_close(self, code: int, reason: str) -> None:
        if code in _RESERVED:
            code, reason = CloseCode.NORMAL_CLOSURE, ""
        # A plain int: daphne refuses an IntEnum.
        close = {"type": "websocket.close", "code": int(code), "reason": reason}
        self._outbound.append((close, 0))
        self._ring()

    def _ring(self) -> None:
        """Have the loop look at this connection's queue (once until then)."""
        if not self._rung:
            self._rung = True
            self._doorbell.ring(self)

    # State.

    @property
    def closed(self) -> bool:
        return self._close is not None

    @property
    def backlog(self) -> Backlog:
        with self._lock:
            return Backlog(
                unread_messages=self._received - self._taken,
                unread_size=self._received_size - self._taken_size,
                partial_size=0,
                outbound_bytes=self._outbound_size,
            )

    def _close_info(self) -> tuple[int, str] | None:
        if self._overflowed:
            return CloseCode.POLICY_VIOLATION, "send backlog exceeded"
        return self._close

    def _close_info_or_abnormal(self) -> tuple[int, str]:
        return self._close_info() or (CloseCode.ABNORMAL_CLOSURE, "")

    def finish(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        self.close(code, reason)
        with self._lock:
            self._finished = True
            with contextlib.suppress(queue.Empty):
                while self._inbound.get_nowait() is not None:
                    pass  # unread: freed now, not with the connection
            self._inbound.put(None)
        self._run_finish_callbacks()

    def release(self) -> None:
        self._hub.remove(self)

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        return self._lock

    def _call_in_loop(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(callback)

    # The event loop's side.

    async def relay(self, receive: Receive, send: Send) -> None:
        """Accept the connection, then relay both ways until it closes."""
        try:
            await send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        except BaseException:
            self._closing(CloseCode.ABNORMAL_CLOSURE, "", send=False)
            raise
        self._send = send
        self._relayed = self._loop.create_future()
        reader = asyncio.ensure_future(self._from_client(receive))
        try:
            self._drain()  # what the view sent before the accept
            await self._relayed
        finally:
            # Whatever ended the relay, the view's wait() ends and its
            # send() raises (nothing happens if it is closed already).
            self._closing(CloseCode.ABNORMAL_CLOSURE, "", send=False)
            tasks = [task for task in (reader, self._pending) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved: the reader's ends the relay
            if self._close_timer is not None:
                self._close_timer.cancel()  # else it keeps this object

    def _rang(self) -> None:
        """The doorbell rang for this connection."""
        self._rung = False
        relayed = self._relayed
        if self._pending is None and relayed is not None and not relayed.done():
            self._drain()

    def _drain(self) -> None:
        """Hand the view's messages to the server, up to and with the close,
        each run at once: a send the server takes without waiting (the rule
        under uvicorn) costs no task and no future; one that waits goes on
        in a task, and the rest waits for it (``_sent``)."""
        assert self._send is not None
        while self._outbound and not self._client_gone:
            with self._lock:
                message, size = self._outbound.popleft()
                self._outbound_size -= size
                if self._below_limit is not None:
                    self._below_limit.notify_all()
            closing = message["type"] != _SENT
            try:
                if closing:
                    pending = _run_eagerly(self._send_close(self._send, message))
                else:
                    pending = _run_eagerly(self._send(message))
            except Exception as error:  # noqa: BLE001
                self._sent_failed(error, closing)
                return
            if pending is not None:
                self._pending = pending
                pending.add_done_callback(functools.partial(self._sent, closing))
                return
            if closing:
                self._end_relay()
                return
        if self._client_gone:
            self._end_relay()

    def _sent(self, closing: bool, task: asyncio.Task[None]) -> None:
        if task is not self._pending:
            return  # abandoned
        self._pending = None
        if task.cancelled():
            self._end_relay()
        elif (error := task.exception()) is not None:
            self._sent_failed(error, closing)
        elif closing:
            self._end_relay()
        else:
            self._drain()

    def _sent_failed(self, error: BaseException, closing: bool) -> None:
        if closing:
            self._end_relay(error)  # CloseRefused, or the server's failure
            return
        # The server's connection is gone (each server says so with its
        # own exception): as a reset on TCP.
        self._client_gone = True
        self._closing(CloseCode.ABNORMAL_CLOSURE, "", send=False)
        self._end_relay()

    def _end_relay(self, error: BaseException | None = None) -> None:
        relayed = self._relayed
        if relayed is not None and not relayed.done():
            if error is None:
                relayed.set_result(None)
            else:
                relayed.set_exception(error)

    async def _send_close(self, send: Send, message: Mapping[str, Any]) -> None:
        try:
            await send(message)
        except OSError:
            pass  # the client is gone
        except Exception as refused:
            if self._client_gone or message["code"] == CloseCode.NORMAL_CLOSURE:
                raise
            # The server refuses the code (daphne sends only 1000 and
            # 3000-4999): an application that fails is closed with 1011.
            raise CloseRefused(message["code"], message["reason"]) from refused

    async def _from_client(self, receive: Receive) -> None:
        """Put the client's messages in the view's queue, until it leaves."""
        try:
            await self._receive_all(receive)
        except Exception:
            # receive() failed: as a reset; the view and the relay stop.
            self._client_gone = True
            self._closing(CloseCode.ABNORMAL_CLOSURE, "", send=False)
            self._end_relay()
            raise

    async def _receive_all(self, receive: Receive) -> None:
        while True:
            if self._max_queue is not None and (
                self._received - self._taken >= self._max_queue
            ):
                self._paused = self._loop.create_future()
                if self._received - self._taken >= self._max_queue:
                    await self._paused
                self._paused = None
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                code = message.get("code") or CloseCode.NO_STATUS_RCVD
                self._closing(code, message.get("reason") or "", send=False)
                self._end_relay()  # nothing more can go out
                return
            if message["type"] != "websocket.receive":
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            size = len(data)
            if self._too_big(data):
                limit = self._max_size
                self._closing(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"message too big ({size} > {limit} bytes)",
                )
                continue
            with self._lock:
                if self._close is not None:
                    continue  # after the close: dropped
                self._received += 1
                self._received_size += size
                self._inbound.put(data)

    def _too_big(self, data: Message) -> bool:
        limit = self._max_size
        if limit is None or len(data) <= limit // 4:
            return False
        if isinstance(data, str):
            return len(data.encode()) > limit
        return len(data) > limit

    def _resume_reading(self) -> None:
        paused = self._paused
        if paused is None or paused.done():
            return
        if self._max_queue is None or self._received - self._taken < self._max_queue:
            paused.set_result(None)


def _run_eagerly(awaitable: Awaitable[None]) -> asyncio.Task[None] | None:
    """Run *awaitable* until it first waits, in the caller's frame, as
    Python 3.12's eager tasks do: ``None`` if it finished (its exception
    raised here), else a task that runs the rest."""
    coroutine = awaitable if isinstance(awaitable, Coroutine) else _awaiting(awaitable)
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_go_on(coroutine, waiting))


async def _go_on(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run the rest of a coroutine that waits for *waiting*, what it
    yielded: an asyncio future, a server's future-like object, or ``None``
    (``asyncio.sleep(0)``)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                woken = loop.create_future()
                waiting.add_done_callback(functools.partial(_resolve, woken))
                await woken
        except asyncio.CancelledError as cancelled:
            if waiting is not None:
                waiting.cancel()
            resume = functools.partial(coroutine.throw, cancelled)
        else:
            resume = functools.partial(coroutine.send, None)  # it takes the outcome
        try:
            waiting = resume()
        except StopIteration:
            return


def _resolve(future: asyncio.Future[None], _: object) -> None:
    if not future.done():
        future.set_result(None)


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


class CloseRefused(Exception):
    """The ASGI server would not send the view's close code: raised out of
    the application, so that the server closes the connection with 1011."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused close code {code} ({reason!r})")


class _Doorbell:
    """Wakes one event loop for the connections that have something to
    send: one ``call_soon_threadsafe()`` for all that rang meanwhile."""

    # One per event loop (a process has one, or one per thread of a server
    # that runs several).
    _doorbells: dict[asyncio.AbstractEventLoop, _Doorbell] = {}
    _creating = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ringing: deque[AsgiWebSocket] = deque()
        self.rung = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Doorbell:
        doorbell = cls._doorbells.get(loop)
        if doorbell is None:
            with cls._creating:
                doorbell = cls._doorbells.setdefault(loop, cls(loop))
        return doorbell

    def ring(self, websocket: AsgiWebSocket) -> None:
        self.ringing.append(websocket)
        if not self.rung:
            self.rung = True
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.call_soon_threadsafe(self._answer)

    def _answer(self) -> None:
        self.rung = False
        ringing = self.ringing
        while ringing:
            ringing.popleft()._rang()
