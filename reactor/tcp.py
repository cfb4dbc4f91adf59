"""TCPServer: a server on a socket it creates, binds and listens on.

Despite its name (the stdlib's), this is the base of every socket server
here: ``UDPServer`` and the Unix servers only change the family, the
socket type and how a request is taken.  What it adds to ``BaseServer`` is
the socket: ``server_bind``, ``server_activate``, ``fileno``,
``get_request`` (``accept()``) and the closing of each connection; and,
for stream servers, TLS (``ssl_context``; reactor/tls.py, docs/tls.md) and
the PROXY protocol (``proxy_protocol``; reactor/proxy.py, docs/proxy.md).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from .errors import UsageError
from .proxy import PROXY_FROM, PROXY_TIMEOUT, ProxyReader, check_setting
from .servers import BaseServer
from .table import Event, Record
from .tls import HANDSHAKE_TIMEOUT, Handshake, accept_plain, context_of, send_close_notify

__all__ = ["TCPServer"]


class TCPServer(BaseServer):
    """A server on a stream socket: TCP over IPv4 by default.

    Class attributes (override in a subclass, or on the instance before
    binding): ``address_family``, ``socket_type``, ``request_queue_size``
    (the ``listen()`` backlog), ``allow_reuse_address`` (SO_REUSEADDR),
    ``allow_reuse_port`` (SO_REUSEPORT: several sockets share the port and
    the kernel splits connections between them; opt in knowingly).

    ``TCPServer(addr, Handler, bind_and_activate=False)`` creates the socket
    but leaves ``server_bind()``/``server_activate()`` to the caller.

    TLS: ``ssl_context`` (keyword or class attribute), an ``ssl.SSLContext``
    with the server's certificate loaded; or a listener wrapped the stdlib's
    way after construction.  Each client's handshake runs in the loop,
    nonblocking, within ``handshake_timeout`` seconds (reactor/tls.py).

    PROXY protocol: ``proxy_protocol`` (True: a v1 or v2 header; ``"v1"``,
    ``"v2"``: that one only), accepted from the peers in ``proxy_from``
    (CIDR strings or ``ipaddress`` networks; loopback by default; a Unix
    socket's peer always), each header read in the loop within
    ``proxy_timeout`` seconds, before TLS (reactor/proxy.py).
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = socket.SOMAXCONN
    allow_reuse_address = False
    allow_reuse_port = False
    #: Serve TLS with this ``ssl.SSLContext`` (None: plain, unless the listener was wrapped) ...
    ssl_context: Any = None
    #: ... giving each client this many seconds to finish its handshake (None: no limit).
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT
    #: Read a PROXY header first on every connection: True (v1 or v2), "v1", "v2"; False: no.
    proxy_protocol: Any = False
    #: ... only from these peers (CIDR strings or ip_network objects; a Unix socket's peer always) ...
    proxy_from: Any = PROXY_FROM
    #: ... giving each this many seconds to send its whole header (None: no limit).
    proxy_timeout: float | None = PROXY_TIMEOUT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _PROXY_SETTINGS:  # a bad setting in a class body fails at once
            if name in cls.__dict__:
                check_setting(cls, name, cls.__dict__[name])

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PROXY_SETTINGS:
            value = check_setting(self, name, value)
        super().__setattr__(name, value)

    def __init__(
        self, server_address: Any, RequestHandlerClass: Any, bind_and_activate: bool = True, *, dispatch: Any = None,
        ssl_context: Any = None,
    ) -> None:  # fmt: skip
        """Constructor.  May be extended (call it), do not replace it.

        ``dispatch`` (keyword only): the strategy that runs handlers, for
        example ``ThreadPool(8)``; default: the class's ``dispatch``.
        ``ssl_context`` (keyword only, stream servers): serve TLS with it.
        """
        BaseServer.__init__(self, server_address, RequestHandlerClass, dispatch=dispatch)
        self._handshakes: set[Handshake] = set()  # TLS handshakes under way
        self._proxy_readers: set[ProxyReader] = set()  # PROXY headers awaited
        for name in _PROXY_SETTINGS:  # set on the class since (or on a datagram server)?
            check_setting(self, name, getattr(self, name))
        if ssl_context is not None:
            if self.socket_type != socket.SOCK_STREAM:
                raise UsageError(f"{type(self).__name__} is not a stream server: TLS needs one (DTLS is not supported)")
            if not hasattr(ssl_context, "wrap_socket"):
                raise UsageError(f"ssl_context must be an ssl.SSLContext, not {ssl_context!r}")
            self.ssl_context = ssl_context
        given = self.__dict__.pop("_given_socket", None)  # from_socket(): already bound, maybe listening
        if given is not None:
            self.address_family = given.family
            self.socket = given
            bind_and_activate = False
        else:
            if self.address_family == socket.AF_INET and _is_ipv6_literal(server_address):
                self.address_family = socket.AF_INET6
            self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise
        self.request_table.name = self._label()

    @classmethod
    def from_socket(cls, sock: socket.socket, RequestHandlerClass: Any, **kwargs: Any) -> Any:
        """A server of this class on ``sock``, a socket someone else made: no bind, no listen.

        ``sock`` must be bound, and listening if it is a stream socket (as
        systemd passes them, or as a supervisor made them before forking);
        its family and type must suit the class (``reactor.activation.
        server_class_for`` picks the class).  ``server_address`` is
        ``sock.getsockname()``.  ``kwargs`` go to the constructor
        (``dispatch=``, ``ssl_context=``).  The server takes the socket:
        ``server_close()`` closes it (pass ``sock.dup()`` to keep yours).  A
        Unix server made this way never removes the socket file: it did not
        create it, so the file stays its creator's.  Raises ``UsageError``
        if the socket does not fit, leaving it open.
        """
        _check_given(cls, sock)
        server = cls.__new__(cls)
        server._given_socket = sock  # read (and removed) by __init__
        server.__init__(sock.getsockname(), RequestHandlerClass, False, **kwargs)
        return server

    def server_bind(self) -> None:
        """Set the reuse options, bind, and store the real address."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.request_table.name = self._label()  # the real address, for trace lines

    def server_activate(self) -> None:
        """Start listening, with a backlog of ``request_queue_size``."""
        self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        """Stop serving and close the listening socket (even if the rest raised)."""
        try:
            super().server_close()
        finally:
            self.socket.close()

    def fileno(self) -> int:
        """The listening socket's descriptor, for ``select()`` and friends."""
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """Accept a connection: returns ``(socket, client_address)``.

        On a listener wrapped the stdlib's way, the TLS handshake is not run
        here (it would block the loop) but by the loop, as for ``ssl_context``.
        """
        return accept_plain(self.socket)

    def _begin(self, request: Any, client_address: Any, record: Record, start: Any) -> None:
        # The PROXY header first (it comes before anything else), then TLS, then the lifecycle.
        if not self.proxy_protocol:
            self._secure(request, client_address, record, start)
            return
        reactor = self._serving.reactor
        if reactor is None:  # handle_request() with no reactor: a blocking read, within proxy_timeout
            client_address = ProxyReader.blocking(self, request, client_address, record)
            if client_address is not None:
                self._secure(request, client_address, record, start)
            return

        def proxied(real_client: Any) -> None:
            self._secure(request, real_client, record, start)

        ProxyReader(self, request, client_address, record, reactor, proxied).start()

    def _secure(self, request: Any, client_address: Any, record: Record, start: Any) -> None:
        # TLS: the handshake first, in the loop.  A classic handler's
        # lifecycle goes on with the secured SSLSocket (blocking again); a
        # framed connection's with the plain socket and its TLSSession.
        context, reactor = context_of(self), self._serving.reactor
        if context is None:
            self._lifecycle(request, client_address, record, start)
            return
        framed = start is not None
        if reactor is None:  # handle_request() with no reactor: a blocking handshake, as the stdlib's
            tls = Handshake.blocking(self, request, client_address, record, context, framed)
            if tls is not None:
                self._secured(request, client_address, record, start, tls)
            return
        Handshake(self, request, client_address, record, reactor, context,
                  lambda tls: self._secured(request, client_address, record, start, tls, reactor), framed).start()  # fmt: skip

    def _secured(self, sock: Any, client_address: Any, record: Record, start: Any, tls: Any, reactor: Any = None) -> None:
        if start is None:
            tls.setblocking(True)  # what a classic handler gets from accept()
            self._lifecycle(tls, client_address, record)
            return
        # A framed connection: the handshake left the socket registered for
        # reading, for the connection to take over (one epoll_ctl less, each way).
        taken, fd = [], sock.fileno()

        def take(sock: Any, client_address: Any, record: Record) -> None:
            taken.append(True)
            start(sock, client_address, record, tls)

        self._lifecycle(sock, client_address, record, take)
        if reactor is not None and not taken:  # refused (verify_request) and closed: unregistered by number
            reactor.remove_reader(fd)

    def _drop_early(self, sock: Any, client_address: Any, counter: str, reason: str) -> None:
        """Close a connection that failed before its lifecycle began (its PROXY
        header, its TLS handshake): counted (``counter``, if any), logged at
        DEBUG (rate-limited: a peer can fail again and again), its record
        aborted (an admission paused at the limit may open).  No close_notify:
        there is no TLS session to close."""
        if counter:
            self.request_table.count(counter)
            self._warnings.log(logging.DEBUG, counter, "%s: %r: %s; closed", self.request_table.name, client_address,
                               reason)  # fmt: skip
        try:
            sock.close()
        except OSError:
            pass
        self._end_request(sock, Event.ABORT, reason)

    def _detach(self, reactor: Any) -> None:
        for waiting in (*self._proxy_readers, *self._handshakes):
            waiting.abort("the server stopped serving")
        super()._detach(reactor)

    def shutdown_request(self, request: Any) -> None:
        """Shut the connection's write side down (the peer sees EOF; over TLS,
        close_notify first), then close it."""
        self._end_request(request)
        if isinstance(request, ssl.SSLSocket):  # (not a call per framed message: a test)
            send_close_notify(request)
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ENOTCONN: the peer is already gone, some platforms say so here
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Close the connection's socket."""
        self._end_request(request)
        request.close()


_PROXY_SETTINGS = ("proxy_protocol", "proxy_from")


def _is_ipv6_literal(address: Any) -> bool:
    if not (isinstance(address, tuple) and address and isinstance(address[0], str)):
        return False
    try:
        socket.inet_pton(socket.AF_INET6, address[0].split("%", 1)[0])
    except (OSError, ValueError):
        return False
    return True


def _check_given(cls: Any, sock: Any) -> None:
    """Raise UsageError unless ``sock`` is an open, bound socket that ``cls`` can serve."""
    where = f"{cls.__name__}.from_socket"
    if not isinstance(sock, socket.socket) or sock.fileno() == -1:
        raise UsageError(f"{where}: expected an open socket.socket, not {sock!r}")
    unix = getattr(socket, "AF_UNIX", None)
    wanted = (unix,) if cls.address_family == unix else (socket.AF_INET, socket.AF_INET6)
    kinds = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}
    if sock.family not in wanted or sock.type != cls.socket_type:
        family = getattr(sock.family, "name", sock.family)
        raise UsageError(f"{where}: this class does not serve {family} {kinds.get(sock.type, sock.type)} sockets "
                         "(reactor.activation.server_class_for picks the one that does)")  # fmt: skip
    address = sock.getsockname()
    if address in ("", b"", None) or (isinstance(address, tuple) and address[1] == 0):
        raise UsageError(f"{where}: the socket is not bound")
    if sock.type == socket.SOCK_STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise UsageError(f"{where}: the stream socket is not listening (call listen() first)")
