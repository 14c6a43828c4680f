"""How often one client may search and ask for a refresh.

``check(clients, kind)`` counts one search (``LIVESEARCH_RATE_LIMIT``) or one
refresh (``LIVESEARCH_REFRESH_RATE_LIMIT``) under each of the client's keys
(``apps.ratelimit.client_keys``: its address, and its user or session), in
Django's cache, so reconnecting does not start the count again. A refresh
makes the source answer sooner than the schedule for every follower of the
query, which is why it has a limit of its own, tighter than searches'.
"""

import math

from apps import ratelimit
from apps.livesearch.conf import get_setting
from apps.livesearch.pusher import SearchRefused

# By request type: the setting, the cache key prefix, and the word for many.
_LIMITS = {
    "search": ("LIVESEARCH_RATE_LIMIT", "livesearch", "searches"),
    "refresh": ("LIVESEARCH_REFRESH_RATE_LIMIT", "livesearch-refresh", "refreshes"),
}


def check(clients: list[str], kind: str) -> None:
    """Count one request of *kind* (``"search"`` or ``"refresh"``) from the
    client known by the keys *clients*.

    Raises:
        SearchRefused: If it is over the limit under any of the keys, saying
            the limit and when to try again.
    """
    setting, prefix, many = _LIMITS[kind]
    limit, period = get_setting(setting)
    waits = [
        ratelimit.rate_limited(f"{prefix}:{client}", limit, period)
        for client in clients
    ]
    if max(waits, default=0.0):
        raise SearchRefused(
            f"too many {many}: {limit} every {period:g} s at most;"
            f" try again in {math.ceil(max(waits))} s",
            kind,
        )
