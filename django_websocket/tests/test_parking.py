"""Parked view threads: woken by readiness, a bounded number at a time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from django_websocket import CloseCode
from django_websocket.hub import Hub, get_hub
from django_websocket.parking import Parking, Spot, supported
from django_websocket.tests.conftest import TIMEOUT

pytestmark = pytest.mark.skipif(not supported(), reason="epoll only")


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Connected socket pairs (server end, client end), closed afterwards."""
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for server, client in made:
        server.close()
        client.close()


def _parking(runnable: int, lease: float = 10.0, polling: int = 0) -> Parking:
    """A parking on a hub of its own, where every thread parks by default."""
    hub = Hub()
    parking = hub.parking()
    assert parking is not None
    parking._runnable, parking._lease = runnable, lease
    parking._polling_limit = polling
    return parking


def test_the_first_threads_wait_in_poll_and_the_others_park(pairs):
    parking = _parking(runnable=1, polling=2)
    for _ in range(5):
        pairs.append(socket.socketpair())
    spots = [Spot(server) for server, _ in pairs]
    woken: list[bool | None] = []

    def view(spot: Spot) -> None:
        woken.append(parking.wait(spot, TIMEOUT))
        parking.leave(spot)  # done: its place goes to the next

    threads = [threading.Thread(target=view, args=(spot,)) for spot in spots]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    assert sum(spot.polling for spot in spots) == 2
    assert sum(spot.parked for spot in spots) == 3
    for _, client in pairs:
        client.send(b"x")
    for thread in threads:
        thread.join(TIMEOUT)
    assert woken == [True] * 5


def test_a_burst_wakes_at_most_runnable_threads_at_once(pairs):
    parking = _parking(runnable=3)
    for _ in range(40):
        pairs.append(socket.socketpair())
    lock = threading.Lock()
    running, most, served = 0, 0, 0

    def view(sock: socket.socket) -> None:
        nonlocal running, most, served
        spot = Spot(sock)
        assert parking.wait(spot, TIMEOUT) is True
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)  # the work done with the message
        with lock:
            running -= 1
            served += 1
        parking.leave(spot)

    threads = [threading.Thread(target=view, args=(s,)) for s, _ in pairs]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # every thread parked
    for _, client in pairs:
        client.send(b"x")
    for thread in threads:
        thread.join(TIMEOUT)
    assert served == 40
    assert most <= 3


def test_a_thread_that_does_not_park_again_loses_its_place_after_the_lease(pairs):
    parking = _parking(runnable=1, lease=0.05)
    pairs.extend([socket.socketpair(), socket.socketpair()])
    (first, first_client), (second, second_client) = pairs
    blocked = threading.Event()
    woken_after: list[float] = []

    def busy() -> None:
        spot = Spot(first)
        assert parking.wait(spot, TIMEOUT) is True
        blocked.wait(TIMEOUT)  # holds its place, never parks again
        parking.leave(spot)

    def waiting() -> None:
        spot = Spot(second)
        began = time.monotonic()
        assert parking.wait(spot, TIMEOUT) is True
        woken_after.append(time.monotonic() - began)
        parking.leave(spot)

    threads = [threading.Thread(target=busy), threading.Thread(target=waiting)]
    threads[0].start()
    time.sleep(0.05)
    first_client.send(b"x")
    time.sleep(0.05)
    threads[1].start()
    time.sleep(0.05)
    second_client.send(b"x")
    threads[1].join(TIMEOUT)
    blocked.set()
    threads[0].join(TIMEOUT)
    assert woken_after and woken_after[0] < TIMEOUT / 2


def test_a_wait_that_times_out_returns_false_and_the_next_message_still_wakes(pairs):
    parking = _parking(runnable=1)
    pairs.append(socket.socketpair())
    server, client = pairs[0]
    spot = Spot(server)
    assert parking.wait(spot, 0.05) is False
    client.send(b"x")
    assert parking.wait(spot, TIMEOUT) is True
    parking.leave(spot)


def test_data_sent_before_a_thread_parks_wakes_it(pairs):
    parking = _parking(runnable=1)
    pairs.append(socket.socketpair())
    server, client = pairs[0]
    client.send(b"x")
    spot = Spot(server)
    assert parking.wait(spot, TIMEOUT) is True
    parking.leave(spot)


def test_a_second_thread_waiting_on_the_same_connection_is_told_to_wait_elsewhere(
    pairs,
):
    parking = _parking(runnable=1)
    pairs.append(socket.socketpair())
    server, client = pairs[0]
    spot = Spot(server)
    results: list[bool | None] = []
    first = threading.Thread(target=lambda: results.append(parking.wait(spot, TIMEOUT)))
    first.start()
    time.sleep(0.1)
    assert parking.wait(spot, TIMEOUT) is None
    client.send(b"x")
    first.join(TIMEOUT)
    assert results == [True]
    parking.leave(spot)


@pytest.fixture
def parked() -> Iterator[None]:
    """Every view thread of this process parks (none waits in poll())."""
    parking = get_hub().parking()
    assert parking is not None
    limit, parking._polling_limit = parking._polling_limit, 0
    yield
    parking._polling_limit = limit


@pytest.mark.urls("django_websocket.tests.urls")
def test_a_parked_view_echoes_text_binary_and_a_mebibyte_message(parked, ws):
    message = bytes(range(256)) * 4096
    with ws("/echo/") as client:
        client.send("héllo")
        assert client.receive() == "héllo"
        client.send(b"\x00\xff")
        assert client.receive() == b"\x00\xff"
        client.send(message)
        assert client.receive() == message
        client.send(["frag", "men", "ted"])
        assert client.receive() == "fragmented"


@pytest.mark.urls("django_websocket.tests.urls")
def test_a_parked_view_sees_the_client_close(parked, ws, observed):
    with ws("/wait/") as client:
        client.send("first")
        client.close(CloseCode.GOING_AWAY, "leaving")
    assert observed() == ("waited", "first", None, CloseCode.GOING_AWAY)
