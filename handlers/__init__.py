"""Request handlers: what runs one request.  This package never imports the loop.

* ``BaseRequestHandler``: setup / handle / finish around ``self.request``.
* ``StreamRequestHandler``: classic; owns a blocking socket (rfile, wfile).
* ``DatagramRequestHandler``: one datagram in, one datagram out.
* ``MessageHandler``: framed; sees one complete message, never blocks.
* ``framing``: sans-IO framers that cut a byte stream into messages.
"""

from .base import BaseRequestHandler
from .datagram import DatagramRequestHandler
from .framing import Chunk, Fixed, FrameBuffer, Framer, LengthPrefixed, Line, Terminator
from .message import MessageHandler, MessageRequest, MessageWriter
from .stream import SocketWriter, StreamRequestHandler

__all__ = [
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "SocketWriter",
    "MessageHandler",
    "MessageRequest",
    "MessageWriter",
    "Framer",
    "Line",
    "Terminator",
    "LengthPrefixed",
    "Fixed",
    "Chunk",
    "FrameBuffer",
]
