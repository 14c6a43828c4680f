"""The benchmark's broadcast endpoint: every member gets every message."""

from django_websocket import WebSocketRequest, groups, require_websocket


@require_websocket
def broadcast(request: WebSocketRequest) -> None:
    groups.subscribe(request.websocket, "bench")
    for message in request.websocket:
        groups.publish("bench", message)
