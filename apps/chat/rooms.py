"""Chat rooms: names, identities, history, posting, presence and the wire format.

Everything the chat's socket view does besides looping over messages lives
here, so that the view reads like the seed. Messages are stored before they
are published: the database is the source of truth for history and for
resuming with ``?after=<id>``, and the groups backend carries only the live
stream. The socket is written to only through ``send_event()``; the wire
format is described in ``docs/chat.md``.
"""

import json
import logging
import re
import threading
import time
from collections import deque
from datetime import UTC
from enum import IntEnum
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.http import HttpRequest

from apps.chat.models import Message, Room
from django_websocket import BroadcastError, WebSocket, groups

logger = logging.getLogger(__name__)

ROOM_NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_NICKNAME_LENGTH = 32
MAX_TEXT_LENGTH = 2000  # Message.text's max_length
SESSION_KEY = "chat_nickname"
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Settings of the chat app, read at call time so that tests can override them.
DEFAULTS: dict[str, Any] = {
    "CHAT_HISTORY_SIZE": 50,  # messages sent on a connect without ?after=
    "CHAT_RATE_LIMIT": (10, 10.0),  # messages per connection, per seconds
}


def get_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class JoinCloseCode(IntEnum):
    """Why the socket refused to join a room. Codes 4000-4999 are for
    applications (RFC 6455 section 7.4.2); these mirror the HTTP statuses."""

    BAD_REQUEST = 4400
    NO_IDENTITY = 4403
    NO_SUCH_ROOM = 4404


