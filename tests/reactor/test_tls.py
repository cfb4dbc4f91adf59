"""TLS on every stream server, never deaf during a handshake (reactor/tls.py).

Real TLS on loopback and Unix sockets, with the ssl module's client and
throw-away certificates (tests/tls_support.py): both kinds of handler,
every strategy, the stdlib's wrapped-listener pattern, and the bad
clients (silent, plain-text, reset mid-handshake, no certificate).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, ServingThread, family_params, wait_for
from tls_support import read_lines, tls_connect

import handlers
import reactor
from reactor import Event, Kind, State
from reactor.errors import UsageError

STRATEGIES = {
    "inline": reactor.Inline,
    "pool": lambda: reactor.ThreadPool(2),
    "fork": lambda: reactor.Fork(2),
}


class Upper(reactor.MessageHandler):
    """Framed: the line in upper case; ``CERT``, ``ALPN`` and ``VERSION`` ask about the TLS session."""

    def handle(self) -> None:
        self.wfile.write(answer(self.connection.sock, self.message))


class UpperStream(handlers.StreamRequestHandler):
    """Classic: the same, on the ``ssl.SSLSocket`` it is given."""

    def handle(self) -> None:
        assert isinstance(self.request, ssl.SSLSocket) and self.request.gettimeout() is None  # blocking, secured
        for line in self.rfile:
            self.wfile.write(answer(self.request, line))


def answer(tls: ssl.SSLSocket, line: bytes) -> bytes:
    if line == b"CERT\n":
        subject = dict(part[0] for part in (tls.getpeercert() or {}).get("subject", ()))
        return subject.get("commonName", "none").encode() + b"\n"
    if line == b"ALPN\n":
        return str(tls.selected_alpn_protocol()).encode() + b"\n"
    if line == b"VERSION\n":
        return tls.version().encode() + b"\n"
    return line.upper()


def moves(server: Any) -> list[tuple[State | None, Event | None, State]]:
    """Every move of the server's records, as (old, event, new), filled in as they happen."""
    seen: list[tuple[State | None, Event | None, State]] = []
    server.request_table.add_observer(lambda record, old, event, new, reason: seen.append((old, event, new)))
    return seen


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dispatch", list(STRATEGIES))
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6", "unix"]))
def test_tls_serves_every_stream_family_both_handler_kinds_and_every_strategy(places, certs, name, handler, dispatch):
    server = places.make_server(name, handler, dispatch=STRATEGIES[dispatch](), ssl_context=certs.server_context())
    seen = moves(server)
    with ServingThread(server):
        with tls_connect(server, certs.client_context()) as client:
            client.sendall(b"hello\nVERSION\n")
            assert read_lines(client, 2) == b"HELLO\nTLSv1.3\n"
            # close_notify, then the server's: a forked child holds a copy of
            # this test's own client socket, so closing it would not be an EOF.
            client.unwrap().close()
        wait_for(lambda: server.request_table.totals["finished"] >= 1, what="the connection's record ended")
    assert (State.ACCEPTED, Event.HANDSHAKE, State.HANDSHAKING) in seen
    assert (State.HANDSHAKING, Event.SECURED, State.ACCEPTED) in seen
    assert server.request_table.counters.get("handshake_failed", 0) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_the_stdlib_wrapped_listener_is_served_in_the_loop_and_never_deaf(places, certs, name, handler):
    """``server.socket = context.wrap_socket(server.socket, server_side=True)``, as http.server's recipe
    does: a client that never says hello does not hold up the next one's handshake."""
    server = places.make_server(name, handler)
    server.socket = certs.server_context().wrap_socket(server.socket, server_side=True)
    seen = moves(server)
    with ServingThread(server), socket.socket(server.address_family) as silent:
        silent.connect(server.server_address)  # and says nothing
        began = time.monotonic()
        with tls_connect(server, certs.client_context(), timeout=3.0) as client:
            client.sendall(b"wrapped\n")
            assert read_lines(client, 1) == b"WRAPPED\n"
        assert time.monotonic() - began < 2.0
    assert (State.HANDSHAKING, Event.SECURED, State.ACCEPTED) in seen


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_a_silent_client_is_closed_at_handshake_timeout_and_counted_while_others_are_served(places, certs, handler):
    server = places.make_server("tcp4", handler, ssl_context=certs.server_context())
    server.handshake_timeout = 0.3
    with ServingThread(server), socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as silent:
        with tls_connect(server, certs.client_context()) as client:
            client.sendall(b"meanwhile\n")
            assert read_lines(client, 1) == b"MEANWHILE\n"
        assert silent.recv(100) == b""  # closed by the server, within the timeout
        wait_for(lambda: server.request_table.totals["aborted"] == 1, what="the silent client's record aborted")
        assert server.request_table.counters.get("handshake_timeout") == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_plain_text_clients_and_resets_mid_handshake_are_closed_counted_and_logged_once(places, certs, handler, caplog):
    server = places.make_server("tcp4", handler, ssl_context=certs.server_context())
    caplog.set_level(logging.DEBUG, logger="reactor")
    with ServingThread(server):
        for _ in range(3):  # a plain-text client, three times: counted three times, logged once
            with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as plain:
                plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
                try:
                    assert plain.recv(100) == b""
                except ConnectionResetError:
                    pass  # closed with our unread request in its buffer: a reset says "closed" too
        with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as cut:
            cut.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
            cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # then a reset
        wait_for(lambda: server.request_table.counters.get("handshake_failed") == 4, what="four failed handshakes")
        with tls_connect(server, certs.client_context()) as client:  # and everyone else is served
            client.sendall(b"fine\n")
            assert read_lines(client, 1) == b"FINE\n"
    lines = [r.getMessage() for r in caplog.records if r.name == "reactor" and "TLS handshake failed" in r.getMessage()]
    assert len(lines) == 1 and "HTTP_REQUEST" in lines[0]  # OpenSSL's own word for a plain-text HTTP client


