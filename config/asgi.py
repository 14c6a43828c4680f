"""ASGI entry point: ``uvicorn config.asgi:application`` serves the site, the
same WebSocket views included (each in a thread of its own).

https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

from django_websocket.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()
