"""The live search demo end to end: the real server, websockets' client, and a
real local HTTP server standing in for Hacker News, Wikipedia and SearXNG."""

import inspect
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from markupsafe import escape
from websockets.sync.client import ClientConnection, connect

from apps.livesearch import index, pusher, views
from apps.livesearch.conf import DEFAULTS
from apps.livesearch.sources import LocalSource
from django_websocket.tests.conftest import ASGI_SERVERS
from tests.conftest import TIMEOUT, start_asgi
from tests.search_api import SearchApi, livesearch_threads, pollers_stopped

WsConnect = Callable[[str], AbstractContextManager[ClientConnection]]

INTERVAL = 0.3  # LIVESEARCH_INTERVAL in these tests
MAX_BACKOFF = 1.0
SOURCE_TIMEOUT = 0.3
DEADLINE = 1.0  # LIVESEARCH_REQUEST_DEADLINE
SLACK = 0.9  # timers may fire a little early, measured from another thread

DOCS = Path(__file__).resolve().parents[1] / "docs" / "howto" / "livesearch-sources.md"
CHAT_MODELS = DEFAULTS["LIVESEARCH_SOURCES"]["local"]["OPTIONS"]["models"]


@pytest.fixture(autouse=True)
def _pollers_stop() -> Iterator[None]:
    """After each test, every poller thread ends (set up first, torn down last)."""
    yield from pollers_stopped(TIMEOUT)


@pytest.fixture(autouse=True)
def _counts_cleared() -> Iterator[None]:
    """Rate limits start from nothing in each test (they live in the cache)."""
    cache.clear()
    yield
    cache.clear()


def livesearch_settings(api: SearchApi) -> dict[str, Any]:
    """The LIVESEARCH_* settings of these tests, the sources pointing at *api*.

    Every test client comes from 127.0.0.1, so the rate limit is out of the
    way unless a test sets it.
    """
    return {
        "LIVESEARCH_INTERVAL": INTERVAL,
        "LIVESEARCH_MAX_BACKOFF": MAX_BACKOFF,
        "LIVESEARCH_REQUEST_DEADLINE": DEADLINE,
        "LIVESEARCH_RATE_LIMIT": (100_000, 60.0),
        "LIVESEARCH_SOURCES": api.sources(timeout=SOURCE_TIMEOUT),
    }


@pytest.fixture
def api(settings: Any, search_api: SearchApi) -> SearchApi:
    """The fake APIs, with the live server's settings pointing at them."""
    for name, value in livesearch_settings(search_api).items():
        setattr(settings, name, value)
    return search_api


@pytest.fixture
def ws_connect(
    request: pytest.FixtureRequest,
    api: SearchApi,
    transactional_db: None,
    tmp_path: Path,
) -> Iterator[WsConnect]:
    """websockets' client on a path of the library's threaded server in this
    process or, for a test that parametrizes ``ws_connect`` indirectly with
    the name of an ASGI server, of that server serving
    ``config.asgi:application`` with the same settings (which the test then
    cannot change)."""
    server = None
    kind = getattr(request, "param", "threaded")
    if kind == "threaded":
        base = request.getfixturevalue("live_server").ws_url
    else:
        server = start_asgi(
            kind,
            {
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "DJANGO_SETTINGS_MODULE": "tests.server_settings",
                "STARTER_TEST_LIVESEARCH": json.dumps(livesearch_settings(api)),
            },
        )
        base = server.url

    def open_path(path: str) -> AbstractContextManager[ClientConnection]:
        return connect(base + path, open_timeout=TIMEOUT, close_timeout=TIMEOUT)

    yield open_path
    if server is not None:
        server.stop()


def search(ws: ClientConnection, query: str, source: str = "hn") -> None:
    ws.send(json.dumps({"type": "search", "query": query, "source": source}))


