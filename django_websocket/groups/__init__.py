"""Groups: broadcast a message to every connection subscribed to a name.

    from django_websocket import groups

    groups.subscribe(request.websocket, "room-lobby")
    groups.publish("room-lobby", "hello")        # every member, every process
    groups.track(request.websocket, "room-lobby", "ada")
    groups.presence("room-lobby")                # {"ada": 1, ...}

A connection leaves its groups when it closes. The backend is configured
like ``CACHES["default"]``::

    WEBSOCKET_GROUPS = {
        "BACKEND": "django_websocket.groups.redis.RedisBackend",
        "OPTIONS": {"url": "redis://127.0.0.1:6379/0"},
    }

The default, ``django_websocket.groups.local.LocalBackend``, reaches the
connections of the current process only. The setting is read when the backend
is first needed and again after ``override_settings`` changes it.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import Signal
from django.utils.module_loading import import_string

from django_websocket.conf import get_setting
from django_websocket.groups.base import BaseBackend
from django_websocket.websocket import Message, WebSocket

__all__ = [
    "BaseBackend",
    "connected",
    "get_backend",
    "local_members",
    "presence",
    "publish",
    "reach_lost",
    "reach_restored",
    "subscribe",
    "track",
    "unsubscribe",
    "untrack",
]

#: Sent when the backend stops reaching the other processes (Redis went
#: away): ``sender`` is the backend's class, ``groups`` the groups with
#: members in this process, which hear nothing from elsewhere until
#: ``reach_restored``. Receivers run in the backend's thread: keep them short.
reach_lost = Signal()
#: Sent when it reaches them again, resubscribed: members may have missed
#: what was published meanwhile. Same arguments.
reach_restored = Signal()

_backend: BaseBackend | None = None
# Serializes creating and replacing the process's backend.
_backend_lock = threading.Lock()


def get_backend() -> BaseBackend:
    """Return the configured backend, created on first use.

    Raises:
        ImproperlyConfigured: If ``WEBSOCKET_GROUPS`` names no usable backend.
    """
    global _backend
    if _backend is None:
        with _backend_lock:
            if _backend is None:
                _backend = _load(get_setting("WEBSOCKET_GROUPS"))
    return _backend


def _load(config: Any) -> BaseBackend:
    if not isinstance(config, dict) or "BACKEND" not in config:
        raise ImproperlyConfigured(
            f"WEBSOCKET_GROUPS must be a dict with a 'BACKEND' key, got {config!r}"
        )
    path = config["BACKEND"]
    try:
        backend_class = import_string(path)
    except ImportError as err:
        raise ImproperlyConfigured(
            f"WEBSOCKET_GROUPS['BACKEND'] = {path!r} cannot be imported: {err}"
        ) from err
    if not (isinstance(backend_class, type) and issubclass(backend_class, BaseBackend)):
        raise ImproperlyConfigured(
            f"WEBSOCKET_GROUPS['BACKEND'] = {path!r} is not a BaseBackend subclass"
        )
    options = config.get("OPTIONS", {})
    try:
        backend: BaseBackend = backend_class(**options)
    except (TypeError, ValueError) as err:
        raise ImproperlyConfigured(
            f"WEBSOCKET_GROUPS['OPTIONS'] = {options!r} rejected by {path}: {err}"
        ) from err
    return backend


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _backend
    if setting == "WEBSOCKET_GROUPS":
        with _backend_lock:
            if _backend is not None:
                _backend.close()
            _backend = None


setting_changed.connect(_reset)


def subscribe(websocket: WebSocket, group: str) -> None:
    """Add *websocket* to *group*; it leaves when it closes."""
    get_backend().subscribe(websocket, group)


def unsubscribe(websocket: WebSocket, group: str) -> None:
    """Remove *websocket* from *group* (no error if it was not a member)."""
    get_backend().unsubscribe(websocket, group)


def publish(group: str, message: Message) -> None:
    """Send *message* to every member of *group*, in every process the
    backend reaches. Never blocks on a slow member.

    Raises:
        BroadcastError: If the backend cannot deliver (e.g. Redis is down).
    """
    get_backend().publish(group, message)


def local_members(group: str) -> list[WebSocket]:
    """Return the members of *group* connected to this process."""
    return get_backend().local_members(group)


def track(websocket: WebSocket, group: str, identity: str) -> None:
    """Show *websocket* as *identity* in *group*'s presence until it closes
    (or ``untrack()``). One identity may have several connections."""
    get_backend().track(websocket, group, identity)


def untrack(websocket: WebSocket, group: str) -> None:
    """Remove *websocket* from *group*'s presence."""
    get_backend().untrack(websocket, group)


def presence(group: str) -> dict[str, int]:
    """Return who is present in *group*: identity -> number of connections,
    across every process the backend reaches.

    Raises:
        BroadcastError: If the backend cannot be reached.
    """
    return get_backend().presence(group)


def connected() -> bool:
    """Tell whether messages published elsewhere reach this process now
    (always true for the in-process backend)."""
    return get_backend().connected
