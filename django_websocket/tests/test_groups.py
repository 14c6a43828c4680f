"""Groups with the in-process backend: membership, fan-out, slow members."""

from __future__ import annotations

import socket

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_websocket import groups
from django_websocket.groups.local import LocalBackend
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT
from django_websocket.tests.test_connection import _wait_for

pytestmark = pytest.mark.urls("django_websocket.tests.urls")


def test_members_of_a_group_receive_each_others_messages_and_others_do_not(ws):
    """Bob does not negotiate compression: the frame serialized once for the
    group reaches him, and Ada's compressed copy reaches her."""
    with (
        ws("/groups/lobby/") as ada,
        ws("/groups/lobby/", compression=None) as bob,
        ws("/groups/other/") as eve,
    ):
        for client in (ada, bob, eve):
            assert client.receive() == "joined"
        ada.send("hello lobby")
        assert ada.receive() == "hello lobby"
        assert bob.receive() == "hello lobby"
        bob.send(b"\x01binary")
        assert ada.receive() == b"\x01binary"
        with pytest.raises(TimeoutError):
            eve.receive(timeout=0.3)


def test_a_closed_connection_leaves_its_groups(ws):
    with ws("/groups/lobby/") as ada:
        assert ada.receive() == "joined"
        assert _wait_for(lambda: len(groups.local_members("lobby")) == 1)
    assert _wait_for(lambda: groups.local_members("lobby") == [])


def test_a_stalled_member_is_dropped_and_the_others_receive_everything(
    live_server, ws, observed, settings
):
    settings.WEBSOCKET_MAX_SEND_BACKLOG = 256 * 1024
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(TIMEOUT)
    stalled.connect((live_server.host, live_server.port))
    request = "GET /groups/room/listen/ HTTP/1.1\r\n"
    request += "".join(f"{k}: {v}\r\n" for k, v in HANDSHAKE.items())
    stalled.sendall(request.encode() + b"\r\n")
    try:
        assert _wait_for(lambda: len(groups.local_members("room")) == 1)
        with (
            ws("/groups/room/", max_size=None) as sender,
            ws("/groups/room/listen/") as reader,
        ):
            assert sender.receive() == "joined"
            assert reader.receive() == "joined"
            payload = "x" * 16384
            for i in range(300):  # 4.8 MiB: far past the stalled member's backlog
                sender.send(f"{i}:{payload}")
            got = [reader.receive(timeout=TIMEOUT * 2) for _ in range(300)]
            assert [int(m.split(":")[0]) for m in got] == list(range(300))
            assert observed() == ("listener-closed", 1008)
    finally:
        stalled.close()


def test_groups_backend_is_loaded_from_the_setting(settings):
    settings.WEBSOCKET_GROUPS = {
        "BACKEND": "django_websocket.groups.local.LocalBackend"
    }
    assert isinstance(groups.get_backend(), LocalBackend)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("redis://", "must be a dict with a 'BACKEND' key"),
        ({"BACKEND": "nowhere.Backend"}, "'nowhere.Backend' cannot be imported"),
        (
            {"BACKEND": "django_websocket.conf.get_setting"},
            "is not a BaseBackend subclass",
        ),
        (
            {
                "BACKEND": "django_websocket.groups.local.LocalBackend",
                "OPTIONS": {"x": 1},
            },
            "rejected by django_websocket.groups.local.LocalBackend",
        ),
    ],
)
def test_a_wrong_groups_setting_is_improperly_configured(settings, config, message):
    settings.WEBSOCKET_GROUPS = config
    with pytest.raises(ImproperlyConfigured, match="WEBSOCKET_GROUPS") as error:
        groups.get_backend()
    assert message in str(error.value)


def test_presence_counts_each_identitys_connections_until_they_close(ws):
    with ws("/groups/room/as/ada/") as ada, ws("/groups/room/as/ada/") as ada2:
        assert ada.receive() == "joined"
        assert ada2.receive() == "joined"
        with ws("/groups/room/as/bob/") as bob:
            assert bob.receive() == "joined"
            bob.send("who")
            assert bob.receive_json() == {"ada": 2, "bob": 1}
        assert _wait_for(lambda: groups.presence("room") == {"ada": 2})
        ada2.close()
        assert _wait_for(lambda: groups.presence("room") == {"ada": 1})
    assert _wait_for(lambda: groups.presence("room") == {})
