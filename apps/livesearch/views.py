"""The live search demo: send a query, get its top results pushed every
``LIVESEARCH_INTERVAL`` seconds, with what is new since the last push marked.

The 2010 example searched Google in the view itself and slept 30 seconds
between pushes. Here every query is polled once however many people follow
it: ``pusher.py`` schedules one poller per (source, query) on a fixed pool of
fetcher threads and sends each push to all of its followers (with the time
of the next one, for the page's countdown), and ``sources.py`` holds the
pluggable sources. A page may also ask for the next poll at once ("Refresh
now"), as often as ``limits.py`` allows.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps import ratelimit
from apps.livesearch import limits, pusher, sources
from apps.livesearch.conf import get_setting
from django_websocket import WebSocketRequest, require_websocket


def page(request: HttpRequest) -> HttpResponse:
    """The page: a query box, a source picker, the results, the view below."""
    context = {
        "socket_view": socket,
        "sources": sources.configured(),
        "interval": get_setting("LIVESEARCH_INTERVAL"),
    }
    return render(request, "livesearch/index.html", context)


@require_websocket
def socket(request: WebSocketRequest) -> None:
    # Runs in this connection's own thread. The loop only reads requests:
    # fetcher threads send the pushes (send() is thread-safe), and waiting
    # here answers pings and notices when the browser leaves.
    websocket = request.websocket
    # Counted per address and per session or user, in the cache:
    # reconnecting does not start the counts again.
    clients = ratelimit.client_keys(request)
    try:
        for message in websocket:  # ends when the client closes
            try:
                wanted = pusher.parse(message)  # a search, or a refresh
                limits.check(clients, wanted.type)
                if wanted == pusher.REFRESH:
                    # The next poll now, pushed to everyone following it.
                    pusher.refresh(websocket)
                else:
                    # Replaces this connection's previous search; the first
                    # push of the results comes at once.
                    pusher.subscribe(websocket, wanted.source, wanted.query)
            except pusher.SearchRefused as err:  # malformed, too many, full
                websocket.send_json(pusher.refusal_event(err))
    finally:
        pusher.unsubscribe(websocket)
