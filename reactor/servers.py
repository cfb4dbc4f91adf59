"""The servers: socketserver's classes, driven by a Reactor.

Every class here has the stdlib's methods and attributes with the stdlib's
meaning, and the reactor drives the request lifecycle only by calling
those (overridable) methods:

    listener readable -> get_request() -> verify_request() --False--> shutdown_request()
                                               | True
                                               v
                                       process_request() -> finish_request() -> handler
                                               v
                                       shutdown_request() -> close_request()

    an exception on the way: handle_error(request, client_address), then
    shutdown_request(); KeyboardInterrupt and SystemExit propagate.

What differs from the stdlib, on purpose:

* ``serve_forever()`` runs a ``Reactor``: it sleeps in ``select()`` until
  there is work, instead of waking every ``poll_interval``;
* ``shutdown()`` wakes the loop at once, may be called before
  ``serve_forever()`` starts (which then returns at once), and called on the
  loop's own thread (from a handler, ``service_actions``, a signal handler)
  it stops the loop after the current step instead of deadlocking;
* any number of servers can share one reactor (``Reactor.add_server``);
* every request is a record in ``server.request_table``;
* ``handle_error`` also logs through ``logging.getLogger("reactor")``;
* Unix servers (``reactor.unix``) remove their socket file in
  ``server_close()`` (and a stale one left by a dead process before ``bind()``);
* ``request_queue_size`` defaults to ``socket.SOMAXCONN`` rather than 5, and
  ``UDPServer.max_packet_size`` to 65536 rather than 8192;
* ``TCPServer``/``UDPServer`` given an IPv6 literal host use AF_INET6.
"""

from __future__ import annotations

import logging
import selectors
import os
import socket
import sys
import time
import traceback
from typing import Any

from handlers.message import MessageHandler

from .admission import DEFAULT_MAX_CONNECTIONS, PER_WAKEUP, Admit
from .bounds import Bounded
from .connection import Connection
from .dispatch import Inline, Strategy
from .errors import UsageError
from .loop import Reactor
from .ratelimit import RateLimitedLog
from .serving import Serving
from .table import FINAL_STATES, Event, Kind, Record, RequestTable, State, family_name

__all__ = ["BaseServer"]

log = logging.getLogger("reactor")



