"""RFC 6455 and RFC 7692 conformance, driven with hand-built frames.

Every case talks to the echo view over a plain socket (``wire.py``), so the
bytes the server gets are exactly the ones written here, malformed ones
included, and asserts the close code the RFC requires. The categories follow
the Autobahn test suite's: framing, pings and pongs, reserved bits, opcodes,
fragmentation, UTF-8, close handling, limits and permessage-deflate.
"""

from __future__ import annotations

import socket
import tracemalloc
import zlib

import pytest

from django_websocket import CloseCode
from django_websocket.tests.conftest import TIMEOUT
from django_websocket.tests.wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    ServerFrame,
    client_frame,
    close_payload,
)

pytestmark = pytest.mark.urls("django_websocket.tests.urls")

MiB = 1024 * 1024


def _frames(*specs: tuple) -> bytes:
    """Concatenate client frames given as ``(opcode, payload, options)``."""
    return b"".join(
        client_frame(op, data, **(opts[0] if opts else {})) for op, data, *opts in specs
    )


# Framing (RFC 6455 section 5.2).


def _payload(opcode: int, length: int) -> bytes:
    if opcode == TEXT:
        # Two-byte characters, so that lengths exercise multi-byte text.
        return ("é" * (length // 2) + "x" * (length % 2)).encode()
    return bytes(i % 251 for i in range(length))


def _length_header(first_byte: int, length: int) -> bytes:
    """What the server must send: unmasked, and the minimal length encoding."""
    if length < 126:
        return bytes([first_byte, length])
    if length < 65536:
        return bytes([first_byte, 126]) + length.to_bytes(2, "big")
    return bytes([first_byte, 127]) + length.to_bytes(8, "big")


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536])
def test_every_payload_length_class_echoes_byte_exact(raw, opcode, length):
    payload = _payload(opcode, length)
    ws = raw()
    ws.send_frame(opcode, payload)
    echo = ws.recv_frame()
    assert echo.header == _length_header(0x80 | opcode, length)
    assert echo.payload == payload


def test_a_frame_trickled_in_byte_by_byte_echoes(raw):
    ws = raw()
    ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a segment a byte
    for byte in client_frame(TEXT, b"x" * 200):
        ws.send(bytes([byte]))
    assert ws.recv_frame().payload == b"x" * 200


def test_several_frames_in_one_segment_each_echo(raw):
    ws = raw()
    ws.send(_frames((TEXT, b"one"), (BINARY, b"\x00two"), (TEXT, b"three")))
    echoes = [ws.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in echoes] == [
        (TEXT, b"one"),
        (BINARY, b"\x00two"),
        (TEXT, b"three"),
    ]


# Pings and pongs (RFC 6455 sections 5.5.2 and 5.5.3).


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello", bytes(range(125)), b"\xff\xfe not UTF-8"],
    ids=["empty", "text", "125-bytes", "binary"],
)
def test_ping_is_answered_with_a_pong_carrying_the_same_payload(raw, payload):
    ws = raw()
    ws.send_frame(PING, payload)
    pong = ws.recv_frame()
    assert (pong.opcode, pong.fin, pong.payload) == (PONG, True, payload)


def test_unsolicited_pong_is_ignored(raw):
    ws = raw()
    ws.send(_frames((PONG, b"unsolicited"), (PONG, b""), (TEXT, b"after")))
    echo = ws.recv_frame()
    assert (echo.opcode, echo.payload) == (TEXT, b"after")


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (
            [(TEXT, b"Hello, ", {"fin": False}), (PING, b"p"), (CONT, b"world")],
            [(PONG, b"p"), (TEXT, b"Hello, world")],
        ),
        (
            [
                (BINARY, b"\x01", {"fin": False}),
                (PING, b"a"),
                (CONT, b"\x02", {"fin": False}),
                (PONG, b"ignored"),
                (PING, b"b"),
                (CONT, b"\x03"),
            ],
            [(PONG, b"a"), (PONG, b"b"), (BINARY, b"\x01\x02\x03")],
        ),
        (
            [(TEXT, b"", {"fin": False}), (CONT, b"", {"fin": False}), (CONT, b"")],
            [(TEXT, b"")],
        ),
    ],
    ids=["ping-between-two-fragments", "pings-and-pong-between-three", "empty"],
)
def test_control_frames_between_fragments_are_answered_in_place(raw, frames, expected):
    ws = raw()
    ws.send(_frames(*frames))
    received = [ws.recv_frame() for _ in expected]
    assert [(f.opcode, f.payload) for f in received] == expected


