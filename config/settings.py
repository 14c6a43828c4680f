"""Settings of the django-websocket starter, in one file.

Every value has a development default here; the environment overrides the
few that differ in production: DJANGO_DEBUG, DJANGO_SECRET_KEY,
DJANGO_ALLOWED_HOSTS, DJANGO_CSRF_TRUSTED_ORIGINS, DATABASE_URL, REDIS_URL,
DJANGO_STATIC_ROOT, DJANGO_LOG_LEVEL and, with DEBUG off, the HTTPS settings
(deploy/env.example lists them all). The library's own settings
(``WEBSOCKET_*``) keep their defaults from ``django_websocket/conf.py`` unless
set here.

https://docs.djangoproject.com/en/5.2/ref/settings/
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def _env_list(name: str, default: str) -> list[str]:
    items = os.environ.get(name, default).split(",")
    return [item.strip() for item in items if item.strip()]


# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#debug

DEBUG = _env_bool("DJANGO_DEBUG", True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY when DJANGO_DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-never-use-in-production"

ALLOWED_HOSTS = _env_list(
    "DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else ""
)

CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

# Applications
# https://docs.djangoproject.com/en/5.2/ref/settings/#installed-apps

INSTALLED_APPS = [
    # Before staticfiles, so that its runserver (which serves WebSocket views)
    # is the one manage.py finds.
    "django_websocket",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "apps.echo",
    "apps.chat",
    "apps.livesearch",
]

# https://docs.djangoproject.com/en/5.2/topics/http/middleware/
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Templates: Jinja2 for the site, one tree in templates/.
# https://docs.djangoproject.com/en/5.2/topics/templates/#django.template.backends.jinja2.Jinja2

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "environment": "config.jinja2.environment",
            "context_processors": ["apps.livesearch.conf.template_context"],
        },
    },
    # Only for the admin, whose templates are Django templates.
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Log in and out with Django's own views (templates/registration/).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "home"

# Database: SQLite next to manage.py unless DATABASE_URL says otherwise.
# https://docs.djangoproject.com/en/5.2/ref/settings/#databases

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (each socket is a thread): WAL lets readers go on
    # while one writes, IMMEDIATE takes the write lock when a transaction
    # begins (a deferred one that upgrades later fails with "database is
    # locked" instead of waiting), and timeout is how long a writer waits.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 10,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **DATABASES["default"].get("OPTIONS", {}),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Internationalization
# https://docs.djangoproject.com/en/5.2/topics/i18n/

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: served by runserver in development, collected to
# STATIC_ROOT for production.
# https://docs.djangoproject.com/en/5.2/howto/static-files/

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))

# HTTPS, with DEBUG off: nginx terminates TLS and says so in X-Forwarded-Proto,
# which it always overwrites (deploy/nginx.conf); never trust this header
# from a proxy that passes a client's own through.
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/#https

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Off only when something in front already redirects plain HTTP.
    SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Browsers remember this for its whole lifetime: start small, then raise
    # it to a year (31536000) once every subdomain serves HTTPS.
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "3600"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool(
        "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True
    )
    # Only the header's consent: joining the browsers' preload list also takes
    # a year-long max-age and a request at https://hstspreload.org/.
    SECURE_HSTS_PRELOAD = _env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)

# Content-Security-Policy (config/csp.py; Django 6's setting and shape):
# scripts, styles and sockets from this site only, and no inline code at all.
# CSP3 lets 'self' in connect-src match ws:/wss: to this same host.
# https://docs.djangoproject.com/en/6.0/ref/csp/

SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "object-src": ["'none'"],
}

# Logging: everything to the console, requests and sockets included.
# https://docs.djangoproject.com/en/5.2/topics/logging/

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django_websocket": {
            "handlers": ["console"],
            "level": LOG_LEVEL,
            "propagate": False,
        },
        "apps": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

# WebSocket groups: in-process by default; REDIS_URL shares them (chat rooms,
# presence) across processes and hosts through Redis pub/sub.
# docs/reference/settings.md

if os.environ.get("REDIS_URL"):
    WEBSOCKET_GROUPS = {
        "BACKEND": "django_websocket.groups.redis.RedisBackend",
        "OPTIONS": {"url": os.environ["REDIS_URL"]},
    }

# Cache: in-process by default; REDIS_URL puts it in Redis, so that the counts
# kept there (the rate limits of apps/ratelimit.py) span processes and hosts.
# https://docs.djangoproject.com/en/5.2/topics/cache/#redis

if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            # A Redis that is down fails a check within a second (the
            # attempt is then let through) instead of holding the view.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
