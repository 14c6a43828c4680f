"""Chat rooms: names, identities, history, posting, presence and the wire format.

Everything the chat's socket view does besides looping over messages lives
here, so that the view reads like the seed. Messages are stored before they
are published: the database is the source of truth for history and for
resuming with ``?after=<id>``, and the groups backend carries only the live
stream. The socket is written to only through ``send_event()``; the wire
format is described in ``docs/chat.md``.
"""

import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import time
import unicodedata
from collections import deque
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import DatabaseError, transaction
from django.db import connection as db_connection
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from apps import ratelimit
from apps.chat.models import Message, Room
from django_websocket import BroadcastError, ConnectionClosed, WebSocket, groups

logger = logging.getLogger(__name__)

ROOM_NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_NICKNAME_LENGTH = 32
MAX_TEXT_LENGTH = 2000  # Message.text's max_length
SESSION_KEY = "chat_nickname"
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Settings of the chat app, read at call time so that tests can override them.
DEFAULTS: dict[str, Any] = {
    "CHAT_HISTORY_SIZE": 50,  # messages sent on a connect without ?after=
    "CHAT_HISTORY_PAGE": 200,  # messages per page of what a client missed
    "CHAT_RATE_LIMIT": (10, 10.0),  # messages per client, per seconds
    "CHAT_ADDRESS_RATE_LIMIT": (60, 10.0),  # messages per client address
    "CHAT_ROOM_CREATION_LIMIT": (5, 600.0),  # rooms created per client
    "CHAT_PRESENCE_INTERVAL": 0.5,  # seconds between a room's presence deltas
    "CHAT_MAX_MEMBERS": 1000,  # people in one room at once
    "CHAT_ROOMS_PER_PAGE": 50,  # rooms per page of /chat/
    "CHAT_TYPING_INTERVAL": 2.0,  # seconds between two typing events of one connection
}


def get_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class JoinCloseCode(IntEnum):
    """Why the socket refused to join a room. Codes 4000-4999 are for
    applications (RFC 6455 section 7.4.2); these mirror the HTTP statuses."""

    BAD_REQUEST = 4400
    NO_IDENTITY = 4403
    NO_SUCH_ROOM = 4404
    NICKNAME_TAKEN = 4409
    ROOM_FULL = 4503


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


# Letters that look like Latin ones, folded onto them before names are
# compared (the common cases of Unicode TR39's confusables).
_LOOKALIKES = str.maketrans(
    "аеёіїјкорсухѕԁԛԝɡαοντιкχυϲ0",
    "aeeiijkopcyxsdqwgaovtikxuco",
)


def skeleton(name: str) -> str:
    """*name* folded for comparison: NFKC, case-folded, lookalikes to Latin."""
    return unicodedata.normalize("NFKC", name).casefold().translate(_LOOKALIKES)


def validate_nickname_is_free(nickname: str) -> None:
    """Raises ValidationError if *nickname* is, or looks like, the username
    of a registered user (who chats under it once logged in)."""
    user_model = get_user_model()
    lookup = f"{user_model.USERNAME_FIELD}__iexact"
    manager = user_model._default_manager
    if any(
        manager.filter(**{lookup: name}).exists()
        for name in {nickname, skeleton(nickname)}
    ):
        raise ValidationError(
            "That name belongs to a registered user: log in to use it, or pick "
            "another.",
            code="nickname_taken",
        )


# The group of the /chat/ pages, which show each room's count as it changes.
DIRECTORY_GROUP = "chat-directory"


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
        validate_nickname_is_free(nickname)
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


def directory(page: str | None) -> tuple[Page[Room], list[tuple[Room, int]]]:
    """One page of ``CHAT_ROOMS_PER_PAGE`` rooms (any *page* Django's
    paginator accepts, else the first or the last) with how many people are
    in each right now, everywhere the groups backend reaches."""
    paginator = Paginator(Room.objects.all(), get_setting("CHAT_ROOMS_PER_PAGE"))
    rooms = paginator.get_page(page)
    return rooms, [(room, len(groups.presence(group_name(room)))) for room in rooms]


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
        "verified": message.verified,
        "by": message.author_key,
        "text": message.text,
        "ts": message.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def parse_event(data: str | bytes, limit: "RateLimit") -> dict[str, Any]:
    """``check_event()``, counted by *limit*: posts, presence requests and
    refused frames count; history pages do not (a client that was away long
    may need many, and gets each only after asking for it)."""
    try:
        event = check_event(data)
    except ChatError:
        limit.check()
        raise
    if event["type"] not in ("history", "older", "typing"):
        limit.check()
    return event


