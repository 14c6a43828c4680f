"""gunicorn server hooks: close every WebSocket with 1001 on shutdown.

Import them in ``gunicorn.conf.py``::

    from django_websocket.hooks import post_worker_init, worker_int

Without them, gunicorn waits out ``graceful_timeout`` on SIGTERM and then
drops open WebSockets with no close frame. This module imports nothing from
Django at import time: gevent's ``patch_all()`` runs after the config file
is loaded and must not find Django's lazy settings alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

__all__ = ["post_worker_init", "worker_int"]

REASON = "server shutting down"


def post_worker_init(worker: Any) -> None:
    """Wrap the worker's SIGTERM handler to close WebSockets first.

    The signal handler only writes a byte to a pipe (under gevent it runs
    inside the event loop, where blocking or starting threads is not
    allowed); a watcher thread does the closing.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        _read_byte(read_end)
        from django_websocket.hub import close_all

        close_all(1001, REASON)

    threading.Thread(
        target=watch, name="django-websocket-shutdown", daemon=True
    ).start()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, b"x")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_int(worker: Any) -> None:
    """On SIGINT/SIGQUIT, close WebSockets with 1001 before the worker exits."""
    from django_websocket.hub import close_all

    close_all(1001, REASON)


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
