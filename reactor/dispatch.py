"""Dispatch strategies: where ``finish_request`` runs, and telling the loop it is done.

A strategy has one job: run a request's handler somewhere and report when
it is over.  The three, for both kinds of handler:

    strategy    classic handler                      framed handler / datagram
    Inline      in the loop; the loop waits           in the loop, on the buffered message
    ThreadPool  a worker owns the socket              a worker runs the handler; the loop writes
    Fork        a child owns the socket               a child runs it; its output comes back
                                                      through a pipe; the loop writes it

Rules every strategy keeps:

* The loop never blocks on a full pool.  ``has_room()`` says whether a
  request can start now; while it cannot, requests wait in the table
  (READY): framed messages on their connection, classic ones in the
  strategy's bounded queue, and beyond ``max_queue`` the server stops
  accepting (or reading datagrams) until ``on_room`` callbacks say so.
* Every request ends through the server's own ``shutdown_request``, on the
  thread or in the process that ran it.
* A child is reaped when it exits (a pidfd in the selector), only our own
  children are ever waited for, and a fork is refused while our worker
  threads are alive (fork after threads is unsafe: see ``os.fork``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from handlers.message import MessageRequest

from .errors import UsageError
from .table import FINAL_STATES, Event, Kind, State

__all__ = ["Strategy", "Inline", "ThreadPool", "Fork", "run_request"]

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
        mark_failed(server, request, "exception in the handler")
        server.handle_error(request, client_address)
    except BaseException:
        mark_failed(server, request, "KeyboardInterrupt/SystemExit")
        raise
    finally:
        server.shutdown_request(request)


def mark_failed(server: Any, request: Any, reason: str) -> None:
    """Record that ``request``'s handler raised (the record fails; no reply is sent)."""
    if isinstance(request, MessageRequest):
        request.failed = True  # a stream connection fails when the reply comes back
    server.request_table.finish(request, Event.ERROR, reason)


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
            if self._queue and not self._closing:
                job = self._queue.popleft()
            else:
                self.running -= 1
                job = None
        if job is not None:
            self._start(*job, reuse=True)
        self._room_freed()

    def _start(self, server: Any, request: Any, client_address: Any, reuse: bool = False) -> None:
        """Run one request (``reuse``: called by the worker that just finished one)."""
        raise NotImplementedError

    def _drop_queued(self) -> None:
        with self._lock:
            jobs, self._queue = list(self._queue), deque()
        for server, request, _ in jobs:
            server.request_table.finish(request, Event.ERROR, "dropped: the server closed before its turn")
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
                _start_record(server, request)
                try:
                    run_request(server, request, client_address)
                except BaseException:
                    log.exception("%s: a worker's request ended with an exiting exception", server.request_table.name)
                finally:
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
            log.warning("%r: workers still busy after %ss; shutting their connections down", self, timeout)
            for job in list(self._jobs):
                _shut(job[1])
            for worker in self._workers:
                worker.join(1.0)
        self._workers = [w for w in self._workers if w.is_alive()]

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "threads": len(self._workers), "idle": self._idle}


