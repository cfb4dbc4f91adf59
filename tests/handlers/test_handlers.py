"""The request handlers, run by real servers on real sockets.

Each handler records what it saw on the server object (``server.seen``);
the test reads it after the server has finished the request.  Servers
record unexpected errors in ``server.errors`` instead of printing them, and
every test checks that list.
"""

from __future__ import annotations

import array
import io
import socket
import sys
import threading
from typing import Any, Callable

import pytest
from conftest import (
    CLIENT_TIMEOUT,
    DGRAM_FAMILIES,
    FAMILIES,
    STREAM_FAMILIES,
    ServingThread,
    client_exchange,
    connect,
    family_params,
    read_all,
)

import handlers
import reactor
from handlers.echo import DatagramEcho, StreamLineEcho

ALL_FAMILIES = STREAM_FAMILIES + DGRAM_FAMILIES


class RecordingServer:
    """Mix-in for test servers: records errors, and never waits forever in handle_request()."""

    timeout = CLIENT_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.errors: list[tuple[BaseException, Any]] = []
        self.seen: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors.append((sys.exc_info()[1], client_address))

    def handle_timeout(self) -> None:
        raise AssertionError("handle_request() saw no request within the timeout")


def recording(server_cls: type) -> type:
    return type(f"Recording{server_cls.__name__}", (RecordingServer, server_cls), {})


