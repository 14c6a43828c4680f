"""``manage.py runserver`` that also serves WebSocket views.

It subclasses staticfiles' runserver when that app is installed (keeping
``--nostatic`` and ``--insecure``), else Django's, and swaps in the library's
threaded server (``django_websocket.server``): one thread per connection,
autoreload included. On exit (CTRL-C, SIGTERM under ``--noreload``, an
autoreload restart) every open WebSocket is sent close code 1001.

A SIGTERM sent to the autoreloader's parent process kills the serving child
outright, with no close frame: under a process manager, use ``--noreload``.
"""

from __future__ import annotations

import atexit
import signal
import sys
import time
from typing import Any

from django.apps import apps
from django.core.management import CommandError

from django_websocket.hub import close_all, get_hub
from django_websocket.server import WebSocketWSGIServer

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as BaseCommand,
    )
else:
    from django.core.management.commands.runserver import (  # type: ignore[assignment]
        Command as BaseCommand,
    )

# How long exiting waits for clients to answer the 1001 close frames. The
# autoreloader's parent kills the child 0.25 s after CTRL-C, so stay below.
SHUTDOWN_GRACE = 0.2


class Command(BaseCommand):
    help = "Starts a development web server that also serves WebSocket views."
    server_cls = WebSocketWSGIServer

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--multithreaded",
            action="store_true",
            help="Accepted for compatibility; the server is always multithreaded.",
        )

    def run(self, **options: Any) -> None:
        if not options["use_threading"]:
            raise CommandError(
                "--nothreading cannot serve WebSocket views: one open connection "
                "would block every other request."
            )
        if not options["use_reloader"]:
            # Django's default SIGTERM action skips atexit handlers.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        atexit.register(_close_websockets)
        super().run(**options)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(0)


def _close_websockets() -> None:
    if close_all(1001, "server shutting down") == 0:
        return
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while get_hub().connections() and time.monotonic() < deadline:
        time.sleep(0.01)