class JoinError(Exception):
    """The socket cannot join: close it with ``code`` and ``reason``."""

    def __init__(self, code: JoinCloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ChatError(Exception):
    """What the client sent was refused or not fully handled: answered with
    an error event that says whether the message was stored; the connection
    stays open."""

    def __init__(self, message: str, *, stored: bool = False) -> None:
        super().__init__(message)
        self.stored = stored


# Names.


def validate_room_name(name: str) -> None:
    """Raises ValidationError unless *name* is 1-64 letters, digits, - or _."""
    if not re.fullmatch(ROOM_NAME_PATTERN, name):
        raise ValidationError(
            "Use 1 to 64 letters, digits, hyphens or underscores.", code="room"
        )


def validate_nickname(nickname: str) -> None:
    """Raises ValidationError unless *nickname* is 1-32 printable characters
    without leading or trailing spaces."""
    if not 1 <= len(nickname) <= MAX_NICKNAME_LENGTH:
        raise ValidationError(
            f"Use 1 to {MAX_NICKNAME_LENGTH} characters.", code="nickname_length"
        )
    if not nickname.isprintable() or nickname != nickname.strip():
        raise ValidationError(
            "Use printable characters, without spaces at either end.",
            code="nickname_characters",
        )


def group_name(room: Room) -> str:
    return f"chat:{room.name}"


# Who is asking.


def identity(request: HttpRequest) -> str | None:
    """The name a visitor chats under: the logged-in user's username, else
    the nickname chosen on the page (kept in the session), else None."""
    if request.user.is_authenticated:
        return request.user.get_username()
    nickname = request.session.get(SESSION_KEY)
    return nickname if isinstance(nickname, str) else None


def socket_identity(request: HttpRequest) -> str:
    """``identity()``, else ``?nick=`` for clients without a session.

    Raises:
        JoinError: If there is no identity, or ``?nick=`` is not valid.
    """
    name = identity(request)
    if name is not None:
        return name
    nickname = request.GET.get("nick")
    if nickname is None:
        raise JoinError(JoinCloseCode.NO_IDENTITY, "choose a nickname first")
    try:
        validate_nickname(nickname)
    except ValidationError as error:
        raise JoinError(
            JoinCloseCode.BAD_REQUEST, f"invalid nickname: {error.messages[0]}"
        ) from error
    return nickname


def get_room(name: str) -> Room:
    """Raises JoinError if the room does not exist; rooms are created by
    the form on ``/chat/`` (a POST), never by connecting."""
    try:
        return Room.objects.get(name=name)
    except Room.DoesNotExist:
        raise JoinError(JoinCloseCode.NO_SUCH_ROOM, f"no room named {name}") from None


def parse_after(value: str | None) -> int | None:
    """The message id given as ``?after=``, or None when absent.

    Raises:
        JoinError: If it is not a message id.
    """
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise JoinError(JoinCloseCode.BAD_REQUEST, "after must be a message id")
    return int(value)


def directory() -> list[tuple[Room, int]]:
    """Rooms with how many people are in each right now, everywhere the
    groups backend reaches."""
    return [
        (room, len(groups.presence(group_name(room)))) for room in Room.objects.all()
    ]


# The wire format.


def send_event(websocket: WebSocket, type: str, **fields: Any) -> None:
    """Send ``{"type": type, **fields}`` as one JSON text message."""
    websocket.send(_encode({"type": type, **fields}))


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def message_event(message: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message.id,
        "room": message.room.name,
        "user": message.author,
        "text": message.text,
        "ts": message.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def parse_message(data: str | bytes) -> str:
    """Return the text of a client's ``{"type": "message", "text": ...}``.

    Raises:
        ChatError: If it is anything else.
    """
    if not isinstance(data, str):
        raise ChatError('send text frames: {"type": "message", "text": "..."}')
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        raise ChatError("message is not valid JSON") from None
    if not isinstance(event, dict):
        raise ChatError('message must be a JSON object with a "type"')
    if event.get("type") != "message":
        raise ChatError(f"unknown message type: {json.dumps(event.get('type'))}")
    text = event.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ChatError('"text" must be a non-empty string')
    if len(text) > MAX_TEXT_LENGTH:
        raise ChatError(f"text is longer than {MAX_TEXT_LENGTH} characters")
    if UNSTORABLE.search(text):
        # JSON can spell lone surrogates (not UTF-8) and NUL (which
        # PostgreSQL text refuses); neither is text a person typed.
        raise ChatError('"text" must not contain NUL characters or lone surrogates')
    return text


# Messages.


def history(room: Room, after: int | None) -> list[dict[str, Any]]:
    """The room's last ``CHAT_HISTORY_SIZE`` messages, or, with *after*,
    every message whose id is greater, oldest first."""
    messages = room.messages.select_related("room")
    if after is None:
        latest = messages.order_by("-id")[: get_setting("CHAT_HISTORY_SIZE")]
        return [message_event(message) for message in reversed(latest)]
    return [message_event(message) for message in messages.filter(id__gt=after)]


def post(websocket: WebSocket, room: Room, author: str, text: str) -> None:
    """Store a message, then publish it to everyone in the room, its author
    included.

    Raises:
        ChatError: If the room cannot be reached (Redis is down). The
            message stays stored and its author gets it back directly; the
            others get it from history when they next connect.
    """
    try:
        # One transaction for the message and what post_save adds (the live
        # search index): stored whole, or not at all and the author is told.
        with transaction.atomic():
            message = Message.objects.create(room=room, author=author, text=text)
    except DatabaseError as error:
        logger.error("Message from %s in %s not stored: %s", author, room.name, error)
        raise ChatError(
            "your message was not stored: the database refused it "
            f"({_database_reason(error)}); try again in a moment"
        ) from error
    event = message_event(message)
    try:
        groups.publish(group_name(room), _encode(event))
    except BroadcastError as error:
        logger.warning("Message %d stored but not published: %s", message.id, error)
        send_event(websocket, **event)
        raise ChatError(
            f"message {message.id} is saved, but the room cannot be reached "
            "right now: the others will see it when they reconnect",
            stored=True,
        ) from error


def _database_reason(error: DatabaseError) -> str:
    """A few words for the author, from the database's own message."""
    text = str(error).lower()
    for needle, words in (
        ("locked", "it is busy"),
        ("full", "its disk is full"),
        ("readonly", "it is read-only"),
        ("read-only", "it is read-only"),
    ):
        if needle in text:
            return words
    return "an error on the server"


# Serializes reading and publishing presence in this process, so that two
# people joining at once cannot publish their snapshots in the wrong order.
_presence_lock = threading.Lock()


def announce_presence(room: Room) -> None:
    """Publish who is in the room now, as ``{"type": "presence", ...}``."""
    group = group_name(room)
    with _presence_lock:
        try:
            users = sorted(groups.presence(group))
            groups.publish(group, _encode({"type": "presence", "users": users}))
        except BroadcastError as error:
            logger.warning("Presence of %s not published: %s", room.name, error)


class RateLimit:
    """At most ``CHAT_RATE_LIMIT`` messages over any sliding window, for one
    connection (used by its own thread only)."""

    def __init__(self) -> None:
        self.limit, self.period = get_setting("CHAT_RATE_LIMIT")
        self._times: deque[float] = deque()  # monotonic times of accepted messages

    def check(self) -> None:
        """Count one more message.

        Raises:
            ChatError: If it is over the limit (then it does not count).
        """
        now = time.monotonic()
        while self._times and now - self._times[0] >= self.period:
            self._times.popleft()
        if len(self._times) >= self.limit:
            raise ChatError(
                f"slow down: at most {self.limit} messages "
                f"every {self.period:g} seconds"
            )
        self._times.append(now)