def check_event(data: str | bytes) -> dict[str, Any]:
    """Return a client's event, checked: ``{"type": "message", "text": ...}``,
    or a request: ``{"type": "presence"}`` (the whole list),
    ``{"type": "history", "after": id}`` (the next page of what was missed),
    ``{"type": "older", "before": id}`` (the page before the oldest shown).

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
    if event.get("type") in ("presence", "typing"):
        return {"type": event["type"]}
    if event.get("type") in ("history", "older"):
        field = "after" if event["type"] == "history" else "before"
        value = event.get(field)
        if type(value) is not int or not 0 <= value < 2**63:
            raise ChatError(f'"{field}" must be a message id')
        return {"type": event["type"], field: value}
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
    return {"type": "message", "text": text}


def handle(
    websocket: WebSocket,
    room: Room,
    user: str,
    verified: bool,
    event: dict[str, Any],
    key: str = "",
) -> None:
    """Answer one event from ``parse_event()``; *verified* says that *user*
    is a logged-in user's username, not a nickname; *key* is the author's
    ``author_key()``."""
    if event["type"] == "presence":
        presence_snapshot(websocket, room)
    elif event["type"] == "typing":
        pass  # the view relays it, thinned out by its RateLimit
    elif event["type"] == "history":
        send_event(websocket, "history", **history(room, event["after"]))
    elif event["type"] == "older":
        send_event(websocket, "older", **older(room, event["before"]))
    else:
        post(websocket, room, user, event["text"], verified=verified, key=key)


# Messages.


def history(room: Room, after: int | None) -> dict[str, Any]:
    """The fields of a ``history`` event: without *after*, the room's last
    ``CHAT_HISTORY_SIZE`` messages and whether there are ``older`` ones;
    with it, the first ``CHAT_HISTORY_PAGE`` messages after that id and
    whether there are ``more`` (asked for with ``{"type": "history",
    "after": <the last id>}``). Oldest first."""
    messages = room.messages.select_related("room")
    if after is None:
        size = get_setting("CHAT_HISTORY_SIZE")
        latest = list(messages.order_by("-id")[: size + 1])
        return {
            "messages": [message_event(message) for message in reversed(latest[:size])],
            "more": False,
            "older": len(latest) > size,
        }
    size = get_setting("CHAT_HISTORY_PAGE")
    page = list(messages.filter(id__gt=after).order_by("id")[: size + 1])
    return {
        "messages": [message_event(message) for message in page[:size]],
        "more": len(page) > size,
    }


def older(room: Room, before: int) -> dict[str, Any]:
    """The fields of an ``older`` event: up to ``CHAT_HISTORY_SIZE``
    messages before id *before*, oldest first, and whether there are more."""
    size = get_setting("CHAT_HISTORY_SIZE")
    messages = room.messages.select_related("room").filter(id__lt=before)
    page = list(messages.order_by("-id")[: size + 1])
    return {
        "messages": [message_event(message) for message in reversed(page[:size])],
        "older": len(page) > size,
    }


def post(
    websocket: WebSocket,
    room: Room,
    author: str,
    text: str,
    *,
    verified: bool,
    key: str = "",
) -> None:
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
            message = Message.objects.create(
                room=room, author=author, text=text, verified=verified, author_key=key
            )
    except DatabaseError as error:
        logger.error("Message from %s in %s not stored: %s", author, room.name, error)
        raise ChatError(
            "your message was not stored: the database refused it "
            f"({_database_reason(error)}); try again in a moment"
        ) from error
    event = message_event(message)
    try:
        groups.publish(group_name(room), _encode(event))
        if not groups.connected():
            # Published, but this process hears nothing back until it has
            # resubscribed: the author gets it now (clients dedup by id).
            send_event(websocket, **event)
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


def presence_snapshot(websocket: WebSocket, room: Room) -> None:
    """Send one connection everyone in the room now, as
    ``{"type": "presence", "users": [...]}``; changes follow as deltas."""
    send_event(websocket, "presence", users=sorted(groups.presence(group_name(room))))


def presence_changed(room: Room, user: str) -> None:
    """*user* joined or left *room* on this process: the room gets
    ``{"type": "presence_change", "joined": [...], "left": [...], "count": n}``,
    at most once per ``CHAT_PRESENCE_INTERVAL`` seconds whatever the churn."""
    _announcer.changed(group_name(room), user)


class _PresenceAnnouncer:
    """One thread per process that publishes coalesced presence deltas.

    A delta names only the people who joined or left through this process
    since the last one, each judged against the whole room's presence when
    it is sent: a change costs every member a few bytes, never the whole
    list. ``count`` is the room's size then; a client whose list has another
    size (a delta lost while Redis was away) asks for a snapshot. A delta
    that cannot be published is kept and sent again, up to date, later.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: dict[str, set[str]] = {}  # group -> users who came or went
        self._failing: set[str] = set()  # groups whose last publish failed
        self._thread: threading.Thread | None = None

    def changed(self, group: str, user: str) -> None:
        with self._lock:
            self._pending.setdefault(group, set()).add(user)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chat-presence", daemon=True
                )
                self._thread.start()
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
            time.sleep(get_setting("CHAT_PRESENCE_INTERVAL"))  # let changes gather
            with self._lock:
                pending, self._pending = self._pending, {}
            for group, users in sorted(pending.items()):
                if not self._publish(group, users):
                    with self._lock:
                        self._pending.setdefault(group, set()).update(users)

    def _publish(self, group: str, users: set[str]) -> bool:
        try:
            present = groups.presence(group)
            change = {
                "type": "presence_change",
                "joined": sorted(user for user in users if user in present),
                "left": sorted(user for user in users if user not in present),
                "count": len(present),
            }
            groups.publish(group, _encode(change))
            room = group.removeprefix("chat:")
            count = {"type": "count", "room": room, "count": len(present)}
            groups.publish(DIRECTORY_GROUP, _encode(count))
        except BroadcastError as error:
            if group not in self._failing:
                logger.warning("Presence of %s not published: %s", group, error)
                self._failing.add(group)
            return False
        self._failing.discard(group)
        return True


