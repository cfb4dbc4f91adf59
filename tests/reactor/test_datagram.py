"""Datagram servers against hostile peers: no self-echo, no log flood.

A forged datagram cannot be sent without raw sockets, so the servers here
are told by ``get_request`` that one client's datagram came from a forged
source (exactly what the kernel would report for a spoofed packet); what
follows, the server answering that address, is real traffic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any, Iterator

import pytest
from conftest import CLIENT_TIMEOUT, HAVE_IPV6, ReactorThread, wait_for

import reactor
from handlers.echo import DatagramEcho
from reactor import Kind
from reactor.ownaddress import OwnAddress


class FramedEcho(reactor.MessageHandler):
    def handle(self) -> None:
        self.request.sendall(self.message)


def forging(server_cls: type) -> type:
    """``server_cls`` whose ``get_request`` reports ``server.forge = (real, forged)``'s
    datagrams b"forged" as coming from ``forged``."""

    class Forging(server_cls):  # type: ignore[misc, valid-type]
        forge: Any = None

        def get_request(self) -> Any:
            (data, sock), address = super().get_request()
            if self.forge is not None and data == b"forged" and address == self.forge[0]:
                address = self.forge[1]
            return (data, sock), address

    return Forging


@contextlib.contextmanager
def served(server: Any) -> Iterator[reactor.Reactor]:
    r = reactor.Reactor()
    r.add_server(server)
    with ReactorThread(r):  # stops, joins and closes it
        yield r


def watch_datagrams(server: Any) -> tuple[list[int], list[int]]:
    """Lists of the ids of the datagram records opened and of those DONE, kept up to date."""
    opened: list[int] = []
    done: list[int] = []

    def watch(rec: Any, old: Any, event: Any, new: Any, reason: Any) -> None:
        if rec.kind is Kind.DATAGRAM and old is None:
            opened.append(rec.id)
        elif rec.kind is Kind.DATAGRAM and new.name == "DONE":
            done.append(rec.id)

    server.request_table.add_observer(watch)
    return opened, done


def host_ipv4() -> str | None:
    """A non-loopback IPv4 address of this host, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        host = probe.getsockname()[0]
    return None if host.startswith("127.") or host == "0.0.0.0" else host


# (id, server class, bind host (None: a Unix path), forged source host (None: the server's
# own address), host the client sends to)
SELF_CASES = [
    ("udp4", reactor.UDPServer, "127.0.0.1", None, "127.0.0.1"),
    ("udp4-wildcard-loopback", reactor.UDPServer, "0.0.0.0", "127.0.0.1", "127.0.0.1"),
    ("udp4-wildcard-other-loopback", reactor.UDPServer, "0.0.0.0", "127.0.0.7", "127.0.0.1"),
    ("udp4-wildcard-host-address", reactor.UDPServer, "0.0.0.0", "host", "127.0.0.1"),
    ("udp4-unspecified", reactor.UDPServer, "127.0.0.1", "0.0.0.0", "127.0.0.1"),
    ("udp6", reactor.UDPServer, "::1", None, "::1"),
    ("udp6-wildcard-loopback", reactor.UDPServer, "::", "::1", "::1"),
    ("udp6-wildcard-ipv4-mapped", reactor.UDPServer, "::", "::ffff:127.0.0.1", "::1"),
    ("unix-dgram", reactor.UnixDatagramServer, None, None, None),
]


def self_cases() -> list[Any]:
    params = []
    for case in SELF_CASES:
        marks = []
        if ":" in str(case[2]) and not HAVE_IPV6:
            marks.append(pytest.mark.skip(reason="no IPv6 here"))
        if case[3] == "host" and host_ipv4() is None:
            marks.append(pytest.mark.skip(reason="no non-loopback IPv4 address here"))
        params.append(pytest.param(*case[1:], id=case[0], marks=marks))
    return params


