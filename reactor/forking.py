"""The Fork strategy: a child process per request, reaped as it exits.

What the parent keeps about each child lives in ``Fork.children`` and, for
the table, in a ``Kind.CHILD`` record (its peer is the pid).  The rules:

* Only our own children are ever waited for (never ``waitpid(-1)``), so a
  server does not steal its host program's children (python/cpython#90093).
* A child is reaped when it exits: its pidfd is in the selector, so there
  is no polling; the loop never blocks in ``waitpid`` (at ``max_children``
  requests wait READY in the table instead).
* A child never returns to the parent's loop: it ends with ``os._exit``,
  whatever its handler did.  A framed handler's output comes back through
  a pipe (first byte 0: the output follows; 1: the handler failed).
* A child holds nothing of the parent's but its own request: it closes
  its copies of every listener, connection, pipe and pidfd the library
  holds, without unregistering anything from the shared epoll set.
* A request is over when its child exits: what is in the pipe then is
  the child's whole output, read without waiting for an EOF (a process
  the handler left running may hold the pipe open).
* Whatever fails between taking a slot and a running child (no thread
  rule, ``os.pipe``, ``os.fork``) gives the slot back and fails the
  request; a child whose pidfd cannot be opened is still reaped.
* No fork while reactor worker threads are alive (fork after threads can
  deadlock the child: see ``os.fork``).
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import threading
import time
from typing import Any

from .dispatch import _Bounded, _start_record, describe_request, ends_itself, live_worker_threads, mark_failed
from .errors import UsageError
from .table import Event, Kind

__all__ = ["Fork"]

log = logging.getLogger("reactor")

#: Reads of 64 KiB that take what an exited child left in its pipe: enough
#: for any pipe a child is given, bounded against a writer that goes on.
DRAIN_READS = 256


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
        try:
            pid, pipe = self._fork(server, request, client_address)
        except BaseException:
            # No child: the slot goes back (or on to the next queued request),
            # and the caller fails this request (logs it, closes its connection).
            if not reuse:
                self._pass_on()
            raise
        info: dict[str, Any] = {
            "server": server, "request": request, "output": bytearray(), "pipe": None, "reactor": server.reactor,
            "replies": pipe is not None,
        }  # fmt: skip
        self.children[pid] = info
        table = server.request_table
        served = table.find(request) or getattr(getattr(request, "connection", None), "record", None)
        what = f"new child, pid {pid}" + (f", running #{served.id}" if served is not None else "")
        info["serves"] = served.id if served is not None else None
        info["record"] = table.open(Kind.CHILD, pid, pid, getattr(server, "address_family", 0), what=what)
        if pipe:
            os.close(pipe[1])
            info["pipe"] = pipe[0]
            os.set_blocking(pipe[0], False)
        else:
            _drop_parents_copy(request)  # the child owns the connection now
        server._child_started(pid)
        self._watch(server, pid, info)

    def _fork(self, server: Any, request: Any, client_address: Any) -> tuple[int, tuple[int, int] | None]:
        """Fork the request's child; in the parent, return its pid and output pipe (framed only).

        Raises (having released what it took) if it cannot: worker threads
        alive, or ``os.pipe()``/``os.fork()`` failing (EMFILE, EAGAIN, ENOMEM).
        """
        if live_worker_threads():
            raise UsageError(
                f"refusing to fork with {live_worker_threads()} reactor worker thread(s) alive: fork after "
                "threads can deadlock the child; use one strategy per process"
            )
        _start_record(server, request)
        pipe = os.pipe() if ends_itself(request) else None  # its reply comes back to be sent from here
        try:
            pid = os.fork()
        except BaseException:
            if pipe:
                os.close(pipe[0])
                os.close(pipe[1])
            raise
        if pid == 0:
            _child(self, server, request, client_address, pipe)  # never returns
        return pid, pipe

    def _watch(self, server: Any, pid: int, info: dict[str, Any]) -> None:
        reactor = info["reactor"]
        if reactor is None:
            return  # no loop: reaped by collect(), as socketserver does
        if info["pipe"] is not None:
            reactor.add_reader(info["pipe"], self._read_output, pid)
        if hasattr(os, "pidfd_open"):
            self._watch_exit(pid)
        else:
            self._reap_on_sigchld(reactor)

    def _watch_exit(self, pid: int, delay: float = 0.0) -> None:
        """Put the child's pidfd in the selector, to be reaped the moment it exits.

        With no descriptor to spare for it (EMFILE), look again after a
        back-off that doubles from 10 ms to 1 s, reaping the child if it
        has exited meanwhile: its request must not wait for ``close()``.
        """
        info = self.children.get(pid)
        if info is None or "status" in info:
            return
        try:
            info["pidfd"] = os.pidfd_open(pid)
        except OSError as exc:
            self._collect_one(pid, block=False)
            if pid in self.children:
                delay = min(1.0, max(0.01, delay * 2))
                if delay == 0.01:
                    log.warning("%r: no pidfd for child %d (%s): looking for its exit after a back-off", self, pid, exc)
                info["reactor"].call_later(delay, self._watch_exit, pid, delay)
            return
        info["reactor"].add_reader(info["pidfd"], self._reap, pid)

    def _reap_on_sigchld(self, reactor: Any) -> None:
        # No pidfds (not Linux): SIGCHLD wakes the loop, which reaps our
        # children.  Signal handlers can only be set on the main thread.
        if getattr(self, "_sigchld", None) is reactor:
            return
        if threading.current_thread() is not threading.main_thread():
            log.warning("%r: no pidfd and not on the main thread: children are reaped at close", self)
            self._sigchld = reactor
            return
        previous = signal.getsignal(signal.SIGCHLD)

        def on_sigchld(signum: int, frame: Any) -> None:
            reactor.call_soon_threadsafe(self.collect)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGCHLD, on_sigchld)
        self._sigchld = reactor
        # The first child was forked before the handler was there: if it
        # has exited already, its SIGCHLD went to nobody.  Look once.
        reactor.call_soon(self.collect)

    def trace_label(self, fd: int, pid: int) -> str:
        """What the trace calls a child's descriptors: its output pipe, or its pidfd (it exited)."""
        info = self.children.get(pid)
        what = "output" if info is not None and info["pipe"] == fd else "exit"
        serves = info.get("serves") if info is not None else None
        return f"child {pid} {what}" + (f" for #{serves}" if serves is not None else "")

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
        if info["pipe"] is not None:
            self._drain_pipe(info)  # the child is gone: its request is over, whoever else holds the pipe
        self._maybe_finish(pid)

    def _drain_pipe(self, info: dict[str, Any]) -> None:
        """The child has exited: take what it left in its pipe, and close the pipe.

        No waiting for an EOF, which may never come: a process the handler
        started in the background may hold the pipe's write end.  Nothing
        is lost: a write to a pipe has put its bytes in the pipe when it
        returns, and the child wrote everything before it exited.  What it
        left there is at most the pipe's capacity (64 KiB unless resized);
        the bound on reads keeps a runaway writer from holding the loop.
        """
        fd = info["pipe"]
        os.set_blocking(fd, False)  # (it is, unless someone changed it)
        for _ in range(DRAIN_READS):
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
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
        if server.handler_time is not None:  # timed (a dashboard): the child's life is its handler's run
            server.handler_time.add(table.clock() - record.created)
        server._child_ended(pid)
        if info["replies"]:  # the reply the child wrote came back through its pipe: it goes out from here
            output = bytes(info["output"])
            if not ok or not output.startswith(b"\x00"):
                mark_failed(server, request, "the child failed")
            else:
                request.output = [output[1:]] if len(output) > 1 else []
            server.shutdown_request(request)  # sends the reply (or fails the connection)
        else:  # the child answered its client itself and ran the ending hooks there
            server._end_request(request, Event.FINISH if ok else Event.ERROR, "the child ended")
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
            left = [f"child {pid}, {describe_request(c['server'], c['request'])}" for pid, c in self.children.items()]
            log.warning("%r: %d child(ren) still running; sending %s: %s", self, len(left), sig.name,
                        "; ".join(left))  # fmt: skip
            for pid, info in list(self.children.items()):
                if "status" in info:
                    continue  # already reaped: that pid may belong to someone else now
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
    fds = []
    try:
        poller = select.poll()  # not select(): a pidfd may be numbered past FD_SETSIZE (1024)
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except (AttributeError, OSError):  # no pidfds here, or no descriptor left for one
                time.sleep(min(0.05, timeout) if timeout is not None else 0.05)
                return
            poller.register(fds[-1], select.POLLIN)
        poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
    finally:
        for fd in fds:
            os.close(fd)


