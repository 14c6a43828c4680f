"""Groups across processes and hosts through Redis pub/sub.

Each process runs one listener thread, subscribed to the channels of the
groups that have members in this process, and hands every message it
receives to those members. ``publish()`` goes through Redis even for local
members, so every process sees the messages of a group in the same order.

When Redis goes away the listener logs it, sends ``groups.reach_lost``,
retries with capped exponential backoff, resubscribes and sends
``groups.reach_restored``; the server keeps serving. ``publish()`` meanwhile
raises ``BroadcastError`` within ``socket_timeout`` instead of hanging.
Messages published while a process was cut off from Redis are not replayed
to it: store what must not be lost (the chat stores every message) and let
clients resume from the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from typing import Any

from django_websocket.exceptions import BroadcastError
from django_websocket.groups import reach_lost, reach_restored
from django_websocket.groups.base import BaseBackend
from django_websocket.websocket import Message

__all__ = ["RedisBackend"]

logger = logging.getLogger("django_websocket.groups")

_TEXT, _BINARY = b"t", b"b"


class RedisBackend(BaseBackend):
    """Groups shared by every process connected to one Redis server.

    Args:
        url: Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: Prefix of the pub/sub channel names.
        socket_timeout: Seconds before a Redis call gives up.
        max_backoff: Longest pause, in seconds, between reconnection attempts.
        presence_ttl: Seconds after which the presence entries of a process
            that stopped refreshing them (it died) are ignored and removed;
            each process refreshes its own three times per period.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "django_websocket:",
        socket_timeout: float = 2.0,
        max_backoff: float = 5.0,
        presence_ttl: float = 15.0,
    ) -> None:
        super().__init__()
        import redis

        self.url = url
        self.prefix = prefix
        self.max_backoff = max_backoff
        self._socket_timeout = socket_timeout
        self._presence_ttl_ms = int(presence_ttl * 1000)
        self._heartbeat = presence_ttl / 3
        # One presence write at a time, each reading the local presence under
        # the lock: an older snapshot can never land after a newer one.
        self._store_lock = threading.Lock()
        # Groups whose presence in Redis may be stale (last write failed):
        # rewritten at every heartbeat and reconnection, even once empty.
        self._unsynced: set[str] = set()
        self._process_id = uuid.uuid4().hex
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=0,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # Serializes subscribe/unsubscribe commands on the pub/sub connection
        # and its replacement by the listener after a reconnection.
        self._pubsub_lock = threading.Lock()
        self._pubsub: Any = None
        # Channels whose subscription Redis has confirmed, with their events.
        self._confirmed: dict[bytes, threading.Event] = {}
        self._stopping = threading.Event()
        self._connected = threading.Event()
        # None until the first attempt; reach_lost/reach_restored on changes.
        self._reachable: bool | None = None
        self._listener = threading.Thread(
            target=self._listen, name="django-websocket-redis", daemon=True
        )
        self._listener.start()

    # BaseBackend.

    def publish(self, group: str, message: Message) -> None:
        if isinstance(message, str):
            payload = _TEXT + message.encode()
        else:
            payload = _BINARY + bytes(message)
        try:
            self._redis.publish(self._channel(group), payload)
        except self._errors as err:
            raise BroadcastError(
                f"cannot publish to group {group!r}: Redis at {self.url} "
                f"is unreachable ({err})"
            ) from err

    def on_first_member(self, group: str) -> None:
        channel = self._channel(group)
        event = self._confirmed.setdefault(channel, threading.Event())
        with self._pubsub_lock:
            # With no pub/sub connection yet, the listener subscribes to every
            # group with members as soon as it (re)connects.
            if self._pubsub is not None:
                try:
                    self._pubsub.subscribe(channel)
                except self._errors:
                    return
        # A message published before Redis confirms would miss the new
        # member: wait (at most one socket timeout) for the confirmation.
        event.wait(self._socket_timeout)

    def on_last_member(self, group: str) -> None:
        channel = self._channel(group)
        self._confirmed.pop(channel, None)
        with self._pubsub_lock:
            if self._pubsub is None:
                return
            with contextlib.suppress(*self._errors):
                self._pubsub.unsubscribe(channel)

    def close(self) -> None:
        self._stopping.set()
        self._listener.join(self.max_backoff + 2)
        self._redis.close()

    def on_presence_change(self, group: str) -> None:
        try:
            self._store_presence(group)
        except self._errors as err:
            # Rewritten by the listener at its next heartbeat or reconnection.
            logger.warning("Cannot store presence of %r in Redis (%s)", group, err)

    def presence(self, group: str) -> dict[str, int]:
        """Presence across processes; this process's own while Redis is
        unreachable (logged)."""
        key = self._presence_key(group)
        try:
            entries: dict[bytes, bytes] = self._redis.hgetall(key)  # type: ignore[assignment]
            ids = list(entries)
            alive_keys = [self._alive_key(i.decode()) for i in ids]
            alive = self._redis.mget(alive_keys) if ids else []
        except self._errors as err:
            logger.warning("Cannot read presence of %r from Redis (%s)", group, err)
            return self.local_presence(group)
        counts: dict[str, int] = {}
        for process_id, flag in zip(ids, alive, strict=True):
            if flag is None:
                with contextlib.suppress(*self._errors):
                    self._redis.hdel(key, process_id)
                continue
            for identity, count in json.loads(entries[process_id]).items():
                counts[identity] = counts.get(identity, 0) + count
        return counts

    def _store_presence(self, group: str) -> None:
        with self._store_lock:
            self._unsynced.add(group)
            counts = self.local_presence(group)
            pipe = self._redis.pipeline()
            if counts:
                pipe.hset(
                    self._presence_key(group), self._process_id, json.dumps(counts)
                )
            else:
                pipe.hdel(self._presence_key(group), self._process_id)
            pipe.set(self._alive_key(self._process_id), 1, px=self._presence_ttl_ms)
            pipe.execute()
            self._unsynced.discard(group)

    def _presence_key(self, group: str) -> str:
        return f"{self.prefix}presence:{group}"

    def _alive_key(self, process_id: str) -> str:
        return f"{self.prefix}alive:{process_id}"

    @property
    def connected(self) -> bool:
        """Whether the listener is currently subscribed through Redis."""
        return self._connected.is_set()

    # The listener thread.

    def _channel(self, group: str) -> bytes:
        return (self.prefix + group).encode()

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._serve()
            except self._errors as err:
                if self._stopping.is_set():
                    return
                if self._connected.is_set():
                    logger.warning("Lost Redis at %s (%s); reconnecting", self.url, err)
                else:
                    logger.warning(
                        "Cannot reach Redis at %s (%s); retrying in %.1f s",
                        self.url,
                        err,
                        backoff,
                    )
                self._connected.clear()
                if self._reachable is not False:
                    self._reachable = False
                    self._announce(reach_lost)
                self._drop_pubsub()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            else:
                return
            if self._connected.is_set():
                backoff = 0.1

    def _serve(self) -> None:
        pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
        # A dummy channel keeps the connection in subscribed mode even when
        # this process has no group members yet.
        channels = [self._channel("")] + [self._channel(g) for g in self.groups()]
        pubsub.subscribe(*channels)
        with self._pubsub_lock:
            self._pubsub = pubsub
            for group in self.groups():
                channel = self._channel(group)
                if channel not in channels:
                    pubsub.subscribe(channel)
        with self._lock:
            tracked = set(self._presence)
        with self._store_lock:
            tracked |= self._unsynced
        for group in tracked:
            self._store_presence(group)
        if not self._connected.is_set():
            logger.info("Subscribed to Redis at %s", self.url)
            self._connected.set()
            if self._reachable is False:
                self._announce(reach_restored)
            self._reachable = True
        try:
            self._relay(pubsub)
        finally:
            if self._stopping.is_set():
                self._drop_pubsub()

    def _relay(self, pubsub: Any) -> None:
        next_heartbeat = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_heartbeat:
                self._redis.set(
                    self._alive_key(self._process_id), 1, px=self._presence_ttl_ms
                )
                next_heartbeat = time.monotonic() + self._heartbeat
                with self._store_lock:
                    unsynced = list(self._unsynced)
                for group in unsynced:
                    self._store_presence(group)
            message = pubsub.get_message(timeout=min(1.0, self._heartbeat))
            if message is None:
                pubsub.ping()  # detects a dead connection while idle
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "subscribe":
                self._confirmed.setdefault(channel, threading.Event()).set()
            elif kind == "message":
                self._dispatch(channel, message["data"])

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        group = channel[len(self.prefix.encode()) :].decode()
        kind, data = payload[:1], payload[1:]
        self.deliver(group, data.decode() if kind == _TEXT else data)

    def _announce(self, signal: Any) -> None:
        """Send *signal*; a failing receiver is logged, never the listener's end."""
        for receiver, result in signal.send_robust(
            type(self), backend=self, groups=self.groups()
        ):
            if isinstance(result, Exception):
                logger.error(
                    "%r receiver %r failed",
                    "reach_lost" if signal is reach_lost else "reach_restored",
                    receiver,
                    exc_info=result,
                )

    def _drop_pubsub(self) -> None:
        with self._pubsub_lock:
            pubsub, self._pubsub = self._pubsub, None
            for event in self._confirmed.values():
                event.clear()
        if pubsub is not None:
            with contextlib.suppress(*self._errors):
                pubsub.close()
