from django.urls import path, register_converter

from apps.chat import rooms, views

app_name = "chat"


class RoomNameConverter:
    """``<room:name>``: a valid room name, so that others are a 404."""

    regex = rooms.ROOM_NAME_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(RoomNameConverter, "room")

urlpatterns = [
    path("", views.index, name="index"),
    path("@live/", views.directory, name="directory"),  # "@": never a room name
    path("<room:name>/", views.room, name="room"),
    path("<room:name>/ws/", views.socket, name="socket"),
]
