"""The full-text index behind ``LocalSource``: an SQLite FTS5 table.

``livesearch_document`` (migration 0001, created on SQLite only) holds one row
per indexed object: the text of its configured fields, its model label, its
primary key and its publication time. The ``post_save`` and ``post_delete``
receivers in ``sources.py`` keep it in step with the models that
``LIVESEARCH_SOURCES`` names. ``QuerySet.update()``, ``bulk_create()`` and raw
SQL send no signals: run ``manage.py livesearch_reindex`` after those.

Where the table does not exist (another database, or an SQLite built without
FTS5), nothing is written and ``search_fallback()`` queries the models with
``icontains`` instead: slower, but the same results.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import reduce
from operator import or_
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections, transaction
from django.db.models import Model, Q
from django.urls import NoReverseMatch, reverse

TABLE = "livesearch_document"  # created by migrations/0001_fts_index.py


# One match, its model and the text around the query words.
Found = tuple["IndexedModel", Model, str]


@dataclass(frozen=True)
class IndexedModel:
    """How one model is searched: what ``LocalSource``'s ``models`` option says.

    Attributes:
        model: The model class.
        fields: The fields whose text is searched.
        title: A ``str.format`` template for a result's title, given ``obj``.
        published: The date or datetime field that orders results (newest
            first), or ``None`` to order by primary key.
        url: A ``str.format`` template for a result's link, given ``obj``.
        url_name: Instead of ``url``, a URL pattern name to ``reverse()``,
            with ``url_args`` (``str.format`` templates given ``obj``).
            Without either, ``obj.get_absolute_url()`` if the model has it.
    """

    model: type[Model]
    fields: tuple[str, ...]
    title: str = "{obj}"
    published: str | None = None
    url: str | None = None
    url_name: str | None = None
    url_args: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, label: str, options: dict[str, Any]) -> "IndexedModel":
        """Build from one entry of the ``models`` option, e.g.
        ``"chat.Message": {"fields": ["text"], "published": "created_at"}``.

        Raises:
            ImproperlyConfigured: If the model or a field does not exist.
        """
        where = f"LIVESEARCH_SOURCES: LocalSource models[{label!r}]"
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as err:
            raise ImproperlyConfigured(f"{where}: no such model ({err})") from err
        options = dict(options)
        fields = tuple(options.pop("fields", ()))
        options["url_args"] = tuple(options.get("url_args", ()))
        if not fields:
            raise ImproperlyConfigured(f"{where}: 'fields' lists no field to search")
        for name in [*fields, options.get("published")]:
            try:
                if name is not None:
                    model._meta.get_field(name)
            except FieldDoesNotExist as err:
                raise ImproperlyConfigured(f"{where}: {err}") from err
        try:
            return cls(model=model, fields=fields, **options)
        except TypeError as err:
            raise ImproperlyConfigured(f"{where}: {err}") from err

    @property
    def label(self) -> str:
        return self.model._meta.label_lower

    def body(self, obj: Model) -> str:
        return "\n".join(str(getattr(obj, field) or "") for field in self.fields)

    def published_of(self, obj: Model) -> str:
        """The publication time as ISO 8601 in UTC (sortable as text), or ""."""
        value = getattr(obj, self.published) if self.published else None
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC)
            return value.isoformat(timespec="microseconds")
        return value.isoformat() if isinstance(value, date) else ""

    def title_of(self, obj: Model) -> str:
        return self.title.format(obj=obj)

    def url_of(self, obj: Model) -> str:
        if self.url is not None:
            return self.url.format(obj=obj)
        if self.url_name is not None:
            args = [arg.format(obj=obj) for arg in self.url_args]
            try:
                return reverse(self.url_name, args=args)
            except NoReverseMatch:
                return ""  # e.g. a room name the URL pattern no longer accepts
        get_absolute_url = getattr(obj, "get_absolute_url", None)
        return str(get_absolute_url()) if get_absolute_url else ""


def available(using: str) -> bool:
    """Tell whether database *using* has the FTS5 table."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE name = %s", [TABLE])
        return cursor.fetchone() is not None


