"""Opening handshake validation, over real sockets (RFC 6455 section 4.2)."""

from __future__ import annotations

import base64

import pytest

from django_websocket.tests.conftest import HANDSHAKE, raw_request

pytestmark = pytest.mark.urls("django_websocket.tests.urls")


def test_valid_handshake_switches_protocols(live_server):
    response = raw_request(live_server, "/echo/", HANDSHAKE)
    assert response.status == 101
    # RFC 6455 section 1.3's worked example of the accept key.
    assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.headers["Upgrade"] == "websocket"


def test_connection_header_only_needs_to_contain_upgrade(live_server):
    """Firefox sends "Connection: keep-alive, Upgrade"."""
    headers = {**HANDSHAKE, "Connection": "keep-alive, Upgrade"}
    assert raw_request(live_server, "/echo/", headers).status == 101


def test_missing_key_is_refused_with_400_and_the_reason(live_server):
    headers = {k: v for k, v in HANDSHAKE.items() if k != "Sec-WebSocket-Key"}
    response = raw_request(live_server, "/echo/", headers)
    assert response.status == 400
    assert response.body == b"Missing Sec-WebSocket-Key header\n"


def test_malformed_key_is_refused_with_400(live_server):
    headers = {**HANDSHAKE, "Sec-WebSocket-Key": base64.b64encode(b"short").decode()}
    response = raw_request(live_server, "/echo/", headers)
    assert response.status == 400
    assert b"Invalid Sec-WebSocket-Key 'c2hvcnQ='" in response.body


def test_version_8_is_refused_with_426_naming_version_13(live_server):
    response = raw_request(
        live_server, "/echo/", {**HANDSHAKE, "Sec-WebSocket-Version": "8"}
    )
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert b"Unsupported Sec-WebSocket-Version '8'" in response.body


def test_connection_without_upgrade_token_is_refused(live_server):
    response = raw_request(
        live_server, "/echo/", {**HANDSHAKE, "Connection": "keep-alive"}
    )
    assert response.status == 400
    assert (
        response.body == b"Connection header must contain 'upgrade', got 'keep-alive'\n"
    )


def test_post_upgrade_is_refused_with_405(live_server):
    response = raw_request(
        live_server,
        "/csrf-exempt-echo/",
        {**HANDSHAKE, "Content-Length": "0"},
        method="POST",
    )
    assert response.status == 405
    assert response.headers["Allow"] == "GET"


def test_an_http_10_upgrade_is_refused_with_400(live_server):
    """RFC 6455 section 4.1: the handshake is an HTTP/1.1 request."""
    response = raw_request(live_server, "/echo/", HANDSHAKE, version="HTTP/1.0")
    assert response.status == 400
    assert b"WebSocket handshake requires HTTP/1.1 or later" in response.body


def test_plain_get_to_a_websocket_only_view_is_refused_with_400(live_server):
    response = raw_request(live_server, "/echo/", {"Host": "127.0.0.1"})
    assert response.status == 400
    assert b"only accepts WebSocket connections" in response.body


def test_extensions_header_with_a_control_character_is_refused_with_400(live_server):
    """Found by test_properties: websockets' Headers refuses the value, which
    was a 500."""
    headers = {**HANDSHAKE, "Sec-WebSocket-Extensions": "permessage-deflate; \x08"}
    response = raw_request(live_server, "/echo/", headers)
    assert response.status == 400
    assert response.body.startswith(b"Invalid Sec-WebSocket-Extensions ")


def test_subprotocol_is_chosen_in_the_views_order_of_preference(ws):
    with ws("/subprotocols/", subprotocols=["chat.v1", "chat.v2"]) as client:
        assert client.subprotocol == "chat.v2"
        assert client.receive() == "chat.v2"


def test_no_common_subprotocol_connects_without_one(ws):
    with ws("/subprotocols/", subprotocols=["other"]) as client:
        assert client.subprotocol is None
        assert client.receive() == "none"


def test_permessage_deflate_is_negotiated_and_round_trips(ws):
    with ws("/echo/") as client:
        extensions = client.connection.protocol.extensions
        assert [ext.name for ext in extensions] == ["permessage-deflate"]
        message = "compressible " * 10_000
        client.send(message)
        assert client.receive() == message


def test_compression_setting_off_disables_permessage_deflate(ws, settings):
    settings.WEBSOCKET_COMPRESSION = False
    with ws("/echo/") as client:
        assert client.connection.protocol.extensions == []
        client.send("plain")
        assert client.receive() == "plain"
