"""Shared polling: every distinct (source, query) polled once per process,
however many connections follow it, by a fixed pool of fetcher threads.

The first connection to search for a query registers a poller for it, which
is due at once; then every ``LIVESEARCH_INTERVAL`` seconds after each search.
Each push says when the next one is due (``next_poll_in``, in seconds from
when it is sent), so a page can count down to it; a follower may ask for the
next poll at once (``refresh()``; the view limits how often).
A pool of at most ``LIVESEARCH_FETCHERS`` threads takes the pollers in the
order they fall due, searches, and sends the push to every connection
following the query; a connection that joins later gets the latest push at
once. A connection follows one query at a time: a new search replaces the
previous one at once, and a query nobody follows any more is dropped from
the schedule (a search already under way for it ends within
``LIVESEARCH_REQUEST_DEADLINE`` and is thrown away). Fetchers start with the
first poller and end when there are fewer pollers than fetchers, so an idle
process holds no thread. At most ``LIVESEARCH_MAX_QUERIES`` queries are
polled at once; a search for another one is refused with an error event. A
failing source is reported as an error event and retried after a capped
exponential backoff (longer if it sent ``Retry-After``): the error event's
``next_poll_in`` is that backoff. Followers stay subscribed meanwhile.

Polling is per process: with several server processes, each one polls the
queries its own connections follow. That is why this module keeps its own
registry instead of ``django_websocket.groups``, whose ``publish()`` reaches
every process's members.

Events, as JSON text::

    {"type": "results", "query": "django", "source": "hn", "at": "<ISO time>",
     "next_poll_in": 30.0,
     "results": [{"title", "url", "snippet", "published", "new"}, ...]}
    {"type": "error", "query": "django", "source": "hn", "next_poll_in": 60.0,
     "message": "Hacker News cannot be reached from this server",
     "detail": "cannot reach hn.algolia.com (its name does not resolve)"}

and, answering a request this module or the view refuses (``refused`` is
``"search"`` or ``"refresh"``; a refused search leaves the previous one on)::

    {"type": "error", "refused": "search", "message": "type something to ..."}
"""

import heapq
import itertools
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django import db

from apps.livesearch import sources
from apps.livesearch.conf import get_setting
from django_websocket import ConnectionClosed, Message, WebSocket

logger = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 200

Event = dict[str, Any]


class SearchRefused(ValueError):
    """A request the server does not run; the message says why, for the user.

    Attributes:
        request: What was refused: ``"search"`` or ``"refresh"``.
    """

    def __init__(self, message: str, request: str = "search") -> None:
        super().__init__(message)
        self.request = request


class Request(NamedTuple):
    """What a page asks for: ``type`` is ``"search"`` (for *query* on
    *source*) or ``"refresh"`` (the search it follows, now)."""

    type: str
    source: str = ""
    query: str = ""


REFRESH = Request("refresh")


def parse(message: Message) -> Request:
    """Read ``{"type": "search", "query": ..., "source": ...}`` or
    ``{"type": "refresh"}`` from the page.

    The query is trimmed, inner whitespace collapsed; the source defaults to
    the first configured one.

    Raises:
        SearchRefused: With a message for the user, if the request is
            malformed, or the search empty, too long, or for an unknown
            source.
    """
    try:
        data = json.loads(message)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("type") == REFRESH.type:
        return REFRESH
    if not isinstance(data, dict) or data.get("type") != "search":
        raise SearchRefused(
            'send {"type": "search", "query": "...", "source": "..."}'
            ' or {"type": "refresh"}'
        )
    query = data.get("query")
    query = " ".join(query.split()) if isinstance(query, str) else ""
    if not query:
        raise SearchRefused("type something to search for")
    if len(query) > MAX_QUERY_LENGTH:
        raise SearchRefused(
            f"the query is {len(query)} characters long; the limit is"
            f" {MAX_QUERY_LENGTH}"
        )
    names = [name for name, _ in sources.configured()]
    source = data.get("source", names[0] if names else None)
    if source not in names:
        raise SearchRefused(
            f"unknown source {str(source)[:50]!r}; choose one of {', '.join(names)}"
        )
    return Request("search", source, query)


def error_event(message: str, **fields: Any) -> Event:
    return {"type": "error", "message": message, **fields}


def refusal_event(err: SearchRefused) -> Event:
    """The error event answering a refused request."""
    return error_event(str(err), refused=err.request)


