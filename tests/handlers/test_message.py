"""MessageRequest and MessageHandler's socket-shaped surface, on real servers."""

from __future__ import annotations

import io
import socket

import pytest
from conftest import FOUR_FAMILIES, ServingThread, client_exchange, family_params, wait_for

import reactor
from handlers.message import MessageRequest, MessageWriter


def test_message_request_reads_like_a_socket_and_queues_like_one():
    done = []
    request = MessageRequest(b"hello world", connection=None, on_done=done.append)
    assert request.recv(5) == b"hello" and request.unread() == b" world"
    buffer = bytearray(3)
    assert request.recv_into(buffer) == 3 and bytes(buffer) == b" wo"
    assert request.recv(100) == b"rld" and request.recv(10) == b"" and request.unread() == b""
    assert request.send(b"ab") == 2
    request.sendall(memoryview(b"cd"))
    assert request.sendto(b"ef", ("ignored", 1)) == 2
    with request.makefile("wb") as writer:
        assert isinstance(writer, MessageWriter) and writer.write(b"gh") == 2
    with pytest.raises(ValueError):
        writer.write(b"closed")
    assert request.makefile("rb").read() == b"hello world"
    assert request.output == [b"ab", b"cd", b"ef", b"gh"]
    request.settimeout(3.0)
    assert request.gettimeout() == 0.0
    request.shutdown(socket.SHUT_WR)  # does nothing: the connection stays open
    assert done == []
    request.close()
    request.close()  # idempotent: the reply is sent once
    assert done == [request] and request.done


def test_a_whole_message_read_at_once_is_not_copied():
    message = b"x" * 100
    request = MessageRequest(message, connection=None, on_done=lambda r: None)
    assert request.recv(1000) is message


class Introspect(reactor.MessageHandler):
    """Replies with what the socket-shaped surface says, one field per line."""

    def handle(self):
        request, connection = self.request, self.connection
        request.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        facts = [
            request.fileno() == connection.fileno() >= 0,
            request.getpeername() == self.client_address,
            request.getsockname() == self.server.socket.getsockname(),
            isinstance(self.wfile, io.BufferedIOBase),
            connection.closing is False,
            repr(connection).startswith("<"),
        ]
        connection.close()  # for a datagram peer: nothing to close
        self.wfile.write(b"".join(b"1" if fact else b"0" for fact in facts) + b"\n")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_the_handler_sees_a_socket_shaped_request_and_its_connection(name, places):
    with ServingThread(places.make_server(name, Introspect)) as server:
        assert client_exchange(name, server.server_address, b"who am I\n", places) == b"111111\n"
        if name in ("tcp4", "unix"):
            # close() ends the connection after the reply, with a lingering
            # close that waits for the client's EOF: wait for it, bounded.
            wait_for(lambda: server.request_table.totals["finished"] == 1 and not server.connections)
            assert server.request_table.totals["finished"] == 1 and server.connections == ()
