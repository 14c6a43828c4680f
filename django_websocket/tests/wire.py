"""RFC 6455 on the wire, without a WebSocket library in between.

``client_frame()`` builds any client frame, valid or not (fin, reserved bits,
opcode, announced length, mask); ``RawWebSocket`` opens a plain socket,
sends a handshake and reads the server's frames back, every read bounded by a
deadline. The conformance, property and churn tests drive the server with
these bytes so that nothing can tidy up what the server is sent.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from django_websocket.testing import LiveServer
from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT

# RFC 6455 section 5.2 opcodes, as plain ints so that reserved ones fit too.
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0b100, 0b010, 0b001
MASK = b"\x37\xfa\x21\x3d"


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """Apply (or remove) a masking key, RFC 6455 section 5.3."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """Build one client frame.

    Args:
        opcode: Any 4-bit opcode, reserved ones included.
        payload: The unmasked payload.
        fin: The FIN bit.
        rsv: The three reserved bits, ``RSV1 | RSV2 | RSV3``.
        mask: The masking key, or ``None`` for an (illegal) unmasked frame.
        length: The length announced in the header, if not ``len(payload)``.
    """
    length = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return head + payload
    return head + mask + mask_payload(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True)
class ServerFrame:
    """One frame as the server sent it."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool
    header: bytes

    @property
    def close_code(self) -> int | None:
        """The code of a close frame; ``None`` for an empty one."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    @property
    def close_reason(self) -> str:
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        return self.payload[2:].decode()


def parse_frame(data: bytes) -> tuple[ServerFrame, int] | None:
    """Parse the first frame of *data*; return it with the bytes it took,
    or ``None`` if *data* does not hold a whole frame yet."""
    if len(data) < 2:
        return None
    first, second = data[0], data[1]
    length, offset = second & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, offset = struct.unpack("!Q", data[2:10])[0], 10
    masked = bool(second & 0x80)
    key = b""
    if masked:
        key, offset = data[offset : offset + 4], offset + 4
    if len(data) < offset + length:
        return None
    payload = data[offset : offset + length]
    frame = ServerFrame(
        fin=bool(first & 0x80),
        rsv=(first >> 4) & 0b111,
        opcode=first & 0x0F,
        payload=mask_payload(payload, key) if masked else payload,
        masked=masked,
        header=data[:offset],
    )
    return frame, offset + length


class RawWebSocket:
    """A plain TCP client that performs the opening handshake by hand.

    Attributes:
        status: The HTTP status of the handshake response.
        headers: Its headers, names lower-cased.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/echo/",
        headers: dict[str, str] | None = None,
        *,
        timeout: float = TIMEOUT,
        rcvbuf: int | None = None,
    ) -> None:
        self.timeout = timeout
        self.socket = socket.socket()
        if rcvbuf:
            # Before connecting: shrinking the buffer of an open connection
            # below what is in flight can stall TCP itself (the kernel drops
            # the segments that carry the ACKs), not just the reader.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.socket.settimeout(timeout)
        self._buffer = b""
        self._eof = False
        try:
            self.socket.connect((host, port))
            request = [f"GET {path} HTTP/1.1"] + [
                f"{name}: {value}"
                for name, value in {**HANDSHAKE, **(headers or {})}.items()
            ]
            self.socket.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in self._buffer:
                if not self._receive(deadline):
                    raise ConnectionError(f"no handshake response: {self._buffer!r}")
        except BaseException:
            self.socket.close()
            raise
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            name.lower(): value
            for name, _, value in (line.partition(": ") for line in lines)
        }

    @classmethod
    def open(cls, server: LiveServer, path: str = "/echo/", **kwargs: Any) -> Self:
        """Connect to a ``LiveServer`` and check the handshake succeeded."""
        client = cls(server.host, server.port, path, **kwargs)
        if client.status != 101:
            client.close()
            raise AssertionError(f"handshake failed with {client.status}")
        return client

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        """Build a frame with ``client_frame()`` and send it."""
        self.send(client_frame(opcode, payload, **kwargs))

    def recv_frame(self, timeout: float | None = None) -> ServerFrame:
        """Return the server's next frame.

        Raises:
            EOFError: If the server closed the TCP connection first.
            TimeoutError: If no whole frame arrives within *timeout*.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (parsed := parse_frame(self._buffer)) is None:
            if not self._receive(deadline):
                raise EOFError(f"connection closed, {self._buffer!r} left unparsed")
        frame, size = parsed
        self._buffer = self._buffer[size:]
        return frame

    def frames_until_eof(self, timeout: float | None = None) -> list[ServerFrame]:
        """Read every frame until the server closes the TCP connection.

        Raises:
            TimeoutError: If the connection is still open after *timeout*.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frames = []
        while True:
            while (parsed := parse_frame(self._buffer)) is not None:
                frame, size = parsed
                self._buffer = self._buffer[size:]
                frames.append(frame)
            if not self._receive(deadline):
                assert self._buffer == b"", f"trailing bytes {self._buffer!r}"
                return frames

    def expect_close(self, timeout: float | None = None) -> ServerFrame:
        """Read until EOF and return the close frame, asserting that the
        server sent nothing else."""
        frames = self.frames_until_eof(timeout)
        assert [frame.opcode for frame in frames] == [CLOSE], frames
        return frames[0]

    def _receive(self, deadline: float) -> bool:
        """Read once into the buffer; False at EOF.

        Raises:
            TimeoutError: If the deadline passes first.
        """
        if self._eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing more within the deadline: {self._buffer!r}")
        self.socket.settimeout(remaining)
        try:
            chunk = self.socket.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError as err:
            raise TimeoutError(
                f"nothing more within the deadline: {self._buffer!r}"
            ) from err
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Flood:
    """Sends *frame* on a raw client's socket from a thread, as fast as the
    server takes it, until stopped; notes when TCP pushed back."""

    def __init__(self, client: RawWebSocket, frame: bytes) -> None:
        self.client = client
        self.frame = frame
        self.sent = 0
        self.pushed_back = threading.Event()
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)

    def _run(self) -> None:
        sock = self.client.socket
        sock.settimeout(0.2)
        deadline = time.monotonic() + TIMEOUT * 4
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    sock.sendall(self.frame)
                    self.sent += len(self.frame)
                except TimeoutError:
                    self.pushed_back.set()
        except OSError:
            pass
        finally:
            self.ended.set()
