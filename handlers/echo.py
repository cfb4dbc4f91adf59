"""Ready-made classic echo handlers, for demos, tests and quick checks.

* ``StreamLineEcho``: a ``StreamRequestHandler`` that sends every line back
  until the client closes its side.  Blocking, as classic handlers are.
* ``DatagramEcho``: a ``DatagramRequestHandler`` that sends each datagram
  back to whoever sent it.

Poke them with ``nc 127.0.0.1 PORT`` (stream) or ``nc -u`` (datagram).
"""

from __future__ import annotations

from .datagram import DatagramRequestHandler
from .stream import StreamRequestHandler

__all__ = ["StreamLineEcho", "DatagramEcho"]


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