@pytest.mark.timeout(30)
def test_a_handshake_counts_against_max_connections(places, certs):
    server = places.make_server("tcp4", Upper, ssl_context=certs.server_context())
    server.max_connections = 1
    server.handshake_timeout = 1.0
    with ServingThread(server), socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) as silent:
        wait_for(lambda: server.request_table.live(Kind.CONNECTION) == 1, what="the silent client's record")
        wait_for(lambda: server.request_table.counters.get("accept_paused") == 1, what="accepting paused")
        began = time.monotonic()
        with tls_connect(server, certs.client_context()) as client:  # accepted once the silent one is dropped
            client.sendall(b"second\n")
            assert read_lines(client, 1) == b"SECOND\n"
        assert time.monotonic() - began >= 0.5  # it waited for the handshake timeout
        assert silent.recv(10) == b""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_close_notify_is_sent_on_a_clean_close_and_the_peers_reads_as_eof(places, certs, handler):
    server = places.make_server("tcp4", handler, ssl_context=certs.server_context())
    seen = moves(server)
    with ServingThread(server):
        # The client's own close_notify (unwrap) is the server's EOF: it answers with its own.
        client = tls_connect(server, certs.client_context(), suppress_ragged_eofs=False)
        try:
            client.sendall(b"bye\n")
            assert read_lines(client, 1) == b"BYE\n"
            plain = client.unwrap()  # sends ours, waits for theirs: a bare FIN would raise SSLEOFError
            plain.close()
        finally:
            client.close()
        wait_for(lambda: server.request_table.totals["finished"] == 1, what="the record ended")
    if handler is Upper:
        assert (State.READING, Event.EOF, State.CLOSING) in seen


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_client_certificates_are_required_and_reachable_from_handlers(places, certs, handler):
    server = places.make_server("tcp4", handler, ssl_context=certs.server_context(require_client_cert=True))
    with ServingThread(server):
        with tls_connect(server, certs.client_context(with_cert=True)) as client:
            client.sendall(b"CERT\n")
            assert read_lines(client, 1) == b"reactor test client\n"
        with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: refused at the first read
            with tls_connect(server, certs.client_context()) as anonymous:
                anonymous.sendall(b"CERT\n")
                assert anonymous.recv(100) == b""
        wait_for(lambda: server.request_table.counters.get("handshake_failed") == 1, what="the refusal counted")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_sni_and_alpn_are_reachable(places, certs, handler):
    context = certs.server_context()
    context.set_alpn_protocols(["echo/1", "h2"])
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = places.make_server("tcp4", handler, ssl_context=context)
    client_context = certs.client_context()
    client_context.set_alpn_protocols(["echo/1"])
    with ServingThread(server), tls_connect(server, client_context) as client:
        client.sendall(b"ALPN\n")
        assert read_lines(client, 1) == b"echo/1\n"
    assert names == ["localhost"]


