"""Tiny views exercised by the library's tests."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse

from django_websocket import (
    BroadcastError,
    ConnectionClosed,
    WebSocketRequest,
    accept_websocket,
    groups,
    require_websocket,
)

# What views observed, for the tests to assert on (always read with a timeout).
observed: queue.Queue[object] = queue.Queue()


@require_websocket
def echo(request: WebSocketRequest) -> None:
    for message in request.websocket:
        request.websocket.send(message)
    observed.put(("echo-ended", request.websocket.close_code))


@require_websocket
def seed_echo(request):  # type: ignore[no-untyped-def]
    # The 2010 announcement's example, unchanged.
    while True:
        # wait() will return new messages as they arrive
        message = request.websocket.wait()
        # wait() returns None if the connection was closed by the client
        if message is None:
            return
        # simple method for sending messages
        request.websocket.send(message)


@accept_websocket
def both(request: HttpRequest) -> HttpResponse | None:
    if not request.is_websocket():  # type: ignore[attr-defined]
        return HttpResponse("plain HTTP")
    request.websocket.send("websocket")  # type: ignore[attr-defined]
    request.websocket.wait()  # type: ignore[attr-defined]
    return None


@require_websocket
def nagle(request: WebSocketRequest) -> None:
    """Reports whether the socket sends small frames at once (TCP_NODELAY)."""
    sock = request.websocket.socket
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    observed.put(("nodelay", bool(nodelay)))


@require_websocket
def nonblocking(request: WebSocketRequest) -> None:
    """Reports read() before and after the client's message arrives."""
    ws = request.websocket
    observed.put(("first-read", ws.read(), ws.has_messages()))
    ws.send("ready")
    message = ws.wait(timeout=5)
    observed.put(("waited", message))
    ws.send("again")
    for _ in range(500):
        if ws.has_messages():
            break
        threading.Event().wait(0.01)
    observed.put(("count", ws.count_messages(), ws.read()))


@require_websocket
def wait_until_closed(request: WebSocketRequest) -> None:
    first = request.websocket.wait()
    second = request.websocket.wait()
    observed.put(("waited", first, second, request.websocket.close_code))


@require_websocket
def server_closes(request: WebSocketRequest) -> None:
    request.websocket.close(4001, "bye")
    observed.put(("after-close", request.websocket.wait()))


@require_websocket
def raises(request: WebSocketRequest) -> None:
    request.websocket.wait()
    raise RuntimeError("boom in a WebSocket view")


@require_websocket(subprotocols=["chat.v2", "chat.v1"])
def negotiates(request: WebSocketRequest) -> None:
    request.websocket.send(request.websocket.subprotocol or "none")
    request.websocket.wait()


@require_websocket(max_message_size=1024)
def small(request: WebSocketRequest) -> None:
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
def broadcast_from_threads(request: WebSocketRequest) -> None:
    """50 threads each send 20 numbered messages to this one connection."""
    ws = request.websocket
    ws.wait()

    def sender(n: int) -> None:
        for i in range(20):
            ws.send(f"{n}:{i}:" + "x" * (n * 97))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    ws.send("done")
    ws.wait()


@require_websocket
def json_echo(request: WebSocketRequest) -> None:
    while (value := request.websocket.receive_json()) is not None:
        request.websocket.send_json({"got": value})


@require_websocket
def flood(request: WebSocketRequest) -> None:
    """Sends from another thread until the connection is dropped."""
    ws = request.websocket
    payload = b"x" * 65536

    def pusher() -> None:
        sent = 0
        try:
            while sent < 4096:
                ws.send(payload)
                sent += 1
        except Exception as err:  # noqa: BLE001 - reported to the test
            observed.put(("flood-stopped", type(err).__name__, sent))
            return
        observed.put(("flood-finished", sent))

    thread = threading.Thread(target=pusher)
    thread.start()
    thread.join(20)
    ws.wait()
    observed.put(("flood-closed", ws.close_code, ws.close_reason))