class Pusher:
    """The registry of pollers and of the connections following them, and
    the fetcher threads that run the pollers' searches."""

    def __init__(self) -> None:
        # Protects everything below and each poller's followers, newcomers,
        # last, busy and retired; idle fetchers wait on _work, built on it.
        self._lock = threading.Lock()
        self._pollers: dict[tuple[str, str], _Poller] = {}
        self._following: dict[WebSocket, _Poller] = {}
        # The pollers waiting for their next search, as a heap of (when due,
        # by time.monotonic(); a tie-breaker; the poller). Retired ones are
        # dropped as they come up, or all at once with the last poller.
        self._due: list[tuple[float, int, _Poller]] = []
        self._order = itertools.count()
        self._fetchers: set[threading.Thread] = set()
        self._numbers = itertools.count(1)  # fetcher names, for the reader
        # Notified when a poller is scheduled or retires: an idle fetcher
        # sleeps on it until the next poller falls due.
        self._work = threading.Condition(self._lock)

    def subscribe(self, websocket: WebSocket, source: str, query: str) -> None:
        """Make *websocket* follow *query* on *source*, instead of what it
        followed before; it gets the latest push at once, if there is one.

        Raises:
            SearchRefused: If the process already polls
                ``LIVESEARCH_MAX_QUERIES`` other queries; the previous search
                carries on.
        """
        retired = None
        with self._lock:
            current = self._following.get(websocket)
            poller = self._pollers.get((source, query))
            if poller is None or poller is not current:
                if poller is None:
                    self._check_room(websocket, current)
                retired = self._leave(websocket)
                if poller is None:
                    poller = self._pollers[source, query] = _Poller(source, query)
                    self._schedule(poller, time.monotonic())
                    self._start_fetcher()
                poller.followers.add(websocket)
                self._following[websocket] = poller
            poller.newcomers.add(websocket)  # the same search again: greet again
        if retired is not None:
            retired.close()
        self._greet(poller, websocket)

    def refresh(self, websocket: WebSocket) -> None:
        """Search the query *websocket* follows now instead of when due; every
        follower gets the push. Nothing changes if a search is due, or under
        way and not pushed yet: that push is the fresh one.

        Raises:
            SearchRefused: If *websocket* follows no query.
        """
        with self._lock:
            poller = self._following.get(websocket)
            if poller is None:
                raise SearchRefused("search for something first", REFRESH.type)
            now = time.monotonic()
            if poller.due_at <= now:
                return
            if poller.busy:  # pushed, not rescheduled yet: the fetcher will
                poller.due_at = now
            else:
                self._schedule(poller, now)

    def unsubscribe(self, websocket: WebSocket) -> None:
        """Stop pushing to *websocket* (no error if it followed nothing)."""
        with self._lock:
            retired = self._leave(websocket)
        if retired is not None:
            retired.close()

    def polling(self) -> list[tuple[str, str]]:
        """The (source, query) pairs being polled, sorted."""
        with self._lock:
            return sorted(self._pollers)

    # Called with _lock held.

    def _check_room(self, websocket: WebSocket, current: "_Poller | None") -> None:
        cap = int(get_setting("LIVESEARCH_MAX_QUERIES"))
        # Switching away from a query only this connection follows frees it.
        freed = current is not None and current.followers == {websocket}
        if len(self._pollers) - freed >= cap:
            raise SearchRefused(
                f"the server already follows {cap} different searches, its"
                " limit; try again in a while"
            )

    def _leave(self, websocket: WebSocket) -> "_Poller | None":
        """Returns the poller to close, if *websocket* was its last follower
        and no fetcher is searching it (that fetcher closes it otherwise)."""
        poller = self._following.pop(websocket, None)
        if poller is None:
            return None
        poller.followers.discard(websocket)
        poller.newcomers.discard(websocket)
        if poller.followers:
            return None
        poller.retired = True
        poller.last = None
        del self._pollers[poller.key]
        if not self._pollers:
            self._due.clear()
        self._work.notify_all()  # a fetcher too many ends
        return None if poller.busy else poller

    def _schedule(self, poller: "_Poller", due: float) -> None:
        """Make *poller* due at *due* (``time.monotonic()``), instead of when
        it was due before: its earlier entry in the heap goes stale."""
        poller.due_at = due
        heapq.heappush(self._due, (due, next(self._order), poller))
        self._work.notify()

    def _start_fetcher(self) -> None:
        wanted = min(int(get_setting("LIVESEARCH_FETCHERS")), len(self._pollers))
        if len(self._fetchers) < wanted:
            thread = threading.Thread(
                target=self._fetch,
                name=f"livesearch fetcher {next(self._numbers)}",
                daemon=True,
            )
            self._fetchers.add(thread)
            thread.start()

    # Fetcher threads.

    def _fetch(self) -> None:
        try:
            while (poller := self._take()) is not None:
                event, delay = poller.poll()
                due = time.monotonic() + delay
                self._push(poller, {**event, "next_poll_in": round(delay, 3)}, due)
                with self._lock:
                    poller.busy = False
                    retired = poller.retired
                    if not retired:  # at due, unless a refresh came since
                        self._schedule(poller, poller.due_at)
                if retired:
                    poller.close()
        finally:
            with self._lock:  # already done, unless a bug ended the thread
                self._fetchers.discard(threading.current_thread())
            db.connections.close_all()  # this thread's connections only

    def _take(self) -> "_Poller | None":
        """Wait for the next poller to fall due and mark it busy.

        Returns:
            ``None`` once there are more fetchers than pollers: this one ends.
        """
        with self._lock:
            while True:
                if len(self._fetchers) > len(self._pollers):
                    self._fetchers.discard(threading.current_thread())
                    return None
                # Retired pollers, and entries a refresh made stale.
                while self._due and (
                    self._due[0][2].retired or self._due[0][0] != self._due[0][2].due_at
                ):
                    heapq.heappop(self._due)
                timeout = None
                if self._due:
                    timeout = self._due[0][0] - time.monotonic()
                    if timeout <= 0:
                        poller = heapq.heappop(self._due)[2]
                        poller.busy = True
                        return poller
                self._work.wait(timeout)

    def _push(self, poller: "_Poller", event: Event, due: float) -> None:
        with poller.sending:
            with self._lock:
                if poller.retired:
                    return
                poller.last = event
                poller.due_at = due
                poller.newcomers.clear()
                followers = list(poller.followers)
            _send(followers, event)

    def _greet(self, poller: "_Poller", websocket: WebSocket) -> None:
        """Send the latest push to *websocket* unless it had one since it
        joined (or there is none yet: the first push is on its way)."""
        with poller.sending:
            with self._lock:
                if poller.last is None or websocket not in poller.newcomers:
                    return
                poller.newcomers.discard(websocket)
                # The next poll is as far off as it really is, not a whole
                # interval: 0 while it is under way.
                left = max(0.0, poller.due_at - time.monotonic())
                last = {**poller.last, "next_poll_in": round(left, 3)}
            _send([websocket], last)


