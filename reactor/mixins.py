"""The stdlib's threading and forking mix-ins, as spellings of the strategies.

These are the stdlib spellings of the dispatch strategies (``reactor.dispatch``),
with the stdlib's attributes and meaning:

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

import threading
import time
from typing import Any

from .datagram import UDPServer
from .dispatch import Inline, Strategy, ThreadPool, _thread_ended, _thread_started, run_request
from .forking import Fork
from .servers import BaseServer
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

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads (at most ``timeout`` seconds in all; None: as long as it takes)."""
        with self._lock:
            threads, self._threads = self._threads, []
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __len__(self) -> int:
        return len(self._threads)


class ThreadingMixIn:
    """Run each request in a new thread, as socketserver does; or, with
    ``max_workers`` set, on a bounded ``ThreadPool`` of that many workers.

    ``daemon_threads``: make request threads daemons (they die with the
    process and are never waited for).  ``block_on_close``: when True (the
    default), ``server_close()`` waits for the non-daemon threads to end.
    """

    daemon_threads = False
    block_on_close = True
    #: None: a thread per request (the stdlib's way); a number: a bounded pool.
    max_workers: int | None = None
    _threads = _ThreadList(tracking=False)  # replaced per instance once a thread is tracked

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_mixin_order(cls, ThreadingMixIn)

    @property
    def dispatch(self) -> Strategy:
        """``Inline`` (threads are started by ``process_request``) or the bounded pool."""
        strategy = vars(self).get("_strategy")
        if strategy is None:
            strategy = ThreadPool(self.max_workers) if self.max_workers else Inline()
            self._strategy = strategy
        return strategy

    @dispatch.setter
    def dispatch(self, strategy: Strategy) -> None:
        self._strategy = strategy

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The body of a request thread: the lifecycle with its error handling."""
        try:
            run_request(self, request, client_address)
        finally:
            _thread_ended()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread that handles the request (or hand it to the pool)."""
        if self.max_workers or not isinstance(self.dispatch, Inline):
            self.dispatch.submit(self, request, client_address)
            return
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
        _thread_started()
        try:
            thread.start()
        except BaseException:
            _thread_ended()
            raise

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        self._threads.join(getattr(self, "drain_timeout", None))


class ForkingMixIn:
    """Run each request in a child process, on a ``Fork`` strategy.

    ``max_children``: at most this many children at once; at the limit,
    requests wait in the table and accepting pauses; the loop never blocks
    in ``waitpid``.  ``active_children``: the set of our live children's
    pids (None before the first fork).  ``timeout``: for
    ``handle_request()``, as on every server.  ``block_on_close``:
    ``server_close()`` waits for every child to exit.
    """

    timeout: float | None = 300
    active_children: set[int] | None = None
    max_children = 40
    block_on_close = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_mixin_order(cls, ForkingMixIn)

    @property
    def dispatch(self) -> Strategy:
        """This server's ``Fork(max_children)`` strategy."""
        strategy = vars(self).get("_strategy")
        if strategy is None:
            strategy = Fork(self.max_children)
            self._strategy = strategy
        elif isinstance(strategy, Fork) and strategy.limit != self.max_children:
            strategy.limit = self.max_children  # set on the instance after construction
        return strategy

    @dispatch.setter
    def dispatch(self, strategy: Strategy) -> None:
        self._strategy = strategy

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap our children that have exited; with ``blocking``, wait for all of them."""
        strategy = self.dispatch
        if isinstance(strategy, Fork):
            strategy.collect(blocking=blocking)

    def handle_timeout(self) -> None:
        """``handle_request()`` timed out: a good moment to reap children."""
        self.collect_children()

    def service_actions(self) -> None:
        """Reap finished children (with a reactor, pidfds reap them as they exit too)."""
        self.collect_children()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Fork: the child handles the request and exits; the parent goes on."""
        self.dispatch.submit(self, request, client_address)

    def _child_started(self, pid: int) -> None:
        if self.active_children is None:
            self.active_children = set()
        self.active_children.add(pid)

    def _child_ended(self, pid: int) -> None:
        if self.active_children is not None:
            self.active_children.discard(pid)


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

