"""The origin check: same origin as Django's CSRF check judges it, over real
sockets (Cross-Site WebSocket Hijacking)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_websocket.tests.conftest import HANDSHAKE, raw_request

pytestmark = pytest.mark.urls("django_websocket.tests.urls")


def handshake(live_server, origin=None, host=None, **headers):
    """Status and body of an upgrade to /echo/ with these headers."""
    request = {**HANDSHAKE, "Host": host or f"127.0.0.1:{live_server.port}"}
    if origin is not None:
        request["Origin"] = origin
    request.update({name.replace("_", "-"): value for name, value in headers.items()})
    response = raw_request(live_server, "/echo/", request)
    return response.status, response.body.decode()


def test_the_sites_own_origin_and_no_origin_are_accepted(live_server):
    assert handshake(live_server, f"http://127.0.0.1:{live_server.port}")[0] == 101
    assert handshake(live_server)[0] == 101


def test_allowed_hosts_star_no_longer_lets_a_foreign_origin_in(
    live_server, settings, caplog
):
    settings.ALLOWED_HOSTS = ["*"]
    status, body = handshake(live_server, "https://evil.test")
    assert status == 403
    own = f"http://127.0.0.1:{live_server.port}"
    assert body == f"origin https://evil.test does not match {own}\n"
    assert f"origin https://evil.test does not match {own}" in caplog.text


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:6666",  # another port on the same host
        "https://127.0.0.1:{port}",  # another scheme
        "http://127.0.0.1",  # the default port is another port
        "http://[",  # urlsplit() raises on a broken IPv6 literal
    ],
)
def test_scheme_host_and_port_must_all_match(live_server, origin):
    status, body = handshake(live_server, origin.format(port=live_server.port))
    assert status == 403
    assert "does not match" in body


def test_a_subdomain_in_allowed_hosts_does_not_admit_its_siblings(
    live_server, settings
):
    settings.ALLOWED_HOSTS = [".example.com"]
    host = "www.example.com"
    assert handshake(live_server, "http://www.example.com", host=host)[0] == 101
    status, body = handshake(live_server, "http://evil.example.com", host=host)
    assert (status, body) == (
        403,
        "origin http://evil.example.com does not match http://www.example.com\n",
    )


def test_csrf_trusted_origins_apply_with_their_wildcards(live_server, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com", "https://partner.test"]
    assert handshake(live_server, "https://app.example.com")[0] == 101
    assert handshake(live_server, "https://partner.test")[0] == 101
    for origin in (
        "http://app.example.com",  # the wildcard is for https only
        "https://app.example.com:8443",  # and the default port
        "https://example.com.evil.test",
    ):
        status, body = handshake(live_server, origin)
        assert status == 403
        assert body.endswith("nor CSRF_TRUSTED_ORIGINS or WEBSOCKET_ALLOWED_ORIGINS\n")


def test_allowed_origins_setting_and_option_use_the_same_syntax(live_server, settings):
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["https://*.example.com"]
    assert handshake(live_server, "https://app.example.com")[0] == 101
    assert handshake(live_server, "https://other.test")[0] == 403
    # The decorator's option replaces the setting for its view.
    request = {**HANDSHAKE, "Origin": "https://app.example.com"}
    assert raw_request(live_server, "/allows-one-origin/", request).status == 403
    request["Origin"] = "https://one.example.org"
    assert raw_request(live_server, "/allows-one-origin/", request).status == 101


def test_the_scheme_behind_a_tls_proxy_comes_from_secure_proxy_ssl_header(
    live_server, settings
):
    origin = f"https://127.0.0.1:{live_server.port}"
    assert handshake(live_server, origin)[0] == 403
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert handshake(live_server, origin, X_Forwarded_Proto="https")[0] == 101
    http = f"http://127.0.0.1:{live_server.port}"
    assert handshake(live_server, http, X_Forwarded_Proto="https")[0] == 403


def test_the_host_behind_a_proxy_comes_from_x_forwarded_host_when_trusted(
    live_server, settings
):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "example.com"]
    forwarded = {"X_Forwarded_Host": "example.com"}
    assert handshake(live_server, "http://example.com", **forwarded)[0] == 403
    settings.USE_X_FORWARDED_HOST = True
    assert handshake(live_server, "http://example.com", **forwarded)[0] == 101


def test_a_host_outside_allowed_hosts_has_no_origin_of_its_own(live_server):
    assert handshake(live_server, "http://evil.test", host="evil.test")[0] == 400


def test_origin_null_is_refused_unless_listed(live_server, settings):
    status, body = handshake(live_server, "null")
    assert status == 403
    assert body.startswith("origin null (a sandboxed frame or a local file)")
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["*"]
    assert handshake(live_server, "null")[0] == 403
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["null"]
    assert handshake(live_server, "null")[0] == 101


def test_star_admits_any_origin(live_server, settings):
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["*"]
    assert handshake(live_server, "https://evil.test")[0] == 101


def test_require_origin_refuses_clients_without_one(live_server, settings):
    settings.WEBSOCKET_REQUIRE_ORIGIN = True
    assert handshake(live_server) == (
        403,
        "Missing Origin header (this view requires one)\n",
    )
    assert handshake(live_server, f"http://127.0.0.1:{live_server.port}")[0] == 101


def test_a_system_check_warns_about_star_in_the_setting_and_in_options(settings):
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["*"]
    with pytest.raises(SystemCheckError) as failed:
        call_command("check", "--fail-level", "WARNING")
    report = str(failed.value)
    assert "django_websocket.W003" in report
    assert "WEBSOCKET_ALLOWED_ORIGINS contains '*'" in report
    assert "/any-origin/" in report  # a view whose allowed_origins has "*"
