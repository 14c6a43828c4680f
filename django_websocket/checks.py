"""System checks: the library's runserver must be the one that runs, the
protocol engine's C speedups must be in use, and no WebSocket view should
admit every origin by accident."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core import checks
from django.core.management import get_commands
from django.urls import URLPattern, URLResolver, get_resolver

from django_websocket.conf import get_setting

__all__ = ["check_allowed_origins", "check_runserver", "check_speedups"]


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


@checks.register(checks.Tags.security, checks.Tags.urls)
def check_allowed_origins(**kwargs: Any) -> list[checks.CheckMessage]:
    """Warn where ``"*"`` lets any web page open a socket with the visitor's
    cookies: in WEBSOCKET_ALLOWED_ORIGINS, or a view's ``allowed_origins``."""
    hint = (
        "List the origins that may connect (https://app.example.com, or "
        "https://*.example.com for subdomains); the site's own origin is "
        "always allowed."
    )
    found = []
    if "*" in get_setting("WEBSOCKET_ALLOWED_ORIGINS"):
        found.append("WEBSOCKET_ALLOWED_ORIGINS contains '*'")
    for route, view in _websocket_views(get_resolver().url_patterns, ""):
        if "*" in view.websocket_options.get("allowed_origins", ()):
            found.append(f"the WebSocket view at /{route} allows origin '*'")
    return [
        checks.Warning(
            f"{what}: any web site can open a WebSocket here with its "
            "visitors' cookies (cross-site WebSocket hijacking).",
            hint=hint,
            id="django_websocket.W003",
        )
        for what in found
    ]


def _websocket_views(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _websocket_views(
                pattern.url_patterns, prefix + str(pattern.pattern)
            )
        elif isinstance(pattern, URLPattern) and hasattr(
            pattern.callback, "websocket_options"
        ):
            yield prefix + str(pattern.pattern), pattern.callback
