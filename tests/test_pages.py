"""The site's pages, rendered through Django's test client."""

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from django.template.loader import render_to_string
from django.test import Client
from markupsafe import escape

from apps.echo import views as echo_views

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_home_page_links_to_every_demo(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<a href="/echo/"' in html
    assert '<a href="/livesearch/"' in html
    assert '<a href="/chat/"' in html


def test_nav_shows_every_demo_on_every_page(client: Client) -> None:
    html = client.get("/echo/").content.decode()
    nav = html[html.index("<nav") : html.index("</nav>")]
    assert 'href="/echo/"' in nav
    assert 'aria-current="page"' in nav
    assert "Live search" in nav
    assert "Chat" in nav


def test_echo_page_passes_its_socket_url_to_the_script(client: Client) -> None:
    response = client.get("/echo/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-socket-url="/echo/ws/"' in html
    assert '<script type="module" src="/static/js/echo.js"></script>' in html
    assert 'id="echo-status" class="status" data-state="connecting"' in html


def test_echo_page_shows_the_source_of_its_socket_view(client: Client) -> None:
    html = client.get("/echo/").content.decode()
    source = inspect.getsource(echo_views.socket)
    assert "@require_websocket" in source
    assert f"<pre><code>{escape(source)}</code></pre>" in html
    assert "<code>apps.echo.views.socket</code>" in html


def test_socket_url_without_upgrade_is_a_400_saying_why(client: Client) -> None:
    response = client.get("/echo/ws/")
    assert response.status_code == 400
    assert b"only accepts WebSocket connections" in response.content


def test_unknown_url_renders_the_404_page(client: Client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.content.decode()


def test_500_page_renders_without_a_request() -> None:
    """Django renders 500.html with no context at all."""
    html = render_to_string("500.html")
    assert "<h1>Server error</h1>" in html
    assert 'href="/echo/"' in html


# The policy of config/settings.py, as the browser receives it.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'; object-src 'none'"
)

# What a strict policy refuses to run or apply: a <script> without src, a
# <style> element, a style= attribute, an on*= handler, a javascript: URL.
INLINE_CODE = [
    re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    re.compile(r"<style\b[^>]*>", re.IGNORECASE),
    re.compile(r"\sstyle\s*=", re.IGNORECASE),
    re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    re.compile(r"javascript:", re.IGNORECASE),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/echo/", 200),
        ("/livesearch/", 200),
        ("/chat/", 200),
        ("/chat/tea/", 200),
        ("/accounts/login/", 200),
        ("/admin/login/", 200),
        ("/no-such-page/", 404),
        ("/chat/no-such-room/", 404),
        ("/echo/ws/", 400),
    ],
)
def test_every_page_sends_the_content_security_policy(
    client: Client, path: str, status: int
) -> None:
    # Joining through the form creates the room and keeps the nickname.
    client.post("/chat/", {"nickname": "ada", "room": "tea"})
    response = client.get(path)
    assert response.status_code == status
    assert response["Content-Security-Policy"] == POLICY


def test_500_page_sends_the_content_security_policy(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in a view renders 500.html, which gets the header too."""

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the home page failed")

    monkeypatch.setattr("config.views.render", fail)
    client.raise_request_exception = False
    response = client.get("/")
    assert response.status_code == 500
    assert "<h1>Server error</h1>" in response.content.decode()
    assert response["Content-Security-Policy"] == POLICY


def test_debug_error_pages_keep_their_inline_styles(
    client: Client, settings: Any
) -> None:
    """With DEBUG on, Django's technical 404 styles itself inline: no header."""
    settings.DEBUG = True
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "<style>" in response.content.decode()
    assert "Content-Security-Policy" not in response


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    """The policy forbids inline code; nothing in templates/ may need it."""
    offenders = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        html = template.read_text()
        for pattern in INLINE_CODE:
            offenders += [f"{template.name}: {m}" for m in pattern.findall(html)]
    assert offenders == []


def test_every_page_links_the_svg_favicon() -> None:
    """base.html links it, so every page has it; the 500 page too."""
    html = render_to_string("500.html")
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    svg = (TEMPLATES.parent / "static" / "favicon.svg").read_text()
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert "style" not in svg  # the policy refuses inline styles


def test_each_demo_shows_its_view_in_a_panel_that_folds(client: Client) -> None:
    html = client.get("/echo/").content.decode()
    panel = html[html.index('<details class="view-source" open>') :]
    assert panel.index("<summary>") < panel.index("<pre><code>")


def test_home_page_says_how_often_live_search_pushes_as_the_setting_does() -> None:
    """It never promises a number of its own ("every few seconds")."""
    html = render_to_string("home.html")
    assert "every few seconds" not in html
    assert "<code>LIVESEARCH_INTERVAL</code>" in html
    html = render_to_string("home.html", {"livesearch_interval": 12.0})
    assert re.search(r"results\s+every 12 seconds\s+and marks", html)


def test_the_home_page_gives_the_live_search_interval_of_the_settings(
    client: Client, settings: Any
) -> None:
    settings.LIVESEARCH_INTERVAL = 12.5
    assert "every 12.5 seconds" in client.get("/").content.decode()