@require_websocket
def group_member(request: WebSocketRequest, name: str) -> None:
    """Joins group *name*, then publishes every message it receives to it."""
    groups.subscribe(request.websocket, name)
    request.websocket.send("joined")
    for message in request.websocket:
        try:
            groups.publish(name, message)
        except BroadcastError as error:
            request.websocket.send(f"error: {error}")


@require_websocket
def group_listener(request: WebSocketRequest, name: str) -> None:
    """Joins group *name* and never reads: a stalled member when the client
    does not read either."""
    groups.subscribe(request.websocket, name)
    request.websocket.send("joined")
    request.websocket.wait()
    observed.put(("listener-closed", request.websocket.close_code))


@require_websocket
def presence_member(request: WebSocketRequest, name: str, identity: str) -> None:
    """Shows up as *identity* in group *name*; answers "who" with the
    group's presence as JSON."""
    groups.track(request.websocket, name, identity)
    request.websocket.send("joined")
    for message in request.websocket:
        if message == "who":
            request.websocket.send_json(groups.presence(name))


@require_websocket
def pinger(request: WebSocketRequest) -> None:
    """Pings the client and reports whether the pong arrived."""
    pong = request.websocket.ping(b"are you there")
    with contextlib.suppress(TimeoutError):
        request.websocket.wait(timeout=2)  # reading takes the pong in
    request.websocket.send("pong received" if pong.is_set() else "no pong")
    request.websocket.wait()


@require_websocket
def database_then_wait(request: WebSocketRequest) -> None:
    """Uses the database, waits, and reports whether the connection is
    still open; twice, the second wait with no timeout."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    request.websocket.send(f"open before waiting: {connection.connection is not None}")
    with contextlib.suppress(TimeoutError):
        request.websocket.wait(timeout=0.1)
    request.websocket.send(f"open after waiting: {connection.connection is not None}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    request.websocket.send(f"open before waiting: {connection.connection is not None}")
    request.websocket.wait()
    request.websocket.send(f"open after waiting: {connection.connection is not None}")
    request.websocket.wait()


# Set by a test to let the views that hold their connection open return.
release = threading.Event()


@require_websocket
def sink(request: WebSocketRequest) -> None:
    """Reads and discards every message, a little slower than a flood."""
    received = 0
    for _ in request.websocket:
        received += 1
        release.wait(0.005)
    observed.put(("sink-closed", received, request.websocket.close_code))


@require_websocket
def drain(request: WebSocketRequest) -> None:
    """Reads and discards every message as fast as they come."""
    for _ in request.websocket:
        pass


@require_websocket
def streams(request: WebSocketRequest) -> None:
    """Sends 256 messages of 64 KiB (16 MiB) from its own thread, then the
    most it ever had queued, then closes: flow control holds it while its
    client reads slowly."""
    ws = request.websocket
    most = 0
    for number in range(256):
        ws.send(number.to_bytes(4) + b"x" * (65536 - 4))
        most = max(most, ws.backlog.outbound_bytes)
    ws.send(str(most))
    ws.close()


@require_websocket
def never_reads(request: WebSocketRequest) -> None:
    """Holds the connection without reading until the test releases it."""
    request.websocket.send("holding")
    release.wait(20)


@require_websocket
def group_sink(request: WebSocketRequest, name: str) -> None:
    """A member of group *name* that reads and discards what its client sends."""
    groups.subscribe(request.websocket, name)
    request.websocket.send("joined")
    for _ in request.websocket:
        pass


@require_websocket
def publishes_to_itself(request: WebSocketRequest) -> None:
    """Publishes 1 MiB messages to its own group; reports the most it ever
    had queued for its client, and how the connection ended."""
    ws = request.websocket
    groups.subscribe(ws, "self")
    ws.send("joined")
    most = 0
    with contextlib.suppress(ConnectionClosed):
        for _ in range(64):
            groups.publish("self", "x" * (1024 * 1024))
            most = max(most, ws.backlog.outbound_bytes)
    observed.put(("self-published", most, ws.close_code, ws.close_reason))


@require_websocket
def failing_callback(request: WebSocketRequest) -> None:
    """Registers a finish callback that raises, then joins group "fails"."""

    def broken(websocket: object) -> None:
        raise RuntimeError("a broken finish callback")

    request.websocket.add_finish_callback(broken)
    groups.subscribe(request.websocket, "fails")
    groups.track(request.websocket, "fails", "ghost")
    request.websocket.send("joined")
    request.websocket.wait()


@require_websocket
def polls(request: WebSocketRequest) -> None:
    """wait(timeout=0) once the client's message has had time to arrive."""
    ws = request.websocket
    ws.send("send it")
    release.wait(0.5)
    try:
        observed.put(("polled", ws.wait(timeout=0)))
    except TimeoutError:
        observed.put(("polled", "TimeoutError"))


