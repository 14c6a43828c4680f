"""The site's pages, rendered through Django's test client."""

import inspect

from django.template.loader import render_to_string
from django.test import Client
from markupsafe import escape

from apps.echo import views as echo_views


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
