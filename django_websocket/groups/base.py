"""The backend interface, and the local registry every backend fans out from."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from django_websocket.exceptions import ConnectionClosed
from django_websocket.websocket import Message, WebSocket

__all__ = ["BaseBackend"]


class BaseBackend:
    """Keeps this process's group members and delivers to them.

    Subclasses implement ``publish()``, calling ``deliver()`` in each process
    that receives the message, and may extend ``subscribe()``/``unsubscribe()``
    to tell a broker which groups this process listens to (``on_first_member``
    and ``on_last_member``).
    """

    def __init__(self) -> None:
        # Protects _members and _presence; never held while sending.
        self._lock = threading.Lock()
        self._members: defaultdict[str, set[WebSocket]] = defaultdict(set)
        # group -> connection -> identity shown in the group's presence.
        self._presence: defaultdict[str, dict[WebSocket, str]] = defaultdict(dict)

    def subscribe(self, websocket: WebSocket, group: str) -> None:
        with self._lock:
            members = self._members[group]
            first = not members
            members.add(websocket)
        websocket.add_finish_callback(lambda ws: self.unsubscribe(ws, group))
        if first:
            self.on_first_member(group)

    def unsubscribe(self, websocket: WebSocket, group: str) -> None:
        with self._lock:
            members = self._members.get(group)
            if members is None or websocket not in members:
                return
            members.discard(websocket)
            last = not members
            if last:
                del self._members[group]
        if last:
            self.on_last_member(group)

    def local_members(self, group: str) -> list[WebSocket]:
        with self._lock:
            return list(self._members.get(group, ()))

    def groups(self) -> list[str]:
        """Groups with at least one member in this process."""
        with self._lock:
            return list(self._members)

    def publish(self, group: str, message: Message) -> None:
        raise NotImplementedError

    # Presence: who is in a group, by identity (a user name, say).

    def track(self, websocket: WebSocket, group: str, identity: str) -> None:
        """Count *websocket* as *identity* in *group* until it closes."""
        with self._lock:
            known = websocket in self._presence[group]
            self._presence[group][websocket] = identity
        if not known:
            websocket.add_finish_callback(lambda ws: self.untrack(ws, group))
        self.on_presence_change(group)

    def untrack(self, websocket: WebSocket, group: str) -> None:
        with self._lock:
            tracked = self._presence.get(group)
            if tracked is None or tracked.pop(websocket, None) is None:
                return
            if not tracked:
                del self._presence[group]
        self.on_presence_change(group)

    def local_presence(self, group: str) -> dict[str, int]:
        """Identities present in *group* in this process, with how many
        connections each has."""
        counts: dict[str, int] = {}
        with self._lock:
            for identity in self._presence.get(group, {}).values():
                counts[identity] = counts.get(identity, 0) + 1
        return counts

    def presence(self, group: str) -> dict[str, int]:
        """Identities present in *group* wherever the backend reaches."""
        return self.local_presence(group)

    def on_presence_change(self, group: str) -> None:
        """Called after this process's presence in *group* changed."""

    def deliver(self, group: str, message: Message) -> int:
        """Send *message* to this process's members of *group*.

        Returns:
            How many members it was handed to. Members that are closing are
            skipped; slow ones are dropped by their own backlog rule.
        """
        delivered = 0
        cache: dict[str, Any] = {}  # the frame, prepared once for all
        for websocket in self.local_members(group):
            try:
                websocket.send_shared(message, cache)
            except ConnectionClosed:
                continue
            delivered += 1
        return delivered

    def on_first_member(self, group: str) -> None:
        """Called when this process gains its first member of *group*."""

    def on_last_member(self, group: str) -> None:
        """Called when this process loses its last member of *group*."""

    @property
    def connected(self) -> bool:
        """Whether messages published elsewhere reach this process now."""
        return True

    def close(self) -> None:
        """Release connections and threads (when settings change)."""
