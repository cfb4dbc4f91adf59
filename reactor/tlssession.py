"""One framed connection's TLS, over memory buffers: bytes in, bytes out.

A framed connection reads and writes its plain socket itself, as it does
without TLS; TLS is a step between the socket and the frames, in both
directions, that touches no socket (``ssl.SSLObject`` over two
``ssl.MemoryBIO``, as asyncio's TLS does):

    socket --recv--> ciphertext --decrypt--> plaintext --> frames
    replies --encrypt--> ciphertext --> the output queue --send--> socket

Why not ``ssl.SSLSocket`` (which classic handlers still get): OpenSSL
reading a socket itself reads each record's 5-byte header, then its body,
two system calls per record; here one ``recv()`` takes every record the
kernel holds.  And the output queue holds what goes on the wire, so the
output water marks count encrypted bytes.

TLS's "want read" and "want write" become plain facts here:

* ``decrypt`` of a partial record returns ``b""`` (nothing yet); a peer's
  close_notify, or a bare EOF, sets ``eof``.
* Writing never "wants write" (the memory buffer takes everything).  A
  write that "wants read" (a renegotiation in progress) is kept, in
  order with the writes after it, until the next read has come
  (``on_need_read`` asks the connection to read), then encrypted.
* What TLS says on its own while reading (a key update's answer, an
  alert) goes out through ``on_output`` at once, in order.

Loop thread only: an ``SSLObject`` is not for two threads at once.
"""

from __future__ import annotations

import socket
import ssl
from typing import Callable

__all__ = ["TLSSession", "READ_SIZE"]

#: The most bytes one ``recv()`` asks for (as ``reactor.input``), and one decrypt returns per record read.
READ_SIZE = 65536

_WantRead, _EOF = ssl.SSLWantReadError, (ssl.SSLEOFError, ssl.SSLZeroReturnError)


class TLSSession:
    """The server side of one TLS session, run over memory buffers.

    ``object`` is the ``ssl.SSLObject``: what a handler asks of TLS
    (``getpeercert()``, ``selected_alpn_protocol()``, ``version()``,
    ``cipher()``).  ``handshake`` and ``take_output`` drive the handshake;
    then ``decrypt``, ``encrypt`` and ``close_notify``.
    """

    __slots__ = ("object", "eof", "closed", "on_output", "on_need_read", "held_output", "_incoming", "_outgoing",
                 "_waiting")  # fmt: skip

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.eof = False  # the peer sent close_notify, or its EOF came
        self.closed = False  # our close_notify is made
        #: Set by the connection's output: queues what TLS says on its own (a key update's answer, an alert).
        self.on_output: Callable[[bytes], None] | None = None
        #: Set by the connection's input: makes sure the socket is read (see ``encrypt``).
        self.on_need_read: Callable[[], None] | None = None
        self._waiting: list[bytes] = []  # plaintext whose write wants a read first
        #: What the handshake's last step made (session tickets) when the client's
        #: first request came with it: sent with the reply (``Output`` takes it).
        self.held_output = b""

    def __repr__(self) -> str:
        return f"<TLSSession {self.object.version() or 'handshaking'}>"

    # -------------------------------------------------------------- handshake

    def handshake(self, data: bytes) -> bool:
        """Feed what the socket gave (``b""``: its EOF) and go on: True once done.

        Raises ``ssl.SSLError`` (an ``OSError``) if the handshake failed: a
        plain-text client, a bad certificate, an EOF mid-way.  What TLS has
        to send meanwhile is in ``take_output()``.
        """
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        try:
            self.object.do_handshake()
        except _WantRead:
            return False
        return True

    def take_output(self) -> bytes:
        """The ciphertext TLS has made and nobody has taken (``b""`` if none)."""
        return self._outgoing.read()

    @property
    def buffered(self) -> int:
        """Ciphertext received but not decrypted yet (what came with the client's Finished)."""
        return self._incoming.pending

    # ----------------------------------------------------------------- input

    def decrypt(self, data: bytes | None) -> bytes:
        """Feed what one ``recv()`` gave (``b""``: EOF; None: nothing new) and
        return the plaintext of every whole record (``b""``: nothing yet).

        Sets ``eof`` at the peer's close_notify or bare EOF (the plaintext
        before it is returned first).  Raises ``ssl.SSLError`` for bad data.
        """
        incoming = self._incoming
        if data:
            incoming.write(data)
        elif data is not None:
            incoming.write_eof()
        read = self.object.read
        try:
            plain = read(READ_SIZE)  # one record (up to 16 KiB), the common case: all there is
        except _WantRead:
            plain = b""  # a partial record: the rest is on its way
        except _EOF:
            plain = b""
            self.eof = True
        else:
            if not plain:
                self.eof = True  # close_notify
            elif incoming.pending:
                plain = self._more(plain)
        if self._waiting:
            self._retry_writes()
        if self._outgoing.pending and self.on_output is not None:
            self.on_output(self._outgoing.read())
        return plain

    def _more(self, plain: bytes) -> bytes:
        """The records after the first one of a read (a large message, pipelined writes)."""
        parts, read, incoming = [plain], self.object.read, self._incoming
        while incoming.pending:
            try:
                more = read(READ_SIZE)
            except _WantRead:
                break
            except _EOF:
                self.eof = True
                break
            if not more:
                self.eof = True
                break
            parts.append(more)
        return b"".join(parts)

    # ---------------------------------------------------------------- output

    def encrypt(self, data: bytes) -> bytes:
        """The ciphertext of ``data`` (with anything TLS had to say before it).

        ``b""`` if the write must wait for the peer's data (a renegotiation):
        it is kept, and so is every write after it, until a read has come.
        """
        if self._waiting or not data:
            if data:
                self._waiting.append(data)
            return b""
        try:
            self.object.write(data)
        except _WantRead:
            self._waiting.append(data)
            if self.on_need_read is not None:
                self.on_need_read()
            return self._outgoing.read()
        return self._outgoing.read()

    def _retry_writes(self) -> None:
        data = b"".join(self._waiting)
        self._waiting.clear()
        try:
            self.object.write(data)
        except _WantRead:
            self._waiting.append(data)
            if self.on_need_read is not None:
                self.on_need_read()

    def close_notify(self) -> bytes:
        """Our close_notify, as ciphertext to send (once; never waits for the peer's).

        Writes still waiting for a read are dropped: the connection is closing.
        """
        if self.closed:
            return b""
        self.closed = True
        self._waiting.clear()
        try:
            self.object.unwrap()
        except _WantRead:
            pass  # ours is made; the peer's is not awaited
        except (OSError, ValueError):
            pass  # the session is broken or over already: nothing to say
        return self._outgoing.read()

    def handshake_blocking(self, sock: socket.socket) -> None:
        """The whole handshake on a blocking socket (``handle_request()`` with no loop),
        each ``recv()`` within the socket's timeout.  Raises what ``handshake`` does,
        ``TimeoutError``, or the socket's ``OSError``."""
        done = False
        while not done:
            data = sock.recv(READ_SIZE)
            done = self.handshake(data)
            out = self.take_output()
            if out:
                sock.sendall(out)
