"""Where live search results come from: pluggable sources.

A source is any class with a ``label``, ``search(query)`` returning at most
ten results, and ``close()`` (see ``Source``). ``LIVESEARCH_SOURCES`` names
them like ``CACHES``: ``{"hn": {"BACKEND": "apps.livesearch.sources.
HackerNewsSource", "LABEL": "Hacker News", "OPTIONS": {...}}}``, the
options being the class's keyword arguments.

- ``LocalSource`` searches this site's own content (chat messages by
  default) through the full-text index in ``index.py``; it works offline.
- ``HackerNewsSource``, ``WikipediaSource`` and ``SearxngSource`` call public
  JSON APIs through the process's shared HTTP client (``upstream.py``), each
  request under a total deadline and a size cap. Their failures (timeouts,
  network errors, HTTP errors, rate limits, oversized or malformed answers)
  raise ``SourceError``: what went wrong in plain words, and the technical
  detail; the pusher reports both to the page, logs the cause and retries
  later. Nothing here retries.
"""

import email.utils
import html
import json
import socket
import ssl
from datetime import UTC, datetime
from typing import Any, ClassVar, NotRequired, Protocol, TypedDict
from urllib.parse import quote

import httpx
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.models import Model
from django.utils.html import strip_tags
from django.utils.module_loading import import_string

from apps.livesearch import index, upstream
from apps.livesearch.conf import get_setting

MAX_RESULTS = 10
# Sent unless OPTIONS says otherwise; public APIs ask for a contact address.
USER_AGENT = f"django-websocket-starter-livesearch/1.0 httpx/{httpx.__version__}"


class Result(TypedDict):
    """One search result as the page shows it (the pusher adds ``new``)."""

    title: str
    url: str
    snippet: str
    published: str | None  # ISO 8601, when the source knows it
    # What makes a result the same from one push to the next, when the url
    # does not (two chat messages in one room); never sent to the page.
    id: NotRequired[str]


