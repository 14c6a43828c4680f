"""Views that only the project tests serve (see tests/urls.py)."""

from django_websocket import require_websocket


# The example from the 2010 announcement of django-websocket, unchanged but
# for the name: it must keep running as it was written.
@require_websocket
def echo(request):
    while True:
        # wait() will return new messages as they arrive
        message = request.websocket.wait()
        # wait() returns None if the connection was closed by the client
        if message is None:
            return
        # simple method for sending messages
        request.websocket.send(message)
