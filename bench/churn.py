"""Presence churn: many idle members in one chat room while a few clients
join and leave it over and over.

    python bench/churn.py <port> <room> <members> <churners> <seconds>

Opens *members* WebSockets to ``/chat/<room>/ws/?nick=idle-<n>`` on 127.0.0.1
(100 handshakes in flight at most) and waits until the room is quiet (the
deltas of their own joining delivered). Then *churners* clients, each under a
nickname of its own, connect, wait for their presence snapshot and close,
again and again for *seconds*. Every message the idle members receive from
the first join of the churn until the room is quiet again is counted: its
payload bytes (compression is off, so these are the bytes on the wire less
the 2- to 10-byte frame headers; pings are not counted) and, per member, the
``presence_change`` events. Prints one JSON line; ``bench/run.py`` turns it
into the table.
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

QUIET = 1.5  # seconds without a message: every coalesced delta has arrived


class Churn:
    def __init__(self, port: int, room: str, members: int, churners: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/chat/{room}/ws/"
        self.members = members
        self.churners = churners
        self.handshakes = asyncio.Semaphore(100)  # in flight at once
        self.joined = 0  # idle members that got their presence snapshot
        self.all_joined = asyncio.Event()
        self.stop = asyncio.Event()  # the churn is over
        self.last_message = time.monotonic()  # to any idle member
        self.counting = False  # True from the churn's first join
        self.bytes = {"joining": 0, "churn": 0}  # payload bytes to idle members
        self.changes_seen: list[int] = [0] * members  # presence_change per member
        self.joins = self.leaves = 0  # by the churners
        self.failure: str | None = None

    async def open(self, nick: str) -> ClientConnection:
        async with self.handshakes:
            return await connect(
                f"{self.url}?nick={nick}", open_timeout=60, compression=None
            )

    async def member(self, n: int) -> None:
        try:
            await self.listen(n)
        except (WebSocketException, OSError, TimeoutError) as error:
            # e.g. refused after the handshake: 4503, the room is full
            self.fail(f"idle-{n}: {error!r}")

    async def listen(self, n: int) -> None:
        async with await self.open(f"idle-{n}") as ws:
            while True:
                data = await ws.recv(decode=False)  # until cancelled
                self.last_message = time.monotonic()
                event = json.loads(data)
                if self.counting:
                    self.bytes["churn"] += len(data)
                    if event["type"] == "presence_change":
                        self.changes_seen[n] += 1
                else:
                    self.bytes["joining"] += len(data)
                if event["type"] == "presence" and not self.all_joined.is_set():
                    self.joined += 1
                    if self.joined == self.members:
                        self.all_joined.set()

    def fail(self, reason: str) -> None:
        """Give up at once: the figures would not be about the room."""
        self.failure = self.failure or reason
        self.all_joined.set()

    async def churner(self, k: int) -> None:
        while not self.stop.is_set():
            async with await self.open(f"churn-{k}") as ws:
                while json.loads(await ws.recv())["type"] != "presence":
                    pass  # the history comes first
                self.joins += 1
            self.leaves += 1  # the close handshake is done: the server saw it

    async def quiet(self, timeout: float) -> float:
        """Wait until no idle member got a message for QUIET seconds; return
        how long that took."""
        started = time.monotonic()
        while time.monotonic() - self.last_message < QUIET:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the room was not quiet within {timeout} s")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def run(self, seconds: float) -> dict[str, object]:
        started = time.monotonic()
        members = [asyncio.create_task(self.member(n)) for n in range(self.members)]
        await asyncio.wait_for(self.all_joined.wait(), 120)
        if self.failure:
            for task in members:
                task.cancel()
            raise RuntimeError(self.failure)
        opening = time.monotonic() - started
        await self.quiet(30)
        self.counting = True
        started = time.monotonic()
        churners = [asyncio.create_task(self.churner(k)) for k in range(self.churners)]
        await asyncio.sleep(seconds)
        self.stop.set()
        await asyncio.gather(*churners)
        churned = time.monotonic() - started
        await self.quiet(30)
        for task in members:
            task.cancel()
        await asyncio.gather(*members, return_exceptions=True)
        if self.failure:  # a member closed by the server: its bytes are missing
            raise RuntimeError(self.failure)
        return {
            "members": self.members,
            "churners": self.churners,
            "opening_seconds": round(opening, 1),
            "churn_seconds": round(churned, 1),
            "joins": self.joins,
            "leaves": self.leaves,
            "bytes_while_joining": self.bytes["joining"],
            "bytes_during_churn": self.bytes["churn"],
            "presence_changes_per_member": [
                min(self.changes_seen),
                round(sum(self.changes_seen) / self.members, 1),
                max(self.changes_seen),
            ],
        }


if __name__ == "__main__":
    port, room = int(sys.argv[1]), sys.argv[2]
    members, churners, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    churn = Churn(port, room, members, churners)
    print(json.dumps(asyncio.run(churn.run(seconds))))
