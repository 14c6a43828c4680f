from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class LivesearchConfig(AppConfig):
    name = "apps.livesearch"
    label = "livesearch"
    verbose_name = "Live search"

    def ready(self) -> None:
        from apps.livesearch import sources

        # For every model: the receivers look up LIVESEARCH_SOURCES when
        # called, and index only the models a LocalSource searches.
        post_save.connect(sources.index_saved, dispatch_uid="livesearch-index-saved")
        post_delete.connect(
            sources.index_deleted, dispatch_uid="livesearch-index-deleted"
        )
