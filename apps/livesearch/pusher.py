"""Shared polling: one thread per distinct (source, query), however many
connections follow it.

The first connection to search for a query starts its poller thread, which
searches at once, then every ``LIVESEARCH_INTERVAL`` seconds, and sends each
push to every connection following the query; a connection that joins later
gets the latest push at once. A connection follows one query at a time: a new
search replaces the previous one. The thread stops when its last follower
leaves. A failing source is reported as an error event and retried after a
capped exponential backoff (longer if it sent ``Retry-After``); followers stay
subscribed meanwhile.

Polling is per process: with several server processes, each one polls the
queries its own connections follow. That is why this module keeps its own
registry instead of ``django_websocket.groups``, whose ``publish()`` reaches
every process's members.

Events, as JSON text::

    {"type": "results", "query": "django", "source": "hn", "at": "<ISO time>",
     "results": [{"title", "url", "snippet", "published", "new"}, ...]}
    {"type": "error", "message": "Hacker News: ... retrying in 60 s"}
"""

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from django import db

from apps.livesearch import sources
from apps.livesearch.conf import get_setting
from django_websocket import ConnectionClosed, Message, WebSocket

logger = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 200

Event = dict[str, Any]


def parse_search(message: Message) -> tuple[str, str]:
    """Read ``{"type": "search", "query": ..., "source": ...}`` from the page.

    The query is trimmed, inner whitespace collapsed; the source defaults to
    the first configured one.

    Returns:
        The source name and the query.

    Raises:
        ValueError: With a message for the user, if the search is malformed,
            empty, too long, or names an unknown source.
    """
    try:
        data = json.loads(message)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "search":
        raise ValueError('send {"type": "search", "query": "...", "source": "..."}')
    query = data.get("query")
    query = " ".join(query.split()) if isinstance(query, str) else ""
    if not query:
        raise ValueError("type something to search for")
    if len(query) > MAX_QUERY_LENGTH:
        raise ValueError(
            f"the query is {len(query)} characters long; the limit is"
            f" {MAX_QUERY_LENGTH}"
        )
    names = [name for name, _ in sources.configured()]
    source = data.get("source", names[0] if names else None)
    if source not in names:
        raise ValueError(
            f"unknown source {str(source)[:50]!r}; choose one of {', '.join(names)}"
        )
    return source, query


def error_event(message: str) -> Event:
    return {"type": "error", "message": message}


class Pusher:
    """The registry of pollers and of the connections following them."""

    def __init__(self) -> None:
        # Protects _pollers, _following and each poller's followers,
        # newcomers and last; pollers wait on conditions built on it.
        self._lock = threading.Lock()
        self._pollers: dict[tuple[str, str], _Poller] = {}
        self._following: dict[WebSocket, _Poller] = {}

    def subscribe(self, websocket: WebSocket, source: str, query: str) -> None:
        """Make *websocket* follow *query* on *source*, instead of what it
        followed before; it gets a push at once."""
        with self._lock:
            self._leave(websocket)
            poller = self._pollers.get((source, query))
            start = poller is None
            if poller is None:
                poller = self._pollers[source, query] = _Poller(self, source, query)
            poller.followers.add(websocket)
            poller.newcomers.add(websocket)
            self._following[websocket] = poller
            poller.wakeup.notify()
        if start:
            poller.thread.start()

    def unsubscribe(self, websocket: WebSocket) -> None:
        """Stop pushing to *websocket* (no error if it followed nothing)."""
        with self._lock:
            self._leave(websocket)

    def polling(self) -> list[tuple[str, str]]:
        """The (source, query) pairs being polled, sorted."""
        with self._lock:
            return sorted(self._pollers)

    def _leave(self, websocket: WebSocket) -> None:
        # Called with _lock held.
        poller = self._following.pop(websocket, None)
        if poller is not None:
            poller.followers.discard(websocket)
            poller.newcomers.discard(websocket)
            poller.wakeup.notify()  # it stops if that was the last follower

    def _retire(self, poller: "_Poller") -> None:
        # Called with _lock held, by a poller that has no follower left.
        if self._pollers.get(poller.key) is poller:
            del self._pollers[poller.key]


