"""reactor: socketserver's API on a selectors event loop.

``import reactor as socketserver`` works: every public name of the stdlib
module is here with the same meaning.  On top of them:

* ``Reactor``: one event loop serving any number of servers of any family;
* ``MessageHandler`` and the framers (``Line``, ``Terminator``,
  ``LengthPrefixed``, ``Fixed``, ``Chunk``): handlers that see one whole
  message while the reactor does the socket I/O, so no client can make a
  server deaf;
* ``RequestTable``, ``Record``, ``State``, ``Event``, ``Kind``: the explicit
  table of requests in flight that every server keeps (``server.request_table``);
* ``add_dashboard(loop)`` / ``Dashboard``: a live dashboard of a reactor
  (the page, Server-Sent Events, Prometheus ``/metrics``), served by it;
* ``Workers``: worker processes under a supervisor that restarts and
  reloads them; ``reactor.activation``: servers on sockets passed by
  systemd (``TCPServer.from_socket`` for any socket handed over);
* the exceptions in ``reactor.errors``.
"""

import logging as _logging

from handlers import BaseRequestHandler, DatagramRequestHandler, MessageHandler, StreamRequestHandler
from handlers.message import MessageRequest, MessageWriter
from handlers.framing import Chunk, Fixed, FrameBuffer, Framer, LengthPrefixed, Line, Terminator

from .dispatch import Inline, Strategy, ThreadPool
from .forking import Fork
from .mixins import (
    ForkingMixIn,
    ForkingTCPServer,
    ForkingUDPServer,
    ForkingUnixDatagramServer,
    ForkingUnixStreamServer,
    ThreadingMixIn,
    ThreadingTCPServer,
    ThreadingUDPServer,
    ThreadingUnixDatagramServer,
    ThreadingUnixStreamServer,
)
from .errors import BrokenError, ClosedError, MessageTooLong, ProtocolError, ReactorError, TransitionError, UsageError
from .connection import Connection
from .loop import Handle, Reactor, TimerHandle
from .datagram import UDPServer
from .servers import BaseServer
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer
from .table import Event, Kind, Record, RequestTable, State
from .workers import Workers
from .dashboard import Dashboard, add_dashboard

# A library logs; the application decides where logs go.  Without this,
# Python's last-resort handler would print our ERROR records to stderr a
# second time next to handle_error's own stdlib-style output.
_logging.getLogger("reactor").addHandler(_logging.NullHandler())

__version__ = "0.1.0"

#: The stdlib socketserver's public names, all present here.
SOCKETSERVER_NAMES = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
    "ForkingUDPServer",
    "ForkingTCPServer",
    "ForkingMixIn",
    "UnixStreamServer",
    "UnixDatagramServer",
    "ThreadingUnixStreamServer",
    "ThreadingUnixDatagramServer",
    "ForkingUnixStreamServer",
    "ForkingUnixDatagramServer",
]

__all__ = SOCKETSERVER_NAMES + [
    "Strategy",
    "Inline",
    "ThreadPool",
    "Fork",
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
    "Connection",
    "Reactor",
    "Handle",
    "TimerHandle",
    "RequestTable",
    "Record",
    "State",
    "Event",
    "Kind",
    "Workers",
    "Dashboard",
    "add_dashboard",
    "ReactorError",
    "UsageError",
    "TransitionError",
    "ProtocolError",
    "MessageTooLong",
    "ClosedError",
    "BrokenError",
]
