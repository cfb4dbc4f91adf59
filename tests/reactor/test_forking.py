"""Fork without pidfds: SIGCHLD wakes the loop, which reaps our children."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from conftest import CLIENT_TIMEOUT, run_until

import reactor


class Upper(reactor.MessageHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


@pytest.mark.timeout(20)
def test_children_are_reaped_through_sigchld_where_there_are_no_pidfds(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    previous = signal.getsignal(signal.SIGCHLD)
    strategy = reactor.Fork(2)
    server = reactor.TCPServer(("127.0.0.1", 0), Upper, dispatch=strategy)
    try:
        with reactor.Reactor() as r, socket.create_connection(server.server_address, CLIENT_TIMEOUT) as client:
            r.add_server(server)
            client.sendall(b"one\ntwo\n")
            client.setblocking(False)
            replies = bytearray()

            def answered() -> bool:
                try:
                    replies.extend(client.recv(100))
                except BlockingIOError:
                    pass
                return replies.count(b"\n") == 2

            run_until(r, answered)
            assert bytes(replies) == b"ONE\nTWO\n"
            run_until(r, lambda: not strategy.children)  # reaped, not left as zombies
            assert signal.getsignal(signal.SIGCHLD) is not previous  # the fallback was used
            r.remove_server(server)
    finally:
        server.server_close()
        signal.signal(signal.SIGCHLD, previous)
    assert server.request_table.totals["failed"] == 0
