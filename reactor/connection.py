"""A framed connection: the reactor reads, frames, dispatches and writes.

When a stream server's handler is a ``MessageHandler``, the accepted socket
never reaches a handler.  A ``Connection`` owns it instead, nonblocking,
and drives its record through the table:

    ACCEPTED -start-> READING -message-> READY -dispatch-> PROCESSING
    PROCESSING -reply-> READING              (output queued, below high water)
    PROCESSING -backlog-> WRITING -drained-> READING   (the peer reads slowly)
    READING -eof/close/protocol-> CLOSING -finish-> CLOSED
    any -abort-> CLOSED      READING/READY/PROCESSING/WRITING -error-> CLOSING -error-> FAILED

Invariants:

* One message in flight per connection.  Pipelined input stays in the
  frame buffer (or in the kernel) and is answered in order.
* Input is read only while the connection can use it: not while WRITING
  (a peer that does not read cannot grow our memory), and at most one
  read plus one message ahead while a message is handled (``Input``).
* The replies to the messages of one read go out together, in one
  ``send()``; write interest is registered only while output is queued
  (``Output``).  One deadline and at most one timer (``Deadline``).
* A socket error closes this connection quietly (counted, logged at
  DEBUG); nobody else notices.
* ``CLOSING`` sends what is queued (also after a handler failed: the
  replies it finished before go out), then closes.  A close we start (not
  the peer's EOF) lingers: the write side is shut down once the output is
  sent, and input is dropped until the peer closes too (at most
  ``LINGER`` seconds), so unread input does not make the kernel reset the
  connection and destroy a last reply in flight.  ``abort`` closes now.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from handlers.errors import ClosedError, MessageTooLong, ProtocolError
from handlers.message import MessageRequest

from .deadline import LINGER, Deadline
from .input import Input
from .output import Output
from .table import Event, Record, Size, State, describe_peer

__all__ = ["Connection", "LINGER"]

log = logging.getLogger("reactor")

# Enum members of every message as plain globals (a member lookup costs about a call).
_MESSAGE, _DISPATCH, _REPLY = Event.MESSAGE, Event.DISPATCH, Event.REPLY
_OVER = (State.CLOSED, State.FAILED)

_READING, _READY, _PROCESSING = State.READING, State.READY, State.PROCESSING
_WRITING, _CLOSING = State.WRITING, State.CLOSING


class Connection:
    """One framed connection of a server.  Handlers see it as ``self.connection``.

    For handlers: ``data`` (a dict for per-connection state), ``close()``
    (close once the queued output is sent), ``send(data)`` and ``queued``
    (push to a connection other than one's own), ``closing``, ``client_address``,
    ``id`` (the table record's id), ``messages`` (how many were handled),
    ``sock`` (the socket, plain also over TLS), ``tls`` (None, or TLS's
    ``ssl.SSLObject``: ``getpeercert()``, ``selected_alpn_protocol()``,
    ``version()`` ...).  The rest is the reactor's.
    """

    __slots__ = (
        "server", "sock", "tls", "client_address", "record", "data", "messages",
        "_reactor", "_table", "_input", "_output",
        "_close_asked", "_failure", "_deadline", "_current", "_pumping", "_quiet", "_linger",
    )  # fmt: skip

    def __init__(self, server: Any, sock: socket.socket, client_address: Any, record: Record, reactor: Any,
                 tls: Any = None) -> None:  # fmt: skip
        self.server = server
        self.sock = sock
        self.client_address = client_address
        self.record = record
        self.data: dict[str, Any] = {}
        self.messages = 0
        self._reactor = reactor
        self._table = server.request_table
        framing = server.RequestHandlerClass.framing
        self.tls = tls.object if tls is not None else None  # tls: the TLSSession (reactor/tlssession.py)
        self._input = Input(sock, record, reactor, framing, server.max_message_size, self._on_readable, tls)
        self._output = Output(sock, record, reactor, self._on_writable, tls)  # not yet taken
        self._close_asked = False
        self._failure = ""  # why the connection failed (it closes, then ends FAILED)
        self._deadline = Deadline(server, reactor, self._on_deadline)
        self._linger = False
        self._current: MessageRequest | None = None
        self._pumping = False
        self._quiet = False  # nobody watches the table during this pump: moves are bare assignments

    # ------------------------------------------------------------- for handlers

    id = property(lambda self: self.record.id, doc="The id of the connection's record.")

    @property
    def closing(self) -> bool:
        """True once the connection is on its way out."""
        return self._close_asked or self.record.state in (_CLOSING, State.CLOSED, State.FAILED)

    def close(self) -> None:
        """Close the connection once the current reply (and anything queued) is sent."""
        self._close_asked = True
        if self.record.state is _READING or self.record.state is _WRITING:
            self._begin_closing(Event.CLOSE, "close() asked for it")

    def send(self, data: bytes) -> None:
        """Queue ``data`` for this connection's peer, outside its own replies.

        For pushing to *other* connections (a chat room's broadcast): a
        reply to one's own message goes through ``wfile``/``request``.  The
        bytes go out after anything queued, as the peer reads; this never
        blocks nor pauses anyone's input.  How much may pile up for a slow
        peer is the caller's policy: watch ``queued`` (``write_timeout``
        still drops a peer that stops reading).  Any thread.  Raises
        ``ClosedError`` once the connection is closing or closed.
        """
        if self.record.state in (_CLOSING, State.CLOSED, State.FAILED):
            raise ClosedError(f"{self!r} is closing; cannot send")
        reactor = self._reactor
        if reactor is not None and reactor._thread_id != threading.get_ident():
            reactor.call_soon_threadsafe(self._send_later, bytes(data))
            return
        # Sent by the write callback, which also ends WRITING once the
        # queue drains (sending here could empty it with nobody to notice).
        self._output.push(data)

    def _send_later(self, data: bytes) -> None:
        if self.record.state not in (_CLOSING, State.CLOSED, State.FAILED):
            self.send(data)

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent to the peer (replies and ``send()`` alike)."""
        return self._output.queued

    def fileno(self) -> int:
        return self.sock.fileno()

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def __repr__(self) -> str:
        return f"<Connection #{self.record.id} {describe_peer(self.client_address)} {self.record.state.name}>"

    def trace_label(self, fd: int) -> str:
        """What the trace calls our socket: the server and the record (``tcp4 127.0.0.1:9000 #3``)."""
        return f"{self._table.name} #{self.record.id}"

    # ---------------------------------------------------------------- starting

    def start(self) -> None:
        """Take over the socket: nonblocking, watched for input."""
        if self.sock.gettimeout() != 0.0:  # (after a TLS handshake it is already)
            self.sock.setblocking(False)
        self._output.start()
        self._table.transition(self.record, Event.START, "framed: the reactor reads")
        self._input.watch(True)
        self._deadline.arm("idle_timeout")
        if self._input.tls_buffered:  # what came with the TLS handshake's last message (the first request, often):
            self._on_readable()  # its reply goes with TLS's session tickets (Output); no reply, they go now
            if self._output.queued and self.record.state not in _OVER:
                self._sent(self._output.flush())

    # ------------------------------------------------------------------ input
    #
    # The hot path, per message: _on_readable -> _pump -> _dispatch -> the server's
    # process_request (the strategy, the hooks as they are now) -> the handler ->
    # close_request -> _request_done, which holds the reply back until the read's
    # messages are all handled: then one send().  Fast where that costs no clarity:
    # local names in loops, no call where an attribute test does, no unread trace.

    def _on_readable(self) -> None:
        try:
            data = self._input.read()
        except OSError as exc:
            self._broken(exc)
            return
        if data is None:
            return
        record = self.record
        state = record.state
        if state is _CLOSING:  # lingering: what the peer still sends is dropped
            if not data:
                self._finish_close()
            return
        if not data:  # EOF: the input stopped watching
            if state is _READING:
                self._pump()
            return
        self._input.take(data, state is _READING)
        if state is _READING:
            self._pump()  # which arms request_timeout if a message is left incomplete

    def _pump(self) -> None:
        """Dispatch buffered messages one at a time while the connection is READING.

        Whether anyone watches the table (an observer, the trace) is decided
        once here: if nobody does, a message handled within this pump moves
        its record READING -> PROCESSING -> READING by assignment (see the
        table's rule 1), and ``changed`` is the time of the pump.
        """
        self._pumping = True
        self._quiet = quiet = not self._table.watched()
        if quiet:
            self.record.changed = self._table.clock()  # the table's clock, as transition() uses
        try:
            self._pump_messages()
        finally:
            self._pumping = False
        # The replies to the messages handled in this pump were held back:
        # one send for all of them (16 pipelined requests, one reply segment).
        if self._output.held and self.record.state not in _OVER:
            self._sent(self._output.release())

    def _pump_messages(self) -> None:
        table, record, frames = self._table, self.record, self._input.frames
        while record.state is _READING:
            if self._close_asked:
                self._begin_closing(Event.CLOSE, "close() asked for it")
                return
            try:
                message = frames.next()
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
            except Exception:
                log.exception("%s: %r: the framer failed", table.name, self.client_address)
                self._fail("the framer raised")
                return
            if message is None:
                self._wait_for_input()
                return
            dispatch = self.server.dispatch
            if not dispatch.inline and not dispatch.has_room():
                table.transition(record, _MESSAGE, len(message))  # READY until a worker is free
                self.server._serving.admission.wait_for_room(self, message)
                return
            if not self._quiet:
                table.transition(record, _MESSAGE, len(message))  # shown as "41 B"
            self._dispatch(message)

    def _wait_for_input(self) -> None:
        """Nothing complete is buffered: read on, under the right deadline."""
        if self._input.eof:
            self._begin_closing(Event.EOF, "the peer sent EOF")
            return
        if not self._input.watching:
            self._input.watch(True)
        if not self._input.frames.buffered:
            self._deadline.arm("idle_timeout")
        elif self._deadline.bound != "request_timeout":
            # Part of a message is here: its clock starts now, not restarted by
            # the bytes that trickle in after it (a whole message needs none).
            self._deadline.arm("request_timeout")

    def _dispatch(self, message: bytes) -> None:
        """Run the server's lifecycle hooks for one message, every time: the
        server's ``process_request`` (hence the strategy, ``finish_request``,
        ``shutdown_request``, ``close_request``) as overridden or assigned now."""
        server, record = self.server, self.record
        if self._deadline.when is not None:
            self._deadline.clear()  # no deadline while the handler runs
        if record.state is _READING:  # a quiet pump: MESSAGE and DISPATCH in one move
            record.state = _PROCESSING
        else:
            self._table.transition(record, _DISPATCH, "process_request()")
        request = MessageRequest(message, self, self._request_done)
        self._current = request
        try:
            server.process_request(request, self.client_address)
        except Exception:
            try:
                server.handle_error(request, self.client_address)  # first, as the stdlib does
            finally:
                self._fail("exception in the lifecycle")
            server.shutdown_request(request)  # as socketserver: the ending hooks run after a failure too
        except BaseException:
            self._fail("KeyboardInterrupt/SystemExit")
            raise

    def _request_done(self, request: MessageRequest) -> None:
        """The message's request ended (``MessageRequest.end``): its reply goes out.

        Called on whatever thread ended it; from a worker, it comes back to
        the loop's thread (posted) before it touches the connection.
        """
        reactor = self._reactor
        if reactor is not None and reactor._thread_id != threading.get_ident():
            reactor.call_soon_threadsafe(self._request_done, request)  # from a worker: back to the loop
            return
        record = self.record
        if request is not self._current or record.state is not _PROCESSING:
            return  # the connection was closed (or failed) meanwhile
        self._current = None
        if request.failed:  # the handler raised where it ran (a worker): as inline, the connection fails
            self._fail("exception in the handler")
            return
        self.messages += 1
        if self._input.frames.framer.returns_unread:
            unread = request.unread()
            if unread:
                self._input.frames.unread(unread)  # a Chunk handler that recv()'d less than it got
        output = request.output
        if output:
            data = b"".join(output)  # one piece: join returns it, no copy
            if self._pumping:  # inline, inside _pump: held back, sent when the pump ends
                pending = self._output.hold(data)
            else:
                self._sent(self._output.send(data))
                if record.state is not _PROCESSING:
                    return  # the write failed and closed us
                pending = len(self._output)
        else:
            pending = len(self._output)
        high_water = self.server.output_high_water
        if pending > high_water:
            if self._output.held:
                self._sent(self._output.release())  # what the kernel takes now does not count against us
                if record.state is not _PROCESSING:
                    return  # the write failed and closed us
            if len(self._output) > high_water:
                self._table.count("backpressure")
                log.debug("%r: %d bytes queued, over the high-water mark: not reading", self, len(self._output))
                self._table.transition(record, Event.BACKLOG, Size(self._output, " queued"))
                self._input.watch(False)
                self._deadline.arm("write_timeout")
                return
        # Inline dispatch lands here inside _pump's loop, which goes on by
        # itself; a reply that comes later (from a worker) restarts it.
        if self._pumping:
            if self._quiet:
                record.state = _READING  # what REPLY does, unwatched
            else:
                self._table.transition(record, _REPLY, Size(self._output, " still queued") if self._output.queued else "")
            return
        self._table.transition(record, _REPLY, Size(self._output, " still queued") if self._output.queued else "")
        self._pump()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._table.count("too_long" if isinstance(exc, MessageTooLong) else "protocol_errors")
        warn = self.server._warnings.warning  # rate-limited: a peer can break the framing again and again
        warn("protocol_error", "%s: %r: %s; closing the connection", self._table.name, self.client_address, exc)
        try:
            reply = self.server.protocol_error_reply(exc, self)
        except Exception:
            log.exception("%s: protocol_error_reply() failed; closing without a reply", self._table.name)
            reply = None
        self._input.frames.clear()
        # Its replies to the messages before the bad one go first, then the
        # error reply; input is left unread, so the close lingers.
        self._begin_closing(Event.PROTOCOL, str(exc), last=reply, linger=True)

    # ----------------------------------------------------------------- output

    def _sent(self, error: OSError | None) -> None:  # after Output.send or .release: a socket error closes us
        if error is not None:
            self._broken(error)

    def _on_writable(self) -> None:
        error = self._output.flush()
        if error is not None:
            self._broken(error)
            return
        state = self.record.state
        if state is _WRITING:
            self._deadline.arm("write_timeout")  # progress: the peer is reading
            if len(self._output) <= self.server.output_low_water:
                self._table.transition(self.record, Event.DRAINED, f"{len(self._output)} B queued")
                self._pump()
        elif state is _CLOSING:
            if self._output.queued:
                self._deadline.arm("write_timeout")  # progress: the peer is reading
            else:
                self._output_sent()

    # ---------------------------------------------------------------- closing

    def _begin_closing(self, event: Event, reason: str, last: bytes | None = None, linger: bool = False) -> None:
        """Enter CLOSING: send what is queued, then ``last``, then close.

        The close lingers (``_output_sent``) unless the peer sent EOF, or if
        ``linger`` (a protocol error leaves input unread)."""
        self._table.transition(self.record, event, reason)
        self._input.watch(False)
        self._linger = linger or not self._input.eof
        if self._output.held:
            self._sent(self._output.release())  # replies held back by the pump that led here
        if last and self.record.state is _CLOSING:
            self._sent(self._output.send(last))
        if self.record.state is not _CLOSING:
            return  # a write failed and closed us
        if self._output.queued:
            self._deadline.arm("write_timeout")
        else:
            self._output_sent()

    def _output_sent(self) -> None:
        if self._output.close_notify():  # TLS: every clean close says so (true: not all sent yet)
            self._deadline.arm("write_timeout")
            return  # _on_writable comes back here once it is sent
        if not self._linger:
            self._finish_close()
            return
        # Shut our side, then wait (briefly) for the peer's EOF, dropping what
        # it sends: unread input at close makes a reset, which can destroy our last reply.
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish_close()
            return
        self._deadline.arm("linger")
        self._input.watch(True)

    def _finish_close(self) -> None:
        self._end(Event.FINISH, f"{self.messages} message(s)")

    def abort(self, reason: str) -> None:
        """Close now, dropping queued output (the server is closing, or the peer is gone)."""
        if self.record.state not in _OVER:
            self._end(Event.ABORT, reason)

    def _end(self, event: Event, reason: str) -> None:
        """The record's last move, ``event``; a connection that failed ends FAILED whatever ends it."""
        if self._failure:
            event, reason = Event.ERROR, self._failure if event is Event.FINISH else f"{self._failure}; then {reason}"
        self._table.transition(self.record, event, reason)
        self._release()

    def _broken(self, exc: OSError) -> None:
        self._table.count("resets")
        log.debug("%r: %s; closing it", self, exc)
        self.abort(f"{type(exc).__name__}: {exc.strerror or exc}")

    def _fail(self, reason: str) -> None:
        """An exception in the lifecycle: the connection ends FAILED.

        Every reply finished before the failure still goes out, in order,
        through a normal close; nothing after the failing message is handled.
        A connection not started yet (ACCEPTED) or already closing fails at once.
        """
        state = self.record.state
        if state in _OVER:
            return
        self._failure = reason
        if state is State.ACCEPTED or state is _CLOSING:
            self._table.transition(self.record, Event.ERROR, reason)
            self._release()
            return
        self._input.frames.clear()
        self._begin_closing(Event.ERROR, reason)

    def _release(self) -> None:
        """Forget the socket: unwatch it, cancel its timer, close it, tell the server."""
        self._deadline.cancel()
        reactor = self._reactor
        if reactor is not None and not reactor.closed:
            reactor.remove_reader(self.sock)
            reactor.remove_writer(self.sock)
        self._input.watching = False
        self._output.forget()
        self._current = None
        try:
            self.sock.close()
        finally:
            self.server._connection_closed(self)

    # -------------------------------------------------------------- deadline

    def _on_deadline(self) -> None:
        """The deadline's timer fired (the trace names this method)."""
        if self.record.state in _OVER:
            return
        bound = self._deadline.due()
        if bound is None:
            return  # it moved (re-armed) or went away
        state = self.record.state
        if bound == "linger":
            self._finish_close()  # the peer never closed its side: close anyway
        elif state is _READING:
            self._table.count(bound)
            log.info("%s: %r: %s passed; closing the connection", self._table.name, self.client_address, bound)
            self._input.frames.clear()
            self._begin_closing(Event.CLOSE, bound)
        elif state is _WRITING or state is _CLOSING:
            self._table.count("write_timeout")
            log.info("%s: %r: the peer stopped reading; dropping the connection", self._table.name, self.client_address)
            self.abort("the peer stopped reading")