# Protocol errors: RFC 6455 section 7.1.7, "Fail the WebSocket Connection"
# with 1002 (section 7.4.1).

TOO_LONG = "control frame too long"
FRAGMENTED = "fragmented control frame"
RESERVED_BITS = "reserved bits must be 0"
UNEXPECTED_CONT = "unexpected continuation frame"
EXPECTED_CONT = "expected a continuation frame"

# id: (frames sent, reason of the 1002)
_PROTOCOL_ERRORS = {
    # Section 5.5: control frames carry at most 125 bytes and are never
    # fragmented.
    "ping-126-bytes": ([(PING, b"x" * 126)], TOO_LONG),
    "pong-126-bytes": ([(PONG, b"x" * 126)], TOO_LONG),
    "close-126-bytes": ([(CLOSE, close_payload(1000, b"x" * 124))], TOO_LONG),
    "fragmented-ping": ([(PING, b"a", {"fin": False}), (CONT, b"b")], FRAGMENTED),
    "fragmented-close": ([(CLOSE, close_payload(1000), {"fin": False})], FRAGMENTED),
    "fragmented-ping-inside-a-message": (
        [(TEXT, b"a", {"fin": False}), (PING, b"", {"fin": False})],
        FRAGMENTED,
    ),
    # Section 5.2: reserved bits are 0 unless an extension defines them.
    "rsv1-without-extension": ([(TEXT, b"a", {"rsv": RSV1})], RESERVED_BITS),
    "rsv2": ([(TEXT, b"a", {"rsv": RSV2})], RESERVED_BITS),
    "rsv3": ([(BINARY, b"a", {"rsv": RSV3})], RESERVED_BITS),
    "all-rsv-bits": ([(TEXT, b"a", {"rsv": RSV1 | RSV2 | RSV3})], RESERVED_BITS),
    "rsv3-on-ping": ([(PING, b"a", {"rsv": RSV3})], RESERVED_BITS),
    # Section 5.2: opcodes 3-7 and 11-15 are reserved.
    **{
        f"opcode-{op}": ([(op, b"a")], "invalid opcode")
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    },
    "reserved-opcode-inside-a-message": (
        [(TEXT, b"a", {"fin": False}), (5, b"")],
        "invalid opcode",
    ),
    # Section 5.4: a continuation needs a started message, and a new message
    # cannot start before the current one ends.
    "continuation-without-start": ([(CONT, b"a")], UNEXPECTED_CONT),
    "non-final-continuation-without-start": (
        [(CONT, b"a", {"fin": False})],
        UNEXPECTED_CONT,
    ),
    "continuation-after-a-final-frame": ([(TEXT, b"a"), (CONT, b"b")], UNEXPECTED_CONT),
    "text-inside-a-fragmented-text": (
        [(TEXT, b"a", {"fin": False}), (TEXT, b"b")],
        EXPECTED_CONT,
    ),
    "binary-inside-a-fragmented-text": (
        [(TEXT, b"a", {"fin": False}), (BINARY, b"b", {"fin": False})],
        EXPECTED_CONT,
    ),
    # Section 5.1: a server closes the connection on an unmasked frame.
    "unmasked-frame": ([(TEXT, b"a", {"mask": None})], "incorrect masking"),
    # Section 5.5.1: a close payload is empty or starts with a 2-byte code.
    "close-with-1-byte-payload": ([(CLOSE, b"\x03")], "close frame too short"),
    # Section 7.4: codes a peer must not send (0-999 unused, 1004 reserved,
    # 1005/1006/1015 never on the wire, 1016-2999 unassigned, 5000+ undefined).
    **{
        f"close-code-{code}": ([(CLOSE, close_payload(code))], "invalid status code")
        for code in (
            0,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            1100,
            2000,
            2999,
            5000,
            65535,
        )
    },
}


