"""Where view threads wait for their sockets: a bounded number runnable at once.

A thread blocked in ``poll()`` on its own socket is woken by the kernel the
moment data arrives, so when thousands of clients speak at once, thousands
of threads become runnable together and all queue for the GIL. CPython's
GIL waiters wake every switch interval (5 ms) to check on it, so 5,000
waiters ask for a million wake-ups a second; the core spends itself on
them and the thread holding the GIL waits its turn behind them
(``docs/performance.md``).

So at most ``POLLING`` view threads wait in ``poll()`` (or a blocking
``recv()``) on their own socket, the cheapest wake-up there is and a herd of
that many at worst. The others park on a lock of their own, and one epoll
instance, read by the hub thread, watches every parked socket (one-shot). A
readable socket joins a queue, and its thread is woken only while fewer than
``RUNNABLE`` woken threads are running: a thread that waits again hands its
place to the next in the queue itself. A burst becomes a queue, not a
convoy. A woken thread that does not wait again within ``LEASE`` seconds (it
is blocked on something else: a database, a sleep) loses its place to the
next one, so a view never holds the others up for longer.

Linux only (epoll); elsewhere, and under gevent, views wait in ``poll()``.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LEASE", "POLLING", "RUNNABLE", "Parking", "Spot", "supported"]

# How many threads may wait in poll() on their own socket, woken by the
# kernel directly: a herd this size drains in a fraction of a second, and up
# to this many busy connections need no hand-over through the hub, which
# costs each parked message about one context switch more.
POLLING = 128
# How many woken parked threads run at once: enough to overlap their
# system calls, few enough that the GIL's waiters never crowd the core.
RUNNABLE = 8
# Seconds a woken thread keeps its place without waiting again.
LEASE = 0.05

_EVENTS = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_ONESHOT = getattr(select, "EPOLLONESHOT", 0)


def supported() -> bool:
    """Whether this platform has epoll (gevent removes it when it patches)."""
    return hasattr(select, "epoll")


class Spot:
    """One connection's place in the parking: its socket and its thread's lock."""

    __slots__ = (
        "fd",
        "left",
        "lock",
        "parked",
        "poller",
        "polling",
        "ready",
        "registered",
        "waiting",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        # For waiting in poll() instead; made on first use.
        self.poller: select.poll | None = None
        # Held while nobody has woken the thread: the parked thread blocks
        # acquiring it, the waker releases it (once per park).
        self.lock = threading.Lock()
        self.lock.acquire()
        # Guarded by the parking's lock:
        self.waiting = False  # a thread is in wait(), from entry to return
        self.left = False  # the connection is done: no parking any more
        self.parked = False  # a thread waits on lock
        self.polling = False  # a thread waits in poller
        self.ready = False  # in the queue of readable spots
        self.registered = False  # known to the epoll instance


class Parking:
    """Parked view threads of a process, woken by readiness, ``RUNNABLE`` at a time.

    ``wait()`` is called by the waiting thread; ``on_ready()``, ``deadline()``
    and ``expire()`` by the hub thread, which watches ``fileno()``.
    """

    def __init__(
        self, polling: int = POLLING, runnable: int = RUNNABLE, lease: float = LEASE
    ) -> None:
        self._polling_limit = polling
        self._runnable = runnable
        self._lease = lease
        self._epoll = select.epoll()
        # Protects every attribute below and each spot's flags; held only
        # for bookkeeping and epoll_ctl calls.
        self._lock = threading.Lock()
        self._polling = 0  # threads in poll() now
        self._spots: dict[int, Spot] = {}  # fd -> registered spot
        self._queue: deque[Spot] = deque()  # readable, waiting for a place
        # Woken spots holding a place -> when woken, oldest first.
        self._running: dict[Spot, float] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def wait(
        self,
        spot: Spot,
        timeout: float | None,
        receive: Callable[[], object] | None = None,
    ) -> bool | None:
        """Block the calling thread until *spot*'s socket is readable (and,
        when parked, a place is free), or *timeout* seconds pass. Gives up
        the caller's place first, to the next readable spot in the queue.

        Where the caller would wait in ``poll()`` with no timeout, it calls
        *receive* instead, if given: a blocking ``recv()`` on the socket, one
        system call where ``poll()`` and the read after it are two.

        Returns:
            True when readable (a parked caller now holds a place), False
            on timeout, None if another thread is already parked on *spot*
            (the caller must wait some other way).
        """
        with self._lock:
            # One waiter per spot, for the whole of its wait: a thread just
            # woken (parked no longer set) may not have taken its lock yet.
            if spot.waiting or spot.left:
                return None
            spot.waiting = True
            self._running.pop(spot, None)
            polling = self._polling < self._polling_limit
            if polling:
                self._polling += 1
                spot.polling = True
            else:
                spot.parked = True
                try:
                    self._arm(spot)
                except OSError as error:
                    spot.parked = spot.waiting = False
                    self._dispatch()
                    if error.errno == errno.EBADF:
                        return True  # a closed socket reads as EOF
                    return None  # no room in epoll: wait in poll() instead
            self._dispatch()
        try:
            if polling:
                if receive is not None and timeout is None:
                    receive()
                    return True
                return self._poll(spot, timeout)
            return self._park(spot, timeout)
        finally:
            with self._lock:
                spot.waiting = False
                if polling:
                    self._polling -= 1
                    spot.polling = False

    def _poll(self, spot: Spot, timeout: float | None) -> bool:
        if spot.poller is None:
            spot.poller = select.poll()
            spot.poller.register(spot.fd, select.POLLIN)
        return bool(spot.poller.poll(None if timeout is None else timeout * 1000))

    def _park(self, spot: Spot, timeout: float | None) -> bool:
        """Block on *spot*'s lock until the hub or a thread hands it a place."""
        if timeout is None:
            woken = spot.lock.acquire()
        else:
            woken = spot.lock.acquire(
                timeout=min(max(timeout, 0), threading.TIMEOUT_MAX)
            )
        if woken:
            return True
        with self._lock:
            if spot.parked:  # nobody woke us: withdraw
                spot.parked = False
                if spot.ready:
                    spot.ready = False
                    self._queue.remove(spot)
                return False
        # Woken between the timeout and the lock above: the release happened
        # under it, so this cannot block.
        spot.lock.acquire()
        return True

    def leave(self, spot: Spot) -> None:
        """Forget *spot* (its connection is done), giving up its place and
        waking a thread parked on it (it finds the socket shut down); call
        before the socket is closed. Later waits on it poll the socket."""
        with self._lock:
            spot.left = True
            self._running.pop(spot, None)
            if spot.parked:
                spot.parked = False
                if spot.ready:
                    spot.ready = False
                    self._queue.remove(spot)
                spot.lock.release()
            if spot.registered:
                spot.registered = False
                if self._spots.get(spot.fd) is spot:
                    del self._spots[spot.fd]
                # Already closed: the kernel dropped it.
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(spot.fd)
            self._dispatch()

    def _arm(self, spot: Spot) -> None:
        """Watch *spot*'s socket for one readable event (level-checked now:
        data that arrived before arming is reported)."""
        if spot.registered:
            self._epoll.modify(spot.fd, _EVENTS | _ONESHOT)
            return
        try:
            self._epoll.register(spot.fd, _EVENTS | _ONESHOT)
        except FileExistsError:
            # A closed socket's descriptor, reused, that the kernel still
            # watched (another reference kept it open).
            self._epoll.modify(spot.fd, _EVENTS | _ONESHOT)
        stale = self._spots.get(spot.fd)
        if stale is not None:
            stale.registered = False
        self._spots[spot.fd] = spot
        spot.registered = True

    def _dispatch(self) -> None:
        """Wake queued spots while there is a free place."""
        while self._queue and len(self._running) < self._runnable:
            spot = self._queue.popleft()
            spot.ready = spot.parked = False
            self._running[spot] = time.monotonic()
            spot.lock.release()

    # Called by the hub thread.

    def on_ready(self) -> None:
        """Queue the spots whose sockets became readable and wake what fits."""
        events = self._epoll.poll(0)
        with self._lock:
            for fd, _ in events:
                spot = self._spots.get(fd)
                if spot is not None and spot.parked and not spot.ready:
                    spot.ready = True
                    self._queue.append(spot)
            self._dispatch()

    def deadline(self) -> float | None:
        """When ``expire()`` must run: the oldest place's lease, if spots
        wait for one."""
        if not self._queue:  # only the hub thread adds to it
            return None
        with self._lock:
            if not self._queue or not self._running:
                return None
            return next(iter(self._running.values())) + self._lease

    def expire(self, now: float) -> None:
        """Take the places of threads that kept them past ``LEASE`` without
        parking, and give them to queued spots."""
        if not self._queue:  # only the hub thread adds to it
            return
        with self._lock:
            while self._queue and self._running:
                spot, since = next(iter(self._running.items()))
                if now - since < self._lease:
                    break
                del self._running[spot]
            self._dispatch()
