"""Handlers that say whom they see, for the tests that run ``python -m reactor serve`` behind
a PROXY protocol sender (test_cli_proxy.py, test_haproxy.py: they put this directory on
the command's PYTHONPATH).

Each line gets back one line, a Python literal the test reads with ``ast.literal_eval``:
``(pid, client_address, the socket's peer, the line)``: the process that served it (two
``serve`` instances behind one balancer tell themselves apart by it), the client the
handler was given, and the peer its socket is connected to (the proxy).
"""

from __future__ import annotations

import os
from typing import Any

import handlers


def said(client_address: Any, peer: Any, line: bytes) -> bytes:
    return repr((os.getpid(), client_address, peer, line.strip())).encode() + b"\n"


class WhoClassic(handlers.StreamRequestHandler):
    """Classic: every line until EOF, answered from its own blocking socket."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(said(self.client_address, self.request.getpeername(), line))


class WhoFramed(handlers.MessageHandler):
    """Framed (``Line()``): every line, answered by the reactor."""

    def handle(self) -> None:
        self.wfile.write(said(self.client_address, self.connection.sock.getpeername(), self.message))
