"""A framed connection's input: what the peer sent that no handler has had yet.

The socket's read side: ``read`` receives without blocking, the frame
buffer (``frames``, sans-IO: bytes in, messages out) holds what arrived,
``eof`` says whether the peer has stopped sending, and read interest is
registered only while the connection can use more input.  Input is read
ahead of the handler by at most one read plus one message
(``READ_SIZE + max_message_size``): past that the kernel holds the rest,
and its window tells the peer to slow down.

Over TLS the socket still gives ciphertext: the connection's
``TLSSession`` (reactor/tlssession.py) turns each read into the plaintext
of its whole records (a partial record is "nothing yet"); a close_notify
and a bare EOF both read as EOF.  ``bytes_in`` counts what the socket
gave: over TLS, encrypted bytes.

Invariant: read interest is registered exactly while ``watching``.
"""

from __future__ import annotations

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

    __slots__ = ("frames", "eof", "watching", "_sock", "_record", "_reactor", "_on_readable", "_ahead", "_tls", "_fresh")

    def __init__(self, sock: Any, record: Any, reactor: Any, framing: Framer, max_message_size: int | None,
                 on_readable: Callable[[], None], tls: Any = None) -> None:  # fmt: skip
        self.frames = FrameBuffer(framing, max_message_size)
        self.eof = False
        self.watching = False
        self._sock = sock
        self._record = record  # counts bytes_in
        self._reactor = reactor
        self._on_readable = on_readable
        self._ahead = READ_SIZE + (max_message_size or READ_SIZE)
        self._tls = tls  # the TLSSession, or None
        self._fresh = tls is not None and tls.buffered > 0  # see tls_buffered
        if tls is not None:  # a TLS write that wants the peer's data first makes us read (TLSSession.encrypt)
            tls.on_need_read = lambda: self.watch(True)

    @property
    def tls_buffered(self) -> bool:
        """TLS: ciphertext came with the handshake's last message, that no readiness will show
        (the next ``read`` decrypts it without a ``recv()``)."""
        return self._fresh

    def read(self) -> bytes | None:
        """One ``recv()``: the bytes, b"" at EOF (then no more watching), None if nothing came.

        Raises the socket's ``OSError`` (a reset, say; over TLS, bad data):
        the connection's business.
        """
        tls = self._tls
        if tls is None:
            try:
                data = self._sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            self._record.bytes_in += len(data)
            if not data:
                self.eof = True
                self.watch(False)
            return data
        if self._fresh:  # what came with the handshake's last message, read already: no recv() for it
            self._fresh = False
            data = None
        else:
            try:
                data = self._sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            self._record.bytes_in += len(data)
        data = tls.decrypt(data)
        if tls.eof:
            self.eof = True  # the connection sees it after the plaintext before it
            self.watch(False)
        elif not data:
            return None  # part of a record: the rest is on its way
        return data

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
