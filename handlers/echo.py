"""Ready-made classic echo handlers, for demos, tests and quick checks.

* ``StreamLineEcho``: a ``StreamRequestHandler`` that sends every line back
  until the client closes its side.  Blocking, as classic handlers are.
* ``DatagramEcho``: a ``DatagramRequestHandler`` that sends each datagram
  back to whoever sent it.

Framed ones (``MessageHandler``): never blocking, and each serves all four
socket families (on a datagram server each datagram is one message):

* ``LineEcho``: ``Line()`` framing; sends each line back.
* ``ChunkEcho``: ``Chunk()`` framing; sends back whatever arrived, written
  the classic way (``self.request.sendall(self.request.recv(65536))``).
* ``Upper``: ``Line()`` framing; replies ``self.rfile.readline().upper()``,
  as the stdlib docs' example does.

Serve any of them with ``python -m reactor serve handlers.echo:LineEcho --tcp 127.0.0.1:9000``.

Poke them with ``nc 127.0.0.1 PORT`` (stream) or ``nc -u`` (datagram).
"""

from __future__ import annotations

from .datagram import DatagramRequestHandler
from .framing import Chunk, Line
from .message import MessageHandler
from .stream import StreamRequestHandler

__all__ = ["StreamLineEcho", "DatagramEcho", "LineEcho", "ChunkEcho", "Upper"]


class StreamLineEcho(StreamRequestHandler):
    """Echo each line (bytes up to and including ``\\n``) until EOF."""

    #: Longest line read at once; a longer one is echoed in pieces.
    max_line = 65536

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(self.max_line)
            if not line:
                return
            self.wfile.write(line)


class DatagramEcho(DatagramRequestHandler):
    """Send the datagram back unchanged."""

    def handle(self) -> None:
        self.wfile.write(self.packet)


class LineEcho(MessageHandler):
    """Framed: send each line (up to and including ``\\n``) back."""

    framing = Line()

    def handle(self) -> None:
        self.wfile.write(self.message)


class ChunkEcho(MessageHandler):
    """Framed: send back whatever arrived, as one ``recv`` would have returned it."""

    framing = Chunk()

    def handle(self) -> None:
        self.request.sendall(self.request.recv(65536))


class Upper(MessageHandler):
    """Framed: reply with the line in upper case (the stdlib docs' example)."""

    framing = Line()

    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())
