"""The stdlib-style dispatch mix-ins: ThreadingMixIn and ForkingMixIn.

Servers here record unexpected errors in ``server.errors`` (a thread's
handle_error cannot fail the test by raising) and each test checks it.
Children of forking servers cannot report back through memory: they answer
through the socket, or write a marker file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from typing import Any, Iterator

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
    needs_ipv6,
    read_all,
)

import handlers
import reactor
from handlers.echo import StreamLineEcho

ALL_FAMILIES = STREAM_FAMILIES + DGRAM_FAMILIES

#: (mode, base server class) -> dispatching server class
SERVER_CLASSES = {
    ("threading", reactor.TCPServer): reactor.ThreadingTCPServer,
    ("threading", reactor.UDPServer): reactor.ThreadingUDPServer,
    ("threading", reactor.UnixStreamServer): reactor.ThreadingUnixStreamServer,
    ("threading", reactor.UnixDatagramServer): reactor.ThreadingUnixDatagramServer,
    ("forking", reactor.TCPServer): reactor.ForkingTCPServer,
    ("forking", reactor.UDPServer): reactor.ForkingUDPServer,
    ("forking", reactor.UnixStreamServer): reactor.ForkingUnixStreamServer,
    ("forking", reactor.UnixDatagramServer): reactor.ForkingUnixDatagramServer,
}


def server_class(mode: str, name: str) -> type:
    return SERVER_CLASSES[(mode, FAMILIES[name][0])]


def mode_family_params(modes: list[str], names: list[str]) -> list[Any]:
    return [
        pytest.param(mode, name, id=f"{mode}-{name}", marks=needs_ipv6(name)) for mode in modes for name in names
    ]


class RecordingServer:
    """Mix-in for test servers: records errors, never waits forever in handle_request()."""

    timeout = CLIENT_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.errors: list[tuple[BaseException, Any]] = []
        super().__init__(*args, **kwargs)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors.append((sys.exc_info()[1], client_address))

    def handle_timeout(self) -> None:
        raise AssertionError("handle_request() saw no request within the timeout")


def recording(cls: type, **attrs: Any) -> type:
    return type(f"Recording{cls.__name__}", (RecordingServer, cls), attrs)


@contextlib.contextmanager
def datagram_client(name: str, places: Any) -> Iterator[socket.socket]:
    """A datagram client socket with a timeout; bound to a path for Unix datagram."""
    _, family, kind = FAMILIES[name]
    with socket.socket(family, kind) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        own = None
        if family == socket.AF_UNIX:
            own = places.path("cli")
            sock.bind(own)
        try:
            yield sock
        finally:
            if own:
                os.unlink(own)


def who() -> bytes:
    return b"%d %d|" % (os.getpid(), threading.get_ident())


class StreamWho(handlers.StreamRequestHandler):
    """Replies with the handler's pid and thread id, then echoes everything."""

    def handle(self) -> None:
        self.wfile.write(who() + self.rfile.read())