def write(spec: IndexedModel, obj: Model, using: str, *, replace: bool = True) -> None:
    """Index *obj*; with *replace*, drop its previous row first."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        if replace:
            # A scan of the table's UNINDEXED columns: new objects skip it.
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE model = %s AND object_id = %s",
                [spec.label, str(obj.pk)],
            )
        cursor.execute(
            f"INSERT INTO {TABLE} (body, model, object_id, published)"
            " VALUES (%s, %s, %s, %s)",
            [spec.body(obj), spec.label, str(obj.pk), spec.published_of(obj)],
        )


def delete(spec: IndexedModel, pk: Any, using: str) -> None:
    """Drop the row of the object of *spec*'s model with primary key *pk*."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE model = %s AND object_id = %s",
            [spec.label, str(pk)],
        )


def rebuild(specs: list[IndexedModel], using: str) -> int:
    """Index every object of *specs*' models afresh; return how many."""
    count = 0
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            for spec in specs:
                cursor.execute(f"DELETE FROM {TABLE} WHERE model = %s", [spec.label])
        for spec in specs:
            for obj in spec.model._default_manager.using(using).iterator():
                write(spec, obj, using, replace=False)
                count += 1
    return count


def words(query: str) -> list[str]:
    return re.findall(r"\w+", query)


def match_expression(query: str) -> str:
    """Turn what someone typed into an FTS5 query that cannot be malformed:
    every word quoted, all required, the last one as a prefix (as you type)."""
    terms = [f'"{word}"' for word in words(query)]
    if terms:
        terms[-1] += "*"
    return " ".join(terms)


def search(
    query: str, specs: list[IndexedModel], limit: int, using: str
) -> list[Found]:
    """Search the FTS5 table, newest first."""
    expression = match_expression(query)
    by_label = {spec.label: spec for spec in specs}
    if not expression or not by_label:
        return []
    placeholders = ", ".join(["%s"] * len(by_label))
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT model, object_id, snippet({TABLE}, 0, '', '', '…', 16)"
            f" FROM {TABLE} WHERE {TABLE} MATCH %s AND model IN ({placeholders})"
            " ORDER BY published DESC, rowid DESC LIMIT %s",
            [expression, *by_label, limit],
        )
        rows = cursor.fetchall()
    objects: dict[tuple[str, str], Model] = {}
    for label, spec in by_label.items():
        ids = [object_id for model, object_id, _ in rows if model == label]
        manager = spec.model._default_manager.using(using)
        for obj in manager.filter(pk__in=ids):
            objects[label, str(obj.pk)] = obj
    # Rows whose object is gone (deleted without a signal) are skipped.
    return [
        (by_label[label], objects[label, object_id], snippet)
        for label, object_id, snippet in rows
        if (label, object_id) in objects
    ]


def search_fallback(
    query: str, specs: list[IndexedModel], limit: int, using: str
) -> list[Found]:
    """Search the models themselves with ``icontains``, newest first."""
    query_words = words(query)
    if not query_words:
        return []
    found: list[Found] = []
    for spec in specs:
        queryset = spec.model._default_manager.using(using)
        for word in query_words:
            in_any_field = [Q(**{f"{field}__icontains": word}) for field in spec.fields]
            queryset = queryset.filter(reduce(or_, in_any_field))
        order = f"-{spec.published}" if spec.published else "-pk"
        for obj in queryset.order_by(order)[:limit]:
            found.append((spec, obj, excerpt(spec.body(obj), query_words)))
    found.sort(key=lambda match: match[0].published_of(match[1]), reverse=True)
    return found[:limit]


def excerpt(text: str, query_words: list[str], width: int = 120) -> str:
    """About *width* characters of *text* around the first query word."""
    text = " ".join(text.split())
    lowered = text.casefold()
    positions = [lowered.find(word.casefold()) for word in query_words]
    start = max(0, min([p for p in positions if p >= 0], default=0) - width // 3)
    end = start + width
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
