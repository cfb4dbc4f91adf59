"""Request handlers: what runs one request.  This package never imports the loop.

* ``BaseRequestHandler``: setup / handle / finish around ``self.request``.
* ``StreamRequestHandler``: classic; owns a blocking socket (rfile, wfile).
* ``DatagramRequestHandler``: one datagram in, one datagram out.
"""

from .base import BaseRequestHandler
from .datagram import DatagramRequestHandler
from .stream import SocketWriter, StreamRequestHandler

__all__ = [
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "SocketWriter",
]
