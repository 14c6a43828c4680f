"""The hostile-client attacker of ``make bench``: one raw-socket client that
breaks a limit, reconnecting whenever the server drops it.

    python bench/hostile.py CASE PORT SECONDS

Cases:

- ``flood-reading``: 1 MiB binary messages as fast as the server takes them,
  to a view that reads and discards;
- ``flood-not-reading``: the same, to a view that never reads;
- ``flood-member``: 64 KiB messages to a group member that reads and
  discards, while others publish to the group;
- ``ping-flood``: pings as fast as possible, never reading the pongs (a
  small receive buffer);
- ``fragments``: one text message in 2-byte fragments, never finished.

Prints one JSON line when done: connections opened, bytes sent, and the
close codes the server sent (``"eof"`` when it dropped the TCP connection
without one). Talks only to 127.0.0.1; stops after SECONDS.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from collections import Counter

from websockets.frames import Frame, Opcode

PATHS = {
    "flood-reading": "/hostile/sink/ws/",
    "flood-not-reading": "/hostile/hold/ws/",
    "flood-member": "/hostile/member/ws/",
    "ping-flood": "/hostile/sink/ws/",
    "fragments": "/hostile/sink/ws/",
}
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


def payloads(case: str) -> tuple[bytes, bytes]:
    """The bytes sent once after the handshake, and the bytes sent in a loop."""
    if case in ("flood-reading", "flood-not-reading"):
        return b"", frame(Opcode.BINARY, b"x" * (1024 * 1024 - 64))
    if case == "flood-member":
        return b"", frame(Opcode.BINARY, b"x" * 65536)
    if case == "ping-flood":
        return b"", frame(Opcode.PING, b"p" * 125) * 64
    if case == "fragments":
        return frame(Opcode.TEXT, b"a", fin=False), frame(
            Opcode.CONT, b"xy", fin=False
        ) * 1024
    raise SystemExit(f"unknown case {case!r}; expected one of {sorted(PATHS)}")


def connect(port: int, path: str, small_buffer: bool) -> socket.socket:
    sock = socket.socket()
    if small_buffer:
        # Before connecting, so that TCP itself keeps working (see wire.py).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(HANDSHAKE.format(path=path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return sock


def close_code(sock: socket.socket) -> str:
    """What the server sent before it went away: its close code if a close
    frame is in what is left to read, else "eof"."""
    sock.settimeout(1)
    data = b""
    try:
        while len(data) < 4 * 1024 * 1024 and (chunk := sock.recv(65536)):
            data += chunk
    except OSError:
        pass
    at = data.rfind(b"\x88")
    if at >= 0 and len(data) >= at + 4 and data[at + 1] >= 2:
        return str(struct.unpack("!H", data[at + 2 : at + 4])[0])
    return "eof"


def attack(case: str, port: int, seconds: float) -> dict[str, object]:
    first, repeated = payloads(case)
    deadline = time.monotonic() + seconds
    closes: Counter[str] = Counter()
    connections = sent = 0
    while time.monotonic() < deadline:
        try:
            sock = connect(port, PATHS[case], small_buffer=case == "ping-flood")
        except OSError:
            time.sleep(0.1)
            continue
        connections += 1
        with sock:
            sock.settimeout(0.5)
            try:
                sock.sendall(first)
                while time.monotonic() < deadline:
                    try:
                        sock.sendall(repeated)
                        sent += len(repeated)
                    except TimeoutError:
                        continue  # TCP pushed back: keep pushing
            except OSError:
                closes[close_code(sock)] += 1
    return {"connections": connections, "bytes_sent": sent, "closes": dict(closes)}


def main() -> int:
    case, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(attack(case, port, seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
