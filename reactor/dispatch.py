"""Dispatch strategies: where ``finish_request`` runs, and telling the loop it is done.

A strategy has one job: run a request's handler somewhere and report when
it is over.  The three, for both kinds of handler:

    strategy    classic handler                      framed handler / datagram
    Inline      in the loop; the loop waits           in the loop, on the buffered message
    ThreadPool  a worker owns the socket              a worker runs the handler; the loop writes
    Fork        a child owns the socket               a child runs it; its output comes back
                (reactor/forking.py)                  through a pipe; the loop writes it

Rules every strategy keeps:

* The loop never blocks on a full pool.  ``has_room()`` says whether a
  request can start now; while it cannot, requests wait in the table
  (READY): framed messages on their connection, classic ones in the
  strategy's bounded queue, and beyond ``max_queue`` the server stops
  accepting (or reading datagrams) until ``on_room`` callbacks say so.
* Every request ends through the server's own ``shutdown_request``, on the
  thread or in the process that ran it, and below the hooks through one
  path, ``BaseServer._end_request`` (``mark_failed`` when the handler
  raised), which tells requests apart by one rule (``ends_itself``), never
  by their type.
* A child is reaped when it exits (a pidfd in the selector), only our own
  children are ever waited for, and a fork is refused while our worker
  threads are alive (fork after threads is unsafe: see ``os.fork``).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from .errors import UsageError
from .table import Event, State, describe_peer

__all__ = ["Strategy", "Inline", "ThreadPool", "run_request", "live_worker_threads"]

log = logging.getLogger("reactor")

# Our worker threads alive in this process, for the fork-after-threads rule.
# (A fact about the process, not configuration: the one module-level state.)
_threads_lock = threading.Lock()
_live_threads = 0


def _thread_started() -> None:
    global _live_threads
    with _threads_lock:
        _live_threads += 1


def _thread_ended() -> None:
    global _live_threads
    with _threads_lock:
        _live_threads -= 1


def live_worker_threads() -> int:
    """How many of reactor's worker threads (pools, ThreadingMixIn) are alive."""
    return _live_threads


def run_request(server: Any, request: Any, client_address: Any) -> None:
    """``finish_request`` with the lifecycle's error handling, then ``shutdown_request``."""
    try:
        server.finish_request(request, client_address)
    except Exception:
        try:
            server.handle_error(request, client_address)  # first, as the stdlib does (and inline, here)
        finally:
            mark_failed(server, request, "exception in the handler")
    except BaseException:
        mark_failed(server, request, "KeyboardInterrupt/SystemExit")
        raise
    finally:
        server.shutdown_request(request)


def ends_itself(request: Any) -> bool:
    """Is ``request`` one the reactor made itself, which ends itself?

    The one rule that tells requests apart, used wherever their ends differ
    (``BaseServer._end_request``, ``Fork``).  A framed handler's
    ``MessageRequest`` ends itself (``end()``): its maker sends the reply the
    handler wrote, and a forked child hands that reply back to the parent.
    Any other request is the handler's own (an accepted socket, a
    ``(data, socket)`` pair): its handler answers the client itself, and it
    ends through its record, found in the table by identity.  A request that
    ends itself says whether it has (``done``) and has ``end(failed)``.
    """
    return getattr(request, "done", None) is not None


def mark_failed(server: Any, request: Any, reason: str) -> None:
    """Record that ``request``'s handler raised (the record fails; no reply is sent)."""
    server._end_request(request, Event.ERROR, reason)


def describe_request(server: Any, request: Any) -> str:
    """One running request, for a log line: the server, its record, the peer and the state."""
    table = server.request_table
    record = table.find(request)
    if record is not None:
        return f"{table.name} #{record.id} from {describe_peer(record.peer)} ({record.state.name})"
    peer = getattr(getattr(request, "connection", None), "client_address", None)
    return f"{table.name}: a message from {describe_peer(peer)}"  # a framed message: its connection holds the record


def _start_record(server: Any, request: Any) -> None:
    """A queued request's turn has come: READY -> PROCESSING."""
    record = server.request_table.find(request)
    if record is not None and record.state is State.READY:
        server.request_table.transition(record, Event.DISPATCH, "a worker is free")


