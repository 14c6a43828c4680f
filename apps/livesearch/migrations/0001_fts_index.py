"""The full-text index of LocalSource: an FTS5 table, on SQLite only.

Other databases get nothing here; LocalSource searches them with icontains.
"""

from django.db import migrations
from django.db.utils import OperationalError

CREATE_INDEX = """
CREATE VIRTUAL TABLE livesearch_document USING fts5(
    body,
    model UNINDEXED,
    object_id UNINDEXED,
    published UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
)
"""


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    try:
        schema_editor.execute(CREATE_INDEX)
    except OperationalError as err:
        # An SQLite built without FTS5: LocalSource falls back to icontains.
        if "fts5" not in str(err):
            raise


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TABLE IF EXISTS livesearch_document")


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_index, drop_index)]
