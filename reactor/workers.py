"""Worker processes under a supervisor: N processes, each with its own reactor, serving the same addresses.

    def make_servers():
        return [reactor.TCPServer(("0.0.0.0", 9000), Handler, dispatch=reactor.ThreadPool(8))]

    status = reactor.Workers(make_servers, count=4).run()   # until SIGTERM or SIGINT

The process that calls ``run()`` becomes the supervisor (docs/workers.md):
it forks the workers (reactor/worker.py runs in each), serves nothing
itself, and owns them:

* **The sockets.**  ``make_servers()`` runs once, here, before the first
  fork; the workers serve the servers they inherit, all sharing each
  listening socket and its accept queue.  The supervisor closes its
  servers last, which removes the Unix socket files it created (and none
  that a server made with ``from_socket`` was given).  With
  ``reuse_port=True`` each worker calls ``make_servers()`` and binds its
  own SO_REUSEPORT socket (TCP and UDP only).
* **Restarts.**  A worker that exits unasked is logged, counted and
  replaced after a back-off that doubles for each worker in a row that
  died within ``min_uptime`` of its start; the ``max_quick_failures``-th
  such death stops everything, and ``run()`` returns 1.
* **SIGTERM, SIGINT**: every worker gets SIGTERM and stops gracefully
  (``drain_timeout``, then ``KILL_GRACE`` more before SIGKILL); ``run()``
  returns 0.  A second signal is passed on (the workers stop at once) and
  ``run()`` returns 128 + its number.
* **SIGHUP**: one worker at a time, a new one starts, and the old one gets
  SIGTERM only once the new one serves; the next waits for the old one's
  exit.  With shared sockets no connection is refused meanwhile.
* **A dead supervisor** (even SIGKILLed) closes each worker's lifeline
  pipe: the workers stop gracefully.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import sys
import threading
import time
from typing import Any, Callable

from .errors import UsageError
from .stopper import close_servers
from .worker import SUPERVISOR_SIGNALS, WorkerProcess, run_worker

__all__ = ["Workers", "KILL_GRACE"]

log = logging.getLogger("reactor")

#: Seconds a stopping worker has beyond ``drain_timeout`` before it gets SIGKILL.
KILL_GRACE = 5.0


class _Slot:
    """One of the ``count`` places: its serving worker, the one starting to take over, and when the next may start."""

    __slots__ = ("index", "current", "next", "start_at")

    def __init__(self, index: int) -> None:
        self.index = index
        self.current: WorkerProcess | None = None
        self.next: WorkerProcess | None = None
        self.start_at = 0.0


class Workers:
    """A supervisor of ``count`` worker processes serving the servers ``make_servers()`` returns.

    ``make_servers``: a callable returning a list of bound servers (any of
    the four families, any dispatch strategy, TLS), not yet served.  Called
    once in the supervisor (shared sockets), or in every worker with
    ``reuse_port=True`` (it must then set ``allow_reuse_port = True`` on
    TCP and UDP server classes, and make no Unix server).
    ``setup(servers)``: called in each worker before it serves (drop
    privileges, open a per-process resource); a worker whose setup raises
    dies and is restarted like any other.  ``on_serving(names)``: called in
    the supervisor once every first worker serves, with the servers' names
    (``tcp4 127.0.0.1:9000``).  ``drain_timeout``: seconds a stopping
    worker gives the requests it took (None: no limit).  The rest tune the
    restarts (see the module docstring).  ``counters`` counts ``started``,
    ``died``, ``replaced`` and ``killed`` workers.
    """

    def __init__(
        self, make_servers: Callable[[], list[Any]], count: int, *, reuse_port: bool = False,
        drain_timeout: float | None = 10.0, setup: Callable[[list[Any]], Any] | None = None,
        on_serving: Callable[[list[str]], Any] | None = None, min_uptime: float = 1.0, max_quick_failures: int = 5,
        backoff: float = 0.1, max_backoff: float = 5.0, ready_timeout: float = 30.0, dashboard: Any = None,
        dashboard_remote: bool = False,
    ) -> None:  # fmt: skip
        for name, value, least in (("count", count, 1), ("max_quick_failures", max_quick_failures, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UsageError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if not callable(make_servers):
            raise UsageError(f"make_servers must be a callable returning servers, not {make_servers!r}")
        seconds = {"min_uptime": min_uptime, "backoff": backoff, "max_backoff": max_backoff,
                   "ready_timeout": ready_timeout, "drain_timeout": 0 if drain_timeout is None else drain_timeout}
        for name, value in seconds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise UsageError(f"{name} must be a finite number of seconds, 0 or more, not {value!r}")
        self.make_servers = make_servers
        self.count = count
        self.reuse_port = reuse_port
        self.drain_timeout = drain_timeout
        self.setup = setup
        self.on_serving = on_serving
        self.min_uptime = min_uptime
        self.max_quick_failures = max_quick_failures
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.ready_timeout = ready_timeout
        self.counters = {"started": 0, "died": 0, "replaced": 0, "killed": 0}
        self._servers: list[Any] = []  # the supervisor's own (shared sockets)
        self._slots = [_Slot(i) for i in range(count)]
        self._workers: dict[int, WorkerProcess] = {}  # pid -> every worker alive
        self._generation = 0
        self._stopping = False
        self._status = 0
        self._second: int | None = None
        self._streak = 0  # workers in a row that died within min_uptime of their start
        self._names: list[str] | None = None
        self._announced = False
        self._error: str | None = None  # a worker could not make its servers before any served
        self._wakeup: tuple[int, int] | None = None
        self._lifeline: tuple[int, int] | None = None
        self.dashboard_address, self.dashboard_remote = dashboard, dashboard_remote
        self._dash: Any = None  # the SupervisorDashboard (reactor/dashboard/supervisor.py) while run() runs

    @property
    def dashboard(self) -> Any:
        """The ``Dashboard`` the supervisor serves (``url``) while ``run()`` runs with ``dashboard=``; else None."""
        return None if self._dash is None else self._dash.dashboard

    @property
    def pids(self) -> list[int]:
        """The pids of the workers alive now (serving, starting or stopping)."""
        return list(self._workers)

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM or SIGINT; return the exit status.

        0 after a graceful stop; 1 if workers kept dying at start; 128 + N
        after a second signal N.  Raises ``UsageError`` if called off the
        main thread or a second time, or if a worker could not make its servers
        (``reuse_port``) before any worker served; what ``make_servers()``
        raises in the supervisor propagates.  Every worker is reaped and
        every server closed before it returns or raises.
        """
        if threading.current_thread() is not threading.main_thread():
            raise UsageError("Workers.run() must be called from the main thread (it handles signals)")
        if self._wakeup is not None or self.counters["started"]:
            raise UsageError("Workers.run() runs once: make a new Workers to start again")
        if threading.active_count() > 1:
            log.warning("Workers.run(): %d threads are running; a forked worker gets only this one",
                        threading.active_count())  # fmt: skip
        if not self.reuse_port:
            self._servers = list(self.make_servers())
        previous: dict[int, Any] = {}
        try:
            if self.dashboard_address is not None:  # before any fork: a bind error stops everything
                from .dashboard.supervisor import SupervisorDashboard

                self._dash = SupervisorDashboard(self, self.dashboard_address, allow_remote=self.dashboard_remote)
            for server in self._servers:
                # O_NONBLOCK belongs to the open file description, which every
                # worker shares: set once here, a worker serving (and leaving)
                # the socket finds it nonblocking and leaves it so; otherwise
                # the first to leave would make the others' accept() block.
                server.socket.setblocking(False)
            self._wakeup = _pipe()
            self._lifeline = os.pipe()
            for signum in SUPERVISOR_SIGNALS:
                previous[signum] = signal.signal(signum, _noted)
            previous_fd = signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
            try:
                self._supervise()
            finally:
                signal.set_wakeup_fd(previous_fd)
        finally:
            try:
                self._end_all()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                for fd in (*(self._wakeup or ()), *(self._lifeline or ())):
                    os.close(fd)
                self._wakeup = self._lifeline = None
                if self._dash is not None:
                    self._dash.close()
                    self._dash = None
                close_servers(self._servers)
        if self._error is not None:
            raise UsageError(self._error)
        return self._status

    def _supervise(self) -> None:
        poller_timeout: float | None
        while True:
            now = time.monotonic()
            self._reap()
            if not self._stopping:
                self._tend(now)
            self._enforce(now)
            if self._stopping and not self._workers:
                return
            wake = self._next_wake(now)
            poller_timeout = None if wake is None else max(0.0, wake - time.monotonic())
            self._wait(poller_timeout)

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a signal, a worker's report or ``timeout`` seconds; then handle what came."""
        assert self._wakeup is not None
        poller = select.poll()
        poller.register(self._wakeup[0], select.POLLIN)
        reporting = {w.ready_fd: w for w in self._workers.values() if w.ready_fd is not None}
        for fd in reporting:
            poller.register(fd, select.POLLIN)
        dash, wait = self._dash, None if timeout is None else math.ceil(timeout * 1000)
        if dash is not None:  # its reactor, plugged in: its descriptor, and its timers bound the wait
            poller.register(dash.fileno(), select.POLLIN)
            wait = dash.poll_ms(timeout)
        events = poller.poll(wait)
        if dash is not None:
            dash.run(any(fd == dash.fileno() for fd, _ in events))
        for fd, _ in events:
            if fd == self._wakeup[0]:
                for signum in _drain(fd):
                    self._on_signal(signum)
            elif fd in reporting:
                self._read_report(reporting[fd])

    # -------------------------------------------------------------- signals

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name
            if not self._stopping:
                log.info("%s: stopping %d worker(s)", name, len(self._workers))
                self._stop(0)
            elif self._second is None:
                self._second = signum
                self._status = 128 + signum
                log.warning("%s again: stopping the workers at once", name)
                deadline = time.monotonic() + KILL_GRACE
                for worker in self._workers.values():
                    worker.send(signal.SIGTERM)
                    worker.kill_at = deadline if worker.kill_at is None else min(worker.kill_at, deadline)
        elif signum == signal.SIGHUP and not self._stopping:
            self._generation += 1
            log.info("SIGHUP: replacing the %d worker(s) one at a time", self.count)

    def _stop(self, status: int) -> None:
        self._stopping = True
        self._status = status
        now = time.monotonic()
        for worker in self._workers.values():
            self._terminate(worker, now)

    def _terminate(self, worker: WorkerProcess, now: float) -> None:
        if worker.stopping:
            return
        worker.stopping = True
        worker.send(signal.SIGTERM)
        worker.kill_at = None if self.drain_timeout is None else now + self.drain_timeout + KILL_GRACE

    # ------------------------------------------------------------- starting

    def _tend(self, now: float) -> None:
        """Start what is missing or due for replacement; reset the failure streak once a worker settles."""
        for worker in self._workers.values():
            if worker.ready and not worker.settled and now - worker.started >= self.min_uptime:
                worker.settled = True
                self._streak = 0
            if not (worker.ready or worker.stopping or worker.killed) and now - worker.started >= self.ready_timeout:
                log.warning("worker pid %d did not report serving within %g s: SIGKILL", worker.pid, self.ready_timeout)
                worker.send(signal.SIGKILL)  # its death counts as a failure to start
                worker.killed = True
        replacing = any(slot.next is not None and slot.current is not None for slot in self._slots) or any(
            worker.stopping for worker in self._workers.values()
        )
        for slot in self._slots:
            if slot.next is not None or now < slot.start_at:
                continue
            if slot.current is None:
                self._start(slot)
            elif slot.current.generation < self._generation and not replacing:
                self._start(slot)
                replacing = True

    def _start(self, slot: _Slot) -> None:
        assert self._wakeup is not None and self._lifeline is not None
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        close = [*self._wakeup, self._lifeline[1], read_fd]
        close += [w.ready_fd for w in self._workers.values() if w.ready_fd is not None]
        ours, theirs = self._dash.pair() if self._dash is not None else (None, None)  # its reports' socketpair
        if ours is not None:
            close.append(ours.fileno())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # or the child's copy of the buffer may come out twice
            except (OSError, ValueError):
                pass
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read_fd)
            os.close(write_fd)
            for sock in (ours, theirs) if ours is not None else ():
                sock.close()
            log.error("cannot fork a worker: %s", exc)
            self._failed(slot, quick=True)
            return
        if pid == 0:  # the worker: never returns
            servers = self._servers
            if self._dash is not None:
                self._dash.leave_in_child()
            run_worker(self.make_servers if self.reuse_port else (lambda: servers), ready_fd=write_fd,
                       lifeline_fd=self._lifeline[0], close_fds=close, drain_timeout=self.drain_timeout,
                       setup=self.setup, own_sockets=self.reuse_port, report=theirs)  # fmt: skip
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        worker = WorkerProcess(pid, slot.index, self._generation, read_fd)
        self._workers[pid] = worker
        if theirs is not None:
            theirs.close()
            self._dash.started(worker, ours)
        slot.next = worker
        self.counters["started"] += 1
        log.info("worker %d started (pid %d)", slot.index + 1, pid)

    def _read_report(self, worker: WorkerProcess) -> None:
        """Read the worker's ready pipe; at EOF, what it said is complete: act on it."""
        assert worker.ready_fd is not None
        while True:
            try:
                chunk = os.read(worker.ready_fd, 65536)
            except BlockingIOError:
                return  # more to come
            except OSError:
                chunk = b""
            if not chunk:
                break
            worker.report += chunk
        worker.ready_fd = _close(worker.ready_fd)
        try:
            report = json.loads(worker.report.decode()) if worker.report else {}
        except ValueError:
            report = {}
        if "error" in report:
            log.error("worker %d (pid %d) cannot start: %s", worker.slot + 1, worker.pid, report["error"])
            if self._names is None and not self._stopping:  # and none ever could: a usage error
                self._error = str(report["error"])
                self._stop(2)
        elif "servers" in report:
            self._serving(worker, [str(name) for name in report["servers"]])

    def _serving(self, worker: WorkerProcess, names: list[str]) -> None:
        worker.ready = True
        if self._names is None:
            self._names = names
        elif names != self._names and not self._stopping:
            self._error = f"the workers serve different addresses ({self._names} and {names}): port 0 with reuse_port?"
            log.error("%s", self._error)
            self._stop(2)
            return
        slot = self._slots[worker.slot]
        old, slot.current, slot.next = slot.current, worker, None
        log.info("worker %d serving (pid %d)", slot.index + 1, worker.pid)
        if old is not None and old.pid in self._workers:
            self.counters["replaced"] += 1
            log.info("worker %d: pid %d replaces pid %d, which stops", slot.index + 1, worker.pid, old.pid)
            self._terminate(old, time.monotonic())
        if not self._announced and all(s.current is not None and s.current.ready for s in self._slots):
            self._announced = True
            if self.on_serving is not None:
                self.on_serving(list(names))

    # -------------------------------------------------------------- reaping

    def _reap(self) -> None:
        for pid, worker in list(self._workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours any more (someone else reaped it)
                done, status = pid, 0
            if done:
                self._exited(worker, status)

    def _exited(self, worker: WorkerProcess, status: int) -> None:
        del self._workers[worker.pid]
        if self._dash is not None:
            self._dash.exited(worker)  # out of the view at once
        if worker.ready_fd is not None:  # what it wrote before it exited is all in the pipe
            self._read_report(worker)
        how = WorkerProcess.describe(status)
        slot = self._slots[worker.slot]
        if slot.current is worker:
            slot.current = None
        if slot.next is worker:
            slot.next = None
        if worker.stopping or self._stopping:
            log.info("worker %d (pid %d) %s", worker.slot + 1, worker.pid, how)
            return
        self.counters["died"] += 1
        quick = not worker.ready or time.monotonic() - worker.started < self.min_uptime
        log.warning("worker %d (pid %d) %s%s", worker.slot + 1, worker.pid, how,
                    "" if worker.ready else " before it served")  # fmt: skip
        self._failed(slot, quick)

    def _failed(self, slot: _Slot, quick: bool) -> None:
        """A worker of ``slot`` died unasked (or could not be forked): give up, or start another after a back-off."""
        self._streak = self._streak + 1 if quick else 0
        if self._streak >= self.max_quick_failures:
            log.error("%d workers in a row died within %g s of their start: giving up", self._streak, self.min_uptime)
            self._stop(1)
            return
        delay = min(self.max_backoff, self.backoff * 2**self._streak)
        slot.start_at = time.monotonic() + delay
        log.warning("starting another worker %d in %.1f s", slot.index + 1, delay)

    def _enforce(self, now: float) -> None:
        for worker in self._workers.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("worker %d (pid %d) still running after SIGTERM: SIGKILL", worker.slot + 1, worker.pid)
                worker.send(signal.SIGKILL)
                worker.kill_at = None
                self.counters["killed"] += 1

    def _next_wake(self, now: float) -> float | None:
        times = [w.kill_at for w in self._workers.values() if w.kill_at is not None]
        if not self._stopping:
            times += [s.start_at for s in self._slots if s.next is None and s.start_at > now]
            times += [w.started + self.min_uptime for w in self._workers.values() if w.ready and not w.settled]
            times += [w.started + self.ready_timeout for w in self._workers.values()
                      if not (w.ready or w.stopping or w.killed)]  # fmt: skip
        return min(times) if times else None

    def _end_all(self) -> None:
        """On the way out: no worker may outlive ``run()``.  Normally there is none left by now."""
        for worker in self._workers.values():
            log.warning("worker %d (pid %d) still running as the supervisor ends: SIGKILL", worker.slot + 1, worker.pid)
            worker.send(signal.SIGKILL)
        for pid, worker in list(self._workers.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            worker.ready_fd = _close(worker.ready_fd)
            del self._workers[pid]


# ---------------------------------------------------------------- helpers


def _noted(signum: int, frame: Any) -> None:
    """The supervisor's handler: nothing here; ``set_wakeup_fd`` has written the signal's number."""


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)  # set_wakeup_fd needs it: a full pipe must not block a handler
    return read_fd, write_fd


def _drain(fd: int) -> list[int]:
    """The signal numbers waiting in the wakeup pipe."""
    found = []
    while True:
        try:
            data = os.read(fd, 512)
        except (BlockingIOError, InterruptedError):
            return found
        if not data:
            return found
        found += list(data)


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
    return None
