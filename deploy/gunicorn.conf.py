"""gunicorn settings for the starter: the gthread worker by default, gevent by
switch, and open WebSockets closed with 1001 however a worker ends.

Run it from the project directory, with the production environment
(``deploy/env.example``) set::

    gunicorn -c deploy/gunicorn.conf.py

The environment overrides the numbers below: ``GUNICORN_BIND``,
``GUNICORN_WORKERS``, ``GUNICORN_THREADS``, ``GUNICORN_WORKER_CLASS`` (``gthread``
or ``gevent``) and ``GUNICORN_WORKER_CONNECTIONS``; ``GUNICORN_CMD_ARGS`` and
command-line options win over all of them. This file imports nothing from
Django: the gevent worker patches the standard library after reading it, and
must not find Django's lazy settings alive when it does. docs/deploy.md walks
through the whole setup.
"""

import os

from django_websocket.hooks import post_worker_init, worker_int

__all__ = ["post_worker_init", "worker_int"]  # the hooks gunicorn calls

wsgi_app = "config.wsgi:application"

# Loopback only: nginx in front terminates TLS and sets X-Forwarded-Proto,
# which Django trusts (SECURE_PROXY_SSL_HEADER), so clients must not reach
# gunicorn directly. Behind nginx on another host, bind a private address and
# list nginx's address in FORWARDED_ALLOW_IPS.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")

# One process per instance unless REDIS_URL is set: with the in-process
# groups backend, two workers would split every chat room in two.
workers = int(
    os.environ.get("GUNICORN_WORKERS", "2" if os.environ.get("REDIS_URL") else "1")
)

# gthread: an open WebSocket holds one pool thread for its whole life, and an
# ordinary request holds one while it runs. The hooks keep a quarter for
# requests (WEBSOCKET_MAX_CONNECTIONS = "auto"; past it a handshake gets 503):
# 200 threads per worker = up to 150 open sockets plus 50 requests in flight.
# An open socket costs about 50 KiB with its thread (measured with 1,000), so
# raise this for more sockets, and switch to gevent past a thousand or so per
# worker. gevent ignores it.
threads = int(os.environ.get("GUNICORN_THREADS", "200"))

# gthread: the most connections a worker holds, sockets included; at the
# limit it stops accepting and leaves new ones to another worker. It must be
# above threads, or keep-alive connections find no room (gunicorn warns).
# gevent: one greenlet per connection, so this is the number of WebSockets a
# worker holds at once; each costs about 29 KiB and no thread (measured with
# 2,000 in tests/test_deploy.py).
worker_connections = int(
    os.environ.get(
        "GUNICORN_WORKER_CONNECTIONS",
        "10000" if worker_class == "gevent" else str(threads + 50),
    )
)

# A worker busy with long WebSockets still reports in (gthread's main thread
# and gevent's hub keep running), so timeout only catches a worker that hangs.
# The master then sends SIGABRT; a worker that recovers within the second
# before its SIGKILL still closes its sockets with 1001.
timeout = 30

# With the hooks, open sockets get 1001 within a tenth of a second of SIGTERM
# (and of every other way a worker ends, max_requests included); this is what
# ordinary requests in flight have left to finish.
graceful_timeout = 10

# gunicorn's control socket (for gunicornc) has one default path per user,
# which two instances on one host would fight over; signals do the same job
# (docs/deploy.md).
control_socket_disable = True

# nginx logs every request in front; add `--access-logfile -` through
# GUNICORN_CMD_ARGS to log them here too.
errorlog = "-"