@pytest.mark.parametrize(
    ("frames", "reason"), _PROTOCOL_ERRORS.values(), ids=_PROTOCOL_ERRORS.keys()
)
def test_protocol_violation_fails_the_connection_with_1002(raw, frames, reason):
    ws = raw()
    ws.send(_frames(*frames))
    close = ws.expect_close()
    assert (close.close_code, close.close_reason) == (
        CloseCode.PROTOCOL_ERROR,
        reason,
    )


def test_nothing_is_processed_after_a_protocol_violation(raw):
    """RFC 6455 section 7.1.7: no pong for a ping behind the bad frame."""
    ws = raw()
    ws.send_frame(TEXT, b"fine")
    assert ws.recv_frame().payload == b"fine"
    ws.send(_frames((TEXT, b"a", {"rsv": RSV2}), (PING, b"late"), (TEXT, b"late")))
    assert ws.expect_close().close_code == CloseCode.PROTOCOL_ERROR


# UTF-8 (RFC 6455 section 8.1): invalid text fails the connection with 1007.

_INVALID_UTF8 = {
    "0xff": [b"\xff"],
    "lone-continuation-byte": [b"\x80"],
    "overlong-slash": [b"\xc0\xaf"],
    "overlong-3-byte": [b"\xe0\x80\xaf"],
    "surrogate": [b"\xed\xa0\x80"],
    "above-u+10ffff": [b"\xf4\x90\x80\x80"],
    "5-byte-sequence": [b"\xf8\x88\x80\x80\x80"],
    "invalid-in-the-middle": ["κόσμε".encode() + b"\xff" + b"edited"],
    "truncated-at-the-end": [b"\xce\xba\xe1\xbd"],
    "fragmented-invalid-in-second": [b"\xce\xba", b"\xff", b"ok"],
    "fragmented-invalid-in-last": [b"ok", b"ok", b"\xc0\xaf"],
    "fragmented-surrogate-split": [b"\xed", b"\xa0\x80"],
    "fragmented-truncated-at-the-end": [b"\xce\xba", b"\xe1\xbd"],
}


def _fragments(opcode: int, parts: list[bytes], *, final: bool = True) -> bytes:
    """A message split into *parts*, with the final frame's FIN set if *final*."""
    return b"".join(
        client_frame(
            opcode if i == 0 else CONT,
            part,
            fin=final and i == len(parts) - 1,
        )
        for i, part in enumerate(parts)
    )


@pytest.mark.parametrize("parts", _INVALID_UTF8.values(), ids=_INVALID_UTF8.keys())
def test_invalid_utf8_in_text_fails_the_connection_with_1007(raw, parts):
    ws = raw()
    ws.send(_fragments(TEXT, parts))
    close = ws.expect_close()
    assert (close.close_code, close.close_reason) == (
        CloseCode.INVALID_DATA,
        "invalid UTF-8 in text message",
    )


@pytest.mark.parametrize(
    "parts",
    [
        [b"\xce", b"\xba"],
        [b"\xf0", b"\x9d", b"\x84", b"\x9e"],
        [b"\xf0\x9d", b"\x84\x9e"],
        [b"\xf0\x9d\x84", b"\x9e"],
        [bytes([byte]) for byte in "κόσμε 𝄞".encode()],
    ],
    ids=[
        "2-byte-split",
        "4-byte-per-byte",
        "4-byte-halves",
        "4-byte-3+1",
        "every-byte",
    ],
)
def test_valid_utf8_split_across_fragments_echoes(raw, parts):
    ws = raw()
    ws.send(_fragments(TEXT, parts))
    echo = ws.recv_frame()
    assert (echo.opcode, echo.payload) == (TEXT, b"".join(parts))


