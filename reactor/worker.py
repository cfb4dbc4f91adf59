"""One worker process of a ``Workers`` set: the supervisor's record of it, and its life in the child.

``WorkerProcess`` is what the supervisor (reactor/workers.py) keeps about
each worker.  The supervisor forks with its signals blocked; the child
calls ``run_worker``, which never returns:

1. it drops the supervisor's signal handling (handlers, wakeup descriptor)
   and closes the supervisor's descriptors; SIGINT and SIGHUP are ignored
   from then on: they are the supervisor's to act on (a Ctrl-C reaches
   the whole process group, and the supervisor passes it on as SIGTERM);
2. it gets its servers: the supervisor's, inherited (their sockets shared
   with every worker), or, with ``reuse_port``, its own, made here;
3. it makes its ``Reactor``, installs its stopper, unblocks the signals,
   runs the ``setup`` hook and adds the servers;
4. with a supervisor's dashboard, it starts its ``Reporter``
   (reactor/dashboard/report.py) on the socket it was given; it reports
   on its ready pipe, ``{"servers": [names]}``, and closes it; or
   ``{"error": text}`` if it could not make its servers;
5. it serves until SIGTERM, or until the supervisor is gone (the lifeline
   pipe, whose only writer is the supervisor, reads EOF: even a SIGKILLed
   supervisor leaves no worker serving on);
6. it stops gracefully (``Draining``): it takes no new request, serves
   the ones it took until none is left or ``drain_timeout`` has passed,
   closes every server, and exits 0 (128 + N after a second signal,
   1 if something failed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, NoReturn

from .admission import PER_WAKEUP
from .errors import UsageError
from .loop import Reactor
from .stopper import Stopper, close_servers
from .table import FINAL_STATES

__all__ = ["run_worker", "Draining", "WorkerProcess", "SUPERVISOR_SIGNALS"]

log = logging.getLogger("reactor")

#: The signals the supervisor handles; blocked around each fork.
SUPERVISOR_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})

#: At most this many requests a stopping ``reuse_port`` worker takes from its own socket's queue.
SWEEP = 4096


class WorkerProcess:
    """What the supervisor knows of one worker process (the parent's side of this module)."""

    __slots__ = (
        "pid", "slot", "generation", "started", "ready", "settled", "ready_fd", "report", "stopping", "kill_at", "killed",
    )  # fmt: skip

    def __init__(self, pid: int, slot: int, generation: int, ready_fd: int) -> None:
        self.pid = pid
        self.slot = slot
        self.generation = generation  # the SIGHUP count when it started: older ones get replaced
        self.started = time.monotonic()
        self.ready = False  # it reported its servers
        self.settled = False  # it has served for min_uptime seconds
        self.ready_fd: int | None = ready_fd  # the read end of its ready pipe, until EOF
        self.report = bytearray()
        self.stopping = False  # it was sent SIGTERM
        self.kill_at: float | None = None  # when it gets SIGKILL if still alive
        self.killed = False  # it got SIGKILL for not starting in time

    def send(self, signum: int) -> None:
        """Send it ``signum``; one that has just exited (not reaped yet) is no error."""
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    @staticmethod
    def describe(status: int) -> str:
        """A ``waitpid`` status in words: ``exited with status 3``, ``was killed by SIGKILL``."""
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                return f"was killed by {signal.Signals(number).name}"
            except ValueError:
                return f"was killed by signal {number}"
        return f"exited with status {os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else status}"


class Draining(Stopper):
    """A worker's stopper: the first SIGTERM lets the requests already taken finish.

    Where the command's ``Stopper`` stops the loop at once (idle framed
    connections are then closed), a worker stops *taking* requests and
    keeps its loop running until it has no live request left (every
    connection closed by its client, every handler done) or the grace
    period is over; a reload must not cut short a connection that the old
    worker accepted a moment before its SIGTERM.  With ``own_sockets``
    (``reuse_port``), it first takes what the kernel already queued on its
    own socket, then closes that socket at once, so that new clients go to
    the other workers' sockets.  A second signal still ends it at once.
    """

    alarm_margin = 1.0  # the loop ends itself at the deadline; the alarm is for a handler that holds it

    def __init__(self, reactor: Reactor, servers: list[Any], drain_timeout: float | None, own_sockets: bool) -> None:
        super().__init__(reactor, servers, drain_timeout)
        self.own_sockets = own_sockets

    def begin(self) -> None:
        self.reactor.call_soon_threadsafe(self._drain)  # signal-safe: the loop does the rest

    def _drain(self) -> None:
        for server in self.servers:
            admission = server._serving.admission
            if admission is not None:
                admission.stop_taking()
            if self.own_sockets:
                _take_the_rest(server)
            server.request_table.add_observer(self._changed)
        if self.deadline is not None:
            self.reactor.call_later(max(0.0, self.deadline - time.monotonic()), self._time_up)
        self._check()

    def _changed(self, record: Any, old: Any, event: Any, new: Any, reason: str) -> None:
        if new in FINAL_STATES:  # any thread: look once the table is settled, on the loop
            self.reactor.call_soon_threadsafe(self._check)

    def _check(self) -> None:
        if not any(len(server.request_table) for server in self.servers):
            self.reactor.stop()

    def _time_up(self) -> None:
        left = sum(len(server.request_table) for server in self.servers)
        log.info("worker %d: drain timeout (%g s) passed with %d request(s) left", os.getpid(), self.drain_timeout, left)
        self.reactor.stop()


def run_worker(get_servers: Callable[[], list[Any]], *, ready_fd: int, lifeline_fd: int, close_fds: list[int],
               drain_timeout: float | None, setup: Callable[[list[Any]], Any] | None,
               own_sockets: bool, report: socket.socket | None = None) -> NoReturn:  # fmt: skip
    """The body of a forked worker (see the module docstring); ends the process with ``os._exit``.

    ``get_servers``: returns the servers to serve (the supervisor's, or
    new ones with ``own_sockets``); ``ready_fd``: the write end of the
    ready pipe; ``lifeline_fd``: the read end of the supervisor's lifeline;
    ``close_fds``: the supervisor's descriptors, closed here at once;
    ``report``: with a supervisor's dashboard, this worker's end of its
    reports' socketpair (reactor/dashboard/report.py), else None.
    """
    status = 1
    try:
        _leave_the_supervisor(close_fds)
        status = _serve(get_servers, ready_fd, lifeline_fd, drain_timeout, setup, own_sockets, report)
    except BaseException:
        try:
            log.exception("worker %d failed", os.getpid())
        except BaseException:
            pass
    finally:
        try:
            logging.shutdown()  # flush what the handlers hold: os._exit would drop it
        finally:
            os._exit(status)


def _leave_the_supervisor(close_fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    for signum in SUPERVISOR_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _serve(get_servers: Callable[[], list[Any]], ready_fd: int, lifeline_fd: int, drain_timeout: float | None,
           setup: Any, own_sockets: bool, report: socket.socket | None) -> int:  # fmt: skip
    try:
        servers = list(get_servers())
        if own_sockets:
            _check_own(servers)
    except Exception as exc:
        if not isinstance(exc, (UsageError, OSError)):
            raise  # a bug: logged with its traceback by run_worker (and the pipe closed unread)
        # (the supervisor logs it)
        _report(ready_fd, {"error": str(exc)})
        return 2
    reactor = Reactor()
    stopper = Draining(reactor, servers, drain_timeout, own_sockets)
    stopper.install()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # still the supervisor's
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)  # a SIGTERM that came meanwhile: now
    status = 0
    reporter = None
    try:
        try:
            if not own_sockets:
                _spread(servers)
            if setup is not None:
                setup(servers)
            for server in servers:
                reactor.add_server(server)
            reactor.add_reader(lifeline_fd, _orphaned, reactor, lifeline_fd)
            if report is not None:  # the supervisor serves a dashboard: report to it
                from .dashboard.report import Reporter

                reporter = Reporter(reactor, report)
            _report(ready_fd, {"servers": [server.request_table.name for server in servers]})
            stopper.run()
        finally:
            close_servers(servers, reactor, deadline=stopper.deadline, hurry=stopper.second is not None)
            if reporter is not None:
                reporter.close()
    except KeyboardInterrupt:
        status = stopper.exit_status()
    finally:
        stopper.restore()
    return status


def _spread(servers: list[Any]) -> None:
    """On a listener every worker shares, take one connection per readiness
    (unless ``requests_per_wakeup`` was set): every worker is woken, so a
    burst of clients spreads over them, the least busy taking the most,
    instead of the first one awake taking up to ``PER_WAKEUP`` of them."""
    for server in servers:
        if server.socket_type == socket.SOCK_STREAM and server.requests_per_wakeup == PER_WAKEUP:
            server.requests_per_wakeup = 1


def _check_own(servers: list[Any]) -> None:
    """With ``reuse_port``: every socket is a TCP or UDP one with SO_REUSEPORT set."""
    for server in servers:
        sock, name = server.socket, server.request_table.name
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise UsageError(f"reuse_port: {name} cannot be a socket per worker (TCP and UDP only); "
                             "serve it from a shared socket instead")  # fmt: skip
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise UsageError(f"reuse_port: {name} was bound without SO_REUSEPORT (set allow_reuse_port = True)")


def _take_the_rest(server: Any) -> None:
    """Take what the kernel queued on this worker's own socket, then close it (see ``Draining``)."""
    if server.fileno() == -1:
        return
    for _ in range(SWEEP):
        if not server._handle_request_noblock():
            break
    server.socket.close()  # leaves the SO_REUSEPORT group: new clients go to the others


def _orphaned(reactor: Reactor, fd: int) -> None:
    reactor.remove_reader(fd)
    log.warning("worker %d: the supervisor is gone; stopping", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop, as if the supervisor had asked


def _report(fd: int, message: dict[str, Any]) -> None:
    """Write ``message`` to the ready pipe as JSON and close it (the supervisor reads to EOF)."""
    data = json.dumps(message).encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # the supervisor is gone: the lifeline says so too
    finally:
        os.close(fd)