class BaseServer(Bounded):
    """The lifecycle without sockets; ``TCPServer`` and friends add them.

    Attributes a subclass or instance may set: ``timeout`` (seconds that
    ``handle_request()`` waits before calling ``handle_timeout()``; None
    waits forever).  Instance attributes: ``server_address``,
    ``RequestHandlerClass``, ``request_table``.
    """

    timeout: float | None = None

    #: Where handlers run: ``Inline()`` (here, in the loop), ``ThreadPool(n)``
    #: or ``Fork(n)``; set it on the class or pass ``dispatch=`` to the constructor.
    dispatch: Strategy = Inline()
    #: ``server_close()`` waits for running requests (threads, children) to end ...
    block_on_close = True
    #: ... for at most this many seconds (None: as long as they take).
    drain_timeout: float | None = None

    # Bounds (see docs/handlers.md); each hit is counted in request_table.counters.
    #: Live connections at which accepting pauses (None: no limit).  Left at
    #: this default, it is also kept within the process's descriptor limit
    #: (``reactor.admission.descriptor_budget``); a value you set is used as is.
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS
    #: Connections (or datagrams) one readiness of the socket brings in before
    #: the loop looks at its other sockets; worker processes sharing a
    #: listener take 1 each, so that a burst spreads over them (reactor.Workers).
    requests_per_wakeup: int = PER_WAKEUP
    #: Largest message a framed handler is given (None: only the framer's own limit).
    max_message_size: int | None = 65536
    #: Queued output per framed connection above which it is not read ...
    output_high_water = 65536
    #: ... until the peer has drained it to this much.
    output_low_water = 16384
    #: Seconds a framed connection may wait between messages (None: forever).
    idle_timeout: float | None = None
    #: Seconds a started message has to arrive completely (the slowloris defence).
    request_timeout: float | None = 60.0
    #: Seconds queued output may wait with no progress (a peer that stopped reading).
    write_timeout: float | None = 60.0
    #: Datagram replies that may wait for a full socket before more are dropped.
    max_queued_replies = 64

    #: A ``HandlerTime`` while someone times the handlers (a dashboard: reactor/handlertime.py), else None.
    handler_time: Any = None

    #: What a request of this server is in the table.
    _record_kind = Kind.STREAM

    def __init__(self, server_address: Any, RequestHandlerClass: Any, *, dispatch: Strategy | None = None) -> None:
        """Constructor.  May be extended (call it), do not replace it."""
        if dispatch is not None:
            if not isinstance(dispatch, Strategy):
                raise UsageError(f"dispatch must be Inline(), ThreadPool(n) or Fork(n), not {dispatch!r}")
            self.dispatch = dispatch
        self._check_bounds()
        self.dispatch.claim()
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self.request_table = RequestTable()
        self._serving = Serving(self)  # which reactor serves us, if any (reactor/serving.py)
        self._connections: set[Connection] = set()
        self._reply_queue: Any = None  # datagram servers send replies through one
        self._released = False  # server_close() gave the strategy back
        self._framed: tuple[Any, bool] = (None, False)  # (a handler class, is it framed?), worked out once
        self._warnings = RateLimitedLog(log)  # warnings a peer can repeat: one line per kind per 10 s

    # ------------------------------------------------------------- serving

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until ``shutdown()`` is called.

        Runs a private ``Reactor`` serving this server alone.  The loop
        sleeps until a request arrives; ``poll_interval`` only matters to a
        subclass that overrides ``service_actions()``, which then runs at
        least that often.  If ``shutdown()`` was called before, returns at
        once.  May be called again after it returns.
        """
        self._serving.serve_forever(poll_interval)

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
        self._serving.shutdown()

    def handle_request(self) -> None:
        """Wait for one request and handle it (without a reactor).

        Waits at most ``timeout`` seconds (or the listening socket's own
        timeout, whichever is shorter; None: forever), then calls
        ``handle_timeout()`` instead.  This is the call to make after your
        own ``select()`` said ``fileno()`` is readable.
        """
        if self._serving.reactor is not None:
            raise UsageError(f"{self!r} is served by {self._serving.reactor!r}; handle_request() would race it")
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

    @property
    def reactor(self) -> Reactor | None:
        """The reactor serving this server right now, or None."""
        return self._serving.reactor

    def _attach(self, reactor: Reactor, poll_interval: float) -> None:
        """Called by ``Reactor.add_server``: served by ``reactor`` from now on."""
        self._check_bounds()  # set on the class since the constructor ran?
        self.request_table.name = self._label()
        wakes = type(self).service_actions is not BaseServer.service_actions
        self._serving.attach(reactor, poll_interval, wakes)

    def _detach(self, reactor: Reactor) -> None:
        """Called by ``Reactor.remove_server``: no longer served.

        The framed connections it owns end with it, and datagram replies
        still queued are dropped (both counted).
        """
        self._serving.detach()
        for connection in tuple(self._connections):
            connection.abort("the server stopped serving")
        if self._reply_queue is not None:
            self._reply_queue.close()

    # ----------------------------------------------------- overridable hooks

    def server_activate(self) -> None:
        """Called by the constructor to activate the server.  Nothing here."""

    def server_close(self) -> None:
        """Clean up the server: stop serving it, then let the strategy's running
        requests end (``block_on_close``, at most ``drain_timeout`` seconds).

        Exception-safe: whatever raises (a KeyboardInterrupt while waiting
        for running requests, say), every step still runs, and subclasses
        close their socket and socket file in ``finally``; the exception
        then propagates.  If the wait itself is interrupted, what is still
        running is ended at once, as with ``drain_timeout`` 0.
        """
        try:
            self._serving.leave()
        finally:
            if not self._released:
                self._released = True
                self._release_dispatch()

    def _release_dispatch(self) -> None:
        try:
            self.dispatch.release(wait=self.block_on_close, timeout=self.drain_timeout)
        except BaseException:
            # Interrupted while draining (a second Ctrl-C): do not wait any
            # more, but leave no worker blocked and no child running.
            try:
                self.dispatch.close(wait=True, timeout=0)
            except Exception:
                log.exception("%s: ending the running requests at once failed", self.request_table.name)
            raise

    def service_actions(self) -> None:  # overriding it makes the loop wake every poll_interval
        """Called once per loop iteration while the server is served.

        If a subclass overrides it, the loop also wakes at least every
        ``poll_interval`` seconds so it keeps running when nothing happens,
        as under the stdlib.  The base version does nothing.
        """

    def handle_timeout(self) -> None:
        """Called by ``handle_request()`` when ``timeout`` passes with no request."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Return True to process the request, False to drop it.  Accepts all."""
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Have the dispatch strategy run ``finish_request`` then ``shutdown_request``.

        ``Inline`` does it right here, as the stdlib; a ``ThreadPool`` or
        ``Fork`` does it on a worker or in a child and returns at once.
        """
        self.dispatch.submit(self, request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handle the request by instantiating ``RequestHandlerClass``."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """End one request: by default just ``close_request``."""
        self._end_request(request)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Release what one request holds.  Records its end in the table.

        A framed handler's request is marked handled here, which sends its reply.
        """
        self._end_request(request)

    def protocol_error_reply(self, error: Exception, connection: Any) -> bytes | None:
        """Bytes to send a peer that broke the framing, before closing; None sends nothing.

        Called with the ``ProtocolError`` (for example ``MessageTooLong``)
        and the connection.  The default sends the error's own suggested
        ``reply`` (None for the built-in framers).
        """
        return getattr(error, "reply", None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report an exception raised while processing a request.

        Call it from an ``except`` block.  It logs the traceback on the
        ``reactor`` logger at ERROR and, as the stdlib does, prints it to
        stderr between two lines of dashes; the server carries on.
        """
        log.error("exception while processing a request from %r", client_address, exc_info=True)
        print("-" * 40, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address, file=sys.stderr)
        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    # ------------------------------------------------------- the lifecycle

    def _handle_request_noblock(self) -> bool:
        """Take one request and run it through the lifecycle.

        Called when the socket is readable.  Returns False if there was no
        request after all (another process took it, the peer gave up, or
        the process is out of descriptors: ``get_request`` raised OSError),
        True otherwise.
        """
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            admission = self._serving.admission
            if admission is None or not admission.accept_failed(exc):
                log.debug("%s: get_request() found nothing: %s", self.request_table.name, exc)
            return False
        self._take(request, client_address)
        return True

    def _take(self, request: Any, client_address: Any) -> None:
        """Open the request's record and run the lifecycle (stream servers: ``_begin``)."""
        framed = self._handler_is_framed()
        kind = Kind.CONNECTION if framed else self._record_kind
        record = self.request_table.open(kind, request, client_address, getattr(self, "address_family", 0))
        self._begin(request, client_address, record, self._start_connection if framed else None)
        admission = self._serving.admission
        if admission is not None:
            admission.accepted()

    def _begin(self, request: Any, client_address: Any, record: Record, start: Any) -> None:
        """Begin an accepted connection's lifecycle (``TCPServer`` first runs a TLS handshake)."""
        self._lifecycle(request, client_address, record, start)

    def _handler_is_framed(self) -> bool:
        """Is ``RequestHandlerClass`` (as it is now: it may be reassigned) a ``MessageHandler``?"""
        handler_class = self.RequestHandlerClass
        if handler_class is not self._framed[0]:
            self._framed = (handler_class, _is_framed(handler_class))
        return self._framed[1]

    def _lifecycle(self, request: Any, client_address: Any, record: Record, start: Any = None) -> None:
        """verify_request, then process_request (or ``start``: the reactor takes over)."""
        table = self.request_table
        try:
            if not self.verify_request(request, client_address):
                table.transition(record, Event.REJECT, "verify_request() said no")
                self.shutdown_request(request)
                return
            if start is not None:
                start(request, client_address, record)
                return
            dispatch = self.dispatch
            if dispatch.inline or dispatch.has_room():
                if record.quiet:  # opened quiet, nobody to tell (a datagram's): the move by assignment
                    record.state = _PROCESSING
                else:
                    table.transition(record, _DISPATCH, "process_request()")
            else:
                table.transition(record, Event.WAIT, "every worker is busy")
            self.process_request(request, client_address)
        except Exception:
            self._end_request(request, Event.ERROR, "exception in the lifecycle")
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        except BaseException:
            self._end_request(request, Event.ERROR, "KeyboardInterrupt/SystemExit")
            self.shutdown_request(request)
            raise

    def _end_request(self, request: Any, event: Event = Event.FINISH, reason: str = "") -> None:
        """The one path by which every request ends, on whatever thread ran it.

        ``event`` is ``FINISH`` (the hooks call this), or ``ERROR`` (the
        handler or the lifecycle raised).  A request the reactor made itself
        (a framed message, on a stream or a datagram server) ends itself
        (``MessageRequest.end``: its maker sends the reply, or fails the
        connection); any other (an accepted socket, a ``(data, socket)``
        pair) ends its record in the table, found by identity.  Either way
        twice is once: ``shutdown_request`` and ``close_request`` both call
        it, and after an ERROR the hooks still run.
        """
        done = getattr(request, "done", None)  # dispatch.ends_itself's kind, inline: this runs twice per message
        if done is not None:
            if not done:  # (the second time, for a message ended already, costs no call)
                request.end(event is _ERROR)
            return
        admission = self._serving.admission
        if self.request_table.finish(request, event, reason) is not None and admission is not None and admission.state is _FULL:
            admission.connection_ended()

    # ------------------------------------------------------ framed streams

    def _start_connection(self, sock: Any, client_address: Any, record: Record, tls: Any = None) -> None:
        """The reactor takes a framed connection over (``tls``: its ``TLSSession``, secured)."""
        reactor = self._serving.reactor
        if reactor is None:
            # handle_request() without a reactor: serve this one connection
            # to its end on a private one, as a classic handler would be.
            with Reactor() as reactor:
                connection = Connection(self, sock, client_address, record, reactor, tls)
                self._connections.add(connection)
                connection.start()
                while record.state not in FINAL_STATES:
                    reactor.run_once()
            return
        connection = Connection(self, sock, client_address, record, reactor, tls)
        self._connections.add(connection)
        connection.start()

    def _connection_closed(self, connection: Connection) -> None:
        """Called by a Connection once its socket is closed."""
        self._connections.discard(connection)
        admission = self._serving.admission
        if admission is not None and admission.state is _FULL:
            admission.connection_ended()

    # ------------------------------------------------------ forked children

    def _in_child(self, keep: Any = ()) -> None:
        """In a child forked to run one request: leave the parent's loop, close what is not ours.

        Called on every server of the reactor the child was forked from.
        Closes this process's copy of the server's socket, of the accept
        gate's reserve descriptor and of every connection in its table
        (classic or framed), except the descriptors in ``keep``: the
        child's own request's (a datagram server's socket, when the child
        replies through it).  Nothing is shut down: that would end the
        parent's connections too.  The child never runs the loop, and must
        not change a socket's blocking mode: that flag is shared with the parent.
        """
        self._serving.forget_in_child()
        # The parent's table is the one truth: what this copy says is the child's.
        table = self.request_table
        table.name = f"{table.name} [child {os.getpid()}]"
        socks = [record.request for record in table.snapshot()]
        socks += [connection.sock for connection in self._connections]
        socks.append(getattr(self, "socket", None))
        for sock in socks:
            if isinstance(sock, socket.socket) and sock.fileno() not in keep and sock.fileno() != -1:
                os.close(sock.detach())  # a real close, even with makefile()s open, and never a second one

    def _child_started(self, pid: int) -> None:
        """A child was forked for a request (``ForkingMixIn`` tracks ``active_children``)."""

    def _child_ended(self, pid: int) -> None:
        """A child of ours was reaped."""

    @property
    def connections(self) -> tuple:
        """The framed connections open now (the reactor owns their sockets)."""
        return tuple(self._connections)

    def _label(self) -> str:
        family = getattr(self, "address_family", None)
        if family is None:
            return f"{type(self).__name__} {self.server_address!r}"
        name = family_name(family, self._record_kind)
        address = self.server_address
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            return f"{name} {host}:{address[1]}"
        return f"{name} {address!r}" if not isinstance(address, str) else f"{name} {address}"

    def __enter__(self) -> "BaseServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label()}>"


# ---------------------------------------------------------------- helpers


_DISPATCH = Event.DISPATCH  # plain globals: the hot path's enum lookups
_PROCESSING = State.PROCESSING
_FULL = Admit.FULL
_ERROR = Event.ERROR


def _is_framed(handler_class: Any) -> bool:
    return isinstance(handler_class, type) and issubclass(handler_class, MessageHandler)
