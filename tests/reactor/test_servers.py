"""Servers: every family, every lifecycle hook, the table, errors, socket files."""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading

import pytest
from conftest import (
    CLIENT_TIMEOUT,
    DGRAM_FAMILIES,
    FAMILIES,
    FOUR_FAMILIES,
    STREAM_FAMILIES,
    ServingThread,
    client_exchange,
    family_params,
)

import reactor
from handlers.echo import DatagramEcho, StreamLineEcho


def echo_handler(name: str) -> type:
    return StreamLineEcho if FAMILIES[name][2] == socket.SOCK_STREAM else DatagramEcho


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(list(FAMILIES)))
def test_echo_on_every_family(name, places):
    server = places.make_server(name, echo_handler(name))
    assert server.server_address == server.socket.getsockname()
    assert server.socket.family == FAMILIES[name][1]
    with ServingThread(server):
        for i in range(3):
            payload = f"request {i} over {name}\n".encode() * (i + 1)
            assert client_exchange(name, server.server_address, payload, places) == payload
    stats = server.request_table.statistics()
    assert (stats["opened"], stats["finished"], stats["live"]) == (3, 3, 0)
    assert server.socket.fileno() == -1


def recording_server(base: type) -> type:
    """A subclass of ``base`` that records each lifecycle call in ``self.calls``."""

    class Server(base):
        def __init__(self, *args, **kwargs):
            self.calls = []
            super().__init__(*args, **kwargs)

        def server_bind(self):
            self.calls.append("server_bind")
            super().server_bind()

        def server_activate(self):
            self.calls.append("server_activate")
            super().server_activate()

        def get_request(self):
            got = super().get_request()  # may raise BlockingIOError: nothing more to accept
            self.calls.append("get_request")
            return got

        def verify_request(self, request, client_address):
            self.calls.append("verify_request")
            return super().verify_request(request, client_address)

        def process_request(self, request, client_address):
            self.calls.append("process_request")
            super().process_request(request, client_address)

        def finish_request(self, request, client_address):
            self.calls.append("finish_request")
            super().finish_request(request, client_address)

        def shutdown_request(self, request):
            self.calls.append("shutdown_request")
            super().shutdown_request(request)

        def close_request(self, request):
            self.calls.append("close_request")
            super().close_request(request)

        def handle_timeout(self):
            self.calls.append("handle_timeout")

        def server_close(self):
            self.calls.append("server_close")
            super().server_close()

    return Server


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_every_lifecycle_hook_is_called_in_order(name, places):
    server = places.make_server(name, echo_handler(name), cls=recording_server(FAMILIES[name][0]))
    assert server.calls == ["server_bind", "server_activate"]
    with ServingThread(server):
        assert client_exchange(name, server.server_address, b"hi\n", places) == b"hi\n"
    expected = ["get_request", "verify_request", "process_request", "finish_request", "shutdown_request", "close_request"]
    assert server.calls[2:] == expected + ["server_close"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_verify_request_false_drops_the_request(name, places):
    handled = []

    class Handler(reactor.BaseRequestHandler):
        def handle(self):
            handled.append(self.client_address)

    class Picky(recording_server(FAMILIES[name][0])):
        def verify_request(self, request, client_address):
            self.calls.append("verify_request")
            return False

    with places.make_server(name, Handler, cls=Picky) as server:
        client = threading.Thread(target=_poke, args=(name, server.server_address, places))
        client.start()
        server.handle_request()
        client.join(CLIENT_TIMEOUT)
    assert handled == []
    assert server.calls[2:] == ["get_request", "verify_request", "shutdown_request", "close_request", "server_close"]
    assert server.request_table.totals["rejected"] == 1


def _poke(name, address, places):
    """Send one message and ignore whatever happens next (the server may drop us)."""
    _, family, kind = FAMILIES[name]
    with socket.socket(family, kind) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            if kind == socket.SOCK_STREAM:
                sock.connect(address)
                sock.sendall(b"x\n")
                sock.recv(10)
            else:
                sock.sendto(b"x\n", address)
        except OSError:
            pass


@pytest.mark.timeout(10)
def test_handle_request_with_timeout_calls_handle_timeout(places):
    server = places.make_server("tcp4", StreamLineEcho, cls=recording_server(reactor.TCPServer))
    server.timeout = 0.05
    with server:
        server.handle_request()
    assert server.calls[2:] == ["handle_timeout", "server_close"]


@pytest.mark.timeout(10)
def test_handle_request_uses_the_shorter_of_socket_and_server_timeout(places):
    server = places.make_server("tcp4", StreamLineEcho, cls=recording_server(reactor.TCPServer))
    server.timeout = 30
    server.socket.settimeout(0.05)
    with server:
        server.handle_request()  # would hang for 30 s if the socket timeout were ignored
    assert "handle_timeout" in server.calls


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_handle_request_without_timeout_serves_one_request(name, places):
    with places.make_server(name, echo_handler(name)) as server:
        replies = []
        client = threading.Thread(
            target=lambda: replies.append(client_exchange(name, server.server_address, b"one\n", places))
        )
        client.start()
        server.handle_request()
        client.join(CLIENT_TIMEOUT)
    assert replies == [b"one\n"]


@pytest.mark.timeout(10)
def test_request_table_shows_a_request_while_it_runs(places):
    inside, release = threading.Event(), threading.Event()

    class Slow(reactor.StreamRequestHandler):
        def handle(self):
            inside.set()
            release.wait(CLIENT_TIMEOUT)
            self.wfile.write(b"done\n")

    with ServingThread(places.make_server("tcp4", Slow)) as server:
        replies = []
        client = threading.Thread(target=lambda: replies.append(client_exchange("tcp4", server.server_address, b"")))
        client.start()
        assert inside.wait(CLIENT_TIMEOUT)
        assert server.request_table.counts() == {"PROCESSING": 1}
        (row,) = server.request_table.describe()
        assert row["family"] == "tcp4" and row["state"] == "PROCESSING" and row["age"] >= 0
        assert row["peer"][0] == "127.0.0.1"
        release.set()
        client.join(CLIENT_TIMEOUT)
    assert replies == [b"done\n"]
    assert len(server.request_table) == 0


@pytest.mark.timeout(10)
def test_transitions_are_traced(places, caplog):
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    with ServingThread(places.make_server("unix", StreamLineEcho)) as server:
        assert client_exchange("unix", server.server_address, b"t\n") == b"t\n"
    messages = [r.getMessage() for r in caplog.records if r.name == "reactor.trace"]
    lines = [m for m in messages if "#1" in m]
    # The wakeup that brought the connection is told before what it caused.
    woke = next(i for i, m in enumerate(messages) if m.startswith("loop woke") and "read" in m)
    assert woke < messages.index(lines[0])
    assert any("#1 ACCEPTED" in line for line in lines)
    assert any("#1 ACCEPTED -> PROCESSING" in line for line in lines)
    assert any("#1 PROCESSING -> CLOSED" in line for line in lines)
    assert all(line.startswith("unix ") for line in lines)


# ------------------------------------------------------------------ errors


class Boom(reactor.BaseRequestHandler):
    exception = ValueError

    def handle(self):
        raise self.exception("boom from the handler")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_handle_error_prints_like_the_stdlib_and_logs(name, places, capsys, caplog):
    caplog.set_level(logging.ERROR, logger="reactor")
    with places.make_server(name, Boom) as server:
        client = threading.Thread(target=_poke, args=(name, server.server_address, places))
        client.start()
        server.handle_request()
        client.join(CLIENT_TIMEOUT)
    err = capsys.readouterr().err
    assert err.startswith("-" * 40 + "\nException occurred during processing of request from ")
    assert "ValueError: boom from the handler" in err
    assert err.rstrip().endswith("-" * 40)
    (record,) = [r for r in caplog.records if r.name == "reactor"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is ValueError
    assert server.request_table.totals["failed"] == 1 and len(server.request_table) == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
def test_exiting_exceptions_propagate_and_close_the_request(exception, places):
    errors = []

    class Handler(Boom):
        pass

    Handler.exception = exception

    class Server(reactor.TCPServer):
        def handle_error(self, request, client_address):
            errors.append(client_address)

    with places.make_server("tcp4", Handler, cls=Server) as server:
        with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as client:
            with pytest.raises(exception):
                server.handle_request()
            assert client.recv(10) == b""  # the server closed its side
    assert errors == []
    assert server.request_table.totals["failed"] == 1


@pytest.mark.timeout(10)
def test_exception_in_verify_request_goes_to_handle_error(places):
    seen = []

    class Server(reactor.TCPServer):
        def verify_request(self, request, client_address):
            raise RuntimeError("verify failed")

        def handle_error(self, request, client_address):
            seen.append(request.fileno() != -1)

    with places.make_server("tcp4", StreamLineEcho, cls=Server) as server:
        with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as client:
            server.handle_request()
            assert client.recv(10) == b""
    assert seen == [True]


@pytest.mark.timeout(10)
def test_bind_failure_closes_the_socket(places):
    for _ in range(50):  # the no_leaks fixture counts descriptors
        with pytest.raises(OverflowError):
            reactor.TCPServer(("127.0.0.1", -1), StreamLineEcho)
        with pytest.raises(FileNotFoundError):
            reactor.UnixStreamServer(os.path.join(places.dir, "missing", "s.sock"), StreamLineEcho)


def test_context_manager_closes(places):
    with places.make_server("udp4", DatagramEcho) as server:
        assert server.fileno() >= 0
    assert server.socket.fileno() == -1


def test_bind_and_activate_false_leaves_binding_to_the_caller(places):
    server = reactor.TCPServer(("127.0.0.1", 0), StreamLineEcho, bind_and_activate=False)
    with server:
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert server.server_address[1] != 0


def test_defaults_that_improve_on_the_stdlib(places):
    assert reactor.TCPServer.request_queue_size == socket.SOMAXCONN
    assert reactor.UDPServer.max_packet_size >= 65507  # the largest UDP payload over IPv4
    assert reactor.UDPServer.allow_reuse_address is False


@pytest.mark.skipif(not __import__("conftest").HAVE_IPV6, reason="no IPv6 loopback here")
@pytest.mark.parametrize("cls", [reactor.TCPServer, reactor.UDPServer])
def test_ipv6_literal_picks_af_inet6(cls):
    with cls(("::1", 0), StreamLineEcho) as server:
        assert server.address_family == socket.AF_INET6
        assert server.server_address[0] == "::1"
    assert cls.address_family == socket.AF_INET  # the class is untouched


@pytest.mark.parametrize("mixin", [reactor.ThreadingMixIn, reactor.ForkingMixIn])
def test_mixin_after_server_class_is_refused_with_the_fix_spelled_out(mixin):
    with pytest.raises(TypeError, match=f"{mixin.__name__} must come before the server class") as err:
        type("Bad", (reactor.TCPServer, mixin), {})
    assert f"class Bad({mixin.__name__}, TCPServer)" in str(err.value)


@pytest.mark.timeout(10)
def test_a_failing_observer_does_not_strand_the_request(places, caplog):
    def broken(*args):
        raise RuntimeError("observer bug")

    with places.make_server("tcp4", StreamLineEcho) as server:
        server.request_table.add_observer(broken)
        with ServingThread(server, close=False):
            assert client_exchange("tcp4", server.server_address, b"still served\n") == b"still served\n"
    assert server.request_table.totals["finished"] == 1 and len(server.request_table) == 0
    failures = [r for r in caplog.records if r.name == "reactor" and "observer" in r.getMessage()]
    assert failures and failures[0].exc_info[0] is RuntimeError


@pytest.mark.timeout(10)
def test_an_unbound_unix_datagram_client_is_served_without_an_answer(places):
    seen = []

    class Handler(reactor.DatagramRequestHandler):
        def handle(self):
            seen.append((self.packet, self.client_address))
            self.wfile.write(b"nobody to send this to")

    class Server(reactor.UnixDatagramServer):
        def handle_error(self, request, client_address):
            raise  # fail the test: there must be no error at all

    with places.make_server("unix-dgram", Handler, cls=Server) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"anonymous", server.server_address)  # no bind(): no address
            server.handle_request()
    assert [packet for packet, _ in seen] == [b"anonymous"]
    assert seen[0][1] in (None, "", b"")
    assert server.request_table.totals["finished"] == 1


# ------------------------------------------------------------ socket files


@pytest.mark.parametrize("name", ["unix", "unix-dgram"])
def test_unix_server_removes_its_socket_file(name, places):
    server = places.make_server(name, echo_handler(name))
    path = server.server_address
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    server.server_close()
    assert not os.path.exists(path)
    server.server_close()  # twice is harmless


@pytest.mark.parametrize("name", ["unix", "unix-dgram"])
def test_stale_socket_file_is_replaced_but_a_live_one_is_not(name, places):
    path = places.path()
    cls, family, kind = FAMILIES[name]
    dead = socket.socket(family, kind)
    dead.bind(path)
    dead.close()  # the file stays behind, as after a crash
    with cls(path, echo_handler(name)) as live:
        assert live.server_address == path
        with pytest.raises(OSError) as err:
            cls(path, echo_handler(name))
        assert err.value.errno == 98  # EADDRINUSE
        assert os.path.exists(path)  # the live server's file was not touched


@pytest.mark.parametrize("name", ["unix", "unix-dgram"])
def test_a_replaced_socket_file_is_not_removed(name, places):
    server = places.make_server(name, echo_handler(name))
    path = server.server_address
    os.unlink(path)
    with open(path, "w") as f:
        f.write("someone else's")
    server.server_close()
    with open(path) as f:
        assert f.read() == "someone else's"


def test_a_regular_file_in_the_way_is_not_removed(places):
    path = places.path()
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(OSError):
        reactor.UnixStreamServer(path, StreamLineEcho)
    with open(path) as f:
        assert f.read() == "keep me"


@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES + DGRAM_FAMILIES))
def test_listener_is_nonblocking_only_while_served(name, places):
    with places.make_server(name, echo_handler(name)) as server:
        assert server.socket.gettimeout() is None
        with reactor.Reactor() as r:
            r.add_server(server)
            assert server.socket.gettimeout() == 0.0
            assert server.reactor is r
            r.remove_server(server)
        assert server.socket.gettimeout() is None
        assert server.reactor is None