class Strategy:
    """Base class.  ``submit`` runs a request; the rest lets the loop wait for room."""

    name = "strategy"
    inline = False

    def __init__(self) -> None:
        self._on_room: list[Callable[[], None]] = []
        self._users = 0  # servers using this strategy; the last one to close closes it

    def has_room(self) -> bool:
        """Can a request start now?"""
        return True

    def saturated(self) -> bool:
        """Is even the queue full (stop taking input)?"""
        return False

    def submit(self, server: Any, request: Any, client_address: Any) -> None:
        raise NotImplementedError

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from any thread) whenever room frees up."""
        if callback not in self._on_room:
            self._on_room.append(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        if callback in self._on_room:
            self._on_room.remove(callback)

    def _room_freed(self) -> None:
        for callback in tuple(self._on_room):
            callback()

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop; with ``wait``, let running work end (up to ``timeout`` seconds)."""

    def claim(self) -> None:
        """A server starts using this strategy (one closed by its last user opens again)."""
        if self._users == 0:
            self._reopen()
        self._users += 1

    def _reopen(self) -> None:
        """Take requests again after ``close()``."""

    def release(self, wait: bool = True, timeout: float | None = None) -> None:
        """A server is done with it; the last one closes it (so a strategy can be shared)."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.close(wait=wait, timeout=timeout)

    def statistics(self) -> dict[str, Any]:
        return {"strategy": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Inline(Strategy):
    """Run the handler right here, in the loop (socketserver's plain servers)."""

    name = "inline"
    inline = True

    def submit(self, server: Any, request: Any, client_address: Any) -> None:
        server.finish_request(request, client_address)
        server.shutdown_request(request)


class _Bounded(Strategy):
    """A strategy with a bounded number of running requests and a bounded queue."""

    def __init__(self, limit: int, max_queue: int) -> None:
        super().__init__()
        if limit < 1:
            raise UsageError(f"{type(self).__name__} needs room for at least 1 request, not {limit!r}")
        if max_queue < 0:
            raise UsageError(f"max_queue must be 0 or more, not {max_queue!r}")
        self.limit = limit
        self.max_queue = max_queue
        self.running = 0
        self.completed = 0
        self.rejected = 0
        self._queue: deque[tuple[Any, Any, Any]] = deque()
        self._lock = threading.Lock()
        self._closing = False

    def has_room(self) -> bool:
        return self.running + len(self._queue) < self.limit

    def saturated(self) -> bool:
        return self.running + len(self._queue) >= self.limit + self.max_queue

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _reopen(self) -> None:
        with self._lock:
            self._closing = False

    def submit(self, server: Any, request: Any, client_address: Any) -> None:
        with self._lock:
            if self._closing:
                self.rejected += 1
                raise UsageError(f"{self!r} is closed: no new requests")
            if self.running >= self.limit:
                if len(self._queue) >= self.max_queue:
                    self.rejected += 1
                    raise UsageError(f"{self!r} is full ({self.running} running, {len(self._queue)} queued)")
                self._queue.append((server, request, client_address))
                return
            self.running += 1
        self._start(server, request, client_address)

    def _done(self) -> None:
        """A request ended: start the next queued one, or make room."""
        with self._lock:
            self.completed += 1
        self._pass_on()

    def _pass_on(self) -> None:
        """A running slot is free: hand it to the next queued request, or give it back.

        A queued request that cannot start fails (logged, its record
        ended, its connection closed) and the slot goes on to the next one:
        a loop, not a recursion, however many fail in a row.
        """
        while True:
            with self._lock:
                if self._queue and not self._closing:
                    job = self._queue.popleft()
                else:
                    self.running -= 1
                    job = None
            if job is None:
                break
            try:
                self._start(*job, reuse=True)
                break
            except Exception:
                server, request, client_address = job
                log.exception("%s: a queued request could not start", server.request_table.name)
                mark_failed(server, request, "could not start")
                server.shutdown_request(request)
        self._room_freed()

    def _start(self, server: Any, request: Any, client_address: Any, reuse: bool = False) -> None:
        """Run one request (``reuse``: its slot was handed on by ``_pass_on``).

        If it raises, the request did not start, and the slot it was to
        use must not stay taken: with ``reuse``, ``_pass_on`` hands it on;
        without, ``_start`` gives it back itself.
        """
        raise NotImplementedError

    def _drop_queued(self) -> None:
        with self._lock:
            jobs, self._queue = list(self._queue), deque()
        for server, request, _ in jobs:
            server._end_request(request, Event.ERROR, "dropped: the server closed before its turn")
            server.shutdown_request(request)

    def statistics(self) -> dict[str, Any]:
        return {
            "strategy": self.name, "limit": self.limit, "running": self.running, "queued": len(self._queue),
            "completed": self.completed, "rejected": self.rejected,
        }  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.limit}, max_queue={self.max_queue})"


