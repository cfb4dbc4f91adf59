"""MessageHandler: the framed handler.  The reactor owns the socket; the handler
sees one complete message and never blocks.

A classic ``StreamRequestHandler`` owns a blocking socket: while it waits
for a slow client, whatever runs it waits too.  A ``MessageHandler`` is
only instantiated once its server's reactor has read a whole message (as
its ``framing`` defines one), so everything it reads is already there, and
everything it writes is queued for the reactor to send.  It keeps the
familiar shape:

* ``setup()`` / ``handle()`` / ``finish()``, as every handler;
* ``self.message``: the message's bytes;
* ``self.rfile``: reads the message (and nothing more: then EOF);
* ``self.wfile``: queues output (``write`` returns at once);
* ``self.request``: a ``MessageRequest``, socket-shaped: ``recv(n)``
  returns message bytes, ``send``/``sendall`` queue output;
* ``self.client_address``, ``self.server``;
* ``self.connection``: the connection, which outlives the message: keep
  per-connection state in ``self.connection.data`` (a dict), and call
  ``self.connection.close()`` to close it once the reply has been sent.

A handler written against a socket (``self.request.recv(1024)`` then
``self.request.sendall(...)``, or ``self.rfile.readline()`` then
``self.wfile.write(...)``) runs unchanged once its base class is
``MessageHandler``.  The same class serves stream servers (one message per
frame, replies in order) and datagram servers (one datagram is one message;
the reply goes back as one datagram).
"""

from __future__ import annotations

import io
from typing import Any, Callable

from .base import BaseRequestHandler
from .framing import Framer, Line

__all__ = ["MessageHandler", "MessageRequest", "MessageWriter"]