class DatagramWho(handlers.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(who() + self.packet)


def split_who(reply: bytes) -> tuple[int, int, bytes]:
    header, body = reply.split(b"|", 1)
    pid, ident = header.split()
    return int(pid), int(ident), body


def is_stream(name: str) -> bool:
    return FAMILIES[name][2] == socket.SOCK_STREAM


# ============================================================ both mix-ins


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode, name", mode_family_params(["threading", "forking"], ALL_FAMILIES))
def test_dispatching_servers_echo_and_leave_nothing(mode: str, name: str, places: Any) -> None:
    handler = StreamWho if is_stream(name) else DatagramWho
    server = places.make_server(name, handler, cls=recording(server_class(mode, name)))
    serving = ServingThread(server, poll_interval=0.05)
    replies = []
    with serving:
        for i in range(3):
            payload = b"request %d over %s\n" % (i, name.encode())
            replies.append((payload, client_exchange(name, server.server_address, payload, places)))
    # ServingThread's exit did shutdown() + server_close().
    assert server.errors == []
    for payload, reply in replies:
        pid, ident, body = split_who(reply)
        assert body == payload
        if mode == "threading":
            assert pid == os.getpid()
            assert ident not in (threading.get_ident(), serving.thread.ident)  # not inline
        else:
            assert pid != os.getpid()
    if mode == "threading":
        assert len(getattr(server, "_threads", ())) == 0
    else:
        assert server.active_children is not None  # it did fork
        assert not server.active_children  # and reaped every child
    if FAMILIES[name][1] == socket.AF_UNIX:
        assert not os.path.exists(server.server_address)


# ================================================================ threading


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", family_params(ALL_FAMILIES))
def test_threading_serves_clients_concurrently(name: str, places: Any) -> None:
    clients = 3
    barrier = threading.Barrier(clients, timeout=CLIENT_TIMEOUT)

    class StreamHandler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            barrier.wait()  # passes only when all the requests are being handled at once
            self.wfile.write(line.upper())

    class DatagramHandler(handlers.DatagramRequestHandler):
        def handle(self) -> None:
            barrier.wait()
            self.wfile.write(self.packet.upper())

    handler = StreamHandler if is_stream(name) else DatagramHandler
    server = places.make_server(name, handler, cls=recording(server_class("threading", name)))
    with ServingThread(server), contextlib.ExitStack() as stack:
        socks = []
        for i in range(clients):
            if is_stream(name):
                sock = stack.enter_context(connect(server))
                sock.sendall(b"slow client %d\n" % i)
                sock.shutdown(socket.SHUT_WR)
            else:
                sock = stack.enter_context(datagram_client(name, places))
                sock.sendto(b"slow client %d\n" % i, server.server_address)
            socks.append(sock)
        replies = [read_all(s) if is_stream(name) else s.recv(65536) for s in socks]
    assert server.errors == []
    assert replies == [b"SLOW CLIENT %d\n" % i for i in range(clients)]
    assert not barrier.broken


@pytest.mark.timeout(30)
def test_threading_finished_threads_do_not_accumulate(places: Any) -> None:
    handler_threads: list[threading.Thread] = []

    class Handler(StreamLineEcho):
        def setup(self) -> None:
            handler_threads.append(threading.current_thread())
            super().setup()

    server = places.make_server("tcp4", Handler, cls=recording(reactor.ThreadingTCPServer))
    tracked = []
    with ServingThread(server):
        for i in range(20):
            payload = b"request %d\n" % i
            assert client_exchange("tcp4", server.server_address, payload) == payload
            # Let this request's thread end before the next request starts, so
            # every earlier thread is finished when the server starts a new one.
            handler_threads[-1].join(CLIENT_TIMEOUT)
            assert not handler_threads[-1].is_alive()
            tracked.append(len(server._threads))
    assert server.errors == []
    assert len(set(handler_threads)) == 20
    # Only the latest (finished) thread is still listed: finished ones are forgotten.
    assert tracked == [1] * 20
    assert len(server._threads) == 0  # server_close joined the rest


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "daemon, block_on_close, waits",
    [
        pytest.param(False, True, True, id="default-waits"),
        pytest.param(False, False, False, id="block_on_close-off"),
        pytest.param(True, True, False, id="daemon-threads"),
    ],
)
def test_threading_server_close_waits_only_for_tracked_threads(
    daemon: bool, block_on_close: bool, waits: bool
) -> None:
    started = threading.Event()
    release = threading.Event()
    log: list[str] = []
    handler_threads: list[threading.Thread] = []

    class Handler(handlers.BaseRequestHandler):
        def handle(self) -> None:
            handler_threads.append(threading.current_thread())
            started.set()
            release.wait(CLIENT_TIMEOUT)
            log.append("handler done")

    cls = recording(reactor.ThreadingTCPServer, daemon_threads=daemon, block_on_close=block_on_close)
    server = cls(("127.0.0.1", 0), Handler)

    def close() -> None:
        server.server_close()
        log.append("closed")

    serving = threading.Thread(target=server.serve_forever, name="serve_forever")
    closer = threading.Thread(target=close, name="server_close")
    serving.start()
    try:
        with connect(server):
            assert started.wait(CLIENT_TIMEOUT), "the handler never started"
            server.shutdown()
            serving.join(CLIENT_TIMEOUT)
            assert not serving.is_alive()
            (thread,) = handler_threads
            assert thread.daemon is daemon
            assert len(getattr(server, "_threads", ())) == (1 if waits else 0)
            closer.start()
            if waits:
                closer.join(0.3)  # bounded: server_close must still be waiting for the handler
                assert closer.is_alive(), "server_close() returned while a tracked handler was running"
                assert log == []
            else:
                closer.join(CLIENT_TIMEOUT)
                assert not closer.is_alive(), "server_close() waited for an untracked thread"
                assert log == ["closed"]
    finally:
        release.set()
        server.shutdown()
        serving.join(CLIENT_TIMEOUT)
        if closer.ident is not None:  # started
            closer.join(CLIENT_TIMEOUT)
        else:
            server.server_close()
        for thread in handler_threads:
            thread.join(CLIENT_TIMEOUT)
    assert server.errors == []
    assert log == (["handler done", "closed"] if waits else ["closed", "handler done"])


