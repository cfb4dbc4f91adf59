"""Admission: whether a server takes input now, as one small state machine.

A listening socket stays readable while connections wait in its backlog
(a datagram socket while datagrams wait), and a level-triggered selector
reports it again on every iteration.  Whether the server should take them
is one question with four answers, each a state of its ``Admission``:

    OPEN     the socket is watched; each wake-up takes a burst of requests
    FULL     ``max_connections`` live connections: the waiting clients stay
             in the kernel's backlog, real backpressure (python/asyncio#210)
    BUSY     the dispatch strategy's workers and queue are all taken
    RESTING  ``accept()`` failed for lack of descriptors or memory
    CLOSED   the server left its reactor

    OPEN    -filled->    FULL     -emptied-> OPEN     (a connection ended, below the limit)
    OPEN    -saturated-> BUSY     -room->    OPEN     (a worker freed up)
    OPEN    -failed->    RESTING  -rested->  OPEN     (after a back-off)
    any     -close->     CLOSED

Every state but OPEN has the socket out of the selector; every move goes
through ``_move``, which looks the pair up in ``TRANSITIONS`` and raises
``TransitionError`` for one that is not there.  What each state is for:

* FULL: ``max_connections`` left at its default fits the process, no more
  than the descriptor limit (RLIMIT_NOFILE) less a reserve, so a flood of
  idle clients pauses accepting before the process runs out of descriptors.
* BUSY: framed messages that find no room wait here too (``wait_for_room``)
  and are dispatched, in order, as room frees, before the socket is read
  again.
* RESTING: a naive loop would spin at 100 % CPU, because the connection
  that cannot be accepted keeps the listener readable (socketserver does
  exactly that; Twisted#5368).  Instead one waiting connection is accepted
  and closed at once on a descriptor kept in reserve for the purpose, so
  its client gets an answer rather than a hang, and the socket rests for
  a back-off that doubles from 10 ms up to 1 s.  Each back-off is counted,
  and logged (at most once per 10 s).

The burst (``on_readable``) checks, before every request, that nobody has
asked the server or its reactor to stop (python/cpython#79184).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections import deque
from typing import Any

from .errors import TransitionError
from .table import Kind, State

try:
    import resource
except ImportError:  # not POSIX: no descriptor limit to fit
    resource = None  # type: ignore[assignment]

__all__ = ["Admission", "Admit", "DEFAULT_MAX_CONNECTIONS", "TRANSITIONS", "descriptor_budget"]

log = logging.getLogger("reactor")

#: accept() errors that mean "out of resources", not "this connection failed".
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0

#: How many requests one readiness event may bring in before the loop looks
#: at other descriptors again: enough to drain a burst, few enough to be fair.
PER_WAKEUP = 32

#: ``BaseServer.max_connections``; left at this default, it is capped by ``descriptor_budget()``.
DEFAULT_MAX_CONNECTIONS = 4096


def descriptor_budget(soft: int | None = None) -> int | None:
    """How many connections fit under the descriptor limit ``soft``.

    ``soft`` defaults to this process's RLIMIT_NOFILE soft limit.  The
    budget is that limit less a reserve of ``max(32, soft // 16)``
    descriptors for what else the process opens (listeners, the reactor,
    pipes and pidfds of children, log files), and at least 1.  None when
    there is no limit (or no way to know it).
    """
    if soft is None:
        if resource is None:
            return None
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return None
    return max(1, soft - max(32, soft // 16))


class Admit(enum.Enum):
    """The states of an ``Admission``."""

    OPEN = "open"
    FULL = "full"
    BUSY = "busy"
    RESTING = "resting"
    CLOSED = "closed"

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C


A = Admit

#: event -> {state: next state}; an event not allowed in a state is a bug.
TRANSITIONS: dict[tuple[Admit, str], Admit] = {
    (A.OPEN, "filled"): A.FULL,
    (A.FULL, "emptied"): A.OPEN,
    (A.OPEN, "saturated"): A.BUSY,
    (A.BUSY, "room"): A.OPEN,
    (A.OPEN, "failed"): A.RESTING,
    (A.RESTING, "rested"): A.OPEN,
    **{(state, "close"): A.CLOSED for state in Admit},
}


class Admission:
    """Takes a served server's input in bursts, and pauses it when it must.

    One per server while a reactor serves it (``server._admission``).  It
    owns the reading of the server's socket (``on_readable``, registered
    with the reactor), the connection limit, the framed messages waiting
    for dispatch room, the back-off after resource errors and the reserve
    descriptor.  ``state`` is an ``Admit``.  Loop thread only, except
    ``room_freed`` and ``connection_ended``, which any thread may call.
    """

    def __init__(self, server: Any, reactor: Any) -> None:
        self.server = server
        self.reactor = reactor
        self.state = Admit.OPEN
        self.taking = True  # False for good after stop_taking()
        self._waiting: deque[tuple[Any, bytes]] = deque()  # (framed connection, READY message)
        self._delay = 0.0
        self._timer: Any = None
        self._spare = _open_spare()
        self._budget = descriptor_budget()  # read once, when the server joins the reactor
        self._streams = server._record_kind is Kind.STREAM  # datagrams are not connections
        server.dispatch.on_room(self.room_freed)
        reactor.add_reader(server, self.on_readable)

    def __repr__(self) -> str:
        return f"<Admission {self.server.request_table.name} {self.state.name}>"

    def trace_label(self, fd: int) -> str:
        """What the trace calls the server's socket: ``tcp4 127.0.0.1:9000 listener``."""
        return f"{self.server.request_table.name} {'listener' if self._streams else 'socket'}"

    # ------------------------------------------------------------- the burst

    def on_readable(self) -> None:
        """The socket is readable: take up to ``requests_per_wakeup`` requests (``PER_WAKEUP``)."""
        server, dispatch = self.server, self.server.dispatch
        for _ in range(server.requests_per_wakeup):
            reactor = self.reactor
            if server._serving.requested or reactor.stopping or self.state is not A.OPEN or not self.taking:
                return  # shutdown(), the reactor's stop(), stop_taking(): checked before every request
            if not dispatch.inline and dispatch.saturated():
                self.server.request_table.count("dispatch_full")
                log.info("%s: every worker busy and the queue full: not taking requests", server.request_table.name)
                self._move("saturated")
                return
            if not server._handle_request_noblock():
                return

    # ------------------------------------------------------- max_connections

    def limit(self) -> int | None:
        """``max_connections``; left at its default, no more than the descriptor budget."""
        limit = self.server.max_connections
        if limit is DEFAULT_MAX_CONNECTIONS and self._budget is not None and "max_connections" not in vars(self.server):
            return min(limit, self._budget)
        return limit

    def accepted(self) -> None:
        """A request came in: the resources are back (forget the back-off); pause if now full."""
        self._delay = 0.0
        if not self._streams:
            return
        limit = self.limit()
        if limit is not None and self.state is A.OPEN and self._connections() >= limit:
            self.server.request_table.count("accept_paused")
            log.info("%s: %d connections, the limit: accepting paused", self.server.request_table.name, limit)
            self._move("filled")

    def connection_ended(self) -> None:
        """A connection ended (any thread): open again if it was FULL and is below the limit now."""
        if self.state is not A.FULL:
            return
        if self.reactor.in_loop_thread():
            self._empty_if_room()
        else:
            self.reactor.call_soon_threadsafe(self._empty_if_room)

    def _empty_if_room(self) -> None:
        limit = self.limit()
        if self.state is A.FULL and (limit is None or self._connections() < limit):
            log.info("%s: below the connection limit: accepting again", self.server.request_table.name)
            self._move("emptied")

    def _connections(self) -> int:
        return self.server.request_table.live(Kind.STREAM, Kind.CONNECTION)  # not CHILD records

    # ---------------------------------------------------- room in the strategy

    def wait_for_room(self, connection: Any, message: bytes) -> None:
        """A framed message is READY but every worker is busy: it waits its turn here."""
        self._waiting.append((connection, message))

    def room_freed(self) -> None:
        """The strategy ended a request (any thread): dispatch what waits, open if BUSY."""
        if not (self._waiting or self.state is A.BUSY):
            return
        if self.reactor.in_loop_thread():
            self._use_room()
        else:
            self.reactor.call_soon_threadsafe(self._use_room)

    def _use_room(self) -> None:
        dispatch = self.server.dispatch
        while self._waiting and dispatch.has_room():
            connection, message = self._waiting.popleft()
            if connection.record.state is State.READY:
                connection._dispatch(message)
        if self.state is A.BUSY and not dispatch.saturated():
            self._move("room")

    # ------------------------------------------------------------ accept errors

    def accept_failed(self, exc: OSError) -> bool:
        """Handle an error from ``get_request``; True if it was a resource error (then RESTING)."""
        if exc.errno not in RESOURCE_ERRORS:
            return False
        table = self.server.request_table
        table.count("accept_errors")
        shed = self._shed_one()
        self._delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._delay * 2))
        self.server._warnings.warning(
            "accept_error", "%s: accept() failed: %s; %slistener resting %.0f ms",
            table.name, exc.strerror or exc, "closed one waiting connection; " if shed else "", self._delay * 1000,
        )  # fmt: skip
        self._move("failed")
        self._timer = self.reactor.call_later(self._delay, self._rested)
        return True

    def _shed_one(self) -> bool:
        # With the reserve descriptor free for a moment, accept() can take
        # one connection, which we close at once: its client learns it was
        # refused instead of waiting in the backlog.
        if self._spare is None:
            return False
        os.close(self._spare)
        self._spare = None
        try:
            sock, _ = self.server.socket.accept()
            sock.close()
            self.server.request_table.count("shed")
            return True
        except OSError:
            return False
        finally:
            self._spare = _open_spare()

    def _rested(self) -> None:
        self._timer = None
        if self.state is A.RESTING:
            self._move("rested")

    # ------------------------------------------------------------------ moves

    def _move(self, event: str) -> None:
        """The one place the state changes; the socket is watched exactly while OPEN."""
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise TransitionError(self, old, event)
        self.state = new
        reactor = self.reactor
        if new is A.OPEN:
            if self.taking and not reactor.closed and self.server.fileno() != -1:
                reactor.add_reader(self.server, self.on_readable)
        elif old is A.OPEN and not reactor.closed:
            reactor.remove_reader(self.server)

    def stop_taking(self) -> None:
        """Take no new request from now on, for good: a graceful stop that lets what was taken finish.

        The socket leaves the selector and never comes back; connections
        already accepted carry on, and framed messages waiting for room in
        the strategy are still dispatched.  ``close()`` does the rest when
        the server leaves its reactor.  (A worker process stops this way:
        reactor/worker.py.)
        """
        if not self.taking:
            return
        self.taking = False
        if self.state is A.OPEN and not self.reactor.closed:
            self.reactor.remove_reader(self.server)

    def close(self) -> None:
        """The server leaves its reactor: unwatch, drop the waiting, the timer and the reserve."""
        if self.state is A.CLOSED:
            return
        self._move("close")
        self.server.dispatch.forget(self.room_freed)
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def close_in_child(self) -> None:
        """In a forked child: close the reserve descriptor; nothing else is ours to touch."""
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # already out of descriptors: do without