_announcer = _PresenceAnnouncer()


def check_room_size(room: Room, user: str) -> None:
    """Raises JoinError when the room has ``CHAT_MAX_MEMBERS`` people and
    *user* is not one of them (another tab of someone present may join)."""
    present = groups.presence(group_name(room))
    limit = get_setting("CHAT_MAX_MEMBERS")
    if user not in present and len(present) >= limit:
        raise JoinError(
            JoinCloseCode.ROOM_FULL,
            f"room {room.name} is full ({limit} people): try again later",
        )


class RateLimit:
    """At most ``CHAT_RATE_LIMIT`` messages over any sliding window on one
    connection, and as many per window (fixed, in Django's cache) for the
    client across all its connections: its user, session or nickname, and
    ``CHAT_ADDRESS_RATE_LIMIT`` for its address. Reconnecting resets
    nothing. Used by the connection's own thread only."""

    def __init__(self, request: HttpRequest, user: str) -> None:
        self.limit, self.period = get_setting("CHAT_RATE_LIMIT")
        self._times: deque[float] = deque()  # monotonic times of accepted messages
        self._last_typing = -math.inf
        address, *who = ratelimit.client_keys(request)
        if not who:  # ?nick= without a session: the nickname is all there is
            who = [f"nick:{hashlib.sha256(user.encode()).hexdigest()[:32]}"]
        self._client = [
            (f"chat:post:{key}", self.limit, self.period) for key in who
        ] + [(f"chat:post:{address}", *get_setting("CHAT_ADDRESS_RATE_LIMIT"))]

    def check(self) -> None:
        """Count one more message.

        Raises:
            ChatError: If it is over a limit (then it does not count here).
        """
        now = time.monotonic()
        while self._times and now - self._times[0] >= self.period:
            self._times.popleft()
        slow_down = (
            f"slow down: at most {self.limit} messages every {self.period:g} seconds"
        )
        if len(self._times) >= self.limit:
            wait = self._times[0] + self.period - now
            raise ChatError(f"{slow_down}; try again in {math.ceil(wait)} s")
        for key, limit, period in self._client:
            wait = ratelimit.rate_limited(key, limit, period)
            if wait:
                raise ChatError(f"{slow_down}; try again in {math.ceil(wait)} s")
        self._times.append(now)

    def typing(self) -> bool:
        """Whether a typing notice may go out now (at most one every
        ``CHAT_TYPING_INTERVAL`` seconds; the others are dropped quietly)."""
        now = time.monotonic()
        if now - self._last_typing < get_setting("CHAT_TYPING_INTERVAL"):
            return False
        self._last_typing = now
        return True