# ================================================================== forking


@pytest.mark.timeout(30)
def test_forking_never_reaps_other_children(places: Any) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    try:
        # Wait until it has exited, but leave it unreaped: waitpid(-1) would now take it.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        server = places.make_server("tcp4", StreamLineEcho, cls=recording(reactor.ForkingTCPServer))
        with ServingThread(server, poll_interval=0.01):  # service_actions() -> collect_children() often
            for i in range(5):
                payload = b"request %d\n" % i
                assert client_exchange("tcp4", server.server_address, payload) == payload
            server.collect_children()
        server.collect_children(blocking=True)
        assert server.errors == []
        assert not server.active_children
    finally:
        try:
            done, status = os.waitpid(pid, 0)
        except ChildProcessError:
            pytest.fail("the forking server reaped a child process that was not its own")
    assert done == pid
    assert os.waitstatus_to_exitcode(status) == 7


class CountingForkingServer(RecordingServer, reactor.ForkingTCPServer):
    """Records how many children were still unreaped each time it forked."""

    max_children = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.children_at_fork: list[int] = []
        super().__init__(*args, **kwargs)


@pytest.fixture
def counting_server(monkeypatch: Any) -> CountingForkingServer:
    server = CountingForkingServer(("127.0.0.1", 0), StreamLineEcho)
    real_fork = os.fork

    def fork() -> int:
        server.children_at_fork.append(len(server.active_children or ()))
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    return server