def test_invalid_utf8_in_a_binary_message_is_echoed(raw):
    ws = raw()
    ws.send(_fragments(BINARY, [b"\xff\xce", b"\xed\xa0\x80"]))
    assert ws.recv_frame().payload == b"\xff\xce\xed\xa0\x80"


@pytest.mark.parametrize(
    "parts",
    [
        [b"\xce\xba\xff"],
        [b"hello", b"\xc0\xaf"],
        [b"\xed", b"\xa0\x80"],
        [b"\xf4", b"\x90"],
    ],
    ids=["first-fragment", "second-fragment", "surrogate-split", "above-max-split"],
)
def test_invalid_utf8_fails_before_the_final_fragment_is_sent(raw, parts):
    """The close comes while the message is unfinished (the final fragment
    never is sent): the server decodes fragments as they arrive."""
    ws = raw()
    ws.send(_fragments(TEXT, parts, final=False))
    close = ws.expect_close()
    assert (close.close_code, close.close_reason) == (
        CloseCode.INVALID_DATA,
        "invalid UTF-8 in text message",
    )


# Closing (RFC 6455 sections 5.5.1 and 7).


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        close_payload(1000),
        *(
            close_payload(code, b"bye")
            for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011)
        ),
        *(close_payload(code, b"bye") for code in (1012, 1013, 1014)),
        *(close_payload(code) for code in (3000, 3999, 4000, 4999)),
        close_payload(1000, "κόσμε".encode()),
        close_payload(1000, b"x" * 123),
    ],
    ids=lambda payload: (
        f"{int.from_bytes(payload[:2], 'big')}+{len(payload) - 2}-byte-reason"
        if payload
        else "empty"
    ),
)
def test_valid_close_is_echoed_with_the_same_code_and_reason(raw, payload):
    ws = raw()
    ws.send_frame(CLOSE, payload)
    close = ws.expect_close()
    assert close.payload == payload


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"ok \xce\xba\xe1\xbd", b"\xed\xa0\x80"],
    ids=["0xff", "truncated", "surrogate"],
)
def test_close_reason_that_is_not_utf8_fails_the_connection_with_1007(raw, reason):
    """RFC 6455 section 5.5.1 makes the reason UTF-8 and section 8.1 fails the
    connection on invalid UTF-8; 1007 is the code for data that does not
    match its type (section 7.4.1). Autobahn (case 7.5.1) accepts 1002 too."""
    ws = raw()
    ws.send_frame(CLOSE, close_payload(1000, reason))
    close = ws.expect_close()
    assert close.close_code == CloseCode.INVALID_DATA


def test_nothing_is_processed_after_a_close_frame(raw):
    """RFC 6455 section 5.5.1: the close echo is the last frame, and data
    behind the client's close frame gets no answer."""
    ws = raw()
    ws.send_frame(TEXT, b"before")
    assert ws.recv_frame().payload == b"before"
    ws.send(
        _frames(
            (CLOSE, close_payload(1000)),
            (TEXT, b"after"),
            (PING, b"after"),
            (CLOSE, close_payload(1001)),
        )
    )
    assert ws.expect_close().payload == close_payload(1000)


# Limits: a size the server refuses never gets allocated.


def test_frame_announcing_2_63_bytes_closes_with_1009_at_once(raw):
    """Only the header is sent: the server refuses the announced length
    instead of waiting for (or allocating) the payload."""
    ws = raw()
    tracemalloc.start()
    try:
        ws.send(client_frame(BINARY, b"", length=2**63 - 1)[:14])
        close = ws.expect_close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (close.close_code, close.close_reason) == (
        CloseCode.MESSAGE_TOO_BIG,
        f"frame with {2**63 - 1} bytes exceeds limit of {MiB} bytes",
    )
    assert peak < 4 * MiB


def test_fragments_adding_up_past_the_limit_close_with_1009(raw, settings):
    settings.WEBSOCKET_MAX_MESSAGE_SIZE = 1024
    ws = raw()
    ws.send(_fragments(BINARY, [b"x" * 600, b"x" * 600], final=False))
    assert ws.expect_close().close_code == CloseCode.MESSAGE_TOO_BIG


