"""TLS on stream servers, with the handshake run by the loop.

The stdlib's way to serve TLS, wrapping the listening socket
(``server.socket = context.wrap_socket(server.socket, server_side=True)``),
makes ``accept()`` run the handshake, blocking: one client that connects
and never sends its ClientHello holds up every client of every server on
the loop.  Here the handshake is a state of the connection's record, run
without blocking, as the loop runs everything else:

    ACCEPTED -handshake-> HANDSHAKING -secured-> ACCEPTED   (then as any connection)
    HANDSHAKING -abort-> CLOSED   (a failed handshake, handshake_timeout, the server closing)

A server serves TLS when it has an ``ssl_context`` (a keyword of the
stream servers' constructors, or a class attribute), or when its listening
socket was wrapped the stdlib's way: that is detected, and the listener's
own context used, so the stdlib pattern is never deaf either.

Once secured, a classic handler gets an ``ssl.SSLSocket`` in blocking
mode (as it would get a plain socket); a framed connection goes on with
its plain socket and a ``TLSSession`` (reactor/tlssession.py): TLS over
memory buffers, between the socket and the frames.  What a handler sees
of TLS (``getpeercert()``, ``selected_alpn_protocol()``, ``version()``,
``cipher()``) is on ``self.request`` for a classic handler,
``self.connection.tls`` (an ``ssl.SSLObject``) for a framed one.  Every
clean close sends close_notify.

``server_context(cert, key, ca=None)`` builds a server's context from PEM
files, each problem a one-line ``UsageError`` (``python -m reactor serve
--tls-cert``).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Callable

from .errors import UsageError
from .table import Event
from .tlssession import READ_SIZE, TLSSession

__all__ = ["Handshake", "context_of", "accept_plain", "send_close_notify", "server_context", "HANDSHAKE_TIMEOUT"]

log = logging.getLogger("reactor")

#: Default ``handshake_timeout``: seconds a client has to finish its handshake (asyncio's default too).
HANDSHAKE_TIMEOUT = 60.0


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A server's ``ssl.SSLContext`` from PEM files: its certificate (chain) and private key,
    and, with ``ca``, client certificates required (``CERT_REQUIRED``) and checked against it.

    Built with ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``, whose
    trust store is empty: with ``ca``, only what that CA signed is accepted.
    A file that cannot be read, holds no certificate or key, a key that
    does not match the certificate or needs a password (never asked for)
    raises ``UsageError``, one line naming the file and the reason.
    """
    for what, path in (("certificate", cert), ("private key", key), ("CA", ca)):
        if path is not None:
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise UsageError(f"cannot read the TLS {what} file {path!r}: {exc.strerror or exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_password(key))
    except ssl.SSLError as exc:
        raise UsageError(_why_not_loaded(cert, key, exc)) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError:
            raise UsageError(f"no CA certificate in the TLS CA file {ca!r} (PEM expected)") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _no_password(key: str) -> Callable[[], bytes]:
    """A password callback that refuses: OpenSSL would otherwise prompt on the terminal."""

    def refuse() -> bytes:
        raise UsageError(f"the TLS private key file {key!r} is encrypted: a key that needs no password is required")

    return refuse


def _why_not_loaded(cert: str, key: str, exc: ssl.SSLError) -> str:
    """Which of the two files ``load_cert_chain`` refused, and why (its own message names neither)."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the TLS private key file {key!r} does not match the certificate file {cert!r}"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return f"no certificate in the TLS certificate file {cert!r} (PEM expected)"
    return f"no private key in the TLS private key file {key!r} (PEM expected)"


def context_of(server: Any) -> ssl.SSLContext | None:
    """The server's TLS context: its ``ssl_context``, or its wrapped listener's; None for plain TCP."""
    context = getattr(server, "ssl_context", None)
    if context is None and isinstance(getattr(server, "socket", None), ssl.SSLSocket):
        context = server.socket.context
    return context


def accept_plain(listener: socket.socket) -> tuple[socket.socket, Any]:
    """``accept()`` that never runs a handshake: on a listener wrapped the
    stdlib's way, ``SSLSocket.accept`` would run it here, blocking."""
    if isinstance(listener, ssl.SSLSocket):
        return socket.socket.accept(listener)
    return listener.accept()


def send_close_notify(sock: Any) -> None:
    """Send TLS's close_notify on ``sock`` if it speaks TLS, never waiting for the peer's.

    A plain socket is left alone.  Errors are ignored: the peer may be gone.
    """
    if not isinstance(sock, ssl.SSLSocket):
        return
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)  # ours goes out at once; waiting for the peer's would block
        sock.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass  # ours is sent (or queued in the kernel); the peer's is not awaited
    except (OSError, ValueError):  # ValueError: TLS already shut down on it
        pass
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass


class Handshake:
    """One accepted connection's TLS handshake, run by the loop without blocking.

    ``start()`` begins it; each step runs when the socket is ready.
    Secured, the record goes back to ACCEPTED and ``then(tls)`` carries on
    (the server's lifecycle).  Failed (a plain-text client, a bad
    certificate, a reset), timed out (``server.handshake_timeout``) or
    aborted (the server stops serving), the connection is closed, the record
    aborted, and the bound counted (``handshake_failed``,
    ``handshake_timeout``), logged at DEBUG (rate-limited).  Loop thread only.

    Two ways, by what comes after (``for_framed``):

    * a classic handler gets an ``ssl.SSLSocket``: the socket is wrapped
      (the record's request becomes the ``SSLSocket``) and each step runs
      when the socket is ready in the direction TLS asks for;
    * a framed connection goes on with a ``TLSSession`` over memory
      buffers (reactor/tlssession.py): the handshake reads the plain
      socket, feeds TLS, and sends what TLS answers; ``then(session)``.
    """

    __slots__ = ("server", "record", "client_address", "tls", "_reactor", "_context", "_sock", "_then",
                 "_timer", "_watching", "_framed", "_unsent", "_done")  # fmt: skip

    def __init__(self, server: Any, sock: socket.socket, client_address: Any, record: Any, reactor: Any,
                 context: ssl.SSLContext, then: Callable[[Any], None], for_framed: bool = False) -> None:  # fmt: skip
        self.server = server
        self.record = record
        self.client_address = client_address
        self.tls: Any = None  # the SSLSocket, or the TLSSession
        self._reactor = reactor
        self._context = context
        self._sock = sock
        self._then = then
        self._timer: Any = None
        self._watching = ""  # "read", "write", "both" or ""
        self._framed = for_framed
        self._unsent = b""  # framed: handshake bytes the socket has not taken yet
        self._done = False

    def __repr__(self) -> str:
        return f"<Handshake #{self.record.id} {self.client_address!r} {self.record.state.name}>"

    def trace_label(self, fd: int) -> str:
        """What the trace calls the socket while it shakes hands: ``tcp4 127.0.0.1:9000 #3 handshake``."""
        return f"{self.server.request_table.name} #{self.record.id} handshake"

    def start(self) -> None:
        table = self.server.request_table
        table.transition(self.record, Event.HANDSHAKE, "TLS")
        try:
            self._sock.setblocking(False)
            if self._framed:
                self.tls = TLSSession(self._context)
            else:
                self.tls = self._context.wrap_socket(self._sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self._fail("handshake_failed", f"the TLS handshake could not start: {exc}")
            return
        if not self._framed:
            table.rebind(self.record, self.tls)
        self.server._handshakes.add(self)
        if self.server.handshake_timeout is not None:
            self._timer = self._reactor.call_later(self.server.handshake_timeout, self._timed_out)
        if self._framed:
            self._watch("read")  # the client speaks first
        else:
            self._step()

    @staticmethod
    def blocking(server: Any, sock: socket.socket, client_address: Any, record: Any,
                 context: ssl.SSLContext, for_framed: bool = False) -> Any:  # fmt: skip
        """The handshake without a loop (``handle_request()`` on its own), blocking
        as the stdlib's would, within ``handshake_timeout``: the secured socket
        (a ``TLSSession`` ``for_framed``), or None (the connection was closed
        and its record aborted)."""
        table = server.request_table
        table.transition(record, Event.HANDSHAKE, "TLS, blocking: no loop")
        try:
            sock.settimeout(server.handshake_timeout)
            if for_framed:
                tls = TLSSession(context)
                tls.handshake_blocking(sock)
                sock.settimeout(None)
            else:
                tls = context.wrap_socket(sock, server_side=True)
                table.rebind(record, tls)
                tls.settimeout(None)
        except (OSError, ValueError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            server._drop_early(sock, client_address, "handshake_timeout" if timed_out else "handshake_failed",
                               "no TLS handshake within handshake_timeout" if timed_out else f"TLS handshake failed: {_why(exc)}")
            return None
        table.transition(record, Event.SECURED, _negotiated(tls))
        return tls

    # ---------------------------------------------------------- classic: SSLSocket

    def _step(self) -> None:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._watch("read")
        except ssl.SSLWantWriteError:
            self._watch("write")
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: bad data, bad certificate, reset
            self._fail("handshake_failed", f"TLS handshake failed: {_why(exc)}")
        else:
            self._secured()

    # ------------------------------------------------- framed: memory buffers

    def _readable(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail("handshake_failed", f"TLS handshake failed: {_why(exc)}")
            return
        try:
            self._done = self.tls.handshake(data)
        except (OSError, ValueError) as exc:
            self._say_last_words()
            self._fail("handshake_failed", f"TLS handshake failed: {_why(exc)}")
            return
        out = self.tls.take_output()
        if self._done and not self._unsent and self.tls.buffered:
            # The client's first request came with its Finished: what TLS says
            # now (the session tickets) goes out with the reply, in one send.
            self.tls.held_output = out
            self._secured()
            return
        self._unsent += out
        self._flush()

    def _flush(self) -> None:
        """Send what TLS answered; secured once the handshake is done and all of it is sent."""
        if self._unsent:
            try:
                sent = self._sock.send(self._unsent)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail("handshake_failed", f"TLS handshake failed: {_why(exc)}")
                return
            self._unsent = self._unsent[sent:]
        if self._done and not self._unsent:
            self._secured()
        else:
            self._watch("both" if self._unsent else "read")

    def _say_last_words(self) -> None:
        """A failed handshake's alert (a bad certificate, say), if the socket takes it now."""
        try:
            self._sock.send(self._unsent + self.tls.take_output())
        except OSError:
            pass

    # ----------------------------------------------------------------- either

    def _secured(self) -> None:
        self._end(keep_reading=self._framed)  # framed: the connection takes the registration over
        self.server.request_table.transition(self.record, Event.SECURED, _negotiated(self.tls))
        self._then(self.tls)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail("handshake_timeout", f"no TLS handshake within handshake_timeout ({self.server.handshake_timeout} s)")

    def abort(self, reason: str) -> None:
        """Close now (the server stops serving)."""
        self._fail("", reason)

    def _fail(self, counter: str, reason: str) -> None:
        self._end()
        self.server._drop_early(self._sock if self._framed or self.tls is None else self.tls, self.client_address,
                                counter, reason)  # fmt: skip

    def _end(self, keep_reading: bool = False) -> None:
        self.server._handshakes.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch("read" if keep_reading else "")

    def _watch(self, direction: str) -> None:
        """Watch the socket in ``direction``: ``read``, ``write``, ``both`` or ``""`` (neither)."""
        if direction == self._watching:
            return
        reactor = self._reactor
        if self._framed:
            sock, reading, writing = self._sock, self._readable, self._flush
        else:
            sock, reading, writing = self.tls, self._step, self._step
        was, self._watching = self._watching, direction
        if was in ("read", "both") and direction not in ("read", "both"):
            reactor.remove_reader(sock)
        if was in ("write", "both") and direction not in ("write", "both"):
            reactor.remove_writer(sock)
        if direction in ("read", "both") and was not in ("read", "both"):
            reactor.add_reader(sock, reading)
        if direction in ("write", "both") and was not in ("write", "both"):
            reactor.add_writer(sock, writing)


def _negotiated(tls: Any) -> str:
    """What the trace says of a secured session: ``TLSv1.3, TLS_AES_256_GCM_SHA384``."""
    tls = getattr(tls, "object", tls)
    return f"{tls.version()}, {tls.cipher()[0]}"


def _why(exc: BaseException) -> str:
    """A handshake error in a few words (``WRONG_VERSION_NUMBER``: a plain-text client, say)."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (str(exc) or type(exc).__name__)
