"""A framed connection's output: replies held for one send, and what the kernel has not taken.

The replies to the messages of one read are *held* while they are
handled, and go out together in one ``send()`` (16 pipelined requests,
one reply segment).  Replies are sent straight from their bytes when
nothing is queued (the common case: no copy); what the kernel does not
take is *queued* here, and the socket is watched for writability only
while something is queued.  A socket error is the connection's business:
``send``, ``release`` and ``flush`` report it by returning the exception.

Over TLS (an ``ssl.SSLSocket``) the queue holds what TLS has yet to
encrypt: the encrypted bytes go straight to the kernel, so the water marks
bound the same memory.  "Want write" is a full socket; "want read" (a
write that needs the peer's data first: a renegotiation) stops write
interest until the next read (``after_read``), so it never spins.

Invariant: write interest is registered exactly while ``queued`` > 0 (and
no TLS write waits for a read).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Callable

__all__ = ["Output"]


class Output:
    """The queued output of one socket, and its write interest with the reactor.

    ``on_writable`` is the callback the reactor runs when the socket can
    take more (the connection's, which calls ``flush``).  Loop thread only.
    """

    __slots__ = ("held", "_held_size", "_sock", "_record", "_reactor", "_on_writable", "_queue", "_watching",
                 "_after_read", "_needs_read")  # fmt: skip

    def __init__(self, sock: Any, record: Any, reactor: Any, on_writable: Callable[[], None],
                 after_read: Callable[[Callable[[], None]], None] | None = None) -> None:  # fmt: skip
        self._after_read = after_read  # TLS: run a callback after the next read (Input.after_read)
        self._needs_read = False
        self._sock = sock
        self._record = record  # counts bytes_out
        self._reactor = reactor
        self._on_writable = on_writable
        self.held: list[bytes] = []  # replies held back until ``release`` (test it for truth)
        self._held_size = 0
        self._queue = bytearray()
        self._watching = False

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

    def send(self, data: bytes) -> OSError | None:
        """Queue ``data`` and send what the socket takes now; the socket's error, if it broke."""
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
        self._queue += data
        self._watch(True)

    def flush(self) -> OSError | None:
        """Send what is queued without blocking; the socket's error, if it broke."""
        queue = self._queue
        sent = self._kernel_takes(queue)
        if type(sent) is not int:
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
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            return 0
        except ssl.SSLWantReadError:
            if self._after_read is not None and not self._needs_read:
                self._needs_read = True
                self._after_read(self._read_came)
            return 0
        except OSError as exc:
            return exc

    def _read_came(self) -> None:
        self._needs_read = False
        self._on_writable()  # the connection's: flush, as when the socket is writable

    def forget(self) -> None:
        """The socket is closing: unwatch it (what is held or queued is dropped)."""
        self._watching = False
        self._queue.clear()
        self.held.clear()
        self._held_size = 0

    def _watch(self, on: bool) -> None:
        on = on and not self._needs_read  # a TLS write waiting for a read: writability changes nothing
        if on and not self._watching:
            self._reactor.add_writer(self._sock, self._on_writable)
            self._watching = True
        elif not on and self._watching:
            self._reactor.remove_writer(self._sock)
            self._watching = False
