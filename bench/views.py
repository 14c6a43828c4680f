"""The benchmark's endpoints besides the site's: a broadcast where every
member gets every message, and the views the hostile clients attack."""

import time

from django_websocket import WebSocketRequest, groups, require_websocket


@require_websocket
def broadcast(request: WebSocketRequest) -> None:
    groups.subscribe(request.websocket, "bench")
    for message in request.websocket:
        groups.publish("bench", message)


@require_websocket
def sink(request: WebSocketRequest) -> None:
    """Reads and discards."""
    for _ in request.websocket:
        pass


@require_websocket
def hold(request: WebSocketRequest) -> None:
    """Never reads: holds the connection for 30 s."""
    time.sleep(30)


@require_websocket
def member(request: WebSocketRequest) -> None:
    """A member of the broadcast group that reads and discards."""
    groups.subscribe(request.websocket, "bench")
    for _ in request.websocket:
        pass
