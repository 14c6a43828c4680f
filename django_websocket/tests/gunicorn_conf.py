"""gunicorn settings for the library's tests: one worker with the
shutdown hooks, as a project's own gunicorn.conf.py would have."""

from django_websocket.hooks import post_worker_init, worker_int

__all__ = ["post_worker_init", "worker_int"]

workers = 1
threads = 50
worker_connections = 1000
graceful_timeout = 5
# gunicorn 27's control socket has one default path per user: parallel
# test servers would fight over it.
control_socket_disable = True
