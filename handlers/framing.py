"""Sans-IO framers: bytes in, complete messages out.  No sockets here.

A stream carries bytes, not messages: one ``recv()`` may hold half a
message, or three and a bit.  A framer says where the first message in a
run of bytes ends.  That is its whole job, and it is one method:

    find(data) -> (message, consumed) | None

``data`` is what has been received and not yet consumed.  If it starts
with a complete message, ``find`` returns the message (what the handler
will see) and how many bytes of ``data`` it took (the message plus any
header or delimiter that is not part of it).  If the message is not
complete yet it returns None, and is asked again when more bytes arrive.
A message over the framer's ``max_length`` raises ``MessageTooLong`` as
soon as that is known: the peer made a protocol error, the message is not
cut to size.

Writing your own framer is writing that method::

    class Netstring(Framer):
        '''b"5:hello," -> b"hello"'''
        def find(self, data):
            colon = data.find(b":")
            if colon < 0:
                return None
            size = int(data[:colon])
            end = colon + 1 + size
            if len(data) <= end:
                return None
            return bytes(data[colon + 1 : end]), end + 1

``FrameBuffer`` is the other half: it keeps the unconsumed bytes and hands
out one message at a time, so the code that owns the socket only feeds it.
"""

from __future__ import annotations

from typing import Iterator, Union

from .errors import MessageTooLong, UsageError

__all__ = ["Framer", "Line", "Terminator", "LengthPrefixed", "Fixed", "Chunk", "FrameBuffer", "DEFAULT_MAX_LENGTH"]

#: What ``find`` is given: the buffered bytes (``FrameBuffer`` never passes a memoryview).
Data = Union[bytes, bytearray]

#: The limit framers use unless given another: 64 KiB, stated, not hidden.
DEFAULT_MAX_LENGTH = 65536


