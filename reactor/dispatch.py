"""Where ``finish_request`` runs: the stdlib's threading and forking mix-ins.

These are the stdlib spellings of the dispatch strategies, with the stdlib's
attributes and meaning:

* ``ThreadingMixIn``: a thread per request (``daemon_threads``,
  ``block_on_close``); finished threads are forgotten as new ones start, so
  a long-running server does not accumulate them (python/cpython#81374).
* ``ForkingMixIn``: a child process per request (``max_children``,
  ``active_children``, ``timeout``, ``block_on_close``,
  ``collect_children``); only our own children are ever reaped, never
  ``waitpid(-1)``, so a server does not steal its host program's children.

A mix-in must come before the server class in the bases, or the server's
own ``process_request`` would win and the mix-in would silently do nothing;
defining a class the other way round raises ``TypeError``.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Any

from handlers.message import MessageRequest

from .datagram import UDPServer
from .servers import BaseServer
from .table import Event
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer

__all__ = [
    "ThreadingMixIn",
    "ForkingMixIn",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "ThreadingUnixStreamServer",
    "ThreadingUnixDatagramServer",
    "ForkingTCPServer",
    "ForkingUDPServer",
    "ForkingUnixStreamServer",
    "ForkingUnixDatagramServer",
]


def _check_mixin_order(cls: type, mixin: type) -> None:
    """Raise TypeError if a server class precedes ``mixin`` in ``cls``'s MRO."""
    for klass in cls.__mro__[1:]:
        if issubclass(klass, mixin):
            return  # the mix-in, or a class already checked when it was defined
        if issubclass(klass, BaseServer) and "process_request" in vars(klass):
            first = [b for b in cls.__bases__ if issubclass(b, mixin)]
            others = [b for b in cls.__bases__ if not issubclass(b, mixin)]
            fixed = ", ".join(b.__name__ for b in first + others)
            raise TypeError(
                f"{cls.__name__}: {mixin.__name__} must come before the server class in the "
                f"bases, or the server's own process_request() wins and the mix-in does nothing; "
                f"write class {cls.__name__}({fixed})"
            )


def _run_request(server: Any, request: Any, client_address: Any) -> None:
    """finish_request, with the lifecycle's error handling, then shutdown_request."""
    try:
        server.finish_request(request, client_address)
    except Exception:
        _mark_failed(server, request, "exception in the handler")
        server.handle_error(request, client_address)
    except BaseException:
        _mark_failed(server, request, "KeyboardInterrupt/SystemExit")
        raise
    finally:
        server.shutdown_request(request)


def _mark_failed(server: Any, request: Any, reason: str) -> None:
    if isinstance(request, MessageRequest):
        request.failed = True  # no reply is sent; a stream connection fails when it hears
    server.request_table.finish(request, Event.ERROR, reason)


class _ThreadList:
    """The non-daemon request threads still running, for ``server_close`` to join.

    With ``tracking=False`` it remembers nothing: the class-level default of
    a server whose threads nobody will wait for.
    """

    def __init__(self, tracking: bool = True) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._tracking = tracking

    def append(self, thread: threading.Thread) -> None:
        if not self._tracking:
            return
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def join(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()

    def __len__(self) -> int:
        return len(self._threads)


class ThreadingMixIn:
    """Run each request in a new thread.

    ``daemon_threads``: make request threads daemons (they die with the
    process and are never waited for).  ``block_on_close``: when True (the
    default), ``server_close()`` waits for the non-daemon threads to end.
    """

    daemon_threads = False
    block_on_close = True
    _threads = _ThreadList(tracking=False)  # replaced per instance once a thread is tracked

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_mixin_order(cls, ThreadingMixIn)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The body of a request thread: the lifecycle with its error handling."""
        _run_request(self, request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread that handles the request."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            daemon=self.daemon_threads,
            name=f"reactor request {client_address!r}",
        )
        if self.block_on_close and not thread.daemon:
            if "_threads" not in vars(self):
                self._threads = _ThreadList()
            self._threads.append(thread)
        thread.start()

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        self._threads.join()


class ForkingMixIn:
    """Run each request in a child process.

    ``max_children``: at most this many children at once; at the limit the
    next request waits for one of them to exit.  ``active_children``: the
    set of our live children's pids (None before the first fork).
    ``timeout``: for ``handle_request()``, as on every server.
    ``block_on_close``: ``server_close()`` waits for every child to exit.
    """

    timeout: float | None = 300
    active_children: set[int] | None = None
    max_children = 40
    block_on_close = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_mixin_order(cls, ForkingMixIn)

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap our children that have exited; with ``blocking``, wait for all.

        While ``max_children`` or more are alive, first waits until one exits.
        """
        children = self.active_children
        if not children:
            return
        while len(children) >= self.max_children:
            self._wait_for_any(children)
            self._reap(children, blocking=False)
        self._reap(children, blocking=blocking)

    @staticmethod
    def _reap(children: set[int], *, blocking: bool) -> None:
        for pid in tuple(children):
            try:
                done, _ = os.waitpid(pid, 0 if blocking else os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)  # reaped elsewhere: not ours to track any more
                continue
            if done:
                children.discard(pid)

    @staticmethod
    def _wait_for_any(children: set[int]) -> None:
        # Sleep until one of *our* children exits.  A pidfd becomes readable
        # when its process ends (Linux 5.3+); elsewhere wait for any one pid.
        if not hasattr(os, "pidfd_open"):
            os.waitpid(next(iter(children)), 0)
            return
        fds = []
        try:
            for pid in children:
                try:
                    fds.append(os.pidfd_open(pid))
                except ProcessLookupError:
                    return  # already gone: the reap that follows collects it
            select.select(fds, [], [])
        finally:
            for fd in fds:
                os.close(fd)

    def handle_timeout(self) -> None:
        """``handle_request()`` timed out: a good moment to reap children."""
        self.collect_children()

    def service_actions(self) -> None:
        """Reap finished children once per loop iteration."""
        self.collect_children()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Fork; the child handles the request and exits, the parent closes its copy.

        At ``max_children`` live children, first waits for one to exit (this
        blocks the loop, as in the stdlib; the dispatch rework will pause
        accepting instead).
        """
        if self.active_children and len(self.active_children) >= self.max_children:
            self.collect_children()
        pid = os.fork()
        if pid:
            if self.active_children is None:
                self.active_children = set()
            self.active_children.add(pid)
            self.close_request(request)  # type: ignore[attr-defined]
            return
        # In the child: handle the request, then leave without ever returning
        # to the parent's loop (os._exit skips atexit handlers and finally
        # blocks further up the stack, which belong to the parent).
        status = 1
        try:
            self.finish_request(request, client_address)  # type: ignore[attr-defined]
            status = 0
        except Exception:
            self.handle_error(request, client_address)  # type: ignore[attr-defined]
        finally:
            try:
                self.shutdown_request(request)  # type: ignore[attr-defined]
            finally:
                os._exit(status)

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        self.collect_children(blocking=self.block_on_close)


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """TCP, a thread per request."""


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    """UDP, a thread per datagram."""


class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
    """Unix stream, a thread per connection."""


class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
    """Unix datagram, a thread per datagram."""


class ForkingTCPServer(ForkingMixIn, TCPServer):
    """TCP, a child process per connection."""


class ForkingUDPServer(ForkingMixIn, UDPServer):
    """UDP, a child process per datagram."""


class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
    """Unix stream, a child process per connection."""


class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
    """Unix datagram, a child process per datagram."""