@contextlib.contextmanager
def client_of(server: Any, places: Any, host: str | None) -> Iterator[tuple[socket.socket, Any]]:
    """A datagram client (bound, so it can be answered) and the address it sends to."""
    sock = socket.socket(server.address_family, socket.SOCK_DGRAM)
    sock.settimeout(CLIENT_TIMEOUT)
    path = places.path("cli") if host is None else None
    try:
        sock.bind(path if path else (host, 0))
        yield sock, (server.server_address if path else (host, server.server_address[1]))
    finally:
        sock.close()
        if path:
            os.unlink(path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("handler", [DatagramEcho, FramedEcho], ids=["classic", "framed"])
@pytest.mark.parametrize("server_cls, bind, forged, send_to", self_cases())
def test_a_datagram_forged_from_the_server_itself_is_not_answered(places, server_cls, bind, forged, send_to, handler):
    address = places.path("srv") if bind is None else (bind, 0)
    with forging(server_cls)(address, handler) as server:
        datagrams, finals = watch_datagrams(server)
        with served(server), client_of(server, places, send_to) as (client, target):
            if forged is None:
                source = server.server_address
            else:
                source = (host_ipv4() if forged == "host" else forged, server.server_address[1])
                if server.address_family == socket.AF_INET6:
                    source += (0, 0)
            server.forge = (client.getsockname(), source)
            client.sendto(b"forged", target)
            # Once the forged datagram is done, its reply (if one went out) is
            # already in the server's own receive queue, ahead of what comes next.
            wait_for(lambda: 1 in finals, what="the forged datagram to be handled")
            client.sendto(b"hello", target)
            assert client.recv(64) == b"hello"
            assert len(datagrams) == 2, f"{len(datagrams)} datagrams for the 2 sent: the server answered itself"
            assert server.request_table.counters.get("replies_to_self") == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("dispatch", ["ThreadPool", "Fork"])
def test_no_self_echo_under_other_strategies(places, dispatch):
    strategy = reactor.ThreadPool(2) if dispatch == "ThreadPool" else reactor.Fork(2)
    with forging(reactor.UDPServer)(("127.0.0.1", 0), DatagramEcho, dispatch=strategy) as server:
        datagrams, finals = watch_datagrams(server)
        with served(server), client_of(server, places, "127.0.0.1") as (client, target):
            server.forge = (client.getsockname(), server.server_address)
            client.sendto(b"forged", target)
            wait_for(lambda: len(finals) >= 1, what="the forged datagram to be handled")
            client.sendto(b"hello", target)
            assert client.recv(64) == b"hello"
            wait_for(lambda: len(finals) >= 2, what="the second datagram to end")
            assert len(datagrams) == 2, f"{len(datagrams)} datagrams for the 2 sent: the server answered itself"
            if dispatch == "ThreadPool":  # a child counts in its own copy of the table
                assert server.request_table.counters.get("replies_to_self") == 1


def test_own_address_rules(places):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        own = OwnAddress(sock)
        port = sock.getsockname()[1]
        assert ("127.0.0.1", port) in own and ("0.0.0.0", port) in own
        assert ("127.0.0.1", port + 1 if port < 65535 else port - 1) not in own  # another port: a client
        assert ("127.0.0.2", port) not in own  # bound to 127.0.0.1 only: that is someone else
        assert ("198.51.100.7", port) not in own  # a remote peer using our port number
        assert None not in own and "" not in own and ("bogus", port) not in own and (port,) not in own
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        own = OwnAddress(sock)
        port = sock.getsockname()[1]
        assert ("127.0.0.1", port) in own and ("127.9.9.9", port) in own
        assert ("198.51.100.7", port) not in own and ("127.0.0.1", port ^ 1) not in own
        host = host_ipv4()
        if host:
            assert (host, port) in own
    if HAVE_IPV6:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::", 0))
            own = OwnAddress(sock)
            port = sock.getsockname()[1]
            assert ("::1", port, 0, 0) in own and ("0:0:0:0:0:0:0:1", port, 0, 0) in own
            assert ("::ffff:127.0.0.1", port, 0, 0) in own and ("::", port, 0, 0) in own
            assert ("2001:db8::7", port, 0, 0) not in own and ("::ffff:198.51.100.7", port, 0, 0) not in own
            assert ("::1", port ^ 1, 0, 0) not in own
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = places.path("own")
        unbound = OwnAddress(sock)
        assert not unbound.bound and "" not in unbound and None not in unbound
        sock.bind(path)
        own = OwnAddress(sock)
        assert path in own and places.path("other") not in own and None not in own and "" not in own
        os.unlink(path)


def test_an_unbound_socket_owns_nothing():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        own = OwnAddress(sock)
        assert not own.bound and ("0.0.0.0", 0) not in own and ("127.0.0.1", 0) not in own


# ------------------------------------------------------------ the log volume


def reactor_warnings(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "reactor" and r.levelno >= logging.WARNING]


@pytest.mark.timeout(30)
def test_a_peer_that_never_reads_cannot_flood_the_log(places, caplog):
    caplog.set_level(logging.WARNING, logger="reactor")
    with reactor.UnixDatagramServer(places.path("srv"), FramedEcho) as server:
        server.max_queued_replies = 4
        with served(server), client_of(server, places, None) as (stuck, target):
            table, sent = server.request_table, 0
            # Never read: the peer's receive queue fills, then the server's reply
            # queue, then every further reply is dropped.  Sent in bursts the
            # server's own receive queue can hold, each handled before the next.
            while table.counters.get("replies_dropped", 0) < 300:
                assert sent < 2000, f"only {table.counters} after {sent} datagrams"
                for _ in range(8):
                    stuck.sendto(b"%04d" % sent, target)
                    sent += 1
                wait_for(lambda: table.totals["opened"] == sent, what=f"the server to read datagram {sent}")
            dropped = table.counters["replies_dropped"]
            # Now read it all: every reply was delivered or dropped, and counted.
            stuck.setblocking(False)
            delivered = 0

            def drained() -> bool:
                nonlocal delivered
                with contextlib.suppress(BlockingIOError):
                    while True:
                        stuck.recv(64)
                        delivered += 1
                return len(server._reply_queue) == 0 and len(table) == 0

            wait_for(drained, what="the queued replies to be delivered")
            drained()
    assert dropped >= 300 and delivered + table.counters["replies_dropped"] == sent
    lines = reactor_warnings(caplog)
    # One line, and one more per 10 s should this run be slow.
    assert 1 <= len(lines) <= 2, f"{len(lines)} warning lines for {dropped} dropped replies: {lines[:3]}"
    assert "reply queue full" in lines[0].getMessage()


def test_where_any_address_can_be_bound_only_loopback_counts_for_a_wildcard(monkeypatch):
    host = host_ipv4()
    if host is None:
        pytest.skip("no non-loopback IPv4 address here")
    monkeypatch.setattr("reactor.ownaddress._nonlocal_bind_allowed", lambda family: True)  # ip_nonlocal_bind = 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        own = OwnAddress(sock)
        port = sock.getsockname()[1]
        assert (host, port) not in own  # bind() would succeed for any address: it proves nothing
        assert ("127.0.0.1", port) in own and ("0.0.0.0", port) in own


# ------------------------------------------- quiet records: in the table, untold


class Holding(reactor.DatagramRequestHandler):
    """Replies once the test lets it go (``server.go``), after saying it started (``server.started``)."""

    def handle(self) -> None:
        self.server.started.set()
        assert self.server.go.wait(CLIENT_TIMEOUT)
        self.wfile.write(self.packet)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("watched", [False, True], ids=["nobody-watches", "observed"])
def test_a_datagram_record_is_in_every_snapshot_and_told_to_whoever_watches(watched):
    moves: list[tuple[Any, Any]] = []
    with reactor.UDPServer(("127.0.0.1", 0), Holding) as server:
        server.started, server.go = threading.Event(), threading.Event()
        if watched:
            server.request_table.add_observer(lambda record, old, event, new, reason: moves.append((old, new)))
        r = reactor.Reactor()
        r.add_server(server)
        with ReactorThread(r), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(CLIENT_TIMEOUT)
            client.sendto(b"ping", server.server_address)
            assert server.started.wait(CLIENT_TIMEOUT)
            [record] = server.request_table.snapshot()  # from another thread, while its handler runs
            assert record.state is reactor.State.PROCESSING and record.quiet is not watched
            server.go.set()
            assert client.recv(100) == b"ping"
            wait_for(lambda: len(server.request_table) == 0)
    assert server.request_table.totals["finished"] == 1
    S = reactor.State
    assert moves == ([(None, S.RECEIVED), (S.RECEIVED, S.PROCESSING), (S.PROCESSING, S.DONE)] if watched else [])
