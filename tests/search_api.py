"""A stand-in for the live search APIs: a real HTTP server on 127.0.0.1.

It answers in the response shapes of Algolia's Hacker News search
(``/hn/api/v1/search_by_date``), MediaWiki's ``list=search``
(``/wikipedia/w/api.php``, snippets in HTML) and SearXNG's JSON format
(``/searxng/search?format=json``). Results change between polls: the n-th
successful answer for a query lists items n + 10 down to 1, newest first,
so each poll adds one on top. ``fail()`` makes the next requests fail (500,
slow, malformed JSON, 429 with ``Retry-After``, a body or headers trickling
one byte at a time, a body far over any sane size); every request is
recorded, and so are the requests still open and the bytes sent.
"""

import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

from apps.livesearch import pusher
from apps.livesearch.conf import DEFAULTS

# The query parameter of each API, by the path it serves.
ENDPOINTS = {
    "/hn/api/v1/search_by_date": ("hn", "query"),
    "/wikipedia/w/api.php": ("wikipedia", "srsearch"),
    "/searxng/search": ("searxng", "q"),
}
FAILURES = {
    "500",
    "slow",
    "malformed",
    "429",
    "trickle",  # the headers, then one byte of body every trickle_seconds
    "trickle-headers",  # the status line, then one header byte at a time
    "huge",  # huge_bytes of JSON, announced in Content-Length
    "huge-unsized",  # the same without Content-Length, ended by closing
}
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Request:
    api: str
    query: str
    at: float  # time.monotonic()


class SearchApi:
    """The server; use it as a context manager (the ``search_api`` fixture).

    Attributes:
        url: ``http://127.0.0.1:<port>`` once started.
        retry_after: The ``Retry-After`` header of 429 answers, in seconds.
        slow_seconds: How long a "slow" answer takes (teardown cuts it short).
        trickle_seconds: The pause between two bytes of a "trickle" answer,
            which goes on until the client leaves (or teardown).
        huge_bytes: The size of a "huge" answer's body.
    """

    def __init__(self) -> None:
        self.retry_after = 1
        self.slow_seconds = 10.0
        self.trickle_seconds = 0.1
        self.huge_bytes = 32 * 1024 * 1024
        # Protects the attributes below (handler threads).
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._failures: list[str] = []
        self._answers: Counter[tuple[str, str]] = Counter()
        self._open = 0  # requests being answered
        self._waiting = 0  # "slow" requests waiting to be answered
        self._most_waiting = 0
        self._body_bytes_sent = 0
        # Set at teardown: slow answers stop waiting.
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="search-api",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join()

    def fail(self, kind: str, times: int = 1) -> None:
        """Make the next *times* requests fail with *kind*: "500", "slow",
        "malformed" or "429"."""
        assert kind in FAILURES, kind
        with self._lock:
            self._failures += [kind] * times

    def requests(self, query: str | None = None) -> list[Request]:
        """The requests received so far, optionally for one query only."""
        with self._lock:
            return [r for r in self._requests if query in (None, r.query)]

    def count(self, query: str) -> int:
        return len(self.requests(query))

    def open_requests(self) -> int:
        """Requests whose answer is still being sent (their handler runs)."""
        with self._lock:
            return self._open

    def most_waiting(self) -> int:
        """The most "slow" requests that were waiting for an answer at once:
        how many requests the client had in flight."""
        with self._lock:
            return self._most_waiting

    def body_bytes_sent(self) -> int:
        """Bytes of "huge" bodies the client took before it hung up."""
        with self._lock:
            return self._body_bytes_sent

    def sources(self, *, timeout: float) -> dict[str, Any]:
        """The default ``LIVESEARCH_SOURCES``, the remote ones pointed here
        (and labelled without the real service's location)."""
        sources: dict[str, Any] = copy.deepcopy(DEFAULTS["LIVESEARCH_SOURCES"])
        for name, source in sources.items():
            if "url" in source["OPTIONS"]:
                source["OPTIONS"].update(url=f"{self.url}/{name}", timeout=timeout)
                source["LABEL"] = source["LABEL"].split(" (")[0]
        return sources

    # Called from handler threads.

    def _record(self, api: str, query: str) -> tuple[str | None, int]:
        """Record a request; return its failure, if any, and the answer's
        generation."""
        with self._lock:
            self._requests.append(Request(api, query, time.monotonic()))
            failure = self._failures.pop(0) if self._failures else None
            if failure is None:
                self._answers[api, query] += 1
            return failure, self._answers[api, query]

    def _wait_slowly(self) -> None:
        with self._lock:
            self._waiting += 1
            self._most_waiting = max(self._most_waiting, self._waiting)
        try:
            self._released.wait(self.slow_seconds)
        finally:
            with self._lock:
                self._waiting -= 1

    def _count_open(self, change: int) -> None:
        with self._lock:
            self._open += change

    def _sent(self, count: int) -> None:
        with self._lock:
            self._body_bytes_sent += count