@pytest.mark.timeout(30)
def test_a_large_reply_over_tls_arrives_whole_through_backpressure(places, certs):
    class Big(reactor.MessageHandler):
        def handle(self) -> None:
            self.wfile.write(b"x" * (4 << 20) + b"\n")

    server = places.make_server("tcp4", Big, ssl_context=certs.server_context())
    with ServingThread(server), tls_connect(server, certs.client_context(), timeout=10) as client:
        client.sendall(b"big\n")
        # Nobody reads yet: the reply fills the socket and waits in the queue, over high water.
        wait_for(lambda: server.request_table.counters.get("backpressure"), what="the reply held back")
        assert len(read_lines(client, 1)) == (4 << 20) + 1  # then it drains, whole


@pytest.mark.timeout(30)
def test_handle_request_without_a_reactor_shakes_hands_blocking(places, certs):
    server = places.make_server("tcp4", UpperStream, ssl_context=certs.server_context())
    with server:
        def client() -> None:
            with tls_connect(server, certs.client_context()) as c:
                c.sendall(b"once\n")
                replies.append(read_lines(c, 1))

        replies: list[bytes] = []
        thread = threading.Thread(target=client)
        thread.start()
        server.handle_request()
        thread.join(CLIENT_TIMEOUT)
    assert replies == [b"ONCE\n"]


@pytest.mark.timeout(10)
def test_trace_shows_the_handshake(places, certs, caplog):
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    server = places.make_server("tcp4", Upper, ssl_context=certs.server_context())
    with ServingThread(server), tls_connect(server, certs.client_context()) as client:
        client.sendall(b"t\n")
        assert read_lines(client, 1) == b"T\n"
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "reactor.trace")
    assert "ACCEPTED -> HANDSHAKING: handshake (TLS)" in text
    assert "HANDSHAKING -> ACCEPTED: secured (TLSv1.3, TLS_" in text


def test_bad_tls_settings_are_refused_clearly(places, certs):
    with pytest.raises(TypeError, match="ssl_context"):  # a datagram server has no such keyword: no DTLS
        places.make_server("udp4", handlers.DatagramRequestHandler, ssl_context=certs.server_context())
    datagram_tls = type("DatagramTLS", (reactor.UDPServer,), {"ssl_context": certs.server_context()})
    with pytest.raises(UsageError, match="no DTLS"):  # as a class attribute, refused too (not ignored)
        places.make_server("udp4", handlers.DatagramRequestHandler, cls=datagram_tls)
    with pytest.raises(UsageError, match="ssl.SSLContext"):
        places.make_server("tcp4", UpperStream, ssl_context="cert.pem")
    with places.make_server("tcp4", UpperStream) as server:
        with pytest.raises(UsageError, match="handshake_timeout"):
            server.handshake_timeout = float("nan")


# ------------------------------------------ TLS's "want read" and "want write"


