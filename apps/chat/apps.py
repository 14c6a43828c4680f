from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "apps.chat"
    label = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from apps.chat import rooms
        from django_websocket import groups

        groups.reach_lost.connect(rooms.on_reach_lost)
        groups.reach_restored.connect(rooms.on_reach_restored)