class Source(Protocol):
    """What the pusher needs from a source. Each polled query has its own
    instance; ``search()`` is called from one fetcher thread at a time, and
    ``close()`` once nobody follows the query any more."""

    label: str

    def search(self, query: str) -> list[Result]:
        """Return the current top results for *query*, at most ten.

        Raises:
            SourceError: If the source failed; its message is shown to users.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class SourceError(Exception):
    """A source could not answer.

    Args:
        detail: What happened, for whoever wants the technical detail, e.g.
            "cannot reach hn.algolia.com (its name does not resolve)"; the
            page shows it on request, never first.
        problem: The same in plain words for anyone, completing a sentence
            that starts with the source's label: "cannot be reached from
            this server" reads "Hacker News cannot be reached from this
            server".
        retry_after: The delay the source asked for (``Retry-After``), in
            seconds.
    """

    def __init__(
        self,
        detail: str,
        retry_after: float | None = None,
        *,
        problem: str = "cannot be searched right now",
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.retry_after = retry_after


# The problems HttpSource reports, in plain words (see SourceError).
UNREACHABLE = "cannot be reached from this server"
TOO_SLOW = "is too slow to answer"
UNREADABLE = "sent an answer this server cannot read"


def configured() -> list[tuple[str, str]]:
    """Return ``(name, label)`` of each source in ``LIVESEARCH_SOURCES``."""
    return [
        (name, config.get("LABEL", name))
        for name, config in get_setting("LIVESEARCH_SOURCES").items()
    ]


def load(name: str) -> Source:
    """Create the source configured as *name*.

    Raises:
        ImproperlyConfigured: If its entry in ``LIVESEARCH_SOURCES`` is unusable.
    """
    config = get_setting("LIVESEARCH_SOURCES").get(name)
    if not isinstance(config, dict):
        raise ImproperlyConfigured(f"LIVESEARCH_SOURCES[{name!r}] must be a dict")
    backend = _backend(name, config)
    options = config.get("OPTIONS", {})
    try:
        source: Source = backend(label=config.get("LABEL", name), **options)
    except TypeError as err:
        raise ImproperlyConfigured(
            f"LIVESEARCH_SOURCES[{name!r}]['OPTIONS'] = {options!r}"
            f" rejected by {config['BACKEND']}: {err}"
        ) from err
    return source


def _backend(name: str, config: dict[str, Any]) -> Any:
    path = config.get("BACKEND")
    try:
        return import_string(str(path))
    except ImportError as err:
        raise ImproperlyConfigured(
            f"LIVESEARCH_SOURCES[{name!r}]['BACKEND'] = {path!r} cannot be imported:"
            f" {err}"
        ) from err


def text(markup: str, limit: int = 300) -> str:
    """Plain text from an HTML fragment: tags stripped, entities decoded,
    whitespace collapsed, at most *limit* characters."""
    plain = " ".join(html.unescape(strip_tags(markup)).split())
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"


class HttpSource:
    """Base class of the sources behind a JSON HTTP API.

    Subclasses set ``default_url`` and ``path`` and implement
    ``query_params()`` and ``parse()``; ``parse()`` may raise ``KeyError``,
    ``TypeError`` or ``ValueError`` on an unexpected response shape.

    Args:
        label: The name shown to users.
        url: Base URL of the service (``default_url`` if not given).
        timeout: Seconds allowed to connect, and for each read and write;
            ``LIVESEARCH_REQUEST_DEADLINE`` bounds the whole request.
        params: Extra query parameters sent with every request.
        user_agent: The ``User-Agent`` header; Wikipedia asks for a contact.
    """

    default_url = ""
    path = ""
    # Advice for users, by HTTP status.
    hints: ClassVar[dict[int, str]] = {}

    def __init__(
        self,
        *,
        label: str,
        url: str | None = None,
        timeout: float = 5.0,
        params: dict[str, str] | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.label = label
        self.url = (url or self.default_url).rstrip("/")
        if not self.url:
            raise TypeError(f"{type(self).__name__} needs a 'url' option")
        self.timeout = timeout
        self.params = params or {}
        self.host = httpx.URL(self.url).netloc.decode()
        self.headers = {"User-Agent": user_agent, "Accept": "application/json"}

    def search(self, query: str) -> list[Result]:
        data = self.get_json(self.path, {**self.query_params(query), **self.params})
        try:
            return self.parse(data)[:MAX_RESULTS]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SourceError(
                f"{self.host} sent an unexpected response ({err!r})",
                problem=UNREADABLE,
            ) from err

    def query_params(self, query: str) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: Any) -> list[Result]:
        raise NotImplementedError

    def get_json(self, path: str, params: dict[str, Any]) -> Any:
        """GET ``url + path`` and decode its JSON body.

        Raises:
            SourceError: On a timeout, a passed deadline, a network error, an
                HTTP error status (with ``retry_after`` from its
                ``Retry-After`` header), a body over the size limit or one
                that is not JSON. The message is for users; the exception it
                comes from, if any, is its ``__cause__``.
        """
        deadline = float(get_setting("LIVESEARCH_REQUEST_DEADLINE"))
        max_bytes = int(get_setting("LIVESEARCH_MAX_RESPONSE_SIZE"))
        try:
            response, body = upstream.get(
                self.url + path,
                params=params,
                headers=self.headers,
                timeout=self.timeout,
                deadline=deadline,
                max_bytes=max_bytes,
            )
        except upstream.DeadlineExceeded as err:
            raise SourceError(
                f"{self.host} did not finish answering within {deadline:g} s",
                problem=TOO_SLOW,
            ) from err
        except upstream.ResponseTooLarge as err:
            raise SourceError(
                f"{self.host} sent an answer larger than {_size(max_bytes)}",
                problem="sent an answer too large to read",
            ) from err
        except httpx.TimeoutException as err:
            raise SourceError(
                f"{self.host} did not answer within {self.timeout:g} s",
                problem=TOO_SLOW,
            ) from err
        except httpx.HTTPError as err:
            raise SourceError(
                f"cannot reach {self.host} ({_why(err)})", problem=UNREACHABLE
            ) from err
        if response.is_error:
            hint = self.hints.get(response.status_code)
            raise SourceError(
                f"{self.host} answered HTTP {response.status_code}"
                f" {response.reason_phrase}" + (f"; {hint}" if hint else ""),
                retry_after=_retry_after(response.headers.get("Retry-After")),
                problem=_refusal(response.status_code),
            )
        try:
            return json.loads(body)
        except ValueError as err:
            raise SourceError(
                f"{self.host} sent malformed JSON", problem=UNREADABLE
            ) from err

    def close(self) -> None:
        pass  # the HTTP client is the process's, shared by every source


def _why(err: httpx.HTTPError) -> str:
    """What went wrong with a connection, in words for users: never an errno."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "its name does not resolve"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not valid"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, httpx.RemoteProtocolError):
        return "it closed the connection before answering"
    if isinstance(err, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(err, httpx.ConnectError):
        return "the connection failed"
    return "the connection broke"


def _refusal(status: int) -> str:
    """An HTTP error status in plain words (see SourceError)."""
    if status == 429:
        return "asks this server to search less often"
    if status >= 500:
        return "has a problem on its side"
    return "refused the search"


def _size(count: int) -> str:
    """A byte count as people write it: 1 MiB, 64 KiB, 500 bytes."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size:,} {unit}"
    return f"{count:,} bytes"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HackerNewsSource(HttpSource):
    """The newest Hacker News stories matching the query, from the public
    Algolia API (``search_by_date``, no key): https://hn.algolia.com/api."""

    default_url = "https://hn.algolia.com"
    path = "/api/v1/search_by_date"

    def query_params(self, query: str) -> dict[str, Any]:
        return {"query": query, "tags": "story", "hitsPerPage": MAX_RESULTS}

    def parse(self, data: Any) -> list[Result]:
        return [
            {
                "id": hit["objectID"],
                "title": hit.get("title") or hit.get("story_title") or "(untitled)",
                "url": hit.get("url")
                or f"https://news.ycombinator.com/item?id={hit['objectID']}",
                "snippet": text(hit.get("story_text") or "")
                or f"{hit.get('points') or 0} points by {hit.get('author')}",
                "published": hit.get("created_at"),
            }
            for hit in data["hits"]
        ]


class WikipediaSource(HttpSource):
    """Wikipedia articles matching the query, from the MediaWiki search API
    (``list=search``): https://www.mediawiki.org/wiki/API:Search.

    Args:
        sort: ``srsort``; the default, ``last_edit_desc``, puts recently
            edited articles first so that pushes change. ``relevance`` is
            what Wikipedia's own search box does.
    """

    default_url = "https://en.wikipedia.org"
    path = "/w/api.php"

    def __init__(self, *, sort: str = "last_edit_desc", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sort = sort

    def query_params(self, query: str) -> dict[str, Any]:
        return {
            "action": "query",
            "list": "search",
            "srsearch": query,
            "srlimit": MAX_RESULTS,
            "srprop": "snippet|timestamp",
            "srsort": self.sort,
            "format": "json",
            "formatversion": 2,
        }

    def parse(self, data: Any) -> list[Result]:
        if "error" in data:  # MediaWiki reports errors with HTTP 200
            raise SourceError(
                f"{self.host}: {data['error'].get('info')}",
                problem="refused the search",
            )
        return [
            {
                "title": page["title"],
                "url": f"{self.url}/wiki/"
                + quote(page["title"].replace(" ", "_"), safe="/:(),'"),
                # Snippets mark matches with <span class="searchmatch">.
                "snippet": text(page.get("snippet") or ""),
                "published": page.get("timestamp"),
            }
            for page in data["query"]["search"]
        ]


class SearxngSource(HttpSource):
    """Results of a SearXNG metasearch instance, in its JSON format:
    https://docs.searxng.org/dev/search_api.html. There is no default
    instance: set the ``url`` option, and enable ``json`` under
    ``search: formats`` in the instance's ``settings.yml``."""

    path = "/search"
    hints: ClassVar[dict[int, str]] = {
        403: "is the json format enabled in the instance's settings.yml?",
    }

    def query_params(self, query: str) -> dict[str, Any]:
        return {"q": query, "format": "json"}

    def parse(self, data: Any) -> list[Result]:
        return [
            {
                "title": result.get("title") or result["url"],
                "url": result["url"],
                "snippet": text(result.get("content") or ""),
                "published": result.get("publishedDate"),
            }
            for result in data["results"]
        ]


class LocalSource:
    """Full-text search over this site's own content, newest first.

    Uses the FTS5 index on SQLite (``index.py``), ``icontains`` queries on
    other databases. A new or edited object is searchable as soon as it is
    saved, so it shows up as new on the next push.

    Args:
        label: The name shown to users.
        models: Model label -> how to search it: ``fields`` (required),
            ``title`` and ``url`` (``str.format`` templates given ``obj``),
            ``url_name`` and ``url_args`` (to ``reverse()`` instead),
            ``published`` (the field that orders results); see
            ``index.IndexedModel``.
        using: The database alias.
    """

    def __init__(
        self, *, label: str, models: dict[str, dict[str, Any]], using: str = "default"
    ) -> None:
        self.label = label
        self.models = [
            index.IndexedModel.from_options(name, options)
            for name, options in models.items()
        ]
        self.using = using

    def search(self, query: str) -> list[Result]:
        try:
            if index.available(self.using):
                found = index.search(query, self.models, MAX_RESULTS, self.using)
            else:
                found = index.search_fallback(
                    query, self.models, MAX_RESULTS, self.using
                )
        except DatabaseError as err:
            raise SourceError(
                f"the database failed ({err})", problem="cannot search its database"
            ) from err
        return [
            {
                "id": f"{spec.label}:{obj.pk}",
                "title": spec.title_of(obj),
                "url": spec.url_of(obj),
                "snippet": " ".join(snippet.split()),
                "published": spec.published_of(obj) or None,
            }
            for spec, obj, snippet in found
        ]

    def close(self) -> None:
        pass


def indexed_models() -> dict[str, index.IndexedModel]:
    """The models searched by ``LocalSource`` entries of ``LIVESEARCH_SOURCES``,
    by lower-case label (read at call time, so tests may change it).

    Raises:
        ImproperlyConfigured: If an entry names a model or field that does
            not exist.
    """
    specs: dict[str, index.IndexedModel] = {}
    for label, options in _local_models():
        spec = index.IndexedModel.from_options(label, options)
        specs.setdefault(spec.label, spec)
    return specs


def _local_models() -> list[tuple[str, dict[str, Any]]]:
    """``(label, options)`` of each model listed by a ``LocalSource`` entry."""
    found = []
    for config in get_setting("LIVESEARCH_SOURCES").values():
        try:
            backend = import_string(str(config.get("BACKEND")))
        except ImportError:
            continue  # reported to whoever searches that source
        if isinstance(backend, type) and issubclass(backend, LocalSource):
            found += config.get("OPTIONS", {}).get("models", {}).items()
    return found


def _spec_for(model: type[Model]) -> index.IndexedModel | None:
    # Only the saved model's own entry is parsed: a mistake elsewhere in
    # LIVESEARCH_SOURCES never stops other models from being saved.
    for label, options in _local_models():
        if label.lower() == model._meta.label_lower:
            return index.IndexedModel.from_options(label, options)
    return None


def index_saved(
    sender: type[Model], instance: Model, using: str, created: bool, **kwargs: Any
) -> None:
    """``post_save`` receiver: index *instance* if a ``LocalSource`` searches
    its model."""
    spec = _spec_for(sender)
    if spec is not None and index.available(using):
        index.write(spec, instance, using, replace=not created)


def index_deleted(
    sender: type[Model], instance: Model, using: str, **kwargs: Any
) -> None:
    """``post_delete`` receiver: drop *instance* from the index."""
    spec = _spec_for(sender)
    if spec is not None and index.available(using):
        index.delete(spec, instance.pk, using)