def _three_waiting_clients(server: Any) -> list[bytes]:
    """Connect three clients before serving starts, then talk to them one after the other.

    Each child waits for its client's line, so with max_children=1 the
    server must finish one child before it forks the next.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(server)) for _ in range(3)]
        replies = []
        with ServingThread(server, poll_interval=0.05):
            for i, sock in enumerate(socks):
                sock.sendall(b"client %d\n" % i)
                sock.shutdown(socket.SHUT_WR)
                replies.append(read_all(sock))
        return replies


@pytest.mark.timeout(30)
def test_forking_max_children_one_still_serves_every_request(counting_server: Any) -> None:
    server = counting_server
    replies = _three_waiting_clients(server)
    assert replies == [b"client 0\n", b"client 1\n", b"client 2\n"]
    assert server.errors == []
    assert len(server.children_at_fork) == 3
    assert not server.active_children


@pytest.mark.timeout(30)
def test_forking_max_children_is_never_exceeded(counting_server: Any) -> None:
    # Three connections are already waiting when serving starts: a burst.
    server = counting_server
    replies = _three_waiting_clients(server)
    assert replies == [b"client 0\n", b"client 1\n", b"client 2\n"]
    # With max_children=1, every earlier child must be reaped before the next fork.
    assert server.children_at_fork == [0, 0, 0]


@pytest.mark.timeout(30)
def test_forking_handler_error_is_handled_in_the_child(places: Any, tmp_path: Any) -> None:
    marker = tmp_path / "handle_error.log"

    class Handler(handlers.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            if line == b"boom\n":
                raise ValueError("boom in the child")
            self.wfile.write(line)

    class Server(RecordingServer, reactor.ForkingTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            with open(marker, "a") as f:
                f.write(f"{os.getpid()} {sys.exc_info()[0].__name__}\n")

    parent = os.getpid()
    with ServingThread(Server(("127.0.0.1", 0), Handler), poll_interval=0.05) as server:
        assert client_exchange("tcp4", server.server_address, b"boom\n") == b""
        assert client_exchange("tcp4", server.server_address, b"still here\n") == b"still here\n"
    assert not server.active_children
    lines = marker.read_text().splitlines()
    assert len(lines) == 1, lines
    pid, exc_name = lines[0].split()
    assert exc_name == "ValueError"
    assert int(pid) != parent  # handle_error ran in the child, not in the parent


# =========================================================== mix-in order


@pytest.mark.parametrize("mixin", [reactor.ThreadingMixIn, reactor.ForkingMixIn], ids=lambda m: m.__name__)
def test_mixin_after_server_class_is_refused(mixin: type) -> None:
    with pytest.raises(TypeError) as info:

        class Bad(reactor.TCPServer, mixin):  # type: ignore[misc,valid-type]
            pass

    message = str(info.value)
    assert "Bad" in message
    assert mixin.__name__ in message
    assert "before" in message


@pytest.mark.parametrize("mixin", [reactor.ThreadingMixIn, reactor.ForkingMixIn], ids=lambda m: m.__name__)
def test_mixin_after_a_server_subclass_is_refused(mixin: type) -> None:
    class MyServer(reactor.UDPServer):
        pass

    with pytest.raises(TypeError, match=mixin.__name__):

        class Bad(MyServer, mixin):  # type: ignore[misc,valid-type]
            pass


@pytest.mark.parametrize("mixin", [reactor.ThreadingMixIn, reactor.ForkingMixIn], ids=lambda m: m.__name__)
def test_subclass_of_a_well_ordered_server_that_overrides_process_request(mixin: type) -> None:
    # A common pattern: wrap process_request (to log, count...) in a correctly
    # ordered server, then subclass that server.  Nothing is wrongly ordered.
    class Counting(mixin, reactor.TCPServer):  # type: ignore[misc,valid-type]
        def process_request(self, request: Any, client_address: Any) -> None:
            super().process_request(request, client_address)

    class Sub(Counting):
        pass

    assert Sub.process_request is Counting.process_request


# ==================================================================== errors


class BadHandler(handlers.BaseRequestHandler):
    def handle(self) -> None:
        with open(self.server.log_path, "a") as f:
            f.write("Handler called\n")
        raise self.server.exception("Test error")


class ErrorServerBase(reactor.TCPServer):
    """As CPython's ErrorHandlerTest: the handler raises, handle_error writes to a log file."""

    timeout = CLIENT_TIMEOUT

    def handle_error(self, request: Any, client_address: Any) -> None:
        with open(self.log_path, "a") as f:
            f.write("Error handled\n")

    def handle_timeout(self) -> None:
        raise AssertionError("handle_request() saw no request within the timeout")


ERROR_SERVERS = {
    "sync": ErrorServerBase,
    "threading": type("ThreadingErrorServer", (reactor.ThreadingMixIn, ErrorServerBase), {}),
    "forking": type("ForkingErrorServer", (reactor.ForkingMixIn, ErrorServerBase), {}),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exception", [ValueError, SystemExit], ids=lambda e: e.__name__)
@pytest.mark.parametrize("mode", ["sync", "threading", "forking"])
def test_handler_errors(mode: str, exception: type, tmp_path: Any, monkeypatch: Any) -> None:
    thread_exceptions: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", thread_exceptions.append)
    server = ERROR_SERVERS[mode](("127.0.0.1", 0), BadHandler)
    server.log_path = tmp_path / "log"
    server.exception = exception
    try:
        with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT):
            pass
        if mode == "sync" and exception is SystemExit:
            with pytest.raises(SystemExit):
                server.handle_request()
        else:
            server.handle_request()
    finally:
        server.server_close()  # joins the thread / reaps the child
    handled = exception is ValueError
    assert server.log_path.read_text() == "Handler called\n" + "Error handled\n" * handled
    if mode == "threading" and not handled:
        # stdlib semantics: SystemExit is not handed to handle_error, it ends the thread.
        assert [args.exc_type for args in thread_exceptions] == [SystemExit]
    else:
        assert thread_exceptions == []
