"""Chat rooms and their stored messages.

Messages are stored before they are published, so the database is the
source of truth: a client that reconnects with the last id it saw gets
exactly what it missed from here, then the live stream.
"""

from django.db import models
from django.utils import timezone


class Room(models.Model):
    name = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=150)
    # The author was a logged-in user (author is their username), not a
    # nickname anyone could have picked.
    verified = models.BooleanField(default=False)
    # Who posted it, as rooms.author_key() names the visitor (a keyed hash
    # of their user, session or address): the page tells its own messages
    # by it, not by a nickname someone else may take later.
    author_key = models.CharField(max_length=16, blank=True, default="")
    text = models.TextField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"{self.author}: {self.text[:40]}"
