"""The gunicorn hooks' relinking of Django's middleware chain, in process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.urls import path
from django.utils.deprecation import MiddlewareMixin

from django_websocket.hooks import _link_middleware_directly

GetResponse = Callable[[HttpRequest], HttpResponse]


class Outer:
    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.trace = ["outer"]  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Trace"] = ",".join(request.trace)  # type: ignore[attr-defined]
        return response


class OldStyle(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> None:
        request.trace.append("old-style")  # type: ignore[attr-defined]

    def process_response(
        self, request: HttpRequest, response: HttpResponse
    ) -> HttpResponse:
        response["X-Old-Style"] = "seen"
        return response


def function_based(get_response: GetResponse) -> GetResponse:
    def middleware(request: HttpRequest) -> HttpResponse:
        request.trace.append("function")  # type: ignore[attr-defined]
        return get_response(request)

    return middleware


class Inner(OldStyle):
    def process_request(self, request: HttpRequest) -> None:
        request.trace.append("inner")  # type: ignore[attr-defined]


def view(request: HttpRequest) -> HttpResponse:
    request.trace.append("view")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def fails(request: HttpRequest) -> HttpResponse:
    raise ValueError("the view failed")


def server_error(request: HttpRequest) -> HttpResponse:
    return HttpResponse("server error", status=500)


urlpatterns = [path("view/", view), path("fails/", fails)]
handler500 = server_error

MIDDLEWARE = [
    f"{__name__}.{name}" for name in ("Outer", "OldStyle", "function_based", "Inner")
]


def _serve(handler: WSGIHandler, url: str) -> tuple[str, dict[str, str]]:
    started: list[Any] = []
    environ = RequestFactory().get(url).environ
    # As Django's test client does: no database is involved here.
    request_started.disconnect(close_old_connections)
    try:
        handler(environ, lambda status, headers: started.extend([status, headers]))
    finally:
        request_started.connect(close_old_connections)
    return started[0], dict(started[1])


@pytest.fixture
def handler(settings: Any) -> WSGIHandler:
    """Django's WSGI handler over this module's middleware, relinked."""
    settings.MIDDLEWARE = MIDDLEWARE
    settings.ROOT_URLCONF = __name__
    handler = WSGIHandler()
    assert _link_middleware_directly(handler) == handler.__call__
    return handler


def test_every_middleware_still_runs_in_order(handler):
    status, headers = _serve(handler, "/view/")
    assert status == "200 OK"
    assert headers["X-Trace"] == "outer,old-style,function,inner,view"
    assert headers["X-Old-Style"] == "seen"


def test_an_exception_under_a_relinked_middleware_is_still_a_500_response(handler):
    status, headers = _serve(handler, "/fails/")
    assert status.startswith("500")
    assert headers["X-Trace"] == "outer,old-style,function,inner"


def test_class_middleware_call_the_next_through_its_method(handler):
    """Down to the first function-based middleware, where it stops."""
    outer = handler._middleware_chain.__wrapped__.__self__
    assert isinstance(outer, Outer)
    old_style = outer.get_response.__wrapped__.__self__
    assert isinstance(old_style, OldStyle)
    assert old_style.get_response.__wrapped__.__name__ == "middleware"
