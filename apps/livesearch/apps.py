from django.apps import AppConfig


class LivesearchConfig(AppConfig):
    name = "apps.livesearch"
    label = "livesearch"
    verbose_name = "Live search"
