"""Serving: which reactor serves a server, and how it is stopped.

A server is served by at most one reactor at a time: its own private one
while ``serve_forever()`` runs, or a shared one it was added to
(``Reactor.add_server``).  Each server has one ``Serving`` object
(``server._serving``) that owns that relationship and nothing else:

    not served --serve_forever()--> served by its own reactor --shutdown()--> not served
    not served --Reactor.add_server()--> served by a shared one --shutdown() / remove_server()--> not served

Invariants:

* ``shutdown()`` never waits for the thread it is called on; it wakes the
  loop through the reactor's wakeup socketpair, never by polling.  Called
  before ``serve_forever()``, it makes that return at once.
* A stop asked for is seen before every accept (python/cpython#79184): the
  server's ``Admission`` reads ``requested``.
* While served, the server's socket is nonblocking, and its old timeout
  comes back when it leaves; its ``Admission`` exists exactly while it is
  served.
"""

from __future__ import annotations

import threading
from typing import Any

from .admission import Admission
from .errors import UsageError
from .loop import Reactor

__all__ = ["Serving"]


class Serving:
    """The reactor serving one server, if any; ``serve_forever()`` and ``shutdown()``.

    ``reactor`` is that reactor (None when not served), ``admission`` the
    server's ``Admission`` while served, ``requested`` whether a stop was
    asked for.  ``shutdown`` is safe from any thread; the rest is called
    by the server and by ``Reactor.add_server``/``remove_server``.
    """

    __slots__ = (
        "server", "reactor", "admission", "requested", "_lock", "_done", "_owned", "_thread",
        "_service_timer", "_saved_timeout",
    )  # fmt: skip

    def __init__(self, server: Any) -> None:
        self.server = server
        self.reactor: Reactor | None = None
        self.admission: Admission | None = None
        self.requested = False  # shutdown() was asked for
        self._lock = threading.Lock()
        self._done = threading.Event()  # set while serve_forever() is not running
        self._done.set()
        self._owned = False  # the reactor is serve_forever()'s own
        self._thread: int | None = None  # the thread running serve_forever()
        self._service_timer: Any = None
        self._saved_timeout: Any = None

    # ---------------------------------------------------------- serve_forever

    def serve_forever(self, poll_interval: float) -> None:
        """``BaseServer.serve_forever``: a private reactor, run until ``shutdown()``."""
        with self._lock:
            if self.reactor is not None:
                raise UsageError(f"{self.server!r} is already served by {self.reactor!r}")
            if self.requested:  # shutdown() came first: honour it
                self.requested = False
                return
            reactor = Reactor()
            self._owned = True
            try:
                reactor.add_server(self.server, poll_interval=poll_interval)
            except BaseException:
                self._owned = False
                reactor.close()
                raise
            self._thread = threading.get_ident()
            self._done.clear()
        try:
            reactor.run()
        finally:
            with self._lock:
                reactor.close()  # detaches the server too
                self._owned = False
                self._thread = None
                self.requested = False
                self._done.set()

    def shutdown(self) -> None:
        """``BaseServer.shutdown``: stop serving, from any thread (see its docstring)."""
        with self._lock:
            self.requested = True
            reactor, owner, owned = self.reactor, self._thread, self._owned
        if reactor is None:
            return
        if not owned:
            reactor.call_soon_threadsafe(reactor.remove_server, self.server)
            return
        reactor.stop()
        if owner != threading.get_ident():
            self._done.wait()

    def leave(self) -> None:
        """Stop being served, now if on the loop's thread, else as soon as the loop runs."""
        reactor = self.reactor
        if reactor is None or reactor.closed:
            return
        if reactor.in_loop_thread() or self._owned:
            reactor.remove_server(self.server)
        else:
            reactor.call_soon_threadsafe(reactor.remove_server, self.server)

    # ------------------------------------------------------- joining a reactor

    def attach(self, reactor: Reactor, poll_interval: float, wakes: bool) -> None:
        """Called through ``Reactor.add_server``: served by ``reactor`` from now on.

        ``wakes``: the server overrides ``service_actions()``, so the loop
        wakes at least every ``poll_interval`` seconds to call it.
        """
        server = self.server
        if self.reactor is not None:
            raise UsageError(f"{server!r} is already served by {self.reactor!r}")
        sock = getattr(server, "socket", None)
        if sock is not None:
            # Nonblocking while served: a wakeup for a connection that was
            # reset before accept() must not hang the whole loop.
            self._saved_timeout = sock.gettimeout()
            sock.setblocking(False)
        self.admission = Admission(server, reactor)  # watches the server's socket from now on
        self.reactor = reactor
        if not self._owned:
            # serve_forever() consumed an earlier shutdown() before getting
            # here; for a shared reactor, being added means "serve now".
            self.requested = False
        if wakes:
            self._service_timer = reactor.call_later(poll_interval, self._tick, reactor, poll_interval)

    def detach(self) -> None:
        """Called through ``Reactor.remove_server``: no longer served (the socket is unwatched)."""
        if self.admission is not None:
            self.admission.close()
            self.admission = None
        if self._service_timer is not None:
            self._service_timer.cancel()
            self._service_timer = None
        sock = getattr(self.server, "socket", None)
        if sock is not None and sock.fileno() != -1:
            sock.settimeout(self._saved_timeout)
        self.reactor = None
        if not self._owned:
            self.requested = False  # a later add_server serves again

    def forget_in_child(self) -> None:
        """In a forked child: the parent's reactor is not ours (only the reserve fd is closed)."""
        admission, self.admission, self.reactor = self.admission, None, None
        if admission is not None:
            admission.close_in_child()  # the selector is the parent's too: nothing is unregistered

    def _tick(self, reactor: Reactor, poll_interval: float) -> None:
        # Does nothing but wake the loop, whose every iteration ends with
        # service_actions(); then books the next wakeup.
        self._service_timer = reactor.call_later(poll_interval, self._tick, reactor, poll_interval)
