"""Groups through a real Redis server, across two server processes."""

from __future__ import annotations

import signal
import time

import pytest

from django_websocket import BroadcastError
from django_websocket.groups.redis import RedisBackend
from django_websocket.testing import WebSocketClient
from django_websocket.tests.conftest import TIMEOUT


def _until(predicate, timeout: float = TIMEOUT * 3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def two_servers(server_process, redis_server):
    """Two runserver processes sharing groups through one Redis server."""
    env = {"REDIS_URL": redis_server.url}
    return (
        server_process("runserver", "--noreload", env=env),
        server_process("runserver", "--noreload", env=env),
    )


def test_a_runserver_and_a_uvicorn_share_groups_through_redis(
    server_process, redis_server
):
    env = {"REDIS_URL": redis_server.url}
    wsgi = server_process("runserver", "--noreload", env=env)
    asgi = server_process("uvicorn", env=env)
    with (
        WebSocketClient(wsgi.url, "/groups/room/", timeout=TIMEOUT) as ada,
        WebSocketClient(asgi.url, "/groups/room/", timeout=TIMEOUT) as bob,
    ):
        assert ada.receive() == "joined"
        assert bob.receive() == "joined"
        ada.send("from WSGI")
        assert bob.receive() == "from WSGI"
        bob.send("from ASGI")
        assert _drain_until(ada, "from ASGI")


def test_members_on_two_processes_receive_each_others_messages(two_servers):
    first, second = two_servers
    with (
        WebSocketClient(first.url, "/groups/room/", timeout=TIMEOUT) as ada,
        WebSocketClient(second.url, "/groups/room/", timeout=TIMEOUT) as bob,
    ):
        assert ada.receive() == "joined"
        assert bob.receive() == "joined"
        ada.send("from the first process")
        assert bob.receive() == "from the first process"
        assert ada.receive() == "from the first process"
        bob.send(b"\x00bytes from the second")
        assert ada.receive() == b"\x00bytes from the second"


def test_delivery_resumes_after_redis_restarts(two_servers, redis_server):
    first, second = two_servers
    with (
        WebSocketClient(first.url, "/groups/room/", timeout=TIMEOUT) as ada,
        WebSocketClient(second.url, "/groups/room/", timeout=TIMEOUT) as bob,
    ):
        assert ada.receive() == "joined"
        assert bob.receive() == "joined"
        redis_server.stop()
        ada.send("while Redis is down")
        reply = ada.receive(timeout=TIMEOUT * 2)
        while reply.startswith("reach "):  # the views relay reach_lost
            reply = ada.receive(timeout=TIMEOUT * 2)
        assert reply.startswith(
            "error: cannot publish to group 'room': Redis at redis://"
        )
        redis_server.start()

        def delivered() -> bool:
            ada.send("after the restart")
            try:
                while True:
                    message = bob.receive(timeout=0.5)
                    if message == "after the restart":
                        return True
            except TimeoutError:
                return False

        assert _until(delivered)
        bob.send("and back")
        assert _until(lambda: _drain_until(ada, "and back"))


def _drain_until(client: WebSocketClient, expected: str) -> bool:
    try:
        while True:
            if client.receive(timeout=0.5) == expected:
                return True
    except TimeoutError:
        return False


def test_publish_raises_broadcast_error_promptly_when_redis_is_unreachable(
    redis_server,
):
    backend = RedisBackend(url=redis_server.url, socket_timeout=0.5, max_backoff=0.2)
    try:
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(BroadcastError, match="cannot publish to group 'g'"):
            backend.publish("g", "lost")
        assert time.monotonic() - started < 2
    finally:
        backend.close()


def test_presence_is_shared_across_processes_and_follows_leaves(two_servers):
    first, second = two_servers
    with WebSocketClient(first.url, "/groups/room/as/ada/", timeout=TIMEOUT) as ada:
        assert ada.receive() == "joined"
        with WebSocketClient(
            second.url, "/groups/room/as/bob/", timeout=TIMEOUT
        ) as bob:
            assert bob.receive() == "joined"
            ada.send("who")
            assert ada.receive_json() == {"ada": 1, "bob": 1}

        def bob_gone() -> bool:
            ada.send("who")
            return ada.receive_json() == {"ada": 1}

        assert _until(bob_gone)


def test_presence_of_a_dead_process_is_dropped(two_servers):
    first, second = two_servers
    with WebSocketClient(first.url, "/groups/room/as/ada/", timeout=TIMEOUT) as ada:
        assert ada.receive() == "joined"
        bob = WebSocketClient(second.url, "/groups/room/as/bob/", timeout=TIMEOUT)
        with bob:
            assert bob.receive() == "joined"
            ada.send("who")
            assert ada.receive_json() == {"ada": 1, "bob": 1}
            second.signal(signal.SIGKILL)
            second.wait()

        # The killed process's entries expire after presence_ttl (1.5 s in
        # the test settings).
        def bob_gone() -> bool:
            ada.send("who")
            return ada.receive_json() == {"ada": 1}

        assert _until(bob_gone)


def test_losing_and_regaining_redis_is_signalled_to_the_local_members(
    two_servers, redis_server
):
    """The test views relay reach_lost and reach_restored to the members of
    the groups they name (django_websocket/tests/views.py)."""
    first, _ = two_servers
    with WebSocketClient(first.url, "/groups/room/", timeout=TIMEOUT) as ada:
        assert ada.receive() == "joined"
        redis_server.stop()
        assert _until(
            lambda: _drain_until(ada, "reach lost: ['room'], connected: False")
        )
        redis_server.start()
        assert _until(
            lambda: _drain_until(ada, "reach restored: ['room'], connected: True")
        )
