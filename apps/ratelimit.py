"""Rate limits that a reconnect does not reset, counted in Django's cache.

``rate_limited(key, limit, period)`` counts one attempt under *key* and says
whether it is over *limit* in the current window of *period* seconds;
``client_keys(request)`` gives the keys a client's attempts are counted
under: its address, and its user or else its session. Any app may use both
(they know nothing of the apps); each picks its own key prefix.

The counters live in a cache (the ``default`` one unless told otherwise), so
they outlast connections and, with a cache that several processes share
(Redis, Memcached), span those processes. With the default in-process
``LocMemCache``, each process counts on its own. Windows are fixed, aligned
on multiples of *period*: a client may fit up to twice *limit* attempts
around a window's boundary. This is not a defence against a distributed
flood; it keeps one client from taking a process's whole share. If the cache
fails, attempts are let through and the failure is logged.
"""

import ipaddress
import logging
import math
import time

from django.core.cache import caches
from django.http import HttpRequest

logger = logging.getLogger(__name__)


def rate_limited(
    key: str, limit: int, period: float, *, using: str = "default"
) -> float:
    """Count one attempt under *key*, and tell whether it is over the limit.

    Args:
        key: What is counted, e.g. ``"livesearch:address:192.0.2.1"``; it
            must be a valid cache key (no spaces or control characters).
        limit: The attempts allowed per window.
        period: The window, in seconds.
        using: The alias of the cache in ``CACHES``.

    Returns:
        ``0.0`` if the attempt is allowed; otherwise the seconds until the
        window ends and attempts count again (truthy).
    """
    now = time.time()  # wall clock: the windows are shared across processes
    window = math.floor(now / period)
    cache_key = f"ratelimit:{key}:{window}"
    cache = caches[using]
    try:
        cache.add(cache_key, 0, timeout=math.ceil(period) + 1)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired or evicted since add(): start again
            cache.add(cache_key, 1, timeout=math.ceil(period) + 1)
            count = 1
    except Exception:
        logger.exception("rate limit %r: the cache %r failed; allowing", key, using)
        return 0.0
    return 0.0 if count <= limit else (window + 1) * period - now


def client_keys(request: HttpRequest) -> list[str]:
    """The keys a client's attempts are counted under.

    ``address:<ip>`` always, plus ``user:<pk>`` for a logged-in user or else
    ``session:<key>`` if the client has a session. The address is
    ``REMOTE_ADDR``, except behind a proxy on this host (``REMOTE_ADDR`` a
    loopback address) that sent ``X-Forwarded-For``: then it is the last
    address there, the one the proxy saw (nginx's
    ``$proxy_add_x_forwarded_for`` appends it). A proxy on another host
    needs its own rule: every client would otherwise share its address.
    """
    keys = [f"address:{client_address(request)}"]
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    if user is not None and user.is_authenticated:
        keys.append(f"user:{user.pk}")
    elif session is not None and session.session_key:
        keys.append(f"session:{session.session_key}")
    return keys


def client_address(request: HttpRequest) -> str:
    """The client's IP address (see ``client_keys``)."""
    address = str(request.META.get("REMOTE_ADDR") or "unknown")
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if forwarded and _is_loopback(address):
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # not an address: count it under the proxy's
    return address


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