class FakeTLS:
    """A socket that answers with TLS's want-read/want-write as told (a real one cannot be made to, on demand)."""

    family = socket.AF_UNIX

    def __init__(self) -> None:
        self.recv_results: list[Any] = []
        self.send_results: list[Any] = []
        self.sent = b""

    def recv(self, n: int) -> bytes:
        result = self.recv_results.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def send(self, data: Any) -> int:
        result = self.send_results.pop(0)
        if isinstance(result, BaseException):
            raise result
        self.sent += bytes(data)[:result]
        return result

    def pending(self) -> int:
        return 0


class FakeReactor:
    def __init__(self) -> None:
        self.readers: dict[Any, Any] = {}
        self.writers: dict[Any, Any] = {}

    def add_reader(self, sock: Any, callback: Any) -> None:
        self.readers[sock] = callback

    def remove_reader(self, sock: Any) -> None:
        self.readers.pop(sock, None)

    def add_writer(self, sock: Any, callback: Any) -> None:
        self.writers[sock] = callback

    def remove_writer(self, sock: Any) -> None:
        self.writers.pop(sock, None)


def pair() -> tuple[FakeTLS, FakeReactor, Any, Any, list[str]]:
    from handlers.framing import Line
    from reactor.input import Input
    from reactor.output import Output

    sock, loop, calls = FakeTLS(), FakeReactor(), []
    record = type("R", (), {"bytes_out": 0})()
    read_side = Input(sock, loop, Line(), None, lambda: calls.append("readable"))
    write_side = Output(sock, record, loop, lambda: calls.append("writable"), read_side.after_read)
    return sock, loop, read_side, write_side, calls


@pytest.mark.timeout(5)
def test_a_read_that_tls_says_must_wait_is_nothing_yet_in_either_direction():
    sock, _, read_side, _, _ = pair()
    sock.recv_results = [ssl.SSLWantReadError(), ssl.SSLWantWriteError(), b"line\n"]
    assert read_side.read() is None
    assert read_side.read() is None
    assert read_side.read() == b"line\n" and not read_side.eof


@pytest.mark.timeout(5)
def test_a_write_that_wants_write_waits_for_writability():
    sock, loop, _, write_side, _ = pair()
    sock.send_results = [ssl.SSLWantWriteError(), 6]
    assert write_side.send(b"reply\n") is None
    assert write_side.queued == 6 and sock in loop.writers  # queued, watched for writability
    assert write_side.flush() is None
    assert sock.sent == b"reply\n" and write_side.queued == 0 and sock not in loop.writers


@pytest.mark.timeout(5)
def test_a_write_that_wants_a_read_waits_for_the_next_read_not_for_writability():
    """Writability would come at once and again and again: watching it would spin."""
    sock, loop, read_side, write_side, calls = pair()
    sock.send_results = [ssl.SSLWantReadError()]
    assert write_side.send(b"reply\n") is None
    assert write_side.queued == 6
    assert sock not in loop.writers  # no write interest while TLS waits for the peer
    assert sock in loop.readers  # but read interest, for the data it waits for
    sock.recv_results = [b"peer data\n"]
    assert read_side.read() == b"peer data\n"
    assert calls == ["writable"]  # the write is retried, once, after that read
    sock.send_results = [6]
    assert write_side.flush() is None and sock.sent == b"reply\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls, name", [(reactor.ThreadingTCPServer, "tcp4"), (reactor.ForkingTCPServer, "tcp4"),
                                       (reactor.ThreadingUnixStreamServer, "unix"),
                                       (reactor.ForkingUnixStreamServer, "unix")])  # fmt: skip
def test_the_threading_and_forking_variants_take_ssl_context_too(places, certs, cls, name):
    server = places.make_server(name, UpperStream, cls=cls, ssl_context=certs.server_context())
    with ServingThread(server), tls_connect(server, certs.client_context()) as client:
        client.sendall(b"variant\n")
        assert read_lines(client, 1) == b"VARIANT\n"
        client.unwrap().close()  # the EOF a forked child waits for (it holds a copy of this socket)
