"""Settings for the benchmark: the site's, plus a broadcast endpoint, with
DEBUG off (as in production) and request logging at warning level."""

from config.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.urls"
LOGGING["loggers"]["django"]["level"] = "WARNING"  # noqa: F405
WEBSOCKET_COMPRESSION = False
