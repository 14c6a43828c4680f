"""The chat's rooms and messages in the admin: deleting a message removes it
from every open page of its room (see ``rooms.on_message_deleted``)."""

from django.contrib import admin

from apps.chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "room", "author", "verified", "created_at", "text"]
    list_filter = ["verified", "room"]
    search_fields = ["text", "author"]
    list_select_related = ["room"]
    raw_id_fields = ["room"]