# permessage-deflate (RFC 7692).

DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 section 7.2.1


@pytest.mark.parametrize(
    ("offer", "accepted"),
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover; "
            "client_no_context_takeover; client_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; "
            "client_no_context_takeover; server_max_window_bits=12; "
            "client_max_window_bits=9",
        ),
        (
            "x-unknown-extension, permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        # A declined offer falls through to the next one (section 5).
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            "permessage-deflate; server_max_window_bits=12",
        ),
        ("permessage-deflate; unknown_parameter=1", None),
        ("x-unknown-extension", None),
    ],
    ids=[
        "plain",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "client_max_window_bits",
        "client_max_window_bits=10",
        "server_max_window_bits=10",
        "all-parameters",
        "after-an-unknown-extension",
        "second-offer",
        "unknown-parameter-declined",
        "unknown-extension-declined",
    ],
)
def test_permessage_deflate_parameters_negotiate_and_messages_round_trip(
    raw, offer, accepted
):
    ws = raw(headers={"Sec-WebSocket-Extensions": offer})
    assert ws.headers.get("sec-websocket-extensions") == accepted
    params = [p.strip() for p in (accepted or "").split(";")]
    client = _Deflater(accepted, params)
    server = _Inflater(params)

    messages = [
        (TEXT, "Hello, compressed world. " * 20),
        (TEXT, "Hello, compressed world. " * 20),  # context takeover, if any
        (BINARY, bytes(range(256)) * 8),
        (TEXT, "κόσμε " * 500),
    ]
    for opcode, message in messages:
        data = message.encode() if isinstance(message, str) else message
        ws.send(client.message(opcode, data))
        assert server.message(ws.recv_frame()) == (opcode, data)
    # The same, fragmented, with a ping between the fragments.
    for opcode, message in messages:
        data = message.encode() if isinstance(message, str) else message
        first, *rest = client.fragments(opcode, data, count=3)
        ws.send(first + client_frame(PING, b"mid-message") + b"".join(rest))
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"mid-message")
        assert server.message(ws.recv_frame()) == (opcode, data)
    # Uncompressed messages stay allowed (RFC 7692 section 6).
    ws.send_frame(TEXT, b"plain")
    assert server.message(ws.recv_frame()) == (TEXT, b"plain")


