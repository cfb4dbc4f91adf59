"""The socket half of a framed connection: output, closing, interest, deadlines.

``Connection`` (reactor/connection.py) reads, frames, dispatches and
replies; this base class holds what it does with the socket around that:

* output: send what the kernel takes now, queue the rest in ``_out`` and
  watch for writability only while something is queued;
* closing: ``CLOSING`` sends what is queued (also after a handler failed:
  the replies it finished before go out), then either closes (the peer
  sent EOF) or lingers (shuts our side, reads and drops input until the
  peer's EOF, at most ``LINGER`` seconds) so a last reply is not destroyed
  by a reset; ``abort`` closes now; ``_release`` forgets the socket;
* interest: ``_want_read``/``_want_write`` keep the selector's
  registration in step with ``_reading``/``_writing``;
* deadlines: one deadline (``_deadline``, and which bound it is) and at
  most one timer, which on firing checks whether the deadline moved and
  re-arms itself instead of being cancelled and re-created per message.

It has no state of its own: ``Connection`` declares every slot.
"""

from __future__ import annotations

import logging
import socket

from .table import Event, State

__all__ = ["Channel", "LINGER"]

log = logging.getLogger("reactor")

#: How long a lingering close waits for the peer's EOF before closing anyway.
LINGER = 2.0

_READING, _WRITING, _CLOSING = State.READING, State.WRITING, State.CLOSING


class Channel:
    """Output, closing, selector interest and deadlines of a ``Connection``."""

    __slots__ = ()

    # ----------------------------------------------------------------- output

    def _send(self, data: bytes) -> None:
        """Queue ``data`` and send what the socket takes now."""
        if self._out:
            self._out += data
            self._flush()
            return
        # Nothing queued (the common case): send straight from ``data`` and
        # queue only what the kernel did not take.
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._broken(exc)
            return
        self.record.bytes_out += sent
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._want_write(True)

    def _flush(self) -> None:
        """Send what is queued without blocking; watch for writability if some is left."""
        out = self._out
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._broken(exc)
            return
        if sent:
            self.record.bytes_out += sent
            del out[:sent]
        self._want_write(bool(out))

    def _on_writable(self) -> None:
        self._flush()
        state = self.record.state
        if state is _WRITING:
            self._set_deadline("write_timeout")  # progress: the peer is reading
            if len(self._out) <= self.server.output_low_water:
                self._table.transition(self.record, Event.DRAINED, f"{len(self._out)} B queued")
                self._pump()
        elif state is _CLOSING:
            if self._out:
                self._set_deadline("write_timeout")  # progress: the peer is reading
            else:
                self._output_sent()

    # ---------------------------------------------------------------- closing

    def _begin_closing(self, event: Event, reason: str, last: bytes | None = None, linger: bool = False) -> None:
        """Enter CLOSING: send what is queued, then ``last``, then close.

        The close lingers (see ``_output_sent``) unless the peer sent EOF;
        ``linger`` makes it linger anyway (a protocol error leaves input unread).
        """
        self._table.transition(self.record, event, reason)
        self._want_read(False)
        self._linger = linger or not self._eof
        if self._replies:
            self._release_replies()  # replies held back by the pump that led here
        if last and self.record.state is _CLOSING:
            self._send(last)
        if self.record.state is not _CLOSING:
            return  # a write failed and closed us
        if self._out:
            self._set_deadline("write_timeout")
        else:
            self._output_sent()

    def _output_sent(self) -> None:
        if not self._linger:
            self._finish_close()
            return
        # Shut our side, then wait (briefly) for the peer's EOF, reading and
        # dropping whatever it still sends: closing with unread input would
        # make the kernel send a reset, which can destroy our last reply.
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish_close()
            return
        self._set_deadline("linger")
        self._want_read(True)

    def _finish_close(self) -> None:
        if self._failure:  # a failed connection ends FAILED, once its replies are out
            self._table.transition(self.record, Event.ERROR, self._failure)
        else:
            self._table.transition(self.record, Event.FINISH, f"{self.messages} message(s)")
        self._release()

    def abort(self, reason: str) -> None:
        """Close now, dropping queued output (the server is closing, or the peer is gone)."""
        if self.record.state in (State.CLOSED, State.FAILED):
            return
        if self._failure:  # it had failed already: it still ends FAILED
            self._table.transition(self.record, Event.ERROR, f"{self._failure}; then {reason}")
        else:
            self._table.transition(self.record, Event.ABORT, reason)
        self._release()

    def _broken(self, exc: OSError) -> None:
        self._table.count("resets")
        log.debug("%r: %s; closing it", self, exc)
        self.abort(f"{type(exc).__name__}: {exc.strerror or exc}")

    def _fail(self, reason: str) -> None:
        """An exception in the lifecycle: the connection ends FAILED.

        Every reply finished before the failure still goes out, in order
        (held replies, then queued output), through a normal close; nothing
        after the failing message is handled.  A connection that has sent
        nothing yet (ACCEPTED) or is already closing fails at once.
        """
        state = self.record.state
        if state is State.CLOSED or state is State.FAILED:
            return
        self._failure = reason
        if state is State.ACCEPTED or state is _CLOSING:
            self._table.transition(self.record, Event.ERROR, reason)
            self._release()
            return
        self._frames.clear()
        self._begin_closing(Event.ERROR, reason)

    def _release(self) -> None:
        """Forget the socket: unwatch it, cancel its timer, close it, tell the server."""
        self._set_deadline(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reactor = self._reactor
        if reactor is not None and not reactor.closed:
            reactor.remove_reader(self.sock)
            reactor.remove_writer(self.sock)
        self._reading = self._writing = False
        self._current = None
        self._replies.clear()
        try:
            self.sock.close()
        finally:
            self.server._connection_closed(self)

    # --------------------------------------------------------------- plumbing

    def _want_read(self, on: bool) -> None:
        if on and not self._reading:
            self._reactor.add_reader(self.sock, self._on_readable)
            self._reading = True
        elif not on and self._reading:
            self._reactor.remove_reader(self.sock)
            self._reading = False

    def _want_write(self, on: bool) -> None:
        if on and not self._writing:
            self._reactor.add_writer(self.sock, self._on_writable)
            self._writing = True
        elif not on and self._writing:
            self._reactor.remove_writer(self.sock)
            self._writing = False

    def _set_deadline(self, bound: str | None) -> None:
        """Arm the deadline of ``bound`` (a server attribute name, or "linger"); None disarms."""
        seconds = None if bound is None else LINGER if bound == "linger" else getattr(self.server, bound)
        if seconds is None:
            self._deadline = None
            self._bound = ""
            return
        reactor = self._reactor
        when = reactor.time() + seconds
        self._deadline = when
        self._bound = bound
        if self._timer is None or self._timer.when > when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = reactor.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.record.state in (State.CLOSED, State.FAILED):
            return
        if self._reactor.time() < deadline:
            self._timer = self._reactor.call_at(deadline, self._on_deadline)  # it moved: wait more
            return
        bound, self._deadline, self._bound = self._bound, None, ""
        state = self.record.state
        if bound == "linger":
            self._finish_close()  # the peer never closed its side: close anyway
        elif state is _READING:
            self._table.count(bound)
            log.info("%s: %r: %s passed; closing the connection", self._table.name, self.client_address, bound)
            self._frames.clear()
            self._begin_closing(Event.CLOSE, bound)
        elif state is _WRITING or state is _CLOSING:
            self._table.count("write_timeout")
            log.info("%s: %r: the peer stopped reading; dropping the connection", self._table.name, self.client_address)
            self.abort("the peer stopped reading")
