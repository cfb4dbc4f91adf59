"""TCPServer: a server on a socket it creates, binds and listens on.

Despite its name (the stdlib's), this is the base of every socket server
here: ``UDPServer`` and the Unix servers only change the family, the
socket type and how a request is taken.  What it adds to ``BaseServer`` is
the socket: ``server_bind``, ``server_activate``, ``fileno``,
``get_request`` (``accept()``) and the closing of each connection.
"""

from __future__ import annotations

import socket
from typing import Any

from .servers import BaseServer

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
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = socket.SOMAXCONN
    allow_reuse_address = False
    allow_reuse_port = False

    def __init__(
        self, server_address: Any, RequestHandlerClass: Any, bind_and_activate: bool = True, *, dispatch: Any = None
    ) -> None:
        """Constructor.  May be extended (call it), do not replace it.

        ``dispatch`` (keyword only): the strategy that runs handlers, for
        example ``ThreadPool(8)``; default: the class's ``dispatch``.
        """
        BaseServer.__init__(self, server_address, RequestHandlerClass, dispatch=dispatch)
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
        """Accept a connection: returns ``(socket, client_address)``."""
        return self.socket.accept()

    def shutdown_request(self, request: Any) -> None:
        """Shut the connection's write side down (the peer sees EOF), then close it."""
        self._end_request(request)
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ENOTCONN: the peer is already gone, some platforms say so here
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Close the connection's socket."""
        self._end_request(request)
        request.close()


def _is_ipv6_literal(address: Any) -> bool:
    if not (isinstance(address, tuple) and address and isinstance(address[0], str)):
        return False
    try:
        socket.inet_pton(socket.AF_INET6, address[0].split("%", 1)[0])
    except (OSError, ValueError):
        return False
    return True
