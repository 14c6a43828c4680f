"""The chat demo: rooms with history, presence and a live stream that
resumes without loss. The socket view loops over messages; names, storage,
history and presence live in ``rooms.py``."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_safe

from apps.chat import rooms
from apps.chat.forms import JoinForm
from apps.chat.models import Room
from django_websocket import WebSocketRequest, groups, require_websocket


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """Rooms with their member counts, and the form to join or create one."""
    initial = {"nickname": rooms.identity(request), "room": request.GET.get("room")}
    data = request.POST if request.method == "POST" else None
    form = JoinForm(request, data, initial=initial)
    if form.is_valid():  # an unbound form (GET) is never valid
        return redirect("chat:room", form.save().name)
    page, counted = rooms.directory(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "rooms": counted,
        "socket_view": socket,
        # Sent here from a room's page for want of a nickname.
        "joining": request.GET.get("room") if initial["nickname"] is None else None,
    }
    return render(request, "chat/index.html", context)


@require_safe
def room(request: HttpRequest, name: str) -> HttpResponse:
    """The room page; without a nickname, the form on /chat/ comes first. A
    room that does not exist is a 404 that offers to create it."""
    room = Room.objects.filter(name=name).first()
    if room is None:
        form = JoinForm(
            request, initial={"nickname": rooms.identity(request), "room": name}
        )
        context = {"form": form, "name": name}
        return render(request, "chat/missing.html", context, status=404)
    user = rooms.identity(request)
    if user is None:
        return redirect(reverse("chat:index") + "?" + urlencode({"room": room.name}))
    context = {
        "room": room,
        "user": user,
        "author_key": rooms.author_key(request),
        "socket_view": socket,
    }
    return render(request, "chat/room.html", context)


@require_websocket(max_message_size=64 * 1024)
def socket(request: WebSocketRequest, name: str) -> None:
    # Runs in this connection's own thread: blocking here blocks nobody else.
    websocket = request.websocket
    try:
        user = rooms.socket_identity(request)  # username, nickname or ?nick=
        room = rooms.get_room(name)
        after = rooms.parse_after(request.GET.get("after"))
        rooms.check_room_size(room, user)
        rooms.claim_nickname(websocket, room, request, user)
    except rooms.JoinError as error:
        websocket.close(error.code, error.reason)
        return
    group = rooms.group_name(room)
    # Subscribe before reading the history: a message stored meanwhile then
    # arrives twice (the client dedups by id) rather than not at all.
    groups.subscribe(websocket, group)
    rooms.send_event(websocket, "history", **rooms.history(room, after))
    limit = rooms.RateLimit(request, user)
    verified = request.user.is_authenticated
    key = rooms.author_key(request)
    groups.track(websocket, group, user)  # in the room's presence until it closes
    try:
        rooms.presence_snapshot(websocket, room)
        rooms.presence_changed(room, user)
        for data in websocket:  # ends when the client closes
            try:
                event = rooms.parse_event(data, limit)
                if event["type"] == "typing" and limit.typing():
                    rooms.relay_typing(room, user)
                rooms.handle(websocket, room, user, verified, event, key)
            except rooms.ChatError as error:
                rooms.send_event(
                    websocket, "error", message=str(error), stored=error.stored
                )
    finally:
        groups.untrack(websocket, group)
        rooms.presence_changed(room, user)


@require_websocket
def directory(request: WebSocketRequest) -> None:
    """The /chat/ page's live counts: ``{"type": "count", "room": ...,
    "count": ...}`` whenever someone joins or leaves a room."""
    groups.subscribe(request.websocket, rooms.DIRECTORY_GROUP)
    for _ in request.websocket:  # nothing to answer; ends when the page goes
        pass
