"""System checks: the library's runserver must be the one that runs, and the
protocol engine's C speedups must be in use."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.management import get_commands

__all__ = ["check_runserver", "check_speedups"]


@checks.register()
def check_runserver(**kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when another app's runserver shadows the library's."""
    owner = get_commands().get("runserver")
    if owner == "django_websocket":
        return []
    return [
        checks.Warning(
            f"runserver comes from {owner!r}, so it cannot serve WebSocket views.",
            hint="List 'django_websocket' before 'django.contrib.staticfiles' "
            "(and any other app with a runserver command) in INSTALLED_APPS.",
            id="django_websocket.W001",
        )
    ]


@checks.register()
def check_speedups(**kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when websockets runs without its C extension (9x slower masking)."""
    from websockets import frames

    try:
        from websockets import speedups
    except ImportError:
        speedups = None  # type: ignore[assignment]
    if (
        speedups is not None
        and getattr(frames, "apply_mask", None) is speedups.apply_mask
    ):
        return []
    return [
        checks.Warning(
            "websockets is running without its C speedups.",
            hint="Install websockets from a wheel, or with a C compiler available.",
            id="django_websocket.W002",
        )
    ]
