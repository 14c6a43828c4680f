from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "apps.chat"
    label = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from apps.chat import rooms
        from apps.chat.models import Message
        from django_websocket import groups

        post_delete.connect(rooms.on_message_deleted, sender=Message)
        groups.reach_lost.connect(rooms.on_reach_lost)
        groups.reach_restored.connect(rooms.on_reach_restored)
