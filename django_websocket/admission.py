"""How many WebSockets this process holds, and when it refuses one more.

An open WebSocket holds a thread for its whole life under runserver and
gunicorn's gthread worker, and a greenlet and a connection slot under gevent.
Past ``WEBSOCKET_MAX_CONNECTIONS`` (per process) or
``WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS`` (per client address), a handshake
gets ``503 Service Unavailable`` with ``Retry-After`` and a reason, before the
``101``, so the threads left keep serving ordinary requests.

``"auto"``, the default, is derived from the worker by the gunicorn hooks
(``django_websocket.hooks``): a quarter of gthread's ``threads`` is kept for
requests, a tenth of gevent's ``worker_connections``. Without them
(runserver, whose threads have no limit) there is no cap.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from django_websocket.conf import get_setting
from django_websocket.exceptions import HandshakeError

__all__ = ["Ticket", "admit", "derive_limit"]

RETRY_AFTER = 10  # seconds, in the 503's Retry-After header

_lock = threading.Lock()
_open = 0
_by_address: Counter[str] = Counter()
_derived: int | None = None  # from the gunicorn worker's configuration


class Ticket:
    """A place taken by one connection; ``release()`` gives it back (once)."""

    __slots__ = ("_address",)

    def __init__(self, address: str | None) -> None:
        self._address: str | None | bool = address

    def release(self) -> None:
        global _open
        with _lock:
            if self._address is False:
                return
            _open -= 1
            if isinstance(self._address, str):
                _by_address[self._address] -= 1
                if not _by_address[self._address]:
                    del _by_address[self._address]
            self._address = False


def admit(address: str | None) -> Ticket:
    """Take a place for a new connection from *address*.

    Raises:
        HandshakeError: 503 if this process or this address is at its limit.
    """
    global _open
    limit = get_setting("WEBSOCKET_MAX_CONNECTIONS")
    if limit == "auto":
        limit = _derived
    per_address = get_setting("WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS")
    retry = {"Retry-After": str(RETRY_AFTER)}
    with _lock:
        if limit is not None and _open >= limit:
            raise HandshakeError(
                503,
                f"This server process holds its maximum of {limit} WebSockets "
                "(WEBSOCKET_MAX_CONNECTIONS); try again later",
                retry,
            )
        if per_address is not None and address is not None:
            if _by_address[address] >= per_address:
                raise HandshakeError(
                    503,
                    f"{address} holds its maximum of {per_address} WebSockets "
                    "on this server (WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS); "
                    "close one or try again later",
                    retry,
                )
            _by_address[address] += 1
        else:
            address = None
        _open += 1
    return Ticket(address)


def derive_limit(worker: Any) -> int:
    """Set and return the ``"auto"`` limit for a gunicorn *worker*: its
    gevent ``worker_connections`` or gthread ``threads``, less a share kept
    for ordinary requests."""
    global _derived
    if "gevent" in type(worker).__module__:
        connections = int(worker.cfg.worker_connections)
        _derived = max(1, connections - max(10, connections // 10))
    else:
        threads = int(worker.cfg.threads)
        _derived = max(1, threads - max(2, threads // 4))
    return _derived
