"""The backend interface, and the local registry every backend fans out from."""

from __future__ import annotations

import threading
from collections import defaultdict

from django_websocket.connection import Message, WebSocket
from django_websocket.exceptions import ConnectionClosed

__all__ = ["BaseBackend"]


class BaseBackend:
    """Keeps this process's group members and delivers to them.

    Subclasses implement ``publish()``, calling ``deliver()`` in each process
    that receives the message, and may extend ``subscribe()``/``unsubscribe()``
    to tell a broker which groups this process listens to (``on_first_member``
    and ``on_last_member``).
    """

    def __init__(self) -> None:
        # Protects _members; never held while sending.
        self._lock = threading.Lock()
        self._members: defaultdict[str, set[WebSocket]] = defaultdict(set)

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

    def deliver(self, group: str, message: Message) -> int:
        """Send *message* to this process's members of *group*.

        Returns:
            How many members it was handed to. Members that are closing are
            skipped; slow ones are dropped by their own backlog rule.
        """
        delivered = 0
        for websocket in self.local_members(group):
            try:
                websocket.send(message)
            except ConnectionClosed:
                continue
            delivered += 1
        return delivered

    def on_first_member(self, group: str) -> None:
        """Called when this process gains its first member of *group*."""

    def on_last_member(self, group: str) -> None:
        """Called when this process loses its last member of *group*."""

    def close(self) -> None:
        """Release connections and threads (when settings change)."""
