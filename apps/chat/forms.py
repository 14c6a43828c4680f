"""The form on ``/chat/``: choose a nickname (unless logged in) and a room."""

from typing import Any

from django import forms
from django.http import HttpRequest

from apps.chat import rooms
from apps.chat.models import Room


class JoinForm(forms.Form):
    """Join a room by name, creating it if needed, under a nickname kept in
    the session. A logged-in user chats under their username instead."""

    nickname = forms.CharField(
        max_length=rooms.MAX_NICKNAME_LENGTH,
        validators=[rooms.validate_nickname, rooms.validate_nickname_is_free],
    )
    room = forms.CharField(max_length=64, validators=[rooms.validate_room_name])

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        if request.user.is_authenticated:
            del self.fields["nickname"]

    def clean_room(self) -> str:
        name: str = self.cleaned_data["room"]
        if not Room.objects.filter(name=name).exists():
            rooms.check_room_creation(self.request)
        return name

    def save(self) -> Room:
        """Keep the nickname in the session; return the room, created if new."""
        if "nickname" in self.cleaned_data:
            self.request.session[rooms.SESSION_KEY] = self.cleaned_data["nickname"]
        room, _ = Room.objects.get_or_create(name=self.cleaned_data["room"])
        return room
