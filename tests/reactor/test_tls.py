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
        self.wfile.write(answer(self.connection.tls, self.message))


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
        wait_for(lambda: server.request_table.totals["aborted"] == 1, what=f"the silent client record aborted {server.request_table.totals} {server.request_table.counters}")
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
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_handle_request_without_a_reactor_shakes_hands_blocking(places, certs, handler):
    server = places.make_server("tcp4", handler, ssl_context=certs.server_context())
    with server:
        def client() -> None:
            with tls_connect(server, certs.client_context()) as c:
                c.sendall(b"once\n")
                replies.append(read_lines(c, 1))
                c.unwrap().close()  # the framed connection is served until its EOF

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


# ------------------------------------------ TLS over memory buffers (reactor/tlssession.py)


class MemoryClient:
    """A TLS client over memory buffers, to hand a server's ``TLSSession`` exactly the bytes a test wants."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def step(self, from_server: bytes = b"") -> bytes:
        """Take what the server sent, go on with the handshake; what the client sends next."""
        self.incoming.write(from_server)
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def write(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self.outgoing.read()

    def read(self, from_server: bytes) -> bytes:
        self.incoming.write(from_server)
        return self.tls.read(1 << 20)


def secured_pair(certs: Any) -> tuple[Any, MemoryClient]:
    """A server ``TLSSession`` and a client, their handshake done through memory."""
    from reactor.tlssession import TLSSession

    session, client = TLSSession(certs.server_context()), MemoryClient(certs.client_context())
    assert not session.handshake(client.step())  # the ClientHello
    assert session.handshake(client.step(session.take_output()))  # the client's Finished
    client.incoming.write(session.take_output())  # the session tickets
    return session, client


@pytest.mark.timeout(10)
def test_a_partial_record_is_nothing_yet_and_every_whole_record_of_a_read_is_decrypted(certs):
    session, client = secured_pair(certs)
    record = client.write(b"first\n")
    assert session.decrypt(record[:7]) == b"" and not session.eof  # the header and a little: wait
    assert session.decrypt(record[7:]) == b"first\n"
    three = client.write(b"a\n") + client.write(b"b\n") + client.write(b"c" * 40000 + b"\n")  # 5 records
    assert session.decrypt(three) == b"a\nb\n" + b"c" * 40000 + b"\n" and not session.eof


@pytest.mark.timeout(10)
def test_a_close_notify_and_a_bare_eof_both_read_as_eof_after_what_came_before(certs):
    session, client = secured_pair(certs)
    last = client.write(b"last\n")
    try:
        client.tls.unwrap()
    except ssl.SSLWantReadError:
        pass  # the client's close_notify is made; it would wait for the server's
    assert session.decrypt(last + client.outgoing.read()) == b"last\n" and session.eof
    client.incoming.write(session.close_notify())
    client.tls.unwrap()  # the server's close_notify: the client's shutdown completes (no "want read")
    assert session.close_notify() == b""  # once

    session, client = secured_pair(certs)
    assert session.decrypt(b"") == b"" and session.eof  # a FIN with no close_notify


@pytest.mark.timeout(10)
def test_a_write_that_wants_a_read_is_kept_in_order_until_a_read_came(certs):
    """A server that writes before its handshake is done: TLS wants the peer's data first.
    Nothing watches writability for it (it would spin): the writes wait, in order, for a
    read (``on_need_read`` asks for one), and go out through ``on_output`` once TLS can make them."""
    from reactor.tlssession import TLSSession

    session, client = TLSSession(certs.server_context()), MemoryClient(certs.client_context())
    emitted: list[bytes] = []
    reads_asked: list[bool] = []
    session.on_output, session.on_need_read = emitted.append, lambda: reads_asked.append(True)
    assert session.encrypt(b"one\n") == b"" and reads_asked  # kept: TLS waits for the ClientHello
    assert session.encrypt(b"two\n") == b""  # kept behind it, in order
    assert session.decrypt(client.step()) == b""  # the ClientHello: the server answers ...
    finished = client.step(b"".join(emitted))
    emitted.clear()
    assert session.decrypt(finished) == b""  # ... its handshake is done: the kept writes go out
    assert client.read(b"".join(emitted)) == b"one\ntwo\n"


@pytest.mark.timeout(30)
def test_the_output_counts_encrypted_bytes(places, certs):
    """The queue holds ciphertext: ``bytes_out`` (and the water marks, on the same queue) count
    what goes on the wire, TLS's records and all, more than the plaintext."""
    seen: list[int] = []

    class Sized(reactor.MessageHandler):
        def handle(self) -> None:
            self.wfile.write(b"y" * 100_000 + b"\n")

    server = places.make_server("tcp4", Sized, ssl_context=certs.server_context())
    server.request_table.add_observer(
        lambda record, old, event, new, reason: seen.append(record.bytes_out) if new is State.CLOSED else None)
    with ServingThread(server):
        with tls_connect(server, certs.client_context()) as client:
            client.sendall(b"go\n")
            assert len(read_lines(client, 1)) == 100_001
            client.unwrap().close()
        wait_for(lambda: seen, what="the record closed")
    records = -(-100_001 // 16384)
    assert seen[0] >= 100_001 + records * 17 + 24  # each record's header and tag, and the close_notify


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


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_a_request_sent_with_the_clients_finished_is_answered(places, certs, name):
    """TLS 1.3 lets a client send its first request in the same segment as
    its Finished: the handshake's last read then holds the request too,
    which no readiness will show again.  It is answered at once."""
    server = places.make_server(name, Upper, ssl_context=certs.server_context())
    client = MemoryClient(certs.client_context())
    with ServingThread(server), socket.socket(server.address_family, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(server.server_address)
        sock.sendall(client.step())  # ClientHello
        finished = b""
        while not finished:
            finished = client.step(sock.recv(65536))  # the server's flight, until the client can finish
        sock.sendall(finished + client.write(b"early\n"))  # one send, one segment
        reply = b""
        while not reply.endswith(b"\n"):
            client.incoming.write(sock.recv(65536))
            try:
                reply += client.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
        assert reply == b"EARLY\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [Upper, UpperStream], ids=["framed", "classic"])
def test_a_connection_refused_by_verify_request_after_its_handshake_leaves_nothing_registered(places, certs, handler):
    """A framed connection takes over the socket registration its handshake
    made; refused by ``verify_request`` instead, the socket is closed and
    its registration goes too, so the loop watches only the listener."""
    refused: list[Any] = []

    class Picky(reactor.TCPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            if not refused:
                refused.append(client_address)
                return False
            return True

    server = places.make_server("tcp4", handler, cls=Picky, ssl_context=certs.server_context())
    with ServingThread(server):
        with tls_connect(server, certs.client_context()) as first:
            first.sendall(b"refused\n")
            try:
                reply = first.recv(100)
            except OSError:  # (ssl.SSLError included) a reset: refused all the same
                reply = b""
            assert reply == b""  # closed after the handshake, not served
        wait_for(lambda: server.request_table.totals["rejected"] == 1, what="the refusal")
        loop = server.reactor
        wait_for(lambda: len(loop._fd_keys) == 2, what="only the listener and the loop's wakeup left registered")
        with tls_connect(server, certs.client_context()) as second:  # (its socket may reuse the number)
            second.sendall(b"served\n")
            assert read_lines(second, 1) == b"SERVED\n"
            second.unwrap().close()
