"""``manage.py livesearch_reindex``: rebuild LocalSource's full-text index.

Saving and deleting objects keeps the index up to date; run this after
changes that send no signals (``QuerySet.update()``, ``bulk_create()``, raw
SQL, a restored backup) or after adding a model to ``LIVESEARCH_SOURCES``.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from apps.livesearch import index, sources


class Command(BaseCommand):
    help = "Rebuild the live search full-text index of this site's content."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, database: str, **options: Any) -> None:
        if not index.available(database):
            raise CommandError(
                f"database {database!r} has no {index.TABLE} table (not SQLite with"
                " FTS5); LocalSource searches it without an index"
            )
        specs = list(sources.indexed_models().values())
        count = index.rebuild(specs, database)
        labels = ", ".join(spec.label for spec in specs) or "no models"
        self.stdout.write(f"Indexed {count} objects ({labels}).")
