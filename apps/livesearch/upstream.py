"""The HTTP client the live search sources share: one per process, with a
total deadline and a size cap on every request.

httpx's timeouts bound each network operation (connecting, each read, each
write), not a request: a server that sends one byte a second never trips
them. ``get()`` runs the whole request, redirects included, under a deadline
instead: the timeout of every operation is cut to the time left, so a
trickling server is dropped when the deadline passes, whether it trickles
the headers or the body. The body is read in chunks and abandoned past a
byte limit. This module neither retries nor parses; ``sources.py`` does
the rest.
"""

import threading
import time
from contextvars import ContextVar
from typing import Any, cast

import httpx

# When the request running in this thread (or greenlet) must be over, as
# time.monotonic(); None outside get().
_deadline: ContextVar[float | None] = ContextVar("livesearch_deadline", default=None)

# Protects _client, created on first use.
_lock = threading.Lock()
_client: httpx.Client | None = None


class DeadlineExceeded(Exception):
    """The request was still running when its deadline passed."""


class ResponseTooLarge(Exception):
    """The answer's body is larger than the limit."""


def get(
    url: str,
    *,
    params: dict[str, Any],
    headers: dict[str, str],
    timeout: float,
    deadline: float,
    max_bytes: int,
) -> tuple[httpx.Response, bytes]:
    """GET *url*, following redirects, and read its body.

    Args:
        timeout: Seconds allowed for each network operation.
        deadline: Seconds allowed for the whole request.
        max_bytes: The largest body read, after decompression.

    Returns:
        The response (closed: its status and headers) and its body, which is
        empty for an error status (4xx and 5xx bodies are not read).

    Raises:
        DeadlineExceeded: If the request took longer than *deadline*.
        ResponseTooLarge: If the body is longer than *max_bytes*.
        httpx.HTTPError: On any other failure, timeouts included.
    """
    end = time.monotonic() + deadline
    token = _deadline.set(end)
    try:
        with _shared_client().stream(
            "GET",
            url,
            params=params,
            headers=headers,
            timeout=timeout,
            follow_redirects=True,
        ) as response:
            return response, b"" if response.is_error else _body(response, max_bytes)
    except httpx.TimeoutException as err:
        if time.monotonic() >= end:
            raise DeadlineExceeded(f"no complete answer within {deadline:g} s") from err
        raise
    finally:
        _deadline.reset(token)


def _body(response: httpx.Response, max_bytes: int) -> bytes:
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ResponseTooLarge(f"{int(length):,} bytes announced")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            # Leaving the with block closes the connection unread.
            raise ResponseTooLarge(f"more than {max_bytes:,} bytes")
    return bytes(body)


def _shared_client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            transport = httpx.HTTPTransport(
                # At most one request per fetcher thread is in flight; idle
                # connections are kept for the next poll of the same host.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=16)
            )
            # httpx has no option for a network backend, so wrap the one its
            # connection pool uses; every socket it opens then obeys the
            # deadline of the request that uses it.
            pool = transport._pool
            backend = _DeadlineBackend(pool._network_backend)
            pool._network_backend = cast(Any, backend)
            _client = httpx.Client(transport=transport)
        return _client


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """*timeout* cut to the time left before the deadline, if there is one."""
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineBackend:
    """httpcore's ``NetworkBackend`` interface, around the real one (httpcore
    is httpx's own layer: this app imports httpx only)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> "_DeadlineStream":
        stream = self._backend.connect_tcp(
            host,
            port,
            _left(timeout, httpx.ConnectTimeout),
            local_address,
            socket_options,
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> "_DeadlineStream":
        stream = self._backend.connect_unix_socket(
            path, _left(timeout, httpx.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineStream:
    """httpcore's ``NetworkStream`` interface, around the real one."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._stream.read(max_bytes, _left(timeout, httpx.ReadTimeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpx.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> "_DeadlineStream":
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _left(timeout, httpx.ConnectTimeout)
        )
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
