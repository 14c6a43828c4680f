"""Settings for the benchmark: the site's, plus a broadcast endpoint, with
DEBUG off (as in production) and request logging at warning level."""

import os

from config.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.urls"
LOGGING["loggers"]["django"]["level"] = "WARNING"  # noqa: F405
WEBSOCKET_COMPRESSION = False

# The livesearch scenario points the Hacker News source at a local stand-in.
if os.environ.get("BENCH_SEARCH_API"):
    LIVESEARCH_INTERVAL = 1.0
    LIVESEARCH_SOURCES = {
        "hn": {
            "BACKEND": "apps.livesearch.sources.HackerNewsSource",
            "LABEL": "Hacker News (local stand-in)",
            "OPTIONS": {"url": os.environ["BENCH_SEARCH_API"] + "/hn", "timeout": 5},
        }
    }
