"""StreamRequestHandler: the classic handler that owns a blocking socket.

This is socketserver's contract unchanged: ``setup()`` wraps the connected
socket in ``self.rfile`` (a buffered reader from ``makefile('rb')``) and
``self.wfile`` (a writer), ``handle()`` reads and writes them as it likes
and may block while doing so, ``finish()`` flushes and closes both files.
Where a blocking handler runs (inline, a worker thread, a child process) is
the server's dispatch strategy's business; the handler never knows.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from .base import BaseRequestHandler

__all__ = ["StreamRequestHandler", "SocketWriter"]


class SocketWriter(io.BufferedIOBase):
    """An unbuffered writer for a socket: ``write(b)`` returns after every
    byte of ``b`` was handed to the kernel (``sendall``), so nothing waits
    for a ``flush()`` that a handler may forget."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed SocketWriter")
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class StreamRequestHandler(BaseRequestHandler):
    """Provides ``self.rfile`` and ``self.wfile`` over the connected socket.

    Class attributes (override in a subclass):

    * ``rbufsize``: buffer size of ``rfile`` (-1: the io default);
    * ``wbufsize``: buffer size of ``wfile``; 0 (the default) gives an
      unbuffered ``SocketWriter`` that sends on every ``write``;
    * ``timeout``: if not None, a socket timeout applied to the connection,
      so a silent peer raises ``TimeoutError`` in ``handle()``;
    * ``disable_nagle_algorithm``: set TCP_NODELAY on the connection.

    ``self.connection`` is the socket itself.
    """

    rbufsize = -1
    wbufsize = 0
    timeout: float | None = None
    disable_nagle_algorithm = False

    def setup(self) -> None:
        """Make ``self.connection`` (the socket), ``self.rfile`` and ``self.wfile``.

        Applies ``timeout`` and ``disable_nagle_algorithm`` first.  An
        override must call ``super().setup()`` before using the files.
        """
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        if self.wbufsize == 0:
            self.wfile: io.BufferedIOBase = SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile("wb", self.wbufsize)

    def finish(self) -> None:
        """Flush ``wfile`` (a peer that went away is ignored), then close both files.

        The socket itself is closed by the server (``shutdown_request``).
        """
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass  # the peer went away; closing below is all that is left to do
        self.wfile.close()
        self.rfile.close()
