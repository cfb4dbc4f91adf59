"""When a listener takes connections: the connection limit and accept errors.

A listening socket stays readable while connections wait in its backlog,
and a level-triggered selector reports it again on every iteration.  Two
situations make accepting wrong or impossible, and both are handled the
same way: take the listener out of the selector, and put it back later.

* ``max_connections`` live connections: accepting pauses; it resumes as
  soon as one ends.  The waiting clients stay in the kernel's backlog,
  which is real backpressure (python/asyncio#210).
* ``max_connections`` left at its default fits the process: no more than
  the descriptor limit (RLIMIT_NOFILE) less a reserve, so a flood of idle
  clients pauses accepting before the process runs out of descriptors.
* ``accept()`` fails with EMFILE/ENFILE (no descriptors left) or
  ENOBUFS/ENOMEM: a naive loop would spin at 100% CPU, because the
  connection that cannot be accepted keeps the listener readable
  (socketserver does exactly that; Twisted#5368).  Instead, one waiting
  connection is accepted and closed at once on a descriptor kept in
  reserve for the purpose, so its client gets an answer rather than a
  hang, and the listener rests for a back-off that doubles from 10 ms up
  to 1 s.  Each back-off is counted, and logged (at most once per 10 s).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from .table import Kind

try:
    import resource
except ImportError:  # not POSIX: no descriptor limit to fit
    resource = None  # type: ignore[assignment]

__all__ = ["AcceptGate", "DEFAULT_MAX_CONNECTIONS", "descriptor_budget"]

log = logging.getLogger("reactor")

#: accept() errors that mean "out of resources", not "this connection failed".
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0

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


class AcceptGate:
    """Opens and closes one server's listener on its reactor.

    ``paused`` says whether the listener is out of the selector, and why:
    None, ``"max_connections"`` or ``"backoff"``.
    """

    def __init__(self, server: Any, reactor: Any) -> None:
        self.server = server
        self.reactor = reactor
        self.paused: str | None = None
        self._delay = 0.0
        self._timer: Any = None
        self._spare = _open_spare()
        self._budget = descriptor_budget()  # read once, when the server joins the reactor

    # -- max_connections

    def limit(self) -> int | None:
        """``max_connections``; left at its default, no more than the descriptor budget."""
        limit = self.server.max_connections
        if limit is DEFAULT_MAX_CONNECTIONS and self._budget is not None and "max_connections" not in vars(self.server):
            return min(limit, self._budget)
        return limit

    def check_limit(self) -> None:
        """After a connection was opened: pause if the table is full."""
        limit = self.limit()
        if self.server._record_kind is not Kind.STREAM:
            return  # datagrams are not connections
        if limit is not None and self.paused is None and self._connections() >= limit:
            self.server.request_table.count("accept_paused")
            log.info("%s: %d connections, the limit: accepting paused", self.server.request_table.name, limit)
            self._pause("max_connections")

    def connection_ended(self) -> None:
        """After a connection ended (any thread): resume if below the limit again."""
        if self.paused != "max_connections":
            return
        if self.reactor.in_loop_thread():
            self._resume_if_room()
        else:
            self.reactor.call_soon_threadsafe(self._resume_if_room)

    def _resume_if_room(self) -> None:
        limit = self.limit()
        if self.paused == "max_connections" and (limit is None or self._connections() < limit):
            log.info("%s: below the connection limit: accepting again", self.server.request_table.name)
            self._resume()

    def _connections(self) -> int:
        return self.server.request_table.live(Kind.STREAM, Kind.CONNECTION)  # not CHILD records

    # -- a full dispatch strategy

    def pause_busy(self) -> None:
        """Every worker is busy and the queue is full: stop taking input until room frees."""
        if self.paused is None:
            self.server.request_table.count("dispatch_full")
            log.info("%s: every worker busy and the queue full: not taking requests", self.server.request_table.name)
            self._pause("busy")

    def resume(self) -> None:
        """Put the listener back (room freed)."""
        if self.paused is not None:
            self._resume()

    # -- accept errors

    def accepted(self) -> None:
        """A connection came in: the resources are back, forget the back-off."""
        self._delay = 0.0

    def accept_failed(self, exc: OSError) -> bool:
        """Handle an error from ``get_request``; True if it was a resource error."""
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
        self._pause("backoff")
        self._timer = self.reactor.call_later(self._delay, self._end_backoff)
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

    def _end_backoff(self) -> None:
        self._timer = None
        if self.paused == "backoff":
            self._resume()

    # -- the listener itself

    def _pause(self, why: str) -> None:
        self.paused = why
        self.reactor.remove_reader(self.server)

    def _resume(self) -> None:
        self.paused = None
        if not self.reactor.closed and self.server.fileno() != -1:
            self.reactor.add_reader(self.server, self.server._on_readable)

    def close(self) -> None:
        """The server leaves its reactor: drop the timer and the reserve descriptor."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        self.paused = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # already out of descriptors: do without