def receive(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(ws.recv(timeout))
    return event


def receive_results(ws: ClientConnection) -> dict[str, Any]:
    event = receive(ws)
    assert event["type"] == "results", event
    return event


def titles(event: dict[str, Any]) -> list[str]:
    return [result["title"] for result in event["results"]]


def new_titles(event: dict[str, Any]) -> list[str]:
    return [result["title"] for result in event["results"] if result["new"]]


def receive_results_for(ws: ClientConnection, query: str) -> dict[str, Any]:
    """The next results of *query*, skipping pushes of the previous search."""
    deadline = time.monotonic() + TIMEOUT
    while (event := receive(ws, deadline - time.monotonic())).get("query") != query:
        pass
    assert event["type"] == "results", event
    return event


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@contextmanager
def most_threads() -> Iterator[list[str]]:
    """The live search threads at the busiest moment of the block, sampled
    every few milliseconds from another thread."""
    peak: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            if len(threads := livesearch_threads()) > len(peak):
                peak[:] = threads

    sampler = threading.Thread(target=sample, name="thread sampler")
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(TIMEOUT)


def host(api: SearchApi) -> str:
    return api.url.removeprefix("http://")


# Pushes


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_first_push_comes_at_once_with_at_most_ten_results(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        started = time.monotonic()
        search(ws, "  django  ")
        event = receive_results(ws)
        assert time.monotonic() - started < INTERVAL
    assert event["query"] == "django"
    assert event["source"] == "hn"
    assert datetime.fromisoformat(event["at"]).tzinfo is not None
    assert event["next_poll_in"] == INTERVAL
    # The fake answers 11 stories, newest first.
    assert titles(event)[:2] == ["django story 11", "django story 10"]
    assert len(event["results"]) == 10
    assert new_titles(event) == []
    first = event["results"][0]
    assert first == {
        "title": "django story 11",
        "url": "https://news.example/django/11",
        "snippet": "110 points by user11",
        "published": "2025-01-01T00:11:00Z",
        "new": False,
    }


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_later_pushes_come_every_interval_marking_what_is_new(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        pushes = []
        for _ in range(3):
            pushes.append((receive_results(ws), time.monotonic()))
    (first, t1), (second, t2), (third, t3) = pushes
    assert t2 - t1 >= INTERVAL * SLACK
    assert t3 - t2 >= INTERVAL * SLACK
    assert new_titles(second) == ["django story 12"]
    assert titles(second)[1:] == titles(first)[:9]
    assert new_titles(third) == ["django story 13"]
    assert api.count("django") == 3


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_hacker_news_text_posts_link_to_their_discussion(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    """Ask HN stories have no URL and an HTML text; the text becomes the snippet."""
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "ask")
        event = receive_results(ws)
    ask = next(r for r in event["results"] if r["title"] == "ask story 10")
    assert ask["url"] == "https://news.ycombinator.com/item?id=40000010"
    assert ask["snippet"] == "Ask about ask & more"


def test_wikipedia_snippets_arrive_as_plain_text(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django <b>", source="wikipedia")
        event = receive_results(ws)
    first = event["results"][0]
    assert first["title"] == "django <b> 11"
    assert first["url"] == f"{api.url}/wikipedia/wiki/django_%3Cb%3E_11"
    assert first["snippet"] == "The django <b> article number 11 & more"
    assert first["published"] == "2025-01-01T00:11:00Z"


def test_searxng_results_come_from_the_instance_json(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "rust lang", source="searxng")
        event = receive_results(ws)
    assert event["source"] == "searxng"
    assert len(event["results"]) == 10
    assert event["results"][:2] == [
        {
            "title": "rust lang page 11",
            "url": "https://searx.example/rust%20lang/11",
            "snippet": "About rust lang, result 11.",
            "published": "2025-01-01T00:11:00Z",
            "new": False,
        },
        {
            "title": "rust lang page 10",
            "url": "https://searx.example/rust%20lang/10",
            "snippet": "About rust lang, result 10.",
            "published": None,
            "new": False,
        },
    ]


# Shared polling


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_fifty_followers_of_one_query_cost_one_request_per_interval(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(ws_connect("/livesearch/ws/")) for _ in range(50)
        ]
        for ws in clients:
            search(ws, "shared")
        seen: set[str] = set()
        for ws in clients:
            for _ in range(3):
                event = receive_results(ws)
                seen.add(event["at"])
    # One request per push, plus at most one whose push came after we stopped.
    assert len(seen) <= api.count("shared") <= len(seen) + 1
    assert api.count("shared") < 10


def test_two_queries_are_polled_separately(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as one, ws_connect("/livesearch/ws/") as two:
        search(one, "alpha")
        search(two, "beta")
        for _ in range(2):
            assert receive_results(one)["query"] == "alpha"
            assert receive_results(two)["query"] == "beta"
        assert pusher.polling() == [("hn", "alpha"), ("hn", "beta")]
    assert api.count("alpha") in {2, 3}
    assert api.count("beta") in {2, 3}


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_a_newcomer_gets_the_latest_push_at_once(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as first, ws_connect("/livesearch/ws/") as late:
        search(first, "django")
        receive_results(first)
        receive_results(first)
        started = time.monotonic()
        search(late, "django")
        event = receive_results(late)
        assert time.monotonic() - started < INTERVAL
    assert titles(event)[0] == "django story 12"


def test_the_same_search_again_tells_when_the_next_poll_really_is(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    """Pressing Search again gets the latest push at once, with the time left
    until the next poll rather than a whole interval."""
    settings.LIVESEARCH_INTERVAL = 2.0
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        first = receive_results(ws)
        pushed = time.monotonic()
        time.sleep(0.5)
        search(ws, "django")
        again = receive_results(ws)
        asked = time.monotonic()
        assert again["at"] == first["at"]  # the same push
        assert first["next_poll_in"] == 2.0
        left = again["next_poll_in"]
        assert 2.0 - (asked - pushed) - 0.1 <= left <= 2.0 - 0.5
        receive_results(ws)
        arrived = time.monotonic()
    assert arrived - asked <= left + 0.5
    assert api.count("django") == 2


def test_polling_stops_when_the_last_follower_leaves(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as stays:
        with ws_connect("/livesearch/ws/") as leaves:
            search(leaves, "django")
            search(stays, "django")
            receive_results(leaves)
        receive_results(stays)
        receive_results(stays)  # polling went on for the one left
    wait_until(lambda: pusher.polling() == [], "polling stops")
    count = api.count("django")
    time.sleep(INTERVAL * 3)
    assert api.count("django") == count


def test_a_new_search_replaces_the_previous_one(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "first")
        assert receive_results(ws)["query"] == "first"
        search(ws, "second")
        wait_until(lambda: pusher.polling() == [("hn", "second")], "first stops")
        # A push of "first" may have been on its way; none comes after that.
        while (event := receive_results(ws))["query"] == "first":
            pass
        assert event["query"] == "second"
        assert receive_results(ws)["query"] == "second"


# Failures


def poll_error(message: str, detail: str, next_poll_in: float) -> dict[str, Any]:
    """The error event of a failed poll of "django" on Hacker News."""
    return {
        "type": "error",
        "source": "hn",
        "query": "django",
        "message": message,
        "detail": detail,
        "next_poll_in": next_poll_in,
    }


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
@pytest.mark.parametrize(
    ("failure", "message", "detail", "delay"),
    [
        (
            "500",
            "Hacker News has a problem on its side",
            "answered HTTP 500 Internal Server Error",
            INTERVAL * 2,
        ),
        (
            "slow",
            "Hacker News is too slow to answer",
            f"did not answer within {SOURCE_TIMEOUT:g} s",
            INTERVAL * 2,
        ),
        (
            "malformed",
            "Hacker News sent an answer this server cannot read",
            "sent malformed JSON",
            INTERVAL * 2,
        ),
        (
            "429",
            "Hacker News asks this server to search less often",
            "answered HTTP 429 Too Many Requests",
            1.0,  # its Retry-After
        ),
    ],
)
def test_upstream_failure_is_reported_then_retried_until_it_heals(
    api: SearchApi,
    ws_connect: WsConnect,
    failure: str,
    message: str,
    detail: str,
    delay: float,
) -> None:
    """In plain words, the detail apart, and the retry when it really comes."""
    api.fail(failure)
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        error = receive(ws)
        assert error == poll_error(message, f"{host(api)} {detail}", delay)
        # The subscription stays: results come when the source heals.
        event = receive_results(ws)
    assert titles(event)[0] == "django story 11"
    failed, healed = api.requests("django")[:2]
    assert healed.at - failed.at >= delay * SLACK


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_a_newcomer_gets_the_latest_error_at_once(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    api.fail("500")
    with ws_connect("/livesearch/ws/") as first, ws_connect("/livesearch/ws/") as late:
        search(first, "django")
        error = receive(first)
        search(late, "django")
        greeting = receive(late, timeout=INTERVAL)
        # The same error, with the time left until the retry (all of it if
        # the late one joined before the push went out).
        assert greeting.pop("next_poll_in") <= error.pop("next_poll_in")
        assert greeting == error
        assert titles(receive_results(first)) == titles(receive_results(late))
    assert api.count("django") == 2


def test_backoff_doubles_up_to_its_cap(api: SearchApi, ws_connect: WsConnect) -> None:
    api.fail("500", times=3)
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        retries = [receive(ws)["next_poll_in"] for _ in "123"]
        receive_results(ws)
    assert retries == [0.6, 1.0, 1.0]  # INTERVAL * 2, * 4 capped
    at = [request.at for request in api.requests("django")]
    gaps = [later - earlier for earlier, later in zip(at, at[1:], strict=False)]
    assert gaps[0] >= 0.6 * SLACK
    assert gaps[1] >= 1.0 * SLACK
    assert gaps[2] >= 1.0 * SLACK


def test_a_misconfigured_source_is_reported_and_breaks_nothing_else(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    settings.LIVESEARCH_SOURCES = {
        **settings.LIVESEARCH_SOURCES,
        "broken": {"BACKEND": "apps.livesearch.sources.NoSuchSource", "LABEL": "Oops"},
    }
    post("Saved despite the broken source")  # the index receivers carry on
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django", source="broken")
        assert receive(ws) == {
            "type": "error",
            "source": "broken",
            "query": "django",
            "message": "Oops cannot be searched: something is wrong on this server",
            "detail": "search failed (ImproperlyConfigured)",
            "next_poll_in": INTERVAL * 2,
        }
        search(ws, "despite", source="local")
        while (event := receive(ws))["type"] == "error":
            pass
    assert titles(event) == ["ada in #lobby"]


@pytest.mark.parametrize("trickle", ["trickle", "trickle-headers"])
def test_a_trickling_upstream_is_dropped_at_the_deadline_and_nothing_stays_open(
    api: SearchApi, ws_connect: WsConnect, trickle: str
) -> None:
    """A byte every 0.1 s never trips the 0.3 s read timeout; the total
    deadline ends the request, and the socket goes with it."""
    api.fail(trickle)
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        assert receive(ws, timeout=DEADLINE + TIMEOUT) == poll_error(
            "Hacker News is too slow to answer",
            f"{host(api)} did not finish answering within {DEADLINE:g} s",
            INTERVAL * 2,
        )
    wait_until(
        lambda: api.open_requests() == 0 and not livesearch_threads(),
        "the upstream request and the fetchers end",
    )


@pytest.mark.parametrize("huge", ["huge", "huge-unsized"])
def test_an_answer_over_the_size_limit_is_an_error_and_is_never_read_whole(
    api: SearchApi, ws_connect: WsConnect, settings: Any, huge: str
) -> None:
    settings.LIVESEARCH_MAX_RESPONSE_SIZE = 64 * 1024
    api.fail(huge)
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        assert receive(ws) == poll_error(
            "Hacker News sent an answer too large to read",
            f"{host(api)} sent an answer larger than 64 KiB",
            INTERVAL * 2,
        )
    wait_until(lambda: api.open_requests() == 0, "the upstream request ends")
    # What the server got out before the client hung up: socket buffers at
    # most, nowhere near the whole body.
    assert api.body_bytes_sent() < api.huge_bytes / 2


def test_an_unreachable_upstream_is_reported_in_plain_words(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    sources = api.sources(timeout=SOURCE_TIMEOUT)
    sources["hn"]["OPTIONS"]["url"] = f"http://127.0.0.1:{port}/hn"
    settings.LIVESEARCH_SOURCES = sources
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        assert receive(ws) == poll_error(
            "Hacker News cannot be reached from this server",
            f"cannot reach 127.0.0.1:{port} (the connection was refused)",
            INTERVAL * 2,
        )


# Refresh now


def refresh(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "refresh"}))


def test_a_refresh_polls_at_once_for_every_follower(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 60.0  # no push on schedule during the test
    with ws_connect("/livesearch/ws/") as one, ws_connect("/livesearch/ws/") as two:
        search(one, "django")
        search(two, "django")
        receive_results(one)
        receive_results(two)
        started = time.monotonic()
        refresh(one)
        pushes = [receive_results(one), receive_results(two)]
        assert time.monotonic() - started < TIMEOUT
    assert pushes[0] == pushes[1]
    assert new_titles(pushes[0]) == ["django story 12"]
    assert pushes[0]["next_poll_in"] == 60.0  # counted again from this poll
    assert api.count("django") == 2


def test_refreshes_past_the_limit_are_refused_saying_when_to_try_again(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    """Counted per client in the cache, like searches: a reconnect does not
    start the count again; the refusal leaves the search running."""
    settings.LIVESEARCH_INTERVAL = 60.0
    settings.LIVESEARCH_REFRESH_RATE_LIMIT = (1, 60.0)
    refused = re.compile(
        r"^too many refreshes: 1 every 60 s at most; try again in \d+ s$"
    )
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        receive_results(ws)
        refresh(ws)
        receive_results(ws)
        refresh(ws)
        event = receive(ws)
        assert event.pop("refused") == "refresh"
        assert refused.match(event["message"]), event
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        receive_results(ws)
        refresh(ws)
        event = receive(ws)
        assert event["refused"] == "refresh"
        assert refused.match(event["message"]), event
    assert api.count("django") == 3  # two searches and one refresh


def test_a_refresh_before_any_search_is_refused(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        refresh(ws)
        assert receive(ws) == {
            "type": "error",
            "refused": "refresh",
            "message": "search for something first",
        }
        search(ws, "django")  # the connection stays usable
        assert receive_results(ws)["query"] == "django"


def test_a_refresh_while_a_poll_is_under_way_adds_none(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    """The push on its way is the fresh poll; a second one would run the
    same search twice at once."""
    settings.LIVESEARCH_INTERVAL = 60.0
    api.slow_seconds = 0.2  # within SOURCE_TIMEOUT: a result, after a while
    api.fail("slow")
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        wait_until(lambda: api.count("django") == 1, "the first poll starts")
        refresh(ws)
        assert receive_results(ws)["next_poll_in"] == 60.0
        time.sleep(0.1)
    assert api.count("django") == 1


# Bounds


def test_200_distinct_queries_from_one_connection_leave_one_search_and_the_pool(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    """Each search replaces the previous one at once; a fixed pool of fetchers,
    not a thread per query, runs the searches."""
    fetchers = 4
    settings.LIVESEARCH_FETCHERS = fetchers
    api.slow_seconds = 0.2  # every answer takes a while
    api.fail("slow", times=200)
    with ws_connect("/livesearch/ws/") as ws, most_threads() as peak:
        for n in range(200):
            search(ws, f"query {n}")
        receive_results_for(ws, "query 199")
        assert pusher.polling() == [("hn", "query 199")]
    assert len(peak) <= fetchers, peak
    assert api.most_waiting() <= fetchers  # upstream requests in flight at once
    assert api.count("query 199") >= 1


def test_past_the_cap_on_distinct_queries_a_new_one_is_refused(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    settings.LIVESEARCH_MAX_QUERIES = 2
    with (
        ws_connect("/livesearch/ws/") as one,
        ws_connect("/livesearch/ws/") as two,
        ws_connect("/livesearch/ws/") as three,
    ):
        search(one, "alpha")
        search(two, "beta")
        receive_results(one)
        receive_results(two)
        search(three, "gamma")
        assert receive(three) == {
            "type": "error",
            "refused": "search",
            "message": "the server already follows 2 different searches, its"
            " limit; try again in a while",
        }
        assert pusher.polling() == [("hn", "alpha"), ("hn", "beta")]
        search(three, "alpha")  # one already polled is always open
        assert receive_results_for(three, "alpha")
        search(two, "delta")  # leaving "beta" makes room
        assert receive_results_for(two, "delta")
        assert pusher.polling() == [("hn", "alpha"), ("hn", "delta")]


def test_the_rate_limit_on_searches_survives_a_reconnect(
    api: SearchApi, ws_connect: WsConnect, settings: Any
) -> None:
    settings.LIVESEARCH_RATE_LIMIT = (3, 60.0)
    refused = re.compile(
        r"^too many searches: 3 every 60 s at most; try again in \d+ s$"
    )
    with ws_connect("/livesearch/ws/") as ws:
        for query in ["one", "two", "three"]:
            search(ws, query)
            receive_results_for(ws, query)
        search(ws, "four")
        while (event := receive(ws))["type"] == "results":
            pass
        assert refused.match(event["message"]), event
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "five")
        event = receive(ws)
        assert event["type"] == "error"
        assert refused.match(event["message"]), event
    assert api.count("four") == api.count("five") == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"query": "   "}, "type something to search for"),
        ({"query": "x" * 201}, "the query is 201 characters long; the limit is 200"),
        ({"query": "django", "source": "nope"}, "unknown source 'nope'; choose one"),
        ({"query": "django", "type": "subscribe"}, 'send {"type": "search"'),
        ("not json", 'send {"type": "search"'),
    ],
)
def test_a_bad_search_is_refused_with_an_error_event(
    api: SearchApi, ws_connect: WsConnect, request_: Any, message: str
) -> None:
    if isinstance(request_, dict):
        request_ = json.dumps({"type": "search", "source": "hn", **request_})
    with ws_connect("/livesearch/ws/") as ws:
        ws.send(request_)
        error = receive(ws)
        assert error["type"] == "error"
        assert error["refused"] == "search"
        assert error["message"].startswith(message)
        assert pusher.polling() == []
        search(ws, "django")  # the connection stays usable
        assert receive_results(ws)["query"] == "django"


@pytest.mark.parametrize("ws_connect", ["threaded", *ASGI_SERVERS], indirect=True)
def test_a_bad_search_leaves_the_previous_one_running(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "django")
        receive_results(ws)
        search(ws, "")
        while (event := receive(ws))["type"] == "results":
            pass
        assert event == {
            "type": "error",
            "refused": "search",
            "message": "type something to search for",
        }
        assert receive_results(ws)["query"] == "django"


def test_a_query_of_200_characters_is_accepted(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, " " + "q" * 200 + " ")
        assert receive_results(ws)["query"] == "q" * 200


# The local source: chat messages


def post(text: str, author: str = "ada", room: str = "lobby") -> Any:
    room_model = apps.get_model("chat", "Room")
    message_model = apps.get_model("chat", "Message")
    chat_room, _ = room_model.objects.get_or_create(name=room)
    return message_model.objects.create(room=chat_room, author=author, text=text)


def test_local_source_finds_a_chat_message_posted_after_subscribing(
    api: SearchApi, ws_connect: WsConnect
) -> None:
    post("An old tangerine story", author="bob")
    with ws_connect("/livesearch/ws/") as ws:
        search(ws, "tangerine", source="local")
        first = receive_results(ws)
        assert titles(first) == ["bob in #lobby"]
        post("Fresh Tangerines at the market!")
        while len((event := receive_results(ws))["results"]) < 2:
            pass
    fresh, old = event["results"]
    assert fresh["title"] == "ada in #lobby"
    assert fresh["url"] == old["url"] == "/chat/lobby/"  # new all the same
    assert fresh["snippet"] == "Fresh Tangerines at the market! ada"
    assert fresh["new"] is True
    assert old["new"] is False
    assert datetime.fromisoformat(fresh["published"]) > datetime.fromisoformat(
        old["published"]
    )


@pytest.mark.django_db
def test_local_index_follows_edits_and_deletions() -> None:
    source = LocalSource(label="Chat", models=CHAT_MODELS)
    message = post("Kumquats are in season")
    assert [r["snippet"] for r in source.search("kumquat")] == [
        "Kumquats are in season ada"
    ]
    message.text = "Loquats are in season"
    message.save()
    assert source.search("kumquats") == []
    assert len(source.search("loquats season")) == 1
    message.delete()
    assert source.search("loquats") == []


@pytest.mark.django_db
def test_reindex_command_indexes_objects_saved_without_signals() -> None:
    room_model = apps.get_model("chat", "Room")
    message_model = apps.get_model("chat", "Message")
    room = room_model.objects.create(name="bulk")
    message_model.objects.bulk_create(
        [message_model(room=room, author="cy", text=f"Persimmon {n}") for n in range(3)]
    )
    source = LocalSource(label="Chat", models=CHAT_MODELS)
    assert source.search("persimmon") == []
    call_command("livesearch_reindex", stdout=io.StringIO())
    assert len(source.search("persimmon")) == 3


@pytest.mark.django_db
def test_local_source_without_the_index_searches_with_icontains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What other databases get (and SQLite built without FTS5)."""
    monkeypatch.setattr(index, "available", lambda using: False)
    post("Nothing about fruit here")
    post("A ripe mango " + "and more words " * 20, author="dee")
    source = LocalSource(label="Chat", models=CHAT_MODELS)
    [result] = source.search("MANGO")
    assert result["title"] == "dee in #lobby"
    assert result["snippet"].startswith("A ripe mango and more words")
    assert result["snippet"].endswith("…")


@pytest.mark.django_db
def test_local_search_takes_any_text_as_words() -> None:
    """FTS5 syntax in a query is searched for, never parsed."""
    post('He said "NEAR(x y)" AND OR * -- ok')
    source = LocalSource(label="Chat", models=CHAT_MODELS)
    assert len(source.search('"NEAR(x y)" AND')) == 1
    assert source.search('"*') == []


# The page


def test_page_offers_the_configured_sources_and_shows_its_socket_view(
    client: Client, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 12
    html = client.get("/livesearch/").content.decode()
    assert 'data-socket-url="/livesearch/ws/"' in html
    assert re.search(r"every 12\s+seconds", html)
    assert '<script type="module" src="/static/js/livesearch.js"></script>' in html
    options = re.findall(r'<option value="(\w+)">([^<]+)</option>', html)
    assert options == [
        ("local", "This site (chat messages)"),
        ("hn", "Hacker News"),
        ("wikipedia", "Wikipedia (English)"),
        ("searxng", "SearXNG (127.0.0.1:8080)"),
    ]
    source = inspect.getsource(views.socket)
    assert f"<pre><code>{escape(source)}</code></pre>" in html
    assert "<code>apps.livesearch.views.socket</code>" in html


def test_socket_url_without_upgrade_is_a_400(client: Client) -> None:
    response = client.get("/livesearch/ws/")
    assert response.status_code == 400


def test_every_setting_is_documented_with_its_default() -> None:
    text = DOCS.read_text()
    for name in DEFAULTS:
        assert f"`{name}`" in text, name
    assert "`30.0`" in text and "`300.0`" in text
