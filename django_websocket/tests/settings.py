"""Settings for server processes the library's tests start (runserver,
gunicorn), independent of any project around the library."""

import os

DEBUG = True
SECRET_KEY = "django-websocket-tests-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "django_websocket.tests.urls"
USE_TZ = True
STATIC_URL = "/static/"
INSTALLED_APPS = [
    "django_websocket",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
]
if os.environ.get("DJANGO_WEBSOCKET_TESTS_STATICFILES_FIRST"):
    INSTALLED_APPS.remove("django_websocket")
    INSTALLED_APPS.append("django_websocket")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if os.environ.get("DJANGO_WEBSOCKET_TESTS_MIDDLEWARE"):
    MIDDLEWARE.append("django_websocket.middleware.WebSocketMiddleware")
WEBSOCKET_ACCEPT_ALL = bool(os.environ.get("DJANGO_WEBSOCKET_TESTS_ACCEPT_ALL"))
if os.environ.get("DJANGO_WEBSOCKET_TESTS_HANDSHAKE_TIMEOUT"):
    WEBSOCKET_HANDSHAKE_TIMEOUT = float(
        os.environ["DJANGO_WEBSOCKET_TESTS_HANDSHAKE_TIMEOUT"]
    )
if os.environ.get("DJANGO_WEBSOCKET_TESTS_PING"):  # "interval,timeout"
    interval, timeout = os.environ["DJANGO_WEBSOCKET_TESTS_PING"].split(",")
    WEBSOCKET_PING_INTERVAL, WEBSOCKET_PING_TIMEOUT = float(interval), float(timeout)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_WEBSOCKET_TESTS_DB", ":memory:"),
        "ATOMIC_REQUESTS": bool(os.environ.get("DJANGO_WEBSOCKET_TESTS_ATOMIC")),
    }
}
if os.environ.get("REDIS_URL"):
    WEBSOCKET_GROUPS = {
        "BACKEND": "django_websocket.groups.redis.RedisBackend",
        "OPTIONS": {
            "url": os.environ["REDIS_URL"],
            "max_backoff": 0.5,
            "presence_ttl": 1.5,
        },
    }