class _Deflater:
    """Compresses client messages as the negotiated parameters require."""

    def __init__(self, accepted: str | None, params: list[str]) -> None:
        self.enabled = accepted is not None
        bits = next(
            (
                int(p.split("=")[1])
                for p in params
                if p.startswith("client_max_window_bits=")
            ),
            15,
        )
        self.wbits = -max(bits, 9)  # zlib refuses raw deflate with 8 bits
        self.reset = "client_no_context_takeover" in params
        self.compressor = zlib.compressobj(wbits=self.wbits)

    def compress(self, data: bytes) -> bytes:
        if self.reset:
            self.compressor = zlib.compressobj(wbits=self.wbits)
        compressed = self.compressor.compress(data) + self.compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        assert compressed.endswith(DEFLATE_TAIL)
        return compressed[: -len(DEFLATE_TAIL)]

    def message(self, opcode: int, data: bytes) -> bytes:
        if not self.enabled:
            return client_frame(opcode, data)
        return client_frame(opcode, self.compress(data), rsv=RSV1)

    def fragments(self, opcode: int, data: bytes, count: int) -> list[bytes]:
        payload = self.compress(data) if self.enabled else data
        size = -(-len(payload) // count)
        parts = [payload[i * size : (i + 1) * size] for i in range(count)]
        return [
            client_frame(
                opcode if i == 0 else CONT,
                part,
                fin=i == count - 1,
                # Section 6: RSV1 marks the first frame of a compressed message.
                rsv=RSV1 if self.enabled and i == 0 else 0,
            )
            for i, part in enumerate(parts)
        ]


class _Inflater:
    """Decompresses server messages; with server_no_context_takeover every
    message must decode with a fresh decompressor (section 7.1.1.1)."""

    def __init__(self, params: list[str]) -> None:
        self.reset = "server_no_context_takeover" in params
        bits = next(
            (
                int(p.split("=")[1])
                for p in params
                if p.startswith("server_max_window_bits=")
            ),
            15,
        )
        # A decompressor with exactly the negotiated window fails on a
        # server that uses a larger one.
        self.wbits = -bits
        self.decompressor = zlib.decompressobj(wbits=self.wbits)

    def message(self, frame: ServerFrame) -> tuple[int, bytes]:
        assert frame.fin and not frame.masked
        if not frame.rsv & RSV1:
            return frame.opcode, frame.payload
        if self.reset:
            self.decompressor = zlib.decompressobj(wbits=self.wbits)
        return frame.opcode, self.decompressor.decompress(frame.payload + DEFLATE_TAIL)


# id: (frames sent, close code, reason)
_DEFLATE_ERRORS = {
    # RFC 7692 section 6: RSV1 marks the first frame of a data message only.
    "rsv1-on-ping": (
        [(PING, b"", {"rsv": RSV1})],
        CloseCode.PROTOCOL_ERROR,
        RESERVED_BITS,
    ),
    "rsv1-on-continuation": (
        [(TEXT, b"", {"fin": False}), (CONT, b"", {"rsv": RSV1})],
        CloseCode.PROTOCOL_ERROR,
        RESERVED_BITS,
    ),
    "rsv2-with-deflate": (
        [(TEXT, b"", {"rsv": RSV2})],
        CloseCode.PROTOCOL_ERROR,
        RESERVED_BITS,
    ),
    # Section 6.2 only says to fail the connection; the engine uses 1002.
    "invalid-deflate-data": (
        [(BINARY, b"\xff\xff\xff\xff", {"rsv": RSV1})],
        CloseCode.PROTOCOL_ERROR,
        "decompression failed",
    ),
    "compressed-invalid-utf8": (
        [(TEXT, zlib.compress(b"\xff\xfe", wbits=-15), {"rsv": RSV1})],
        CloseCode.INVALID_DATA,
        "invalid UTF-8 in text message",
    ),
}


@pytest.mark.parametrize(
    ("frames", "code", "reason"), _DEFLATE_ERRORS.values(), ids=_DEFLATE_ERRORS.keys()
)
def test_compressed_protocol_violations_fail_the_connection(raw, frames, code, reason):
    ws = raw(headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert ws.headers["sec-websocket-extensions"].startswith("permessage-deflate")
    ws.send(_frames(*frames))
    close = ws.expect_close()
    assert (close.close_code, close.close_reason) == (code, reason)


def _bomb(size: int) -> bytes:
    """Raw deflate data that inflates to *size* zero bytes (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    data = b"".join(compressor.compress(chunk) for _ in range(size // MiB))
    return (data + compressor.flush(zlib.Z_SYNC_FLUSH))[: -len(DEFLATE_TAIL)]


@pytest.mark.parametrize("fragments", [1, 16], ids=["one-frame", "16-fragments"])
def test_compression_bomb_closes_with_1009_without_inflating_it(
    raw, settings, fragments
):
    settings.WEBSOCKET_MAX_MESSAGE_SIZE = MiB
    bomb = _bomb(64 * MiB)
    size = -(-len(bomb) // fragments)
    parts = [bomb[i * size : (i + 1) * size] for i in range(fragments)]
    frames = b"".join(
        client_frame(
            BINARY if i == 0 else CONT,
            part,
            fin=i == fragments - 1,
            rsv=RSV1 if i == 0 else 0,
        )
        for i, part in enumerate(parts)
    )
    ws = raw(headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    tracemalloc.start()
    try:
        ws.send(frames)
        close = ws.expect_close(timeout=TIMEOUT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert close.close_code == CloseCode.MESSAGE_TOO_BIG
    # 64 MiB if inflated; the limit, a receive buffer and zlib's state if not.
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
