"""The inbound side of a connection: frames in, messages out, with limits.

An ``Inbox`` turns the frames the protocol engine parsed into messages for
the view: it reassembles fragments into one buffer (text is decoded once, as
it arrives, so invalid UTF-8 fails at the first bad fragment, RFC 6455
section 8.1), and holds complete
messages until the view reads them. It is ``full`` at ``max_queue`` unread
messages: the connection then stops reading its socket, so TCP slows the
client down. Not thread-safe: the connection's engine lock guards it.

``Engine`` is websockets' ``ServerProtocol`` with the frame limits (fragments
per message, control frames per second: 1008 past either) and one change for
RFC 6455 section 5.4: a close frame between the fragments of a message is a
normal close, not the protocol error websockets makes of it.
"""

from __future__ import annotations

import codecs
import io
import sys
import time
from collections import deque
from typing import Any

from websockets.exceptions import ProtocolError
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from django_websocket.exceptions import CloseCode

__all__ = ["Engine", "Inbox", "Message"]

Message = str | bytes

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class _LimitExceeded(ProtocolError):
    """A client broke a frame limit: failed with 1008, not 1002."""


class Engine(ServerProtocol):
    """websockets' Sans-I/O server protocol with frame limits and RFC 6455
    section 5.4 compliance.

    Limits are checked as each frame is parsed, before the engine answers
    it (a ping's pong) or parses the next one, so a client breaking one
    costs no more than the frame that broke it.
    """

    # Slots, not the instance dict: ServerProtocol sets 26 attributes, and
    # past 30 an instance's dict stops sharing its keys with the others of
    # its class (1.3 KiB more per connection).
    __slots__ = (
        "_fragments",
        "_last_refill",
        "_tokens",
        "max_control_rate",
        "max_fragments",
    )

    def __init__(
        self,
        *args: Any,
        max_fragments: int | None = 1024,
        max_control_rate: float | None = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_fragments = max_fragments
        self.max_control_rate = max_control_rate
        self._fragments = 0
        # Token bucket for control frames: max_control_rate per second, in
        # bursts of as many.
        self._tokens = max_control_rate or 0.0
        self._last_refill = time.monotonic()

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            # Control frames may come between fragments (section 5.4); the
            # unfinished message is abandoned, the close is a normal one.
            self.current_size = None
        elif opcode is Opcode.PING or opcode is Opcode.PONG:
            self._count_control_frame()
        elif not frame.fin or opcode is Opcode.CONT:
            self._count_fragment(frame)
        super().recv_frame(frame)

    def _count_fragment(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.CONT:
            self._fragments = 1
        elif self.current_size is None:
            return  # no message in progress: the engine's protocol error
        else:
            self._fragments += 1
        if self.max_fragments is not None and self._fragments > self.max_fragments:
            raise _LimitExceeded(
                f"too many fragments: more than {self.max_fragments} in a message"
            )

    def _count_control_frame(self) -> None:
        rate = self.max_control_rate
        if rate is None:
            return
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens < 1:
            raise _LimitExceeded(
                f"too many control frames: more than {rate:g} per second"
            )
        self._tokens -= 1

    def fail(self, code: int, reason: str = "") -> None:
        error = sys.exc_info()[1]
        if isinstance(error, _LimitExceeded):
            code = CloseCode.POLICY_VIOLATION
        super().fail(code, reason)


class Inbox:
    """Unread messages of one connection and the message being reassembled."""

    __slots__ = (
        "_binary",
        "_decoder",
        "_text",
        "discarding",
        "_messages",
        "max_queue",
        "unread_size",
    )

    def __init__(self, *, max_queue: int | None = 16) -> None:
        self.max_queue = max_queue
        # Created on first use: an idle connection costs less.
        self._messages: deque[Message] | None = None
        self.unread_size = 0
        # Drop complete messages instead of queueing them (the connection is
        # closing, or the view has returned).
        self.discarding = False
        # The message being reassembled, text or binary (both None when no
        # fragmented message is in progress).
        self._binary: bytearray | None = None
        self._text: io.StringIO | None = None
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def full(self) -> bool:
        """Whether the view has ``max_queue`` messages unread."""
        return self.max_queue is not None and len(self) >= self.max_queue

    def __len__(self) -> int:
        return len(self._messages) if self._messages is not None else 0

    @property
    def partial_size(self) -> int:
        """Size of the fragmented message reassembled so far."""
        if self._binary is not None:
            return len(self._binary)
        return self._text.tell() if self._text is not None else 0

    def pop(self) -> Message:
        """Return the oldest unread message (there must be one)."""
        assert self._messages is not None
        message = self._messages.popleft()
        if not self._messages:
            self._messages = None  # a deque keeps a 600-byte block when empty
        self.unread_size -= len(message)
        return message

    def clear(self) -> None:
        self._messages = None
        self.unread_size = 0

    def receive(self, frame: Frame) -> tuple[int, str] | None:
        """Take in one frame the engine parsed and accepted.

        Returns:
            ``(code, reason)`` if the client sent invalid UTF-8 and must be
            failed, else ``None``.
        """
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                return self._complete(frame, opcode is Opcode.TEXT)
            if opcode is Opcode.TEXT:
                self._text, self._decoder = io.StringIO(), _utf8_decoder()
            else:
                self._binary = bytearray()
            return self._fragment(frame)
        if opcode is Opcode.CONT:
            return self._fragment(frame)
        if opcode is Opcode.CLOSE:
            self._abandon()
        return None

    def _complete(self, frame: Frame, text: bool) -> tuple[int, str] | None:
        if not text:
            self._queue(bytes(frame.data))
            return None
        try:
            self._queue(bytes(frame.data).decode())
        except UnicodeDecodeError:
            return CloseCode.INVALID_DATA, "invalid UTF-8 in text message"
        return None

    def _fragment(self, frame: Frame) -> tuple[int, str] | None:
        if self._decoder is not None and self._text is not None:
            try:
                self._text.write(self._decoder.decode(frame.data, final=frame.fin))
            except UnicodeDecodeError:
                self._abandon()
                return CloseCode.INVALID_DATA, "invalid UTF-8 in text message"
            if frame.fin:
                self._queue(self._text.getvalue())
                self._abandon()
        elif self._binary is not None:
            self._binary += frame.data
            if frame.fin:
                self._queue(bytes(self._binary))
                self._abandon()
        return None

    def _abandon(self) -> None:
        self._binary = self._text = self._decoder = None

    def _queue(self, message: Message) -> None:
        if not self.discarding:
            if self._messages is None:
                self._messages = deque()
            self._messages.append(message)
            self.unread_size += len(message)