@require_websocket
def pings_then_closes(request: WebSocketRequest) -> None:
    """Pings, starts the closing handshake, then reports whether the pong
    arrived with the client's last frames."""
    pong = request.websocket.ping(b"last ping")
    request.websocket.close()
    while request.websocket.wait() is not None:
        pass
    observed.put(("pong after close", pong.is_set()))


@require_websocket(allowed_origins=["https://one.example.org"])
def allows_one_origin(request: WebSocketRequest) -> None:
    request.websocket.wait()


@require_websocket(allowed_origins=["*"])
def any_origin(request: WebSocketRequest) -> None:
    request.websocket.wait()


@accept_websocket
def in_transaction(request: HttpRequest) -> HttpResponse | None:
    """Tells whether the view runs inside a transaction (ATOMIC_REQUESTS)."""
    inside = str(connection.in_atomic_block)
    if not request.is_websocket():  # type: ignore[attr-defined]
        return HttpResponse(inside)
    request.websocket.send(inside)  # type: ignore[attr-defined]
    request.websocket.wait()  # type: ignore[attr-defined]
    return None


def session_start(request: HttpRequest) -> HttpResponse:
    request.session["count"] = 0
    return HttpResponse("started")


def session_show(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"count={request.session.get('count')}")


@require_websocket
def session_count(request: WebSocketRequest) -> None:
    """Counts the client's visits in its session, says the count, returns."""
    request.session["count"] = request.session.get("count", 0) + 1
    request.websocket.send(str(request.session["count"]))


@require_websocket
def answers_once(request: WebSocketRequest) -> None:
    # In the spirit of django-websocket 0.3's README: one answer, then done.
    message = request.websocket.wait()
    request.websocket.send(f"you said {message}")


@accept_websocket
def lower(request):  # type: ignore[no-untyped-def]
    # django-websocket 0.3's README: a page for HTTP, a service for WebSockets.
    if not request.is_websocket():
        return HttpResponse("<p>Connect a WebSocket here to lower-case text.</p>")
    for message in request.websocket:
        request.websocket.send(message.lower())


def undecorated(request):  # type: ignore[no-untyped-def]
    """A plain view, for WebSocketMiddleware and WEBSOCKET_ACCEPT_ALL."""
    if not request.is_websocket():
        return HttpResponse(f"plain HTTP, websocket={request.websocket}")
    request.websocket.send(str(request.websocket.read("nothing yet")))
    request.websocket.send(request.websocket.wait())
    return None


@require_websocket
def fallback(request: WebSocketRequest) -> None:
    ws = request.websocket
    ws.send(f"fallback: {ws.read('-')}")
    for _ in range(500):
        message = ws.read(None)
        if message is not None:
            ws.send(f"read: {message}")
            return
        threading.Event().wait(0.01)


def _relay_reach(
    what: str, sender: object, groups: list[str], **kwargs: object
) -> None:
    from django_websocket.groups import connected, local_members

    for group in groups:
        for member in local_members(group):
            with contextlib.suppress(ConnectionClosed):
                member.send(f"{what}: {groups}, connected: {connected()}")


def _relay_lost(sender: object, **kwargs: Any) -> None:
    _relay_reach("reach lost", sender, **kwargs)


def _relay_restored(sender: object, **kwargs: Any) -> None:
    _relay_reach("reach restored", sender, **kwargs)


groups.reach_lost.connect(_relay_lost)
groups.reach_restored.connect(_relay_restored)
