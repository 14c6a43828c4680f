"""A bare ASGI application (no Django) for uvicorn: echo and a broadcast
group, the ceiling of any application under the same server."""

members: dict[object, object] = {}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    broadcasting = scope["path"].startswith("/broadcast/")
    if broadcasting:
        members[receive] = send
    try:
        while (message := await receive())["type"] == "websocket.receive":
            out = {**message, "type": "websocket.send"}
            for member in list(members.values()) if broadcasting else [send]:
                await member(out)
    finally:
        members.pop(receive, None)