def _child(strategy: Fork, server: Any, request: Any, client_address: Any, pipe: tuple[int, int] | None) -> None:
    """The body of a forked child: handle one request, then ``os._exit``."""
    status = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)  # the parent's handlers stop the parent's loop
        signal.set_wakeup_fd(-1)  # nor may our signals wake the parent's loop (Reactor.run sets it)
        _close_inherited(strategy, server, request, pipe)
        if pipe is not None:
            request.detach()  # its reply goes to the pipe, not to the parent's connection
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
        # Never let anything escape into the parent's stack; but say what
        # went wrong outside the handler (the handler's own errors went to
        # handle_error above), or the child would vanish without a word.
        try:
            log.exception("child %d: the request could not be run", os.getpid())
        except BaseException:
            pass
    finally:
        os._exit(status)


def _drop_parents_copy(request: Any) -> None:
    """In the parent, after the fork of a request its handler answers itself:
    close our copy of its socket (a ``(data, socket)`` pair shares the
    server's socket, which stays)."""
    close = getattr(request, "close", None)
    if close is not None:
        close()


def _close_inherited(strategy: Fork, server: Any, request: Any, pipe: tuple[int, int] | None) -> None:
    """In the child: close every descriptor the library holds but the request's own.

    A child holding a copy of another client's connection keeps it open
    after the parent closes it (the client's EOF waits for the child to
    exit); one holding a listener keeps its port or path busy.  So the
    child closes what the parent's reactor, every server on it and this
    strategy hold: listeners, connections (classic or framed, of any
    server), accept gates' reserve descriptors, other children's pipes and
    pidfds, the wakeup pair, the selector.  It keeps the request's own
    socket and the write end of its pipe, and whatever the program opened
    itself (a handler's log file, stdio).
    """
    keep = set() if pipe is None else {pipe[1]}
    own = request[1] if isinstance(request, tuple) else request  # a classic datagram: (data, socket)
    try:
        keep.add(own.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    reactor = server.reactor
    servers = list(reactor.servers) if reactor is not None else []
    if server not in servers:
        servers.append(server)
    for each in servers:
        each._in_child(keep)
    for info in strategy.children.values():
        for fd in (info["pipe"], info.get("pidfd")):
            if fd is not None:
                os.close(fd)
    strategy.children.clear()
    if reactor is not None:
        reactor.close_in_child(keep)
    if pipe is not None:
        os.close(pipe[0])
