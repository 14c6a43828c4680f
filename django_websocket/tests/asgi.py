"""The library's test views as an ASGI application, for servers that take a
module attribute rather than a factory (daphne, granian)."""

from django_websocket.asgi import get_asgi_application

application = get_asgi_application()
