"""Live search settings: the defaults and the one function that reads them.

Settings are read when they are needed, never at import time, so
``override_settings`` and pytest-django's ``settings`` fixture apply. Set any
of them in ``config/settings.py`` to replace the default here; see
``docs/howto/livesearch-sources.md``.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest

DEFAULTS: dict[str, Any] = {
    # Seconds between two pushes of the same query.
    "LIVESEARCH_INTERVAL": 30.0,
    # Longest wait, in seconds, before retrying a failing source.
    "LIVESEARCH_MAX_BACKOFF": 300.0,
    # Threads per process that run the searches of every query, in turns.
    "LIVESEARCH_FETCHERS": 8,
    # Distinct (source, query) pairs one process polls at most; past it, a
    # search for another one gets an error event.
    "LIVESEARCH_MAX_QUERIES": 500,
    # Searches one client may send: (count, seconds), counted per client
    # address and per session or user in Django's default cache.
    "LIVESEARCH_RATE_LIMIT": (20, 60.0),
    # Refreshes ("poll now") one client may ask for: (count, seconds),
    # counted like searches. Each one polls the source for every follower.
    "LIVESEARCH_REFRESH_RATE_LIMIT": (3, 60.0),
    # Seconds an upstream request may take in all: connecting, sending, and
    # reading the whole answer, however slowly it trickles in.
    "LIVESEARCH_REQUEST_DEADLINE": 10.0,
    # The largest answer read from an upstream, in bytes (decompressed).
    "LIVESEARCH_MAX_RESPONSE_SIZE": 1024 * 1024,
    # The sources the page offers, shaped like CACHES: name -> BACKEND (a
    # class path), LABEL (shown in the picker) and OPTIONS (its arguments).
    "LIVESEARCH_SOURCES": {
        "local": {
            "BACKEND": "apps.livesearch.sources.LocalSource",
            "LABEL": "This site (chat messages)",
            "OPTIONS": {
                "models": {
                    "chat.Message": {
                        "fields": ["text", "author"],
                        "title": "{obj.author} in #{obj.room}",
                        "url_name": "chat:room",
                        "url_args": ["{obj.room.name}"],
                        "published": "created_at",
                    },
                },
            },
        },
        "hn": {
            "BACKEND": "apps.livesearch.sources.HackerNewsSource",
            "LABEL": "Hacker News",
            "OPTIONS": {"url": "https://hn.algolia.com"},
        },
        "wikipedia": {
            "BACKEND": "apps.livesearch.sources.WikipediaSource",
            "LABEL": "Wikipedia (English)",
            "OPTIONS": {"url": "https://en.wikipedia.org"},
        },
        "searxng": {
            "BACKEND": "apps.livesearch.sources.SearxngSource",
            "LABEL": "SearXNG (127.0.0.1:8080)",
            "OPTIONS": {"url": "http://127.0.0.1:8080"},
        },
    },
}


def get_setting(name: str) -> Any:
    """Return the project's value for setting *name*, or its default."""
    return getattr(settings, name, DEFAULTS[name])


def template_context(request: HttpRequest) -> dict[str, Any]:
    """Context processor: what other pages say of the live search (the home
    page's "every N seconds") comes from its settings."""
    return {"livesearch_interval": get_setting("LIVESEARCH_INTERVAL")}
