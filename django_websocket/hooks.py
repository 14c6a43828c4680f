"""gunicorn server hooks: however a worker ends, its WebSockets get 1001.

Import them in ``gunicorn.conf.py``::

    from django_websocket.hooks import post_worker_init, worker_int

A gunicorn worker ends on SIGTERM (which the master also sends to the old
workers on SIGHUP), on SIGQUIT or SIGINT, at ``max_requests``, and on SIGABRT
when the master finds its heartbeat older than ``timeout``; each sets the
worker's ``alive`` to False first. From then on a watcher thread (a greenlet
under gevent) sends every open WebSocket a close frame with 1001 "server
shutting down" and keeps the heartbeat fresh, and the process exits once the
closing handshakes are over, within ``WEBSOCKET_CLOSE_TIMEOUT``. A worker
killed with SIGKILL gets no say: its clients see 1006. This module imports
nothing from Django at import time: gevent's ``patch_all()`` runs after the
config file is loaded and must not find Django's lazy settings alive.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["post_worker_init", "worker_int"]

REASON = "server shutting down"

# How often the watcher refreshes the heartbeat and closes the connections
# opened since its last round (a request in flight may still upgrade).
_ROUND = 0.1
# Past WEBSOCKET_CLOSE_TIMEOUT, a connection whose client never answered is
# aborted; this leaves its view time to return and the server to let go.
_MARGIN = 1.0

# This worker process's shutdown, once post_worker_init has run.
_shutdown: _Shutdown | None = None


def post_worker_init(worker: Any) -> None:
    """Close every WebSocket with 1001 as soon as the worker starts to end.

    gunicorn calls this hook with the application loaded and the worker's
    signal handlers installed, before its main loop starts.
    """
    global _shutdown
    from django_websocket.admission import derive_limit
    from django_websocket.conf import get_setting

    derive_limit(worker)  # WEBSOCKET_MAX_CONNECTIONS = "auto"
    worker.wsgi = _link_middleware_directly(worker.wsgi)
    _bound_header_reads(worker, get_setting("WEBSOCKET_HANDSHAKE_TIMEOUT"))
    _shutdown = _Shutdown(worker, float(get_setting("WEBSOCKET_CLOSE_TIMEOUT")))
    cls = type(worker)
    worker.__class__ = type(
        cls.__name__, (cls,), {"alive": _watched_alive(_shutdown.start)}
    )
    if not worker.alive:  # a signal came while the application loaded
        _shutdown.start()


def _link_middleware_directly(application: Any) -> Any:
    """Have each of Django's middleware call the next through its bound
    ``__call__`` method rather than through the instance; return the
    handler's bound ``__call__``, for gunicorn to call likewise.

    Calling an instance makes CPython recurse in C; calling a Python method
    does not. A view runs beneath every middleware, and gevent copies a
    waiting greenlet's C stack to the heap: with the site's eight
    middleware, this takes 6.8 KiB off every open WebSocket. The chain is
    the same otherwise: each link is rebuilt with Django's own
    ``convert_exception_to_response()``. It stops at the first link that is
    not a sync class-based middleware wrapped by Django.
    """
    from inspect import getattr_static, iscoroutinefunction
    from types import FunctionType

    from django.core.handlers.exception import convert_exception_to_response
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse

    if not isinstance(application, WSGIHandler):
        return application
    # The code of the sync wrapper Django puts around each middleware.
    django_link = convert_exception_to_response(HttpResponse).__code__
    owner, name = application, "_middleware_chain"
    link = getattr(owner, name, None)
    while getattr(link, "__code__", None) is django_link:
        middleware = link.__wrapped__  # type: ignore[union-attr]
        call = getattr_static(type(middleware), "__call__", None)
        if not isinstance(call, FunctionType) or iscoroutinefunction(middleware):
            break
        setattr(owner, name, convert_exception_to_response(middleware.__call__))
        owner, name = middleware, "get_response"
        link = getattr(owner, name, None)
    return application.__call__


def _bound_header_reads(worker: Any, timeout: float | None) -> None:
    """Cut off, with a 408, a gthread client that has not sent its request
    headers *timeout* seconds after the worker started reading them.

    gthread reads them in a pool thread with no overall deadline, so clients
    that trickle a byte at a time would hold every thread. A timer of the
    library's hub is armed when a pool thread takes the connection and
    cancelled when the application is called. gevent spends a greenlet, not
    a thread, on such a client.
    """
    if not timeout or "gthread" not in type(worker).__module__:
        return
    from django_websocket.hub import TimerHandle, get_hub
    from django_websocket.server import cut_off

    deadlines: dict[int, TimerHandle] = {}  # id(socket) -> its deadline
    handle, application = worker.handle, worker.wsgi

    def handle_within_deadline(conn: Any) -> Any:
        sock = conn.sock
        deadlines[id(sock)] = get_hub().call_at(
            time.monotonic() + timeout, lambda: cut_off(sock)
        )
        try:
            return handle(conn)
        finally:
            deadline = deadlines.pop(id(sock), None)
            if deadline is not None:
                deadline.cancel()

    def headers_in(environ: dict[str, Any], start_response: Any) -> Any:
        deadline = deadlines.pop(id(environ.get("gunicorn.socket")), None)
        if deadline is not None:
            deadline.cancel()
        return application(environ, start_response)

    worker.handle = handle_within_deadline
    worker.wsgi = headers_in


def worker_int(worker: Any) -> None:
    """On SIGINT or SIGQUIT, wait until the WebSockets are closed.

    gunicorn exits the worker right after this hook returns, without waiting
    for its requests.
    """
    if _shutdown is not None:
        _shutdown.wait()


def _watched_alive(on_false: Callable[[], None]) -> property:
    """A worker's ``alive`` attribute that calls ``on_false()`` whenever it
    is set to False."""

    def get(worker: Any) -> bool:
        return bool(worker.__dict__["alive"])

    def set_(worker: Any, value: bool) -> None:
        worker.__dict__["alive"] = value
        if not value:
            on_false()

    return property(get, set_)


class _Shutdown:
    """Closes a worker's WebSockets once it starts to end."""

    def __init__(self, worker: Any, close_timeout: float) -> None:
        self._close_timeout = close_timeout
        # gunicorn closes its heartbeat file on the way out, while views may
        # still be closing (gthread joins its pool threads after that): this
        # descriptor of the same file stays open until the process exits.
        self._heartbeat = os.dup(worker.tmp.fileno())
        # start() writes a byte here to wake the watcher.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._deadline: float | None = None
        threading.Thread(
            target=self._watch, name="django-websocket-shutdown", daemon=True
        ).start()
        # A worker that exits at once (SIGABRT, and SIGQUIT under gevent)
        # leaves its views behind; the interpreter's exit waits here.
        atexit.register(self.wait)

    def start(self) -> None:
        """Wake the watcher; blocks on nothing and takes no lock.

        Called from signal handlers, under gevent inside its event loop. It
        refreshes the heartbeat itself: after a SIGABRT, the master checks
        the heartbeat again within a second.
        """
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self._close_timeout + _MARGIN
        self._beat()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def wait(self) -> None:
        """Return once no WebSocket is left, or at the deadline."""
        from django_websocket.hub import connection_count

        self.start()
        assert self._deadline is not None
        while connection_count() and time.monotonic() < self._deadline:
            time.sleep(_ROUND)

    def _watch(self) -> None:
        _read_byte(self._wake_read)
        from django_websocket.exceptions import CloseCode
        from django_websocket.hub import close_all

        assert self._deadline is not None
        while time.monotonic() < self._deadline:
            self._beat()
            close_all(CloseCode.GOING_AWAY, REASON)
            time.sleep(_ROUND)

    def _beat(self) -> None:
        # What gunicorn's WorkerTmp.notify() does: the master compares the
        # file's mtime with its own time.monotonic().
        now = time.monotonic()
        with contextlib.suppress(OSError):
            os.utime(self._heartbeat, (now, now))


def _read_byte(fd: int) -> None:
    try:
        from gevent.os import nb_read  # type: ignore[import-untyped]
    except ImportError:
        os.read(fd, 1)
        return
    import gevent.monkey  # type: ignore[import-untyped]

    if gevent.monkey.is_module_patched("threading"):
        os.set_blocking(fd, False)
        nb_read(fd, 1)
    else:
        os.read(fd, 1)
