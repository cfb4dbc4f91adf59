"""A framed connection's input: what the peer sent that no handler has had yet.

The socket's read side: ``read`` receives without blocking, the frame
buffer (``frames``, sans-IO: bytes in, messages out) holds what arrived,
``eof`` says whether the peer has stopped sending, and read interest is
registered only while the connection can use more input.  Input is read
ahead of the handler by at most one read plus one message
(``READ_SIZE + max_message_size``): past that the kernel holds the rest,
and its window tells the peer to slow down.

Over TLS (an ``ssl.SSLSocket``), "want read"/"want write" mean "nothing
yet", a clean close_notify and a bare EOF both read as EOF, and bytes TLS
has decrypted but not yet returned are taken in the same read.

Invariant: read interest is registered exactly while ``watching``.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

from handlers.framing import FrameBuffer, Framer

__all__ = ["Input", "READ_SIZE"]

#: The most bytes one ``recv()`` asks for.
READ_SIZE = 65536


class Input:
    """The read side of one socket: its frame buffer, EOF and read interest.

    ``on_readable`` is the callback the reactor runs when the socket is
    readable (the connection's, which calls ``read``).  Loop thread only.
    """

    __slots__ = ("frames", "eof", "watching", "_sock", "_reactor", "_on_readable", "_ahead", "_pending", "_after")

    def __init__(self, sock: Any, reactor: Any, framing: Framer, max_message_size: int | None,
                 on_readable: Callable[[], None]) -> None:  # fmt: skip
        self.frames = FrameBuffer(framing, max_message_size)
        self.eof = False
        self.watching = False
        self._sock = sock
        self._reactor = reactor
        self._on_readable = on_readable
        self._ahead = READ_SIZE + (max_message_size or READ_SIZE)
        self._pending = getattr(sock, "pending", None)  # TLS: decrypted bytes not yet returned
        self._after: Callable[[], None] | None = None  # once, after the next read (see after_read)

    def read(self) -> bytes | None:
        """One ``recv()``: the bytes, b"" at EOF (then no more watching), None if nothing came.

        Raises the socket's ``OSError`` (a reset, say): the connection's business.
        """
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        if not data:
            self.eof = True
            self.watch(False)
        elif self._pending is not None and len(data) == READ_SIZE and self._pending():
            # TLS: a record larger than what we asked for (only then can part
            # of it be left decrypted inside TLS, where no readiness shows it).
            data += self._sock.recv(self._pending())
        if self._after is not None:
            after, self._after = self._after, None
            after()
        return data

    def after_read(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, after the next read (watching meanwhile): a
        TLS write that needs the peer's data first (``Output``) is retried then."""
        self._after = callback
        self.watch(True)

    def take(self, data: bytes, handling: bool) -> None:
        """Buffer ``data``; unless a message could be handled now, stop reading once enough is ahead."""
        held = self.frames.feed(data)
        if not handling and held + len(data) > self._ahead:
            self.watch(False)  # enough read ahead: let the kernel hold the rest

    def watch(self, on: bool) -> None:
        """Register or drop read interest (a no-op when already so)."""
        if on and not self.watching:
            self._reactor.add_reader(self._sock, self._on_readable)
            self.watching = True
        elif not on and self.watching:
            self._reactor.remove_reader(self._sock)
            self.watching = False
