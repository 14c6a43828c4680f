"""Property-based tests: whatever a client sends, the server answers sensibly.

Hypothesis generates handshakes with missing and garbled headers, and byte
streams (well-formed frames, malformed frames and noise) sent after a valid
handshake. The server must answer the first with a 101 or a 4xx that says
why, and the second with valid frames ending in a valid close code, then
close; a client connected alongside keeps getting its echo throughout.
"""

from __future__ import annotations

import base64
import socket
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.frames import EXTERNAL_CLOSE_CODES
from websockets.utils import accept_key

from django_websocket.tests.conftest import HANDSHAKE, TIMEOUT, raw_request
from django_websocket.tests.wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    client_frame,
    close_payload,
)

pytestmark = pytest.mark.urls("django_websocket.tests.urls")

# One live server (and bystander client) serves every example of a test.
examples = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Header values as a client could put them on the wire: Latin-1 without the
# line breaks that would end the header, or short runs of the characters
# that header and URL parsers split on.
garbled = st.text(st.characters(codec="latin-1", exclude_characters="\r\n")) | st.text(
    st.sampled_from(",;= \t"), max_size=4
)
# Authorities (host and port) for the Origin header, made of the characters
# URL parsers treat specially.
authorities = st.text(st.sampled_from("[]:@.%0a"), min_size=1, max_size=10)


keys = st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
# Other values each header may take besides garbage; None leaves it out.
VARIANTS = {
    "Connection": st.sampled_from(["keep-alive, Upgrade", "upgrade", "close"]),
    "Upgrade": st.sampled_from(["WebSocket", "websocket, h2c", "h2c"]),
    "Sec-WebSocket-Key": keys,
    "Sec-WebSocket-Version": st.sampled_from(["8", "13, 8", " 13 ", "013"]),
    "Origin": st.builds("http://{}".format, authorities)
    | st.sampled_from(["http://localhost:8000", "null", "http://evil.test"])
    | st.builds("http://{}".format, garbled),
    "Sec-WebSocket-Extensions": st.sampled_from(
        ["permessage-deflate", "permessage-deflate; client_max_window_bits"]
    )
    | st.builds("permessage-deflate; {}".format, garbled),
    "Sec-WebSocket-Protocol": st.sampled_from(["chat.v1", "chat.v1, chat.v2", "x"])
    | st.builds("chat.v1, {}".format, garbled),
}


@st.composite
def handshake_headers(draw: st.DrawFn) -> dict[str, str]:
    """A valid handshake with up to three of its headers changed, so that
    most examples get past the first check."""
    headers: dict[str, str | None] = {**HANDSHAKE, "Origin": "http://127.0.0.1"}
    for name in draw(st.sets(st.sampled_from(sorted(VARIANTS)), max_size=3)):
        # Weighted towards the plausible variants over absence and garbage.
        headers[name] = draw(VARIANTS[name] | VARIANTS[name] | st.none() | garbled)
    return {name: value for name, value in headers.items() if value is not None}


@examples
@given(
    headers=handshake_headers(),
    method=st.sampled_from(["GET", "GET", "GET", "POST", "PUT"]),
    # The second view negotiates subprotocols, so it parses that header.
    path=st.sampled_from(["/echo/", "/subprotocols/"]),
)
def test_any_handshake_gets_a_101_or_a_4xx_with_a_reason(
    live_server, headers, method, path
):
    """(HEAD is left out: a HEAD response has no body by definition.)"""
    response = raw_request(live_server, path, headers, method)
    if response.status == 101:
        key = headers["Sec-WebSocket-Key"]
        assert response.headers["Sec-WebSocket-Accept"] == accept_key(key)
    else:
        assert 400 <= response.status < 500, (response.status, response.body)
        assert response.body.strip(), f"{response.status} without a reason"


# Byte streams: frames the parser must take apart, valid or not, and noise.

client_frames = st.builds(
    lambda opcode, payload, fin, rsv, masked: client_frame(
        opcode, payload, fin=fin, rsv=rsv, mask=b"\x01\x02\x03\x04" if masked else None
    ),
    opcode=st.sampled_from([CONT, TEXT, TEXT, BINARY, BINARY, CLOSE, PING, PONG])
    | st.integers(0, 15),
    payload=st.binary(max_size=200)
    | st.text(max_size=50).map(str.encode)
    | st.builds(close_payload, st.integers(0, 65535), st.binary(max_size=10)),
    fin=st.booleans() | st.just(True),
    rsv=st.just(0) | st.integers(0, 7),
    masked=st.just(True) | st.booleans(),
)
# A frame cut short by the end of the stream.
truncated = st.builds(lambda frame, cut: frame[:cut], client_frames, st.integers(1, 20))
noise = st.binary(min_size=1, max_size=64)
streams = st.lists(client_frames | truncated | noise, min_size=1, max_size=8).map(
    b"".join
)

# What a server may put in a close frame: a code a peer may send (RFC 6455
# section 7.4), or nothing when echoing an empty close.
VALID_CLOSE_CODES = set(EXTERNAL_CLOSE_CODES) | set(range(3000, 5000))


@pytest.fixture
def bystander(ws):
    """A well-behaved client connected to the echo view for the whole test."""
    with ws("/echo/") as client:
        yield client


@examples
@given(stream=streams)
@example(stream=b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
@example(stream=client_frame(BINARY, b"", length=2**63 - 1))
def test_any_byte_stream_is_answered_with_valid_frames_then_closed(
    live_server, bystander, stream
):
    """The client half-closes after its stream, so that a stream ending
    inside a frame ends too (1006, RFC 6455 section 7.1.5: no close frame)."""
    with RawWebSocket.open(live_server) as client:
        client.send(stream)
        client.socket.shutdown(socket.SHUT_WR)
        received = client.frames_until_eof(timeout=TIMEOUT)

    for frame in received:
        assert not frame.masked and frame.rsv == 0 and frame.fin, frame
        assert frame.opcode in (TEXT, BINARY, PONG, CLOSE), frame
        if frame.opcode == TEXT:
            frame.payload.decode()
    closes = [frame for frame in received if frame.opcode == CLOSE]
    if closes:
        assert closes == received[-1:], "the close frame must come last, once"
        if closes[0].payload:
            (code,) = struct.unpack("!H", closes[0].payload[:2])
            assert code in VALID_CLOSE_CODES, closes[0]
            closes[0].payload[2:].decode()

    bystander.send(stream.hex())
    assert bystander.receive() == stream.hex()
