"""The reactor-facing half of a server: how a reactor drives it.

``BaseServer`` (servers.py) is the request lifecycle: the stdlib's hooks
and the order they run in.  This is the other half, what makes a server
something a ``Reactor`` can serve: ``serve_forever()`` / ``shutdown()`` /
``handle_request()``, joining and leaving a reactor (``add_server`` calls
``_attach``, which gives the server an ``Admission``: reactor/admission.py
reads the socket in bursts and pauses it when it must).  It is a base
class of ``BaseServer`` only; it is not a mix-in to combine with anything
else.

Invariants:

* ``shutdown()`` never waits for the thread it is called on; it wakes the
  loop through the reactor's wakeup socketpair, never by polling.
* A shutdown request, or the reactor's ``stop()``, is checked before
  every accept (python/cpython#79184, in ``Admission.on_readable``): once
  a stop is asked for, the burst takes no new connection.
* A server is served by at most one reactor at a time; while served, its
  socket is nonblocking, and its old timeout comes back when it leaves.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from typing import Any

from .admission import Admission
from .errors import UsageError
from .loop import Reactor

__all__ = ["Serving"]

log = logging.getLogger("reactor")


def _base_service_actions() -> Any:
    from .servers import BaseServer  # the lifecycle half, which imports this one

    return BaseServer.service_actions


class Serving:
    """serve_forever / shutdown / handle_request, and life on a reactor."""

    # ------------------------------------------------------------- serving

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until ``shutdown()`` is called.

        Runs a private ``Reactor`` serving this server alone.  The loop
        sleeps until a request arrives; ``poll_interval`` only matters to a
        subclass that overrides ``service_actions()``, which then runs at
        least that often.  If ``shutdown()`` was called before, returns at
        once.  May be called again after it returns.
        """
        with self._serve_lock:
            if self._reactor is not None:
                raise UsageError(f"{self!r} is already served by {self._reactor!r}")
            if self._shutdown_requested:  # shutdown() came first: honour it
                self._shutdown_requested = False
                return
            reactor = Reactor()
            self._owns_reactor = True
            try:
                reactor.add_server(self, poll_interval=poll_interval)
            except BaseException:
                self._owns_reactor = False
                reactor.close()
                raise
            self._serving_thread = threading.get_ident()
            self._is_shut_down.clear()
        try:
            reactor.run()
        finally:
            self._serving_done(reactor)

    def _serving_done(self, reactor: Reactor) -> None:
        with self._serve_lock:
            reactor.close()  # detaches us too
            self._owns_reactor = False
            self._serving_thread = None
            self._shutdown_requested = False
            self._is_shut_down.set()

    def shutdown(self) -> None:
        """Stop serving.  Safe from any thread, a handler or a signal handler.

        * Under ``serve_forever()`` on another thread: wakes that loop at
          once and waits until ``serve_forever()`` has returned.
        * On the loop's own thread (from a handler or ``service_actions``):
          the loop stops after the current step; returns at once.
        * Before ``serve_forever()``: the next ``serve_forever()`` returns
          at once; this call does not wait.
        * On a shared reactor (``Reactor.add_server``): the reactor stops
          serving this server; the reactor and its other servers go on.
        """
        with self._serve_lock:
            self._shutdown_requested = True
            reactor = self._reactor
            owner = self._serving_thread
            owned = self._owns_reactor
        if reactor is None:
            return
        if not owned:
            reactor.call_soon_threadsafe(reactor.remove_server, self)
            return
        reactor.stop()
        if owner != threading.get_ident():
            self._is_shut_down.wait()

    def handle_request(self) -> None:
        """Wait for one request and handle it (without a reactor).

        Waits at most ``timeout`` seconds (or the listening socket's own
        timeout, whichever is shorter; None: forever), then calls
        ``handle_timeout()`` instead.  This is the call to make after your
        own ``select()`` said ``fileno()`` is readable.
        """
        if self._reactor is not None:
            raise UsageError(f"{self!r} is served by {self._reactor!r}; handle_request() would race it")
        limit = self.timeout
        own = self.socket.gettimeout()
        if own is not None:
            limit = own if limit is None else min(own, limit)
        deadline = None if limit is None else time.monotonic() + limit
        selector_class = getattr(selectors, "PollSelector", selectors.SelectSelector)
        with selector_class() as selector:
            selector.register(self, selectors.EVENT_READ)
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if selector.select(wait):
                    self._handle_request_noblock()
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    self.handle_timeout()
                    return

    # ------------------------------------------------ reactor integration

    @property
    def reactor(self) -> Reactor | None:
        """The reactor serving this server right now, or None."""
        return self._reactor

    def _attach(self, reactor: Reactor, poll_interval: float) -> None:
        """Called by ``Reactor.add_server``: start watching our socket."""
        if self._reactor is not None:
            raise UsageError(f"{self!r} is already served by {self._reactor!r}")
        self._check_bounds()  # set on the class since the constructor ran?
        sock = getattr(self, "socket", None)
        if sock is not None:
            # Nonblocking while served: a wakeup for a connection that was
            # reset before accept() must not hang the whole loop.
            self._saved_timeout = sock.gettimeout()
            sock.setblocking(False)
        self.request_table.name = self._label()
        admission = Admission(self, reactor)  # watches our socket from now on
        self._reactor, self._admission = reactor, admission
        if not self._owns_reactor:
            # serve_forever() consumed an earlier shutdown() before getting
            # here; for a shared reactor, being added means "serve now".
            self._shutdown_requested = False
        if type(self).service_actions is not _base_service_actions():
            self._service_timer = reactor.call_later(poll_interval, self._service_tick, reactor, poll_interval)

    def _detach(self, reactor: Reactor) -> None:
        """Called by ``Reactor.remove_server``: stop watching our socket.

        The framed connections it owns end with it, and datagram replies
        still queued are dropped (both counted).
        """
        if self._admission is not None:
            self._admission.close()  # unwatches our socket
            self._admission = None
        for connection in tuple(self._connections):
            connection.abort("the server stopped serving")
        if self._reply_queue is not None:
            self._reply_queue.close()
        if self._service_timer is not None:
            self._service_timer.cancel()
            self._service_timer = None
        sock = getattr(self, "socket", None)
        if sock is not None and sock.fileno() != -1:
            sock.settimeout(self._saved_timeout)
        self._reactor = None
        if not self._owns_reactor:
            self._shutdown_requested = False  # a later add_server serves again

    def _service_tick(self, reactor: Reactor, poll_interval: float) -> None:
        # Does nothing but wake the loop, whose every iteration ends with
        # service_actions(); then books the next wakeup.
        self._service_timer = reactor.call_later(poll_interval, self._service_tick, reactor, poll_interval)

    def _leave_reactor(self) -> None:
        reactor = self._reactor
        if reactor is None or reactor.closed:
            return
        if reactor.in_loop_thread() or self._owns_reactor:
            reactor.remove_server(self)
        else:
            reactor.call_soon_threadsafe(reactor.remove_server, self)