class Framer:
    """Base class of framers.  Subclasses implement ``find``; see the module docs.

    ``max_length`` (None: no limit) bounds one message; ``encode(message)``
    turns a reply into bytes for the wire (as is, unless the framing adds
    a header or a delimiter).
    """

    max_length: int | None = DEFAULT_MAX_LENGTH

    #: The most bytes a frame carries besides its message (a header, a
    #: delimiter left out of the message).  ``FrameBuffer`` allows this much
    #: on top of its ``limit`` before calling a partial message too long.
    overhead = 32

    #: Whether bytes a handler left unread (a ``recv(n)`` shorter than the
    #: message) go back to the front of the stream for the next handler:
    #: only where a message has no boundary of its own (``Chunk``).
    returns_unread = False

    def find(self, data: Data) -> tuple[bytes, int] | None:
        """Return ``(message, consumed)`` for the first message of ``data``, or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement find(data)")

    def encode(self, message: Data) -> bytes:
        """The bytes that send ``message`` in this framing (unchanged by default)."""
        return bytes(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_length={self.max_length})"


class Terminator(Framer):
    """Messages end with ``terminator``; the message includes it.

    ``max_length`` counts the terminator too.  A partial message already
    longer than the limit raises at once, without waiting for its end.
    """

    overhead = 0  # the terminator is part of the message

    def __init__(self, terminator: bytes, max_length: int | None = DEFAULT_MAX_LENGTH) -> None:
        if not terminator:
            raise UsageError("Terminator needs a non-empty terminator")
        self.terminator = bytes(terminator)
        self.max_length = _checked_limit(max_length)

    def find(self, data: Data) -> tuple[bytes, int] | None:
        end = data.find(self.terminator)
        limit = self.max_length
        if end < 0:
            # The message will be at least one byte longer than what we
            # have: if that is already over the limit, say so now.
            if limit is not None and len(data) >= limit:
                raise MessageTooLong(len(data) + 1, limit)
            return None
        end += len(self.terminator)
        if limit is not None and end > limit:
            raise MessageTooLong(end, limit)
        return bytes(data[:end]), end

    def encode(self, message: Data) -> bytes:
        """``message`` with the terminator after it (unless it already ends with it)."""
        message = bytes(message)
        return message if message.endswith(self.terminator) else message + self.terminator

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.terminator!r}, max_length={self.max_length})"


class Line(Terminator):
    """Newline-terminated lines; the message is the whole line, ``\\r\\n`` or ``\\n``.

    A peer that ends lines with ``\\r\\n`` is served as well as one that
    uses ``\\n``: the ``\\r`` stays in the message, where ``readline()``
    callers expect it.
    """

    def __init__(self, max_length: int | None = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(b"\n", max_length)

    def __repr__(self) -> str:
        return f"Line(max_length={self.max_length})"


class LengthPrefixed(Framer):
    """A ``width``-byte unsigned length, then that many bytes of message.

    The message handed on is the payload without its header; ``encode``
    adds the header.  An announced length over ``max_length`` raises as
    soon as the header has arrived.
    """

    def __init__(self, width: int = 4, byteorder: str = "big", max_length: int | None = DEFAULT_MAX_LENGTH) -> None:
        if width not in (1, 2, 4, 8):
            raise UsageError(f"LengthPrefixed width must be 1, 2, 4 or 8 bytes, not {width!r}")
        if byteorder not in ("big", "little"):
            raise UsageError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        self.width = width
        self.overhead = width
        self.byteorder = byteorder
        self.max_length = _checked_limit(max_length)

    def find(self, data: Data) -> tuple[bytes, int] | None:
        width = self.width
        if len(data) < width:
            return None
        size = int.from_bytes(data[:width], self.byteorder)
        if self.max_length is not None and size > self.max_length:
            raise MessageTooLong(size, self.max_length)
        end = width + size
        if len(data) < end:
            return None
        return bytes(data[width:end]), end

    def encode(self, message: Data) -> bytes:
        """``message`` after its length in ``width`` bytes, ``byteorder``.

        Raises ``UsageError`` if the length does not fit the prefix.
        """
        message = bytes(message)
        if len(message) >= 1 << (8 * self.width):
            raise UsageError(f"{len(message)} bytes do not fit a {self.width}-byte length")
        return len(message).to_bytes(self.width, self.byteorder) + message

    def __repr__(self) -> str:
        return f"LengthPrefixed({self.width}, {self.byteorder!r}, max_length={self.max_length})"


class Fixed(Framer):
    """Every message is exactly ``size`` bytes."""

    overhead = 0

    def __init__(self, size: int) -> None:
        if size < 1:
            raise UsageError(f"Fixed size must be at least 1, not {size!r}")
        self.size = size
        self.max_length = size

    def find(self, data: Data) -> tuple[bytes, int] | None:
        if len(data) < self.size:
            return None
        return bytes(data[: self.size]), self.size

    def __repr__(self) -> str:
        return f"Fixed({self.size})"


class Chunk(Framer):
    """Whatever has arrived is a message (up to ``max_length`` bytes of it).

    This is what a classic ``self.request.recv(1024)`` handler sees: the
    bytes one read returned, with no notion of message boundaries.  What
    the handler leaves unread goes back to the stream for the next one, and
    a piece is cut to the buffer's limit rather than refused.
    """

    overhead = 0
    returns_unread = True

    def __init__(self, max_length: int | None = DEFAULT_MAX_LENGTH) -> None:
        self.max_length = _checked_limit(max_length)

    def find(self, data: Data) -> tuple[bytes, int] | None:
        if not data:
            return None
        end = len(data) if self.max_length is None else min(len(data), self.max_length)
        return bytes(data[:end]), end


def _checked_limit(max_length: int | None) -> int | None:
    if max_length is not None and max_length < 1:
        raise UsageError(f"max_length must be None or at least 1, not {max_length!r}")
    return max_length


class FrameBuffer:
    """The bytes received but not yet consumed, and the framer that cuts them.

    ``feed(data)`` adds bytes (bytes, bytearray or memoryview: what is not
    ``bytes`` is copied); ``next()`` returns the next complete message or
    None.  A message is bounded by the smaller of ``limit`` (the server's
    ``max_message_size``) and the framer's own ``max_length``, checked here
    so that a custom framer is bounded too: a complete message over it
    raises, and so does a partial one once more than ``limit +
    framer.overhead`` bytes are buffered.  (With ``Chunk`` this means a
    read larger than the limit is an error, not split.)  After ``next()``
    raised ``MessageTooLong`` the buffer is of no further use: the stream
    has lost its framing, and the connection should be closed.
    """

    __slots__ = ("framer", "limit", "_data")

    def __init__(self, framer: Framer, limit: int | None = None) -> None:
        self.framer = framer
        # The framer's own max_length binds too, even for a custom framer
        # whose find() does not check it.
        own = framer.max_length
        self.limit = own if limit is None else limit if own is None else min(limit, own)
        self._data: Data = b""

    def feed(self, data: Data) -> int:
        """Append received bytes; return how many were buffered before them.

        (0 means ``data`` starts a new message: the caller can start that
        message's clock without asking again.)
        """
        held = self._data
        if not held:
            # The common case: keep the read's own bytes, no copy (only an
            # immutable bytes object can be kept without risk of aliasing).
            self._data = data if type(data) is bytes else bytes(data)
            return 0
        before = len(held)
        if isinstance(held, bytearray):
            held += data  # in place: self._data grows
        else:
            self._data = bytearray(held) + data
        return before

    def next(self) -> bytes | None:
        """Remove and return the next complete message, or None if there is none yet."""
        data = self._data
        if not data:
            return None
        limit = self.limit
        try:
            found = self.framer.find(data)
        except MessageTooLong as exc:
            if limit is not None and limit < exc.limit:
                raise MessageTooLong(exc.size, limit, exc.reply) from None  # name the limit that binds
            raise
        if found is None:
            if limit is not None and len(data) > limit + self.framer.overhead:
                raise MessageTooLong(len(data), limit)
            return None
        message, consumed = found
        if limit is not None and len(message) > limit:
            if not self.framer.returns_unread:
                raise MessageTooLong(len(message), limit)
            message, consumed = message[:limit], limit  # a raw stream is cut, not refused
        if consumed >= len(data):
            self._data = b""
        elif isinstance(data, bytearray):
            del data[:consumed]
        else:
            self._data = bytearray(data[consumed:])
        return message

    def __iter__(self) -> Iterator[bytes]:
        """The complete messages buffered now, consumed as they are yielded."""
        while (message := self.next()) is not None:
            yield message

    def unread(self, data: Data) -> None:
        """Put ``data`` back at the front, to be framed again first."""
        if data:
            self._data = bytearray(data) + self._data

    @property
    def buffered(self) -> int:
        """How many bytes are held (a partial message, or messages not taken yet)."""
        return len(self._data)

    def clear(self) -> None:
        """Drop everything buffered."""
        self._data = b""

    def __repr__(self) -> str:
        return f"<FrameBuffer {self.framer!r} buffered={self.buffered}>"
