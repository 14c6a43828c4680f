"""Django app configuration: registers the library's system checks."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoWebSocketConfig(AppConfig):
    name = "django_websocket"
    verbose_name = "WebSockets"

    def ready(self) -> None:
        from django_websocket import checks  # noqa: F401  (registers the checks)