class _Poller:
    """One query on one source: who follows it, its latest push, and its
    searches, run by one fetcher at a time."""

    def __init__(self, source: str, query: str) -> None:
        self.key = (source, query)
        # Guarded by the pusher's lock: who follows, who has had no push yet,
        # the latest push (results or error) to greet newcomers with, when
        # the next search is due (time.monotonic(); the heap entry with
        # another time is stale), whether a fetcher is searching, and whether
        # nobody follows any more (then it is never scheduled again).
        self.followers: set[WebSocket] = set()
        self.newcomers: set[WebSocket] = set()
        self.last: Event | None = None
        self.due_at = 0.0
        self.busy = False
        self.retired = False
        # Serializes pushes and greetings, so that nobody gets an older push
        # after a newer one; taken before the pusher's lock, never after.
        self.sending = threading.Lock()
        # Used by the busy fetcher only (or by close(), when none is).
        self._source: sources.Source | None = None
        self._previous: set[Any] | None = None  # identities in the last results
        self._failures = 0  # consecutive, for the backoff

    def poll(self) -> tuple[Event, float]:
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
            return self._failed(err, interval)
        except Exception as err:
            # A bug or a misconfiguration: log it, tell the followers, and keep
            # polling to retry like any other failure.
            logger.exception("livesearch: searching %s for %r failed", name, query)
            failure = sources.SourceError(
                f"search failed ({type(err).__name__})",
                problem="cannot be searched: something is wrong on this server",
            )
            return self._failed(failure, interval)
        self._failures = 0
        return self._results(results), interval

    def close(self) -> None:
        """Release the source and what the poller remembers."""
        if self._source is not None:
            self._source.close()
            self._source = None
        self._previous = None

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

    def _failed(self, err: sources.SourceError, interval: float) -> tuple[Event, float]:
        self._failures += 1
        cap = max(float(get_setting("LIVESEARCH_MAX_BACKOFF")), interval)
        delay = interval * 2 ** min(self._failures, 16)
        delay = min(max(delay, err.retry_after or 0.0), cap)
        cause = err.__cause__
        name, query = self.key
        if self._source is not None:
            label = self._source.label
        else:  # it could not be created
            label = dict(sources.configured()).get(name, name)
        # The page gets plain words first and the detail on request; the log
        # also gets what caused them.
        logger.warning(
            "livesearch: %s for %r: %s%s; retrying in %.3g s",
            name,
            query,
            err,
            f" ({cause!r})" if cause is not None else "",
            delay,
        )
        event = error_event(
            f"{label} {err.problem}", source=name, query=query, detail=str(err)
        )
        return event, delay


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
    search; the first push comes at once, then one every interval.

    Raises:
        SearchRefused: If the process polls as many queries as it may.
    """
    _pusher.subscribe(websocket, source, query)


def refresh(websocket: WebSocket) -> None:
    """Poll the query *websocket* follows now; every follower gets the push.

    Raises:
        SearchRefused: If *websocket* follows no query.
    """
    _pusher.refresh(websocket)


def unsubscribe(websocket: WebSocket) -> None:
    """Stop pushing to *websocket*; polling stops with the last follower."""
    _pusher.unsubscribe(websocket)


def polling() -> list[tuple[str, str]]:
    """The (source, query) pairs this process polls, sorted."""
    return _pusher.polling()
