"""The echo demo: every message comes straight back to its sender."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from django_websocket import WebSocketRequest, require_websocket


def page(request: HttpRequest) -> HttpResponse:
    """The page: a form, a log with round-trip times, and the view below."""
    return render(request, "echo/index.html", {"socket_view": socket})


@require_websocket
def socket(request: WebSocketRequest) -> None:
    # Runs in this connection's own thread: blocking here is fine.
    for message in request.websocket:  # ends when the client closes
        request.websocket.send(message)  # text stays text, bytes stay bytes
