"""The Jinja2 environment of every template: ``static``, ``url``, ``view_source``.

Undefined names raise instead of rendering as empty strings, so a typo in a
template fails its page test. Autoescaping stays on (Django's default).
https://docs.djangoproject.com/en/5.2/topics/templates/#django.template.backends.jinja2.Jinja2
"""

import inspect
from collections.abc import Callable
from typing import Any

from django.templatetags.static import static
from django.urls import reverse
from django.utils.module_loading import import_string
from jinja2 import Environment, StrictUndefined


def url(name: str, *args: Any, **kwargs: Any) -> str:
    """Reverse a URL name: ``url('echo:socket')``, ``url('room', slug)``."""
    return reverse(name, args=args or None, kwargs=kwargs or None)


def view_source(view: str | Callable[..., Any]) -> str:
    """Return the source of a view, given as a callable or a dotted path.

    The source of a decorated view includes its decorators; templates print
    it autoescaped, so the page shows exactly the code that runs.
    """
    function = import_string(view) if isinstance(view, str) else view
    return inspect.getsource(function)


def view_name(view: str | Callable[..., Any]) -> str:
    """Return a view's dotted path, e.g. ``apps.echo.views.socket``."""
    if isinstance(view, str):
        return view
    return f"{view.__module__}.{view.__qualname__}"


def environment(**options: Any) -> Environment:
    """Build the environment; Django's Jinja2 backend calls this."""
    options.setdefault("undefined", StrictUndefined)
    env = Environment(**options)
    env.globals.update(
        static=static, url=url, view_source=view_source, view_name=view_name
    )
    return env
