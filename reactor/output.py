"""A framed connection's output: replies held for one send, and what the kernel has not taken.

The replies to the messages of one read are *held* while they are
handled, and go out together in one ``send()`` (16 pipelined requests,
one reply segment).  Replies are sent straight from their bytes when
nothing is queued (the common case: no copy); what the kernel does not
take is *queued* here, and the socket is watched for writability only
while something is queued.  A socket error is the connection's business:
``send``, ``release`` and ``flush`` report it by returning the exception.

Over TLS, what is sent is encrypted first (the connection's
``TLSSession``, reactor/tlssession.py): the queue holds ciphertext, so the
water marks, ``queued`` and ``bytes_out`` count encrypted bytes, what is
on its way on the wire.  The held replies are encrypted together, when
released: one record for all of them.

Invariant: write interest is registered exactly while ``queued`` > 0
(but for TLS's session tickets, queued unwatched while the connection
answers the request that came with the handshake: ``Connection.start``).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

__all__ = ["Output"]


class Output:
    """The queued output of one socket, and its write interest with the reactor.

    ``on_writable`` is the callback the reactor runs when the socket can
    take more (the connection's, which calls ``flush``).  Loop thread only.
    """

    __slots__ = ("held", "_held_size", "_sock", "_record", "_reactor", "_on_writable", "_queue", "_watching", "_tls")

    def __init__(self, sock: Any, record: Any, reactor: Any, on_writable: Callable[[], None], tls: Any = None) -> None:
        self._sock = sock
        self._record = record  # counts bytes_out
        self._reactor = reactor
        self._on_writable = on_writable
        self._tls = tls  # the TLSSession, or None
        self.held: list[bytes] = []  # replies held back until ``release`` (test it for truth)
        self._held_size = 0
        self._queue = bytearray()
        self._watching = False
        if tls is not None:
            tls.on_output = self.push_raw  # what TLS says on its own while reading goes out, in order
            self._queue += tls.held_output  # the session tickets, sent with the first reply (see Connection.start)
            tls.held_output = b""

    def start(self) -> None:
        """The connection starts: on TCP, replies go out as soon as they are ready.

        Without TCP_NODELAY, Nagle's algorithm holds a small reply back until
        the peer acknowledges the previous one, which a delayed ACK makes
        about 40 ms.
        """
        if self._sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    @property
    def queued(self) -> int:
        """Bytes waiting for the kernel."""
        return len(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, data: bytes, raw: bool = False) -> OSError | None:
        """Queue ``data`` and send what the socket takes now; the socket's error, if it broke.

        Over TLS ``data`` is encrypted first, unless ``raw`` (bytes for the
        wire as they are: TLS's own, a close_notify).
        """
        if self._tls is not None and not raw:
            data = self._tls.encrypt(data)
            if not data:
                return None  # TLS keeps it until the peer's data has come (see TLSSession.encrypt)
        if self._queue:
            self._queue += data
            return self.flush()
        # Nothing queued (the common case): send straight from ``data`` and
        # queue only what the kernel did not take.
        sent = self._kernel_takes(data)
        if type(sent) is not int:
            return sent
        self._record.bytes_out += sent
        if sent < len(data):
            self._queue += memoryview(data)[sent:]
            self._watch(True)
        return None

    def hold(self, data: bytes) -> int:
        """Hold ``data`` back until ``release``; returns the bytes held and queued, together."""
        self.held.append(data)
        self._held_size += len(data)
        return self._held_size + len(self._queue)

    def release(self) -> OSError | None:
        """Send the held replies, in order, with one ``send``; the socket's error, if it broke."""
        held = self.held
        data = b"".join(held)  # one piece: join returns it, no copy
        held.clear()
        self._held_size = 0
        return self.send(data)

    def push(self, data: bytes) -> None:
        """Queue ``data`` behind what is queued; the write callback sends it (never sends now)."""
        self.push_raw(self._tls.encrypt(data) if self._tls is not None else data)

    def push_raw(self, data: bytes) -> None:
        """``push``, not encrypted (what TLS says on its own while reading)."""
        if data:
            self._queue += data
            self._watch(True)

    def flush(self) -> OSError | None:
        """Send what is queued without blocking; the socket's error, if it broke."""
        queue = self._queue
        sent = self._kernel_takes(queue)
        if type(sent) is not int:
            if self._tls is not None and self._tls.closed:  # only our close_notify was left:
                queue.clear()  # the peer is gone, nothing more to say
                self._watch(False)
                return None
            return sent
        if sent:
            self._record.bytes_out += sent
            del queue[:sent]
        self._watch(bool(queue))
        return None

    def _kernel_takes(self, data: Any) -> int | OSError:
        """One nonblocking ``send()``: how many bytes the kernel took (0 if none), or its error."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            return exc

    def close_notify(self) -> bool:
        """TLS: send our close_notify, once (plain: nothing to send); True while
        the socket has not taken all of it.  The peer may be gone: an error
        here only means there is nobody left to tell."""
        tls = self._tls
        if tls is None or tls.closed:
            return False
        if self.send(tls.close_notify(), raw=True) is not None:
            self._queue.clear()
            self._watch(False)
            return False
        return bool(self._queue)

    def forget(self) -> None:
        """The socket is closing: unwatch it (what is held or queued is dropped)."""
        self._watching = False
        self._queue.clear()
        self.held.clear()
        self._held_size = 0

    def _watch(self, on: bool) -> None:
        if on and not self._watching:
            self._reactor.add_writer(self._sock, self._on_writable)
            self._watching = True
        elif not on and self._watching:
            self._reactor.remove_writer(self._sock)
            self._watching = False