class ThreadPool(_Bounded):
    """At most ``max_workers`` handler threads; ``max_queue`` more requests wait.

    A classic handler's worker owns the socket (blocking, with the
    handler's ``timeout``) until ``shutdown_request``.  A framed handler's
    worker runs it on the buffered message; the reply goes back to the loop
    through its wakeup socketpair, and the loop writes it.  Workers start as
    needed and stay, idle, until ``close()``.
    """

    name = "thread"

    def __init__(self, max_workers: int = 8, max_queue: int | None = None) -> None:
        super().__init__(max_workers, max_workers * 4 if max_queue is None else max_queue)
        self._jobs: deque[tuple[Any, Any, Any]] = deque()
        self._wake = threading.Condition(self._lock)
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._running: dict[int, tuple[Any, Any]] = {}  # worker thread id -> (server, request) it runs

    @property
    def max_workers(self) -> int:
        return self.limit

    def _start(self, server: Any, request: Any, client_address: Any, reuse: bool = False) -> None:
        with self._lock:
            self._jobs.append((server, request, client_address))
            if reuse:
                return  # the worker that called us takes it on its next turn
            if self._idle > len(self._jobs) - 1:
                self._wake.notify()
                return
            worker = threading.Thread(target=self._work, name=f"reactor worker {len(self._workers) + 1}", daemon=True)
            self._workers.append(worker)
        _thread_started()
        worker.start()

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._jobs and not self._closing:
                        self._idle += 1
                        self._wake.wait()
                        self._idle -= 1
                    if not self._jobs:
                        return  # closing, nothing left
                    server, request, client_address = self._jobs.popleft()
                    self._running[threading.get_ident()] = (server, request)
                _start_record(server, request)
                try:
                    run_request(server, request, client_address)
                except BaseException:
                    log.exception("%s: a worker's request ended with an exiting exception", server.request_table.name)
                finally:
                    self._running.pop(threading.get_ident(), None)
                    self._done()
        finally:
            _thread_ended()

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests, drop queued ones; with ``wait``, join the workers.

        Workers still busy after ``timeout`` seconds get their classic
        connection shut down under them (their blocking reads end), then
        are joined for one more second at most.
        """
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        self._drop_queued()
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(w.is_alive() for w in self._workers):
            running = list(self._running.values())
            log.warning(
                "%r: drain timeout (%.3g s) passed with %d request(s) still running; shutting their connections "
                "down: %s", self, timeout, len(running), "; ".join(describe_request(*job) for job in running),
            )  # fmt: skip
            for _, request in running:
                _shut(request)  # a handler blocked reading its socket gets EOF
            for worker in self._workers:
                worker.join(1.0)
        self._workers = [w for w in self._workers if w.is_alive()]

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "threads": len(self._workers), "idle": self._idle}


def _shut(request: Any) -> None:
    """Shut a stuck request down under its handler: a socket's blocking reads
    end (a framed message's ``shutdown`` does nothing; a datagram pair has none)."""
    shutdown = getattr(request, "shutdown", None)
    if shutdown is None:
        return
    try:
        shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            log.debug("shutting a stuck connection down failed: %s", exc)