class Fork(_Bounded):
    """At most ``max_children`` child processes, one per request.

    A classic handler's child owns the socket; the parent closes its copy
    at once.  A framed handler's child runs it on the message and sends its
    output back through a pipe, which the parent reads (the pipe's child is
    a ``Kind.CHILD`` record in the table) and writes to the client.  The
    child never returns to the parent's loop: it ends with ``os._exit``.
    A child killed by a signal fails its request (the connection is closed
    and the error logged); the server carries on.
    """

    name = "fork"

    def __init__(self, max_children: int = 40, max_queue: int | None = None) -> None:
        super().__init__(max_children, max_children if max_queue is None else max_queue)
        self.children: dict[int, dict[str, Any]] = {}  # pid -> what the parent keeps about it
        self.killed = 0

    @property
    def max_children(self) -> int:
        return self.limit

    def _start(self, server: Any, request: Any, client_address: Any, reuse: bool = False) -> None:
        if live_worker_threads():
            self._done()
            raise UsageError(
                f"refusing to fork with {live_worker_threads()} reactor worker thread(s) alive: fork after "
                "threads can deadlock the child; use one strategy per process"
            )
        _start_record(server, request)
        framed = isinstance(request, MessageRequest)
        pipe = os.pipe() if framed else None
        try:
            pid = os.fork()
        except OSError:
            if pipe:
                os.close(pipe[0])
                os.close(pipe[1])
            self._done()
            raise
        if pid == 0:
            _child(server, request, client_address, pipe)  # never returns
        info: dict[str, Any] = {
            "server": server, "request": request, "output": bytearray(), "pipe": None, "reactor": server.reactor,
        }  # fmt: skip
        self.children[pid] = info
        info["record"] = server.request_table.open(Kind.CHILD, pid, pid, getattr(server, "address_family", 0))
        if pipe:
            os.close(pipe[1])
            info["pipe"] = pipe[0]
            os.set_blocking(pipe[0], False)
        elif isinstance(request, socket.socket):
            request.close()  # the child owns the connection now
        server._child_started(pid)
        self._watch(server, pid, info)

    def _watch(self, server: Any, pid: int, info: dict[str, Any]) -> None:
        reactor = info["reactor"]
        if reactor is None:
            return  # no loop: reaped by collect(), as socketserver does
        if info["pipe"] is not None:
            reactor.add_reader(info["pipe"], self._read_output, pid)
        if hasattr(os, "pidfd_open"):
            try:
                info["pidfd"] = os.pidfd_open(pid)
            except OSError:
                info["pidfd"] = None  # already gone: the next collect() reaps it
            else:
                reactor.add_reader(info["pidfd"], self._reap, pid)

    def _read_output(self, pid: int) -> None:
        info = self.children.get(pid)
        if info is None:
            return
        try:
            data = os.read(info["pipe"], 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            info["output"] += data
            return
        self._close_pipe(info)
        self._maybe_finish(pid)

    def _reap(self, pid: int) -> None:
        self._collect_one(pid, block=False)

    def collect(self, blocking: bool = False) -> None:
        """Reap every child of ours that has exited (with ``blocking``: all of them)."""
        for pid in list(self.children):
            self._collect_one(pid, block=blocking)

    def _collect_one(self, pid: int, block: bool) -> None:
        info = self.children.get(pid)
        if info is None or "status" in info:
            return
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0  # reaped elsewhere: we cannot know how it ended
        if not done:
            return
        info["status"] = status
        pidfd = info.pop("pidfd", None)
        if pidfd is not None:
            if info["reactor"] is not None:
                info["reactor"].remove_reader(pidfd)
            os.close(pidfd)
        if info["pipe"] is not None and block:
            self._drain_pipe(info)
        self._maybe_finish(pid)

    def _drain_pipe(self, info: dict[str, Any]) -> None:
        os.set_blocking(info["pipe"], True)
        while chunk := os.read(info["pipe"], 65536):
            info["output"] += chunk
        self._close_pipe(info)

    def _close_pipe(self, info: dict[str, Any]) -> None:
        fd, info["pipe"] = info["pipe"], None
        if fd is None:
            return
        if info["reactor"] is not None:
            info["reactor"].remove_reader(fd)
        os.close(fd)

    def _maybe_finish(self, pid: int) -> None:
        """Once the child has exited and its pipe is read to the end, settle its request."""
        info = self.children.get(pid)
        if info is None or "status" not in info or info["pipe"] is not None:
            return
        del self.children[pid]
        server, request, record = info["server"], info["request"], info["record"]
        status = info["status"]
        table = server.request_table
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if os.WIFSIGNALED(status):
            self.killed += 1
            table.count("children_killed")
            log.error("%s: child %d was killed by signal %d; its request failed", table.name, pid, os.WTERMSIG(status))
        table.transition(record, Event.FINISH if ok else Event.ERROR, f"exit status {status:#x}")
        server._child_ended(pid)
        if isinstance(request, MessageRequest):
            output = bytes(info["output"])
            if not ok or not output.startswith(b"\x00"):
                mark_failed(server, request, "the child failed")
            else:
                request.output = [output[1:]] if len(output) > 1 else []
            server.shutdown_request(request)  # sends the reply (or fails the connection)
        else:
            stream = server.request_table.find(request)
            if stream is not None and stream.state not in FINAL_STATES:
                table.transition(stream, Event.FINISH if ok else Event.ERROR, "the child ended")
        self._done()

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests, drop queued ones; with ``wait``, reap every child.

        Children still running after ``timeout`` seconds get SIGTERM, then
        SIGKILL one second later; none is left a zombie.
        """
        with self._lock:
            self._closing = True
        self._drop_queued()
        if not wait:
            self.collect()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_children(deadline)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.children:
                break
            log.warning("%r: %d child(ren) still running; sending %s", self, len(self.children), sig.name)
            for pid in list(self.children):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            self._wait_children(time.monotonic() + 1.0)
        self.collect(blocking=True)

    def _wait_children(self, deadline: float | None) -> None:
        while self.children:
            self.collect()
            if not self.children:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            _wait_any(list(self.children), left)

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "children": sorted(self.children), "killed": self.killed}


def _wait_any(pids: list[int], timeout: float | None) -> None:
    """Sleep until one of ``pids`` exits or ``timeout`` passes (no busy wait)."""
    if not hasattr(os, "pidfd_open"):
        time.sleep(min(0.05, timeout) if timeout is not None else 0.05)
        return
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except OSError:
                return  # one is already gone
        select.select(fds, [], [], timeout)
    finally:
        for fd in fds:
            os.close(fd)


def _shut(request: Any) -> None:
    if isinstance(request, socket.socket):
        try:
            request.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                log.debug("shutting a stuck connection down failed: %s", exc)


def _child(server: Any, request: Any, client_address: Any, pipe: tuple[int, int] | None) -> None:
    """The body of a forked child: handle one request, then ``os._exit``."""
    status = 1
    try:
        server._in_child()
        if pipe is not None:
            os.close(pipe[0])
            done: list[MessageRequest] = []
            request._on_done = done.append  # the reply goes to the pipe, not to the socket
        try:
            server.finish_request(request, client_address)
            status = 0
        except Exception:
            server.handle_error(request, client_address)
        if pipe is not None:
            payload = (b"\x00" + b"".join(request.output)) if status == 0 else b"\x01"
            view = memoryview(payload)
            while view:
                view = view[os.write(pipe[1], view) :]
        else:
            server.shutdown_request(request)
    except BaseException:
        pass  # never let anything escape into the parent's stack
    finally:
        os._exit(status)
