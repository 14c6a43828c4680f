"""Bare websockets asyncio server (no Django): the reference ceiling."""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

members: set = set()


async def handler(ws):
    if ws.request.path.startswith("/broadcast/"):
        members.add(ws)
        try:
            async for message in ws:
                broadcast(members, message)
        finally:
            members.discard(ws)
    else:
        async for message in ws:
            await ws.send(message)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
