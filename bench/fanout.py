"""Live search fan-out: many clients, each following a query of its own.

    python bench/fanout.py <port> <clients> <seconds>

Opens *clients* WebSockets to ``/livesearch/ws/`` on 127.0.0.1 (100 handshakes
in flight at most), each from its own address as nginx would report it
(``X-Forwarded-For``: the per-address rate limit then counts each client on
its own) and each searching Hacker News for a distinct query. Once all are
open, holds them for *seconds*, noting which kinds of event each got; then
closes them all and prints one JSON line. ``bench/run.py`` samples the
server meanwhile.
"""

import asyncio
import json
import sys
import time
from collections import Counter

from websockets.asyncio.client import connect


class Fanout:
    def __init__(self, port: int, clients: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/livesearch/ws/"
        self.clients = clients
        self.handshakes = asyncio.Semaphore(100)  # in flight at once
        self.tried = 0  # handshakes done or failed
        self.all_tried = asyncio.Event()
        self.stop = asyncio.Event()
        self.seen: Counter[str] = Counter()  # clients per kind of event

    async def client(self, n: int) -> None:
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        try:
            async with self.handshakes:
                ws = await connect(
                    self.url,
                    additional_headers={"X-Forwarded-For": address},
                    open_timeout=60,
                    compression=None,
                )
        finally:
            self.tried += 1
            if self.tried == self.clients:
                self.all_tried.set()
        async with ws:
            search = {"type": "search", "query": f"fanout {n}", "source": "hn"}
            await ws.send(json.dumps(search))
            kinds: set[str] = set()
            while not self.stop.is_set():
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                if event["type"] == "error":
                    kinds.add("error: " + event["message"].split(";")[0][:60])
                else:
                    kinds.add(event["type"])
            self.seen.update(kinds)

    async def run(self, seconds: float) -> dict[str, object]:
        started = time.monotonic()
        tasks = [asyncio.create_task(self.client(n)) for n in range(self.clients)]
        await self.all_tried.wait()
        opened = time.monotonic() - started
        await asyncio.sleep(seconds)
        self.stop.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [repr(d)[:100] for d in done if isinstance(d, BaseException)]
        return {
            "clients": self.clients,
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "opening_seconds": round(opened, 1),
            "held_seconds": seconds,
            "clients_by_event": dict(self.seen),
        }


if __name__ == "__main__":
    port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(Fanout(port, clients).run(seconds))))
