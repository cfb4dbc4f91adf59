"""A worker process's reports to its supervisor's dashboard: ``Reporter``.

Under ``Workers(..., dashboard=...)`` (``serve --workers N --dashboard
HOST:PORT``) every worker has one end of a ``SOCK_SEQPACKET`` socketpair
whose other end the supervisor reads (reactor/dashboard/workers.py).  The
worker's ``Reporter`` runs on the worker's reactor:

* a ``LocalSource`` (source.py) of the worker's loop: its servers, its
  loop's statistics, its handlers' time;
* a timer every ``interval`` seconds that sends one UPDATE (JSON, one
  packet) only when ``changed()``, and at least every ``ALIVE`` seconds
  anyway, so that the supervisor knows the worker lives;
* a reader of the supervisor's one-byte commands: ``b"w"`` (someone
  watches the events: observe the transitions) and ``b"q"`` (nobody
  does: stop observing), so that a worker pays for observers only while
  watched.  End of file (the supervisor closed its end, or is gone):
  the reporter stops (the lifeline stops the worker anyway).

It never blocks the worker: the socket is nonblocking, and a report the
socket cannot take now (the supervisor is behind) is dropped, counted in
the next one that goes (``"reports_dropped"``: the total so far).  A
report larger than the socket takes in one packet (``EMSGSIZE``; with
``BUFFER``, only a worker with many servers full of records gets there)
is sent again without its records lists (each SERVER then has
``"records": []``, ``"more"``: how many there were, and the report
``"records_dropped": true``); if even that is too large, it is dropped.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import time
from typing import Any

from .source import LocalSource

__all__ = ["Reporter", "report_pair", "WATCH", "QUIET", "ALIVE", "BUFFER"]

log = logging.getLogger("reactor")

#: The supervisor's commands: observe the transitions, or stop.
WATCH, QUIET = b"w", b"q"
#: A worker with nothing new still reports after this many seconds.
ALIVE = 2.0
#: SO_SNDBUF and SO_RCVBUF of both ends, and the largest report sent, in bytes.
#: The largest report of one server (200 records and 500 transitions, every
#: field at its widest) is about 120 KB (tests/test_dashboard_workers.py
#: measures it and wants four to fit): some 85 KB of transitions, once per
#: report, and some 35 KB of records per server.  The kernel caps the buffer
#: at net.core.wmem_max (208 KiB on many systems, doubled for its
#: bookkeeping: packets of up to about 400 KB); a larger report gets EMSGSIZE
#: and goes without its records lists (see the module docstring).
BUFFER = 1 << 20


def report_pair() -> tuple[socket.socket, socket.socket]:
    """A nonblocking ``SOCK_SEQPACKET`` socketpair sized for reports: (the supervisor's end, the worker's end)."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in pair:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
            except OSError:
                pass  # the kernel's default, then: a report too large for it is cut (see the module docstring)
    return pair[0], pair[1]


class Reporter:
    """Reports what the worker's reactor ``loop`` shows to the supervisor, on ``sock`` (the worker's end).

    ``reports_sent`` and ``reports_dropped`` count what went and what the
    socket could not take.  ``close()`` stops it (idempotent); it stops by
    itself when the supervisor's end closes.
    """

    def __init__(self, loop: Any, sock: socket.socket, interval: float = 0.25, alive: float = ALIVE) -> None:
        self.loop = loop
        self.sock = sock
        self.interval = interval
        self.alive = alive
        self.reports_sent = 0
        self.reports_dropped = 0
        self.watching = False
        self.closed = False
        sock.setblocking(False)
        self.source = LocalSource(loop)
        self._last_sent = -alive
        self._timer: Any = None
        loop.add_reader(sock, self._command)
        self._timer = loop.call_soon(self._tick)  # a first report at once: the supervisor shows the worker

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        if self.source.changed() or now - self._last_sent >= self.alive:
            self.send_report()
            self._last_sent = now
        if self.watching:
            self.source.watch(True)  # again after a full batch, and the servers added since
        self._timer = self.loop.call_later(self.interval, self._tick)

    def report(self) -> dict[str, Any]:
        """The next report: an UPDATE of the worker's reactor, with ``reports_dropped`` so far."""
        report = self.source.update()
        report["reports_dropped"] = self.reports_dropped
        return report

    def send_report(self) -> bool:
        """Send one report now, if the socket takes it; True if it went."""
        report = self.report()
        data = json.dumps(report, separators=(",", ":")).encode()
        if len(data) > BUFFER:  # more than the supervisor reads at once, whatever the kernel would take
            return self._send_smaller(report, len(data))
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.reports_dropped += 1  # the supervisor is behind: it gets the next one
            return False
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                self.close()  # the supervisor's end is gone
                return False
            return self._send_smaller(report, len(data))
        self.reports_sent += 1
        return True

    def _send_smaller(self, report: dict[str, Any], size: int) -> bool:
        """A report too large for one packet: again without its records lists, or dropped."""
        for server in report["servers"]:
            if server["records"]:
                server["more"] = server.get("more", 0) + len(server["records"])
                server["records"] = []
        report["records_dropped"] = True
        data = json.dumps(report, separators=(",", ":")).encode()
        try:
            if len(data) > BUFFER:
                raise OSError(errno.EMSGSIZE, "still too large")
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.reports_dropped += 1
            return False
        except OSError:
            self.reports_dropped += 1
            log.warning("worker dashboard report of %d bytes is too large for its socket; dropped", size)
            return False
        self.reports_sent += 1
        return True

    def _command(self) -> None:
        """The supervisor's bytes: ``w`` watch, ``q`` quiet; end of file: stop reporting."""
        try:
            data = self.sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        on = data[-1:] == WATCH  # the last one says what is wanted now
        if on != self.watching:
            self.watching = on
            self.source.watch(on)

    def close(self) -> None:
        """Stop reporting: no more timer, observers, timing; the socket closed.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.loop.closed:
            try:
                self.loop.remove_reader(self.sock)
            except (KeyError, ValueError):
                pass
        self.source.close()
        self.sock.close()
