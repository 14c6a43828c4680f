"""In-process groups: the embedded default, no broker needed.

Reaches only the connections of the current process; with several server
processes, use ``django_websocket.groups.redis.RedisBackend``.
"""

from __future__ import annotations

from django_websocket.groups.base import BaseBackend
from django_websocket.websocket import Message

__all__ = ["LocalBackend"]


class LocalBackend(BaseBackend):
    """Delivers published messages straight to this process's members."""

    def publish(self, group: str, message: Message) -> None:
        self.deliver(group, message)
