"""A supervisor's dashboard: a reactor of its own, plugged into the supervisor's poll loop.

``Workers(..., dashboard=(HOST, PORT))`` (``serve --workers N --dashboard
HOST:PORT``) makes one ``SupervisorDashboard`` before its first fork.  The
supervisor keeps its own loop (reactor/workers.py ``_wait``: a
``select.poll`` of its signal pipe and the workers' ready pipes) and
drives this reactor the way any foreign loop drives one (docs/reactor.md):
it polls ``fileno()`` too, waits at most ``poll_ms(...)``, and calls
``run(ready)``, which runs ``run_once(0)`` when that descriptor was
readable or a timer is due.  The reactor serves the ``Dashboard`` (its
page, ``/events``, ``/table.json``, ``/metrics``) from a ``WorkersSource``
(workers.py), and reads the workers' reports as readers of its own.

Per worker, before its fork: ``pair()`` makes the socketpair of its
reports (report.py ``report_pair``); after it, the supervisor gives its
end to ``started(worker, sock)`` and closes the worker's, and the worker
closes every descriptor of this reactor (``leave_in_child()``) and keeps
its own end for its ``Reporter``.  ``exited(worker)`` takes it out of the
view at once.  Without a dashboard none of this exists: no socketpair, no
reporter, nothing polled.
"""

from __future__ import annotations

import math
import socket
from typing import Any

from ..errors import UsageError
from ..loop import Reactor
from . import Dashboard
from .report import report_pair
from .workers import WorkersSource

__all__ = ["SupervisorDashboard"]


class SupervisorDashboard:
    """The dashboard of the ``Workers`` ``supervisor``, listening on ``address`` (see the module docstring).

    ``dashboard`` is the ``Dashboard`` (``url``, ``server_address``),
    ``source`` its ``WorkersSource``, ``loop`` the reactor serving both.
    Raises ``UsageError`` if the address is refused or cannot be bound.
    """

    def __init__(self, supervisor: Any, address: Any, *, allow_remote: bool = False, interval: float = 0.25) -> None:
        self.loop = Reactor()
        try:
            self.dashboard = Dashboard(self.loop, address, allow_remote=allow_remote, interval=interval,
                                       source=lambda loop, server: WorkersSource(loop, server, supervisor))  # fmt: skip
        except OSError as exc:
            self.loop.close()
            raise UsageError(f"cannot serve the dashboard on {address[0]}:{address[1]}: {exc.strerror or exc}") from None
        except BaseException:
            self.loop.close()
            raise
        self.source: WorkersSource = self.dashboard.source
        self._fd = self.loop.fileno()

    @property
    def url(self) -> str:
        return self.dashboard.url

    # ------------------------------------------------------- the poll loop

    def fileno(self) -> int:
        """The reactor's descriptor: poll it for reading."""
        return self._fd

    def poll_ms(self, timeout: float | None) -> int | None:
        """The supervisor's ``timeout`` (seconds, None: none) shortened to the reactor's next timer, in
        milliseconds for ``poll()`` (rounded up: a timer is never run early)."""
        due = self.loop.next_timeout()
        if due is not None:
            timeout = due if timeout is None else min(timeout, due)
        return None if timeout is None else math.ceil(timeout * 1000)

    def run(self, ready: bool) -> None:
        """After the supervisor's poll: run the reactor once if its descriptor was ready or a timer is due."""
        due = self.loop.next_timeout()
        if ready or (due is not None and due <= 0):
            self.loop.run_once(0)

    # ---------------------------------------------------------- the workers

    def pair(self) -> tuple[socket.socket, socket.socket]:
        """A new worker's report socketpair: (the supervisor's end, the worker's end)."""
        return report_pair()

    def started(self, worker: Any, sock: socket.socket) -> None:
        """A worker was forked (``WorkerProcess``): read its reports from ``sock``, the supervisor's end."""
        self.source.add(worker.slot + 1, worker.pid, sock, worker.started)

    def exited(self, worker: Any) -> None:
        """A worker has exited: it leaves the view now."""
        self.source.remove(worker.pid)

    def leave_in_child(self) -> None:
        """In a forked worker: close this process's copies of the reactor's descriptors (the
        dashboard's listening socket and connections, the report sockets, the selector, the wakeup
        pair).  Nothing is unregistered or shut down: they are the supervisor's."""
        for server in self.loop.servers:
            server._in_child()
        self.loop.close_in_child()

    def close(self) -> None:
        """Stop serving the dashboard and reading the workers; close the reactor.  Idempotent."""
        if self.loop.closed:
            return
        try:
            self.dashboard.close()
        finally:
            self.source.close()
            self.loop.close()