def check_room_creation(request: HttpRequest) -> None:
    """Raises ValidationError when the client created
    ``CHAT_ROOM_CREATION_LIMIT`` rooms in the current window."""
    limit, period = get_setting("CHAT_ROOM_CREATION_LIMIT")
    for key in ratelimit.client_keys(request):
        wait = ratelimit.rate_limited(f"chat:room:{key}", limit, period)
        if wait:
            raise ValidationError(
                f"You have created {limit} rooms in a short while; join an "
                f"existing one, or try again in {math.ceil(wait)} seconds.",
                code="room_rate",
            )


# Redis outages: members are told, then made to catch up from the database.

# Messages this many seconds older than the moment the outage was noticed
# are sent again on resync: noticing takes up to a ping and a timeout.
RESYNC_MARGIN = 10.0
_outage_began: float | None = None  # time.time(), in the listener thread only


def on_reach_lost(sender: object, **kwargs: Any) -> None:
    """``groups.reach_lost`` receiver: tell this process's members that the
    room's other processes cannot be heard for now."""
    global _outage_began
    _outage_began = _outage_began or time.time()
    _tell_members(
        kwargs["groups"],
        "unreachable",
        message="the room cannot be reached for now: messages from people on "
        "other servers will appear once it is back",
    )


def on_reach_restored(sender: object, **kwargs: Any) -> None:
    """``groups.reach_restored`` receiver: send each member a ``resync`` with
    the id to ask history from (``{"type": "history", "after": id}``)."""
    global _outage_began
    since = (_outage_began or time.time()) - RESYNC_MARGIN
    _outage_began = None
    try:
        before = Message.objects.filter(
            created_at__lt=datetime.fromtimestamp(since, UTC)
        )
        after = before.order_by("-id").values_list("id", flat=True).first() or 0
    finally:
        db_connection.close()  # this is the groups backend's thread
    _tell_members(kwargs["groups"], "resync", after=after)


def _tell_members(group_names: list[str], type: str, **fields: Any) -> None:
    for group in group_names:
        if group.startswith("chat:"):
            for websocket in groups.local_members(group):
                with contextlib.suppress(ConnectionClosed):
                    send_event(websocket, type, **fields)


def relay_typing(room: Room, user: str) -> None:
    """Tell the room that *user* is typing: never stored, lost if the room
    cannot be reached."""
    with contextlib.suppress(BroadcastError):
        groups.publish(group_name(room), _encode({"type": "typing", "user": user}))


# Moderation: a message deleted (in the admin, or anywhere) leaves every page.


def on_message_deleted(sender: object, instance: Message, **kwargs: Any) -> None:
    """``post_delete`` receiver: once the deletion is committed, the room
    gets ``{"type": "deleted", "id": ...}``."""
    group, event = (
        group_name(instance.room),
        _encode({"type": "deleted", "id": instance.id}),
    )

    def publish() -> None:
        try:
            groups.publish(group, event)
        except BroadcastError as error:
            logger.warning(
                "Deletion of message %d not published: %s", instance.id, error
            )

    transaction.on_commit(publish, using=kwargs.get("using"))


# Nicknames are unique in a room while their holder is connected.


def author_key(request: HttpRequest) -> str:
    """The visitor behind a request, as 16 hex digits: a keyed hash of their
    user, else their session, else their address. The same visitor has the
    same key on the room page and its socket; nobody can derive another's."""
    user = request.user
    session = getattr(request, "session", None)
    if user.is_authenticated:
        holder = f"user:{user.pk}"
    elif session is not None and session.session_key:
        holder = f"session:{session.session_key}"
    else:
        holder = ratelimit.client_keys(request)[0]
    return salted_hmac("apps.chat.author_key", holder).hexdigest()[:16]


def claim_nickname(
    websocket: WebSocket, room: Room, request: HttpRequest, user: str
) -> None:
    """Hold *user* in *room* for this connection until it closes.

    The holder is the client's session (or, without one, its address), so a
    second tab of the same visitor may join under the same nickname.
    Logged-in users hold their username already.

    Raises:
        JoinError: 4409 if someone else holds it, or a lookalike, right now.
    """
    if request.user.is_authenticated:
        return
    holders = f"{group_name(room)}:nicknames"
    folded = skeleton(user)
    mine = author_key(request)
    for entry in groups.presence(holders):
        name, _, holder = entry.partition(" ")
        if name == folded and holder != mine:
            raise JoinError(
                JoinCloseCode.NICKNAME_TAKEN,
                f"someone is already called {user} in this room: pick another nickname",
            )
    groups.track(websocket, holders, f"{folded} {mine}")