class _Poller:
    """Searches one query on one source in its own thread, and pushes."""

    def __init__(self, pusher: Pusher, source: str, query: str) -> None:
        self.key = (source, query)
        self._pusher = pusher
        # Guarded by the pusher's lock: who follows, who has had no push yet,
        # and the latest push (results or error) to greet newcomers with.
        self.followers: set[WebSocket] = set()
        self.newcomers: set[WebSocket] = set()
        self.last: Event | None = None
        # Notified when followers come or go; the thread waits on it between
        # polls instead of sleeping, so it greets newcomers and stops at once.
        self.wakeup = threading.Condition(pusher._lock)
        # Used by the poller thread only.
        self._source: sources.Source | None = None
        self._previous: set[Any] | None = None  # identities in the last results
        self._failures = 0  # consecutive, for the backoff
        self.thread = threading.Thread(
            target=self._run, name=f"livesearch {source}:{query}", daemon=True
        )

    def _run(self) -> None:
        try:
            delay = 0.0
            while self._wait(delay):
                event, delay = self._poll()
                self._push(event)
        finally:
            with self.wakeup:  # already done, unless a bug ended the thread
                self._pusher._retire(self)
            if self._source is not None:
                self._source.close()
            db.connections.close_all()  # this thread's connections only

    def _wait(self, delay: float) -> bool:
        """Wait *delay* seconds, greeting newcomers with the latest push.

        Returns:
            ``False`` once nobody follows the query any more.
        """
        deadline = time.monotonic() + delay
        while True:
            with self.wakeup:
                while not (self.newcomers and self.last is not None):
                    if not self.followers:
                        self._pusher._retire(self)
                        return False
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return True
                    self.wakeup.wait(remaining)
                greet, self.newcomers = list(self.newcomers), set()
                last = self.last
            _send(greet, last)

    def _poll(self) -> tuple[Event, float]:
        """Search once. Returns the event to push and the delay until the next
        search."""
        name, query = self.key
        interval = float(get_setting("LIVESEARCH_INTERVAL"))
        db.close_old_connections()
        try:
            if self._source is None:
                self._source = sources.load(name)
            results = self._source.search(query)[: sources.MAX_RESULTS]
        except sources.SourceError as err:
            return self._failed(str(err), err.retry_after, interval)
        except Exception as err:
            # A bug or a misconfiguration: log it, tell the followers, and keep
            # the thread alive to retry like any other failure.
            logger.exception("livesearch: searching %s for %r failed", name, query)
            return self._failed(f"search failed ({type(err).__name__})", None, interval)
        self._failures = 0
        return self._results(results), interval

    def _results(self, results: list[sources.Result]) -> Event:
        name, query = self.key
        identities = [_identity(result) for result in results]
        previous, self._previous = self._previous, set(identities)
        return {
            "type": "results",
            "query": query,
            "source": name,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "results": [
                {
                    "title": result["title"],
                    "url": result["url"],
                    "snippet": result["snippet"],
                    "published": result["published"],
                    # Nothing is new in the first push: there is nothing to
                    # compare with.
                    "new": previous is not None and identity not in previous,
                }
                for result, identity in zip(results, identities, strict=True)
            ],
        }

    def _failed(
        self, message: str, retry_after: float | None, interval: float
    ) -> tuple[Event, float]:
        self._failures += 1
        cap = max(float(get_setting("LIVESEARCH_MAX_BACKOFF")), interval)
        delay = interval * 2 ** min(self._failures, 16)
        delay = min(max(delay, retry_after or 0.0), cap)
        name, query = self.key
        if self._source is not None:
            label = self._source.label
        else:  # it could not be created
            label = dict(sources.configured()).get(name, name)
        logger.warning(
            "livesearch: %s for %r: %s; retrying in %.3g s", name, query, message, delay
        )
        return error_event(f"{label}: {message}; retrying in {delay:.3g} s"), delay

    def _push(self, event: Event) -> None:
        with self.wakeup:
            self.last = event
            self.newcomers.clear()
            followers = list(self.followers)
        _send(followers, event)


def _identity(result: sources.Result) -> Any:
    """What makes a result "the same" from one push to the next."""
    return result.get("id") or result["url"] or (result["title"], result["snippet"])


def _send(websockets: list[WebSocket], event: Event) -> None:
    """Send *event* to each connection; never blocks on a slow one."""
    message = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    for websocket in websockets:
        try:
            websocket.send(message)
        except ConnectionClosed:
            continue  # its view unsubscribes it as it ends


_pusher = Pusher()


def subscribe(websocket: WebSocket, source: str, query: str) -> None:
    """Make *websocket* follow *query* on *source* instead of its previous
    search; the first push comes at once, then one every interval."""
    _pusher.subscribe(websocket, source, query)


def unsubscribe(websocket: WebSocket) -> None:
    """Stop pushing to *websocket*; polling stops with the last follower."""
    _pusher.unsubscribe(websocket)


def polling() -> list[tuple[str, str]]:
    """The (source, query) pairs this process polls, sorted."""
    return _pusher.polling()