class Client(threading.Thread):
    """Runs ``fn()`` on a thread (while the main thread calls handle_request()); re-raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(name="test client")
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the main thread by value()
            self.error = exc

    def value(self) -> Any:
        self.join(CLIENT_TIMEOUT * 2)
        assert not self.is_alive(), "client thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


# ============================================================ StreamRequestHandler


class RecordingSocket(socket.socket):
    """A connected socket that records its makefile() calls."""

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self.makefile_calls.append((mode, buffering))
        return super().makefile(mode, buffering, **kwargs)


class MakefileRecordingServer(RecordingServer, reactor.TCPServer):
    def get_request(self) -> tuple[Any, Any]:
        conn, address = super().get_request()
        sock = RecordingSocket(conn.family, conn.type, conn.proto, fileno=conn.detach())
        sock.makefile_calls = []
        return sock, address


@pytest.mark.timeout(20)
@pytest.mark.parametrize("rbufsize", [-1, 0, 4096])
@pytest.mark.parametrize("wbufsize", [0, 8192])
def test_stream_files_come_from_makefile(rbufsize: int, wbufsize: int) -> None:
    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            self.server.seen["calls"] = list(self.request.makefile_calls)
            self.server.seen["rfile"] = self.rfile
            self.server.seen["wfile"] = self.wfile

    Handler.rbufsize = rbufsize
    Handler.wbufsize = wbufsize
    with MakefileRecordingServer(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        server.handle_request()
        assert read_all(client) == b""
    assert server.errors == []
    expected = [("rb", rbufsize)] + ([("wb", wbufsize)] if wbufsize else [])
    assert server.seen["calls"] == expected
    assert server.seen["rfile"].closed and server.seen["wfile"].closed  # finish() closed both


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "rbufsize, buffered",
    [pytest.param(-1, True, id="default"), pytest.param(0, False, id="unbuffered")],
)
def test_stream_rfile_buffering(rbufsize: int, buffered: bool) -> None:
    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            self.server.seen["rfile"] = self.rfile
            self.server.seen["line"] = self.rfile.readline()

    Handler.rbufsize = rbufsize
    with recording(reactor.TCPServer)(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        client.sendall(b"a line\nmore\n")
        server.handle_request()
        read_all(client)
    assert server.errors == []
    rfile = server.seen["rfile"]
    assert server.seen["line"] == b"a line\n"
    if buffered:
        assert isinstance(rfile, io.BufferedReader)
    else:
        assert isinstance(rfile, io.RawIOBase)
        assert isinstance(rfile, socket.SocketIO)
        assert not isinstance(rfile, io.BufferedIOBase)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_stream_socketwriter_sends_at_once(name: str, places: Any) -> None:
    class Handler(handlers.StreamRequestHandler):
        timeout = CLIENT_TIMEOUT  # a buffered wfile would leave both sides waiting: fail, don't hang

        def handle(self) -> None:
            seen = self.server.seen
            seen["wfile"] = self.wfile
            seen["fileno"] = (self.wfile.fileno(), self.request.fileno())
            counts = [self.wfile.write(b"ping\n")]
            # The client answers only once it has received "ping": no flush() here.
            line = self.rfile.readline()
            counts.append(self.wfile.write(bytearray(b"got " + line)))
            counts.append(self.wfile.write(memoryview(array.array("H", [1, 2, 3]))))
            seen["counts"] = counts

    def client() -> tuple[bytes, bytes]:
        with connect(server) as sock, sock.makefile("rb") as reader:
            first = reader.readline()
            sock.sendall(b"pong\n")
            return first, reader.read()

    with places.make_server(name, Handler, cls=recording(FAMILIES[name][0])) as server:
        c = Client(client)
        c.start()
        server.handle_request()
        first, rest = c.value()
    assert server.errors == []
    assert first == b"ping\n"
    assert rest == b"got pong\n" + array.array("H", [1, 2, 3]).tobytes()
    assert server.seen["counts"] == [5, 9, 6]
    wfile = server.seen["wfile"]
    assert type(wfile) is handlers.SocketWriter
    assert isinstance(wfile, io.BufferedIOBase)
    assert wfile.writable()
    assert server.seen["fileno"][0] == server.seen["fileno"][1]
    assert wfile.closed


@pytest.mark.timeout(20)
def test_stream_buffered_wfile_is_flushed_by_finish() -> None:
    class Handler(handlers.StreamRequestHandler):
        wbufsize = 65536

        def handle(self) -> None:
            self.server.seen["wfile"] = self.wfile
            for i in range(3):
                self.wfile.write(b"buffered %d\n" % i)
            # no flush(): finish() must do it

    with recording(reactor.TCPServer)(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        server.handle_request()
        reply = read_all(client)
    assert server.errors == []
    assert reply == b"buffered 0\nbuffered 1\nbuffered 2\n"
    wfile = server.seen["wfile"]
    assert isinstance(wfile, io.BufferedWriter)
    assert not isinstance(wfile, handlers.SocketWriter)
    assert wfile.closed


@pytest.mark.timeout(20)
def test_stream_timeout_reaches_handle_error() -> None:
    class Handler(handlers.StreamRequestHandler):
        timeout = 0.2

        def handle(self) -> None:
            self.server.seen["timeout"] = self.connection.gettimeout()
            self.server.seen["line"] = self.rfile.readline()  # the client says nothing

    with recording(reactor.TCPServer)(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        server.handle_request()
        assert read_all(client) == b""  # the server closed the connection after the error
        client_address = client.getsockname()
    assert server.seen["timeout"] == 0.2
    assert "line" not in server.seen
    assert len(server.errors) == 1
    error, address = server.errors[0]
    assert isinstance(error, TimeoutError)
    assert address == client_address


@pytest.mark.timeout(20)
@pytest.mark.parametrize("nagle_off", [False, True], ids=["default", "disable_nagle"])
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6"]))
def test_stream_disable_nagle_algorithm(name: str, nagle_off: bool, places: Any) -> None:
    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            self.server.seen["nodelay"] = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    Handler.disable_nagle_algorithm = nagle_off
    with places.make_server(name, Handler, cls=recording(reactor.TCPServer)) as server, connect(server) as client:
        server.handle_request()
        read_all(client)
    assert server.errors == []
    assert bool(server.seen["nodelay"]) is nagle_off


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_stream_connection_is_request(name: str, places: Any) -> None:
    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            self.server.seen["same"] = self.connection is self.request
            self.server.seen["type"] = type(self.request)
            self.wfile.write(self.rfile.readline().upper())

    with places.make_server(name, Handler, cls=recording(FAMILIES[name][0])) as server, connect(server) as client:
        client.sendall(b"shout\n")
        server.handle_request()
        assert read_all(client) == b"SHOUT\n"
    assert server.errors == []
    assert server.seen["same"] is True
    assert issubclass(server.seen["type"], socket.socket)


@pytest.mark.timeout(20)
def test_closed_socketwriter_refuses_writes() -> None:
    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"before\n")
            self.wfile.close()
            try:
                self.wfile.write(b"after\n")
            except Exception as exc:
                self.server.seen["error"] = exc
            self.server.seen["closed"] = self.wfile.closed

    with recording(reactor.TCPServer)(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        server.handle_request()
        reply = read_all(client)
    assert server.errors == []  # finish() copes with the already closed writer
    assert reply == b"before\n"
    assert server.seen["closed"] is True
    assert type(server.seen["error"]) is ValueError


# ========================================================== DatagramRequestHandler


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(DGRAM_FAMILIES))
def test_datagram_handler_attributes_and_single_reply(name: str, places: Any) -> None:
    class Handler(handlers.DatagramRequestHandler):
        def handle(self) -> None:
            seen = self.server.seen
            seen["packet"] = self.packet
            # self.socket is the server socket behind a reply path that never
            # blocks the loop: same descriptor, same address.
            seen["same_fileno"] = self.socket.fileno() == self.server.socket.fileno()
            seen["same_name"] = self.socket.getsockname() == self.server.socket.getsockname()
            seen["request_socket_is_self_socket"] = self.request[1] is self.socket
            seen["request"] = self.request
            seen["rfile"] = self.rfile.read()
            seen["client_address"] = self.client_address
            # Three writes, one datagram: the reply is sent by finish(), whole.
            self.wfile.write(b"[")
            self.wfile.write(self.packet.upper())
            self.wfile.write(b"]")

    payload = b"datagram \x00\xff payload"
    with places.make_server(name, Handler, cls=recording(FAMILIES[name][0])) as server:
        with ServingThread(server):
            reply = client_exchange(name, server.server_address, payload, places)
    assert server.errors == []
    assert reply == b"[DATAGRAM \x00\xff PAYLOAD]"
    seen = server.seen
    assert seen["packet"] == payload
    assert seen["rfile"] == payload
    assert seen["same_fileno"] is True and seen["same_name"] is True
    assert seen["request"][0] == payload and seen["request_socket_is_self_socket"]
    if FAMILIES[name][1] == socket.AF_UNIX:
        assert seen["client_address"].startswith(places.dir)
    else:
        assert seen["client_address"][0] in ("127.0.0.1", "::1")


# ============================================================ BaseRequestHandler


class Boom(Exception):
    pass


@pytest.mark.timeout(20)
@pytest.mark.parametrize("raises", [False, True], ids=["ok", "handle_raises"])
def test_base_handler_lifecycle_order(raises: bool) -> None:
    class Server(RecordingServer, reactor.TCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            super().handle_error(request, client_address)
            self.events.append("handle_error")

    class Handler(handlers.BaseRequestHandler):
        def setup(self) -> None:
            ev = self.server.events
            ev.append(("attrs", self.server.socket is not self.request, self.client_address))
            ev.append("setup")

        def handle(self) -> None:
            self.server.events.append("handle")
            if raises:
                raise Boom("from handle")
            self.request.sendall(b"handled\n")

        def finish(self) -> None:
            self.server.events.append("finish")

    with Server(("127.0.0.1", 0), Handler) as server, connect(server) as client:
        server.events = []
        server.handle_request()
        reply = read_all(client)
        client_address = client.getsockname()
    assert server.events[0] == ("attrs", True, client_address)
    if raises:
        assert server.events[1:] == ["setup", "handle", "finish", "handle_error"]
        assert reply == b""
        assert len(server.errors) == 1
        assert isinstance(server.errors[0][0], Boom)
        assert server.errors[0][1] == client_address
    else:
        assert server.events[1:] == ["setup", "handle", "finish"]
        assert reply == b"handled\n"
        assert server.errors == []


# =================================================================== echo handlers


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(ALL_FAMILIES))
def test_echo_handlers_byte_for_byte(name: str, places: Any) -> None:
    stream = FAMILIES[name][2] == socket.SOCK_STREAM
    handler = StreamLineEcho if stream else DatagramEcho
    if stream:
        payloads = [
            b"one line\n",
            b"first\nsecond\r\n\x00\x01\xfe\xff binary\n\nafter an empty line\n" + b"no newline at the end",
            b"".join(b"line %d\n" % i for i in range(300)),
        ]
    else:
        payloads = [b"one datagram", bytes(range(256)), b"two\nlines\n", b"x" * 8000]
    with places.make_server(name, handler, cls=recording(FAMILIES[name][0])) as server:
        with ServingThread(server):
            replies = [client_exchange(name, server.server_address, p, places) for p in payloads]
    assert server.errors == []
    assert replies == payloads


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_stream_line_echo_long_lines_come_back_whole(name: str, places: Any) -> None:
    class ShortLines(StreamLineEcho):
        max_line = 4  # every line longer than this is echoed in pieces

    payload = b"abcdefghij\nxy\n" + b"0123456789" * 10 + b"\n"
    with places.make_server(name, ShortLines, cls=recording(FAMILIES[name][0])) as server:
        with ServingThread(server):
            reply = client_exchange(name, server.server_address, payload, places)
    assert server.errors == []
    assert reply == payload


@pytest.mark.parametrize("owner, name", [
    (handlers.MessageHandler, "setup"), (handlers.MessageHandler, "finish"),
    (handlers.StreamRequestHandler, "setup"), (handlers.StreamRequestHandler, "finish"),
    (handlers.DatagramRequestHandler, "setup"), (handlers.DatagramRequestHandler, "finish"),
    (handlers.LengthPrefixed, "encode"), (handlers.Terminator, "encode"),
], ids=lambda x: getattr(x, "__name__", x))  # fmt: skip
def test_methods_that_do_work_say_what_they_do(owner, name):
    """help() showed the base class's "does nothing" for these."""
    own = owner.__dict__[name].__doc__  # the class's own method, not one inherited
    assert own and "Does nothing" not in own and "unchanged by default" not in own, own
