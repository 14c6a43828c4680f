"""A Content-Security-Policy header on every response, built from SECURE_CSP.

Django 6 builds this header itself (``django.middleware.csp``); on Django 5.2
this middleware does the same job for the enforced policy, with the setting
in Django 6's shape, so upgrading means swapping the MIDDLEWARE entry and
nothing else. It does not do nonces or a report-only policy: no page of this
site has inline script or style to allow. A response that already carries the
header (set by a view) keeps its own.

https://docs.djangoproject.com/en/6.0/ref/csp/
"""

from collections.abc import Callable, Iterable, Mapping

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

HEADER = "Content-Security-Policy"

# With DEBUG on, Django answers these with its technical pages, which style
# (and, for 500, script) themselves inline; the site's own 404.html and
# 500.html, rendered with DEBUG off, get the header like any page.
_DEBUG_PAGE_STATUSES = frozenset({404, 500})

Directives = Mapping[str, Iterable[str] | str | bool | None]


def build_policy(directives: Directives) -> str:
    """The header value for a ``{"directive": ["source", ...]}`` mapping.

    ``True`` writes a directive that takes no value (``upgrade-insecure-requests``);
    ``False`` or ``None`` leaves it out.
    """
    parts = []
    for name, value in directives.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(name)
        elif isinstance(value, str):
            parts.append(f"{name} {value}")
        else:
            parts.append(" ".join([name, *value]))
    return "; ".join(parts)


class ContentSecurityPolicyMiddleware:
    """Set ``Content-Security-Policy`` from the ``SECURE_CSP`` setting."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        # Read on every response, so that override_settings applies.
        directives: Directives = getattr(settings, "SECURE_CSP", {})
        if not directives or HEADER in response:
            return response
        if settings.DEBUG and response.status_code in _DEBUG_PAGE_STATUSES:
            return response
        response[HEADER] = build_policy(directives)
        return response
