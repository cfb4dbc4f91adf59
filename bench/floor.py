"""The floor: what socketserver's shape costs per message, with nothing around it.

A framed server must, for every message, run the stdlib's hooks
(``process_request``, which runs ``finish_request`` then
``shutdown_request``, which runs ``close_request``) and instantiate the
handler (``__init__``, ``setup``, ``handle``, ``finish``).  This module does
exactly that and nothing else: a bare ``selectors`` loop, lines cut with
``bytes.find``, the library's own ``MessageRequest`` and ``LineEcho``
handler, the replies of one read joined into one ``send()``; no request
table, no connection object, no deadline, no bounds, no trace.  It is not
a server anyone should run (one bad client can grow its buffers without
limit); it is the measure of how many calls and instructions per message
the handler API itself takes, counted the same way as the reactor
(``python -m bench.profile floor``, bench/counts.py), so that the targets
can be set against what is possible at all.
"""

from __future__ import annotations

import selectors
import socket
from typing import Any

from handlers.echo import LineEcho
from handlers.message import MessageRequest


class FloorServer:
    """The hooks of ``socketserver.BaseServer``, as the reactor's servers run them."""

    RequestHandlerClass = LineEcho

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.socket, selectors.EVENT_READ, None)
        self.connections: dict[int, Floor] = {}

    # The stdlib's hooks, each doing what its default does here.
    def process_request(self, request: Any, client_address: Any) -> None:
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        request.shutdown(socket.SHUT_WR)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        request.close()

    def run_once(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                sock, address = self.socket.accept()
                sock.setblocking(False)
                self.connections[sock.fileno()] = floor = Floor(self, sock, address)
                self.selector.register(sock, selectors.EVENT_READ, floor)
            else:
                key.data.on_readable()

    def close(self) -> None:
        for floor in list(self.connections.values()):
            floor.close()
        self.selector.close()
        self.socket.close()


class Floor:
    """One connection: read, cut lines, run the hooks per line, one send per read."""

    def __init__(self, server: FloorServer, sock: socket.socket, address: Any) -> None:
        self.server, self.sock, self.client_address = server, sock, address
        self.data = {}  # what a handler may keep per connection (connection.data)
        self._buffer = b""
        self._replies: list[bytes] = []

    def on_readable(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.close()
            return
        buffer = self._buffer + data if self._buffer else data
        start = 0
        server = self.server
        while (end := buffer.find(b"\n", start)) >= 0:
            request = MessageRequest(buffer[start : end + 1], self, self._done)
            server.process_request(request, self.client_address)
            start = end + 1
        self._buffer = buffer[start:]
        if self._replies:
            self.sock.send(b"".join(self._replies))  # loopback, small: taken whole
            self._replies.clear()

    def _done(self, request: MessageRequest) -> None:
        self._replies.extend(request.output)

    def close(self) -> None:
        self.server.selector.unregister(self.sock)
        del self.server.connections[self.sock.fileno()]
        self.sock.close()