def answer(api: str, query: str, generation: int) -> dict[str, Any]:
    """The JSON body of a successful answer."""
    items = range(generation + 10, 0, -1)
    slug = quote(query)
    if api == "hn":
        return {
            "hits": [_hn_hit(query, slug, k) for k in items],
            "hitsPerPage": 10,
            "nbHits": len(items),
            "nbPages": 2,
            "page": 0,
            "params": f"query={slug}&tags=story&hitsPerPage=10",
            "processingTimeMS": 1,
            "query": query,
        }
    if api == "wikipedia":
        return {
            "batchcomplete": True,
            "continue": {"sroffset": 10, "continue": "-||"},
            "query": {
                "searchinfo": {"totalhits": len(items)},
                "search": [
                    {
                        "ns": 0,
                        "title": f"{query} {k}",
                        "pageid": 5000 + k,
                        "size": 1000 + k,
                        "wordcount": 100 + k,
                        "snippet": f'The <span class="searchmatch">{escape(query)}'
                        f"</span> article number {k} &amp; more",
                        "timestamp": _iso(k),
                    }
                    for k in list(items)[:10]
                ],
            },
        }
    return {
        "query": query,
        "number_of_results": 0,
        "results": [
            {
                "url": f"https://searx.example/{slug}/{k}",
                "title": f"{query} page {k}",
                "content": f"About {query}, result {k}.",
                "publishedDate": _iso(k) if k % 2 else None,
                "engine": "duckduckgo",
                "engines": ["duckduckgo"],
                "parsed_url": ["https", "searx.example", f"/{slug}/{k}", "", "", ""],
                "template": "default.html",
                "positions": [k],
                "score": 1 / k,
                "category": "general",
            }
            for k in items
        ],
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [],
        "unresponsive_engines": [],
    }


def _hn_hit(query: str, slug: str, k: int) -> dict[str, Any]:
    ask = k % 5 == 0  # an "Ask HN": no URL, a text in HTML
    story_id = 40_000_000 + k
    return {
        "author": f"user{k}",
        "created_at": _iso(k),
        "created_at_i": int((EPOCH + timedelta(minutes=k)).timestamp()),
        "num_comments": k,
        "objectID": str(story_id),
        "points": 10 * k,
        "story_id": story_id,
        "story_text": f"<p>Ask about <i>{escape(query)}</i> &amp; more</p>"
        if ask
        else None,
        "title": f"{query} story {k}" + (" <b>not bold</b>" if k == 3 else ""),
        "updated_at": _iso(k),
        "url": None if ask else f"https://news.example/{slug}/{k}",
        "_tags": ["story", f"author_user{k}", f"story_{story_id}"],
    }


def _iso(k: int) -> str:
    return (EPOCH + timedelta(minutes=k)).isoformat().replace("+00:00", "Z")


def _handler(api: SearchApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so closing joins cleanly.
        protocol_version = "HTTP/1.0"
        timeout = 10

        def do_GET(self) -> None:
            api._count_open(1)
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a deadline, a size cap): the test
            finally:
                api._count_open(-1)

        def _answer(self) -> None:
            url = urlsplit(self.path)
            if url.path not in ENDPOINTS:
                self._reply(404, {"message": f"no {url.path} here"})
                return
            name, parameter = ENDPOINTS[url.path]
            query = parse_qs(url.query).get(parameter, [""])[0]
            failure, generation = api._record(name, query)
            if failure == "500":
                self._reply(500, {"message": "Internal Server Error"})
            elif failure == "slow":
                api._wait_slowly()
                self._reply(200, answer(name, query, generation))
            elif failure == "malformed":
                self._reply(200, b'{"hits": [{"title": ')
            elif failure == "429":
                headers = {"Retry-After": str(api.retry_after)}
                self._reply(429, {"message": "Too many requests"}, headers)
            elif failure == "trickle":
                self._trickle_body()
            elif failure == "trickle-headers":
                self._trickle_headers()
            elif failure in {"huge", "huge-unsized"}:
                self._huge(sized=failure == "huge")
            else:
                self._reply(200, answer(name, query, generation))

        def _reply(
            self, status: int, body: Any, headers: dict[str, str] | None = None
        ) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): that is the test

        def _trickle_body(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b'{"hits": [')
            while not api._released.wait(api.trickle_seconds):
                self.wfile.write(b" ")

        def _trickle_headers(self) -> None:
            self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
            while not api._released.wait(api.trickle_seconds):
                self.wfile.write(b"a")

        def _huge(self, *, sized: bool) -> None:
            head, tail = b'{"hits": [], "padding": "', b'"}'
            chunk = b"x" * 65536
            padding = api.huge_bytes - len(head) - len(tail)
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            if sized:
                self.send_header("Content-Length", str(api.huge_bytes))
            self.end_headers()
            self.wfile.write(head)
            while padding > 0:
                part = chunk[:padding]
                self.wfile.write(part)
                api._sent(len(part))
                padding -= len(part)
            self.wfile.write(tail)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read requests(), not a log

    return Handler


def pollers_stopped(timeout: float) -> Iterator[None]:
    """Wait, after the test, for every poller thread to end (bounded)."""
    yield
    deadline = time.monotonic() + timeout
    while pusher.polling() or livesearch_threads():
        if time.monotonic() > deadline:
            raise AssertionError(f"pollers still running: {livesearch_threads()}")
        time.sleep(0.01)


def livesearch_threads() -> list[str]:
    """The names of the live search threads of this process (its fetchers)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("livesearch ")]