class MessageRequest:
    """One complete message, shaped like the socket a classic handler gets.

    Reading takes bytes from the message; writing appends to the reply,
    which the reactor sends once the handler is done.  ``end()`` (which
    the server's ``close_request`` calls after the handler) marks the
    message handled, or failed; ``close()`` is ``end()``; ``shutdown()``
    does nothing.  Neither closes the
    connection: ``connection.close()`` does.
    """

    __slots__ = ("message", "connection", "output", "done", "failed", "_pos", "_on_done")

    def __init__(self, message: bytes, connection: Any, on_done: Callable[["MessageRequest"], None]) -> None:
        self.message = message
        self.connection = connection
        self.output: list[bytes] = []
        self.done = False
        self.failed = False  # set when the handler raised (the connection then fails)
        self._pos = 0
        self._on_done = on_done

    # -- reading the message
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` more bytes of the message; b"" once it is all read."""
        start = self._pos
        if start == 0 and bufsize >= len(self.message):
            self._pos = len(self.message)
            return self.message
        self._pos = min(len(self.message), start + bufsize)
        return self.message[start : self._pos]

    def unread(self) -> bytes:
        """What ``recv`` left unread, if the handler read with ``recv`` at all."""
        return self.message[self._pos :] if 0 < self._pos < len(self.message) else b""

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    # -- writing the reply
    def send(self, data: Any, flags: int = 0) -> int:
        """Queue ``data`` for the peer; returns its length (it is all taken)."""
        self.output.append(bytes(data))
        return len(self.output[-1])

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue ``data`` for the peer."""
        self.output.append(bytes(data))

    def sendto(self, data: Any, address: Any = None) -> int:
        """Like ``send``: the reply goes to this message's peer whatever ``address`` says."""
        return self.send(data)

    def makefile(self, mode: str = "r", buffering: Any = None, **_: Any) -> Any:
        """``'rb'``: a reader of the message; ``'wb'``: a writer that queues output."""
        if "w" in mode:
            return MessageWriter(self)
        return io.BytesIO(self.message)

    # -- the socket's other faces
    def fileno(self) -> int:
        return self.connection.fileno()

    def getpeername(self) -> Any:
        return self.connection.client_address

    def getsockname(self) -> Any:
        return self.connection.getsockname()

    def settimeout(self, timeout: float | None) -> None:
        """Accepted and ignored: a message never blocks."""

    def gettimeout(self) -> float:
        return 0.0

    def setsockopt(self, *args: Any) -> None:
        self.connection.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        """Does nothing: use ``connection.close()`` to end the connection."""

    def end(self, failed: bool = False) -> None:
        """End this message's request: the one way it ends (any thread; idempotent).

        The server ends every request through ``BaseServer._end_request``,
        which calls this for a message (its ``close_request`` after the
        handler, or the strategy when the handler raised, with ``failed``).
        Ended, the reply is sent; failed, nothing is sent and the connection
        fails.  Whoever made the message (its connection, or a datagram
        server) is told, once.
        """
        if not self.done:
            self.done = True
            self.failed = failed
            self._on_done(self)

    def detach(self) -> None:
        """From now on, ending it tells nobody: in a forked child (``Fork``),
        whose reply goes back to the parent through a pipe, not to the
        connection the parent keeps."""
        self._on_done = _nobody

    #: Mark this message handled, so the reactor sends the reply: ``end()``
    #: itself (the server's ``close_request`` closes a request, as a socket).
    close = end

    def __repr__(self) -> str:
        return f"<MessageRequest {len(self.message)} bytes from {self.connection!r}>"


def _nobody(request: MessageRequest) -> None:
    """Told of a detached message's end: does nothing."""


class MessageWriter:
    """``wfile`` of a framed handler: ``write`` queues bytes and returns at once.

    It has the writing half of ``io.BufferedIOBase`` (``write``,
    ``writelines``, ``flush``, ``close``, ``closed``, use as a context
    manager) and is registered as one, so ``isinstance`` checks and
    wrappers such as ``io.TextIOWrapper`` accept it.  It is a small class
    of its own rather than a subclass because one is made for every
    message, and an ``io`` object costs several times more to make and
    close.
    """

    __slots__ = ("_request", "closed")

    def __init__(self, request: MessageRequest) -> None:
        self._request = request
        self.closed = False

    def write(self, b: Any) -> int:
        """Queue ``b`` (any bytes-like object); returns its length.  Never blocks."""
        if self.closed:
            raise ValueError("write to a closed MessageWriter")
        data = bytes(b)  # the reply's own copy: the caller may reuse its buffer
        self._request.output.append(data)
        return len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Nothing to do: output goes out when the handler is done."""
        if self.closed:
            raise ValueError("flush of a closed MessageWriter")

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def __enter__(self) -> "MessageWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MessageWriter for {self._request!r}>"


io.BufferedIOBase.register(MessageWriter)


class _OnFirstUse:
    """A handler attribute made the first time it is read, then kept.

    Most handlers use one of ``rfile``/``request.recv`` and one of
    ``wfile``/``request.send``; making only what is used saves work on
    every message.  Assigning the attribute (in a subclass's ``setup``)
    simply replaces it.
    """

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self._make = make  # called with the handler's request (one call: no lambda in between)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, handler: Any, owner: type | None = None) -> Any:
        if handler is None:
            return self
        value = self._make(handler.request)
        handler.__dict__[self._name] = value
        return value


class MessageHandler(BaseRequestHandler):
    """Base class of framed handlers: override ``handle()``; set ``framing``.

    ``framing`` is the framer that cuts the stream into messages (default
    ``Line()``: newline-terminated lines up to 64 KiB); on datagram servers
    it is not used, each datagram being a message.  ``handle()`` must not
    block: everything it can read is already in ``self.message``.
    """

    framing: Framer = Line()

    #: Reads the message (an ``io.BytesIO``); made when first used.
    rfile = _OnFirstUse(lambda request: io.BytesIO(request.message))
    #: Queues the reply (a ``MessageWriter``); made when first used.
    wfile = _OnFirstUse(MessageWriter)

    def setup(self) -> None:
        """Set ``self.message`` (the message's bytes) and ``self.connection``.

        An override must call ``super().setup()`` to have them.
        """
        request = self.request
        self.message = request.message
        self.connection = request.connection

    def finish(self) -> None:
        """Close ``wfile`` and ``rfile`` if they were used.  The reply goes out
        once the server closes the request (``close_request``)."""
        made = self.__dict__
        if "wfile" in made:
            made["wfile"].close()
        if "rfile" in made:
            made["rfile"].close()
