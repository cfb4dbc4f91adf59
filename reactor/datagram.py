"""Datagram servers' half of the reactor: truncation, replies, framed handlers.

A datagram is framed by nature: one ``recvmsg()`` is one whole message.
What the reactor adds to socketserver's datagram path:

* **No silent truncation.**  A datagram longer than ``max_packet_size`` is
  detected (``MSG_TRUNC``), counted, logged and dropped, never handed on
  cut short (python/cpython#128319).
* **Replies never block the loop.**  A handler's ``self.socket.sendto``
  (classic) or its queued output (framed) is sent at once if the kernel
  takes it; if the socket is full (EAGAIN, ENOBUFS) the reply waits in a
  small bounded queue, retried on a back-off timer, and is dropped with a
  count when the queue is full (anyio#1294, asyncio's gh-135444).
* **Never a reply to itself.**  A reply addressed to the server's own
  socket (a datagram forged "from" the server) is dropped and counted
  (``replies_to_self``): answered, it would come back as a request, and
  an echo server would answer itself for ever (see ``reactor.ownaddress``).
* **Warnings a peer can repeat are rate-limited** (``reactor.ratelimit``);
  the counters keep the exact numbers.
* **One handler class for all four families.**  A ``MessageHandler`` on a
  datagram server gets the datagram as its message and a peer object as
  ``self.connection``; what it writes goes back as one datagram.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import deque
from typing import Any

from handlers.message import MessageRequest

from .errors import UsageError
from .ownaddress import OwnAddress
from .tcp import TCPServer
from .table import Event, Kind, Record, State

__all__ = ["UDPServer", "Truncated", "DatagramReply", "DatagramPeer", "ReplyQueue"]

log = logging.getLogger("reactor")

_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})

#: Seconds a reply sent without a loop (in a forked child) may wait for room.
SEND_WAIT = 5.0
# What one send attempt came to.
SENT, FULL, FAILED = "sent", "full", "failed"

# Enum members the per-datagram path uses, as plain globals (fast to read).
_SENDING, _DATAGRAM = State.SENDING, Kind.DATAGRAM

#: Retry delays for replies waiting on a full socket: first, and the cap.
RETRY_FIRST = 0.01
RETRY_MAX = 1.0


class Truncated(bytes):
    """The first ``max_packet_size`` bytes of a datagram that was longer.

    ``get_request`` returns its data as this type when the kernel cut the
    datagram, so the server can refuse it instead of handling half of it.
    """


# A plain int: ``flags & socket.MSG_TRUNC`` would build an IntFlag per datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)


def receive(sock: socket.socket, size: int) -> tuple[bytes, Any]:
    """``recvfrom`` that marks a cut datagram: returns ``(data, address)``."""
    data, _, flags, address = sock.recvmsg(size)
    if flags & _MSG_TRUNC:
        return Truncated(data), address
    return data, address


class DatagramReply:
    """The ``socket`` a datagram handler replies through (``self.socket``).

    ``sendto`` goes through the server's reply path (sent now, or queued
    without blocking); every other attribute is the server socket's own.
    """

    __slots__ = ("_sock", "_server", "record")

    def __init__(self, sock: socket.socket, server: Any) -> None:
        self._sock = sock
        self._server = server
        self.record: Record | None = None

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        """Send (or queue) one reply; returns its length, as UDP's sendto does
        for a datagram it accepted (a queued or dropped reply is counted in
        the table's counters instead)."""
        if address is None:
            address = flags_or_address
        payload = bytes(data)
        self._server._reply_queue.send(self.record, payload, address)
        return len(payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def __repr__(self) -> str:
        return f"<DatagramReply for {self._sock!r}>"


class DatagramPeer:
    """``self.connection`` of a framed handler on a datagram server.

    A datagram has no connection: ``data`` is a fresh dict for each one and
    ``close()`` does nothing, so handler code written for streams runs.
    """

    __slots__ = ("client_address", "data", "_sock")

    closing = False

    def __init__(self, sock: socket.socket, client_address: Any) -> None:
        self.client_address = client_address
        self.data: dict[str, Any] = {}
        self._sock = sock

    def close(self) -> None:
        """Nothing to close: each datagram stands alone."""

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def __repr__(self) -> str:
        return f"<DatagramPeer {self.client_address!r}>"


class ReplyQueue:
    """Sends a datagram server's replies without ever blocking its loop.

    A reply is sent at once when the kernel takes it.  One that meets a full
    socket (EAGAIN, ENOBUFS: on a Unix datagram socket, usually a peer that
    does not read) waits in a queue of at most ``max_queued_replies``
    replies, beyond which replies are dropped and counted.  Waiting replies
    are retried on a timer, 10 ms doubling up to 1 s, not on writability:
    for a Unix datagram socket "writable" says nothing about the peer's
    queue, and watching it would spin.  Replies to one peer keep their
    order, and one stuck peer does not hold up replies to the others.
    A reply to the server's own address is dropped and counted
    (``replies_to_self``), never sent.  Call ``send`` from any thread.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self._queue: deque[tuple[bytes, Any, Record | None]] = deque()
        self._stuck: dict[Any, int] = {}  # address -> how many replies to it wait
        self._timer: Any = None
        self._delay = RETRY_FIRST
        self._own: OwnAddress | None = None  # the server socket's address, once it is bound

    def send(self, record: Record | None, data: bytes, address: Any) -> None:
        if not address:  # None, "" or b"": the address of an unbound Unix datagram client
            return  # an unbound Unix datagram client cannot be answered
        own = self._own
        if own is None or not own.bound:
            own = self._own = OwnAddress(self.server.socket)
        if address in own:
            # Sent, it would come back to us as a request, whose reply would
            # come back ... : one forged datagram, an endless self-echo.
            self._to_self(address)
            return
        if address not in self._stuck and self._attempt(record, data, address) is not FULL:
            return
        reactor = self.server.reactor
        if reactor is None:
            self._send_waiting(record, data, address)  # a child, or handle_request(): no loop to queue on
        elif reactor.in_loop_thread():
            self._enqueue(record, data, address)
        else:
            reactor.call_soon_threadsafe(self._enqueue, record, data, address)

    def _send_waiting(self, record: Record | None, data: bytes, address: Any) -> None:
        # Without a loop, wait (a bounded time) for the socket to take it.
        deadline = time.monotonic() + SEND_WAIT
        delay = RETRY_FIRST
        while self._attempt(record, data, address) is FULL:
            left = deadline - time.monotonic()
            if left <= 0:
                self.server.request_table.count("replies_dropped")
                self.server._warnings.warning(
                    "replies_dropped", "%s: socket full for %ss: dropped a reply", self.server.request_table.name,
                    SEND_WAIT,
                )  # fmt: skip
                return
            time.sleep(min(delay, left))  # a forked child's own wait: no loop to wake
            delay = min(RETRY_MAX, delay * 2)

    def _attempt(self, record: Record | None, data: bytes, address: Any) -> Any:
        """Try to send one reply now: SENT, FULL (try again later), or FAILED (counted)."""
        try:
            sent = self.server.socket.sendto(data, address)
        except OSError as exc:
            if exc.errno in _FULL:
                return FULL
            self._failed(record, exc)
            return FAILED
        if record is not None:
            record.bytes_out += sent
            if record.state is _SENDING:
                self.server.request_table.transition(record, Event.SENT, f"{sent} B")
        return SENT

    def _enqueue(self, record: Record | None, data: bytes, address: Any) -> None:
        table = self.server.request_table
        if len(self._queue) >= self.server.max_queued_replies:
            table.count("replies_dropped")
            self.server._warnings.warning(
                "replies_dropped", "%s: reply queue full (%d): dropped a reply to %r",
                table.name, len(self._queue), address,
            )  # fmt: skip
            if record is not None and record.state is State.PROCESSING:
                table.transition(record, Event.QUEUE, "socket full")
                table.transition(record, Event.DROP, "reply queue full")
            return
        table.count("replies_queued")
        if record is not None and record.state is State.PROCESSING:
            table.transition(record, Event.QUEUE, f"socket full; {len(self._queue)} ahead")
        self._queue.append((data, address, record))
        self._stuck[address] = self._stuck.get(address, 0) + 1
        if self._timer is None:
            self._timer = self.server.reactor.call_later(self._delay, self._retry)

    def _retry(self) -> None:
        """Try every waiting reply once, in order, skipping peers still full."""
        self._timer = None
        still_full: set[Any] = set()
        progress = False
        for _ in range(len(self._queue)):
            data, address, record = entry = self._queue.popleft()
            if address in still_full:
                self._queue.append(entry)  # keep this peer's order
                continue
            outcome = self._attempt(record, data, address)
            if outcome is FULL:
                still_full.add(address)
                self._queue.append(entry)
                continue
            progress = progress or outcome is SENT
            self._unstick(address)
        if self._queue and self.server.reactor is not None:
            self._delay = RETRY_FIRST if progress else min(RETRY_MAX, self._delay * 2)
            self._timer = self.server.reactor.call_later(self._delay, self._retry)
        else:
            self._delay = RETRY_FIRST

    def _unstick(self, address: Any) -> None:
        left = self._stuck.get(address, 0) - 1
        if left > 0:
            self._stuck[address] = left
        else:
            self._stuck.pop(address, None)

    def _to_self(self, address: Any) -> None:
        table = self.server.request_table
        table.count("replies_to_self")
        self.server._warnings.warning(
            "replies_to_self",
            "%s: dropped a reply to the server's own address %r (a datagram with a forged source?)",
            table.name, address,
        )  # fmt: skip

    def _failed(self, record: Record | None, exc: OSError) -> None:
        table = self.server.request_table
        table.count("reply_errors")
        log.debug("%s: reply failed: %s", table.name, exc)
        if record is not None and record.state is State.SENDING:
            table.transition(record, Event.DROP, str(exc))

    def close(self) -> None:
        """Drop what is still queued (the server is closing)."""
        table = self.server.request_table
        while self._queue:
            _, _, record = self._queue.popleft()
            table.count("replies_dropped")
            if record is not None and record.state is State.SENDING:
                table.transition(record, Event.DROP, "server closing")
        self._stuck.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delay = RETRY_FIRST

    def __len__(self) -> int:
        return len(self._queue)


class UDPServer(TCPServer):
    """A server on a datagram socket: each datagram is one request.

    ``self.request`` is ``(data, socket)``, where replies sent through
    ``socket.sendto`` never block the loop (see ``reactor.datagram``).
    ``max_packet_size`` is the most bytes read per datagram; a longer one
    is dropped and counted (``truncated``), never handed on cut short.
    SO_REUSEADDR stays off by default: on UDP it lets another process steal
    datagrams (python/cpython#81409).
    """

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 65536
    _record_kind = Kind.DATAGRAM

    def get_request(self) -> tuple[Any, Any]:
        """Receive a datagram: returns ``((data, server_socket), client_address)``."""
        data, client_address = receive(self.socket, self.max_packet_size)
        return (data, self.socket), client_address

    def __init__(
        self, server_address: Any, RequestHandlerClass: Any, bind_and_activate: bool = True, *, dispatch: Any = None
    ) -> None:
        """Constructor.  May be extended (call it), do not replace it."""
        if self.ssl_context is not None:  # a class attribute: the keyword is not even accepted
            raise UsageError(f"{type(self).__name__} is a datagram server: it cannot serve TLS (no DTLS)")
        super().__init__(server_address, RequestHandlerClass, bind_and_activate, dispatch=dispatch)
        self._reply_queue = ReplyQueue(self)

    def server_activate(self) -> None:
        """Datagram sockets do not listen."""

    def shutdown_request(self, request: Any) -> None:
        """Nothing to shut down for a datagram: just ``close_request``."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """The server socket is shared by every datagram: nothing to close.

        The request ends here (``_end_request``): a framed handler's reply
        is sent as one datagram.
        """
        self._end_request(request)

    def _take(self, request: Any, client_address: Any) -> None:
        table, family = self.request_table, self.address_family
        pair = isinstance(request, tuple) and len(request) == 2  # (data, socket), from get_request
        data = request[0] if pair else b""
        if isinstance(data, Truncated):
            table.count("truncated")
            self._warnings.warning(
                "truncated",
                "%s: a datagram from %r was longer than max_packet_size (%d): dropped",
                table.name, client_address, self.max_packet_size,
            )  # fmt: skip
            record = table.open(Kind.DATAGRAM, request, client_address, family, len(data))
            table.transition(record, Event.REJECT, "truncated: longer than max_packet_size")
            return
        reply = None
        if self._handler_is_framed():
            request = MessageRequest(bytes(data), DatagramPeer(self.socket, client_address), self._ended)
        elif pair and request[1] is self.socket:
            reply = DatagramReply(self.socket, self)
            request = (data, reply)
        record = table.open(_DATAGRAM, request, client_address, family, len(data), quiet=True)
        if reply is not None:
            reply.record = record
        self._lifecycle(request, client_address, record)

    def _ended(self, request: MessageRequest) -> None:
        # A framed handler's datagram is over (MessageRequest.end): its
        # output, if it did not fail, goes back as one datagram.
        record = self.request_table.find(request)
        if request.output and not request.failed:
            self._reply_queue.send(record, b"".join(request.output), request.connection.client_address)
        if record is not None:
            self.request_table.finish(request, Event.ERROR if request.failed else Event.FINISH)
