"""The framed path: MessageHandler subclasses served with the reactor owning the socket.

One handler class serves every family; pipelined messages are answered in
order; half-close, per-connection state, close() from a handler, binary
framing, handler exceptions, peer resets and the trace of the table's
states.  Real sockets only, every client with a timeout, every wait with a
deadline (see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
import threading
from typing import Any, Iterator

import pytest
from conftest import (
    CLIENT_TIMEOUT,
    DGRAM_FAMILIES,
    FAMILIES,
    ReactorThread,
    STREAM_FAMILIES,
    ServingThread,
    client_exchange,
    connect,
    family_params,
    read_all,
    wait_for,
)

import handlers
import reactor
from reactor import Event, Kind, State

# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def served(server: Any) -> Iterator[reactor.Reactor]:
    """``server`` on a fresh reactor running on a thread (stopped, joined, closed on exit)."""
    r = reactor.Reactor()
    r.add_server(server)
    with ReactorThread(r):
        yield r


@contextlib.contextmanager
def dgram_client(name: str, places: Any) -> Iterator[socket.socket]:
    """A datagram client of family ``name``, bound so it can be answered (Unix: a path under ``places``)."""
    family = FAMILIES[name][1]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(CLIENT_TIMEOUT)
    path = None
    try:
        if family == socket.AF_UNIX:
            path = places.path("cli")
            sock.bind(path)
        yield sock
    finally:
        sock.close()
        if path:
            os.unlink(path)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            raise AssertionError(f"EOF after {got} of {n} bytes: {b''.join(chunks)[-80:]!r}")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def ends(server: Any) -> dict[int, tuple[State, Event]]:
    """Record id -> (final state, event that got it there), filled in as records end."""
    finals: dict[int, tuple[State, Event]] = {}

    def observe(record: Any, old: Any, event: Any, new: State, reason: str) -> None:
        if new in (State.CLOSED, State.DONE, State.FAILED):
            finals[record.id] = (new, event)

    server.request_table.add_observer(observe)
    return finals


def recording(base: type) -> type:
    """A server class whose handle_error records the exception instead of printing it."""

    class Recording(base):  # type: ignore[misc,valid-type]
        def handle_error(self, request: Any, client_address: Any) -> None:
            self.errors.append((request, sys.exc_info()[1]))

    Recording.errors = []  # replaced per instance in make()
    return Recording


def make(places: Any, name: str, handler: type, **attrs: Any) -> Any:
    """A recording server of family ``name`` with class attributes ``attrs`` (bounds, hooks)."""
    cls = type(f"Test{FAMILIES[name][0].__name__}", (recording(FAMILIES[name][0]),), attrs)
    server = places.make_server(name, handler, cls=cls)
    server.errors = []
    return server


# ----------------------------------------------------------------- handlers


class Upper(reactor.MessageHandler):
    """The seed: written against a socket, unchanged but for its base class."""

    framing = reactor.Line()

    def handle(self) -> None:
        data = self.request.recv(1024)
        self.request.sendall(data.upper())


class ReverseLine(reactor.MessageHandler):
    """The file-style seed: rfile.readline() and wfile.write()."""

    framing = reactor.Line()

    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(line.rstrip(b"\n")[::-1] + b"\n")


class UpperChunk(Upper):
    framing = reactor.Chunk()


class Counting(reactor.MessageHandler):
    """Numbers the messages of each connection; ``bye`` closes it after the reply."""

    def handle(self) -> None:
        n = self.connection.data["n"] = self.connection.data.get("n", 0) + 1
        self.request.sendall(b"%d %s" % (n, self.message))
        if self.message == b"bye\n":
            self.connection.close()


PREFIXED = reactor.LengthPrefixed(4)


class ReversePrefixed(reactor.MessageHandler):
    framing = PREFIXED

    def handle(self) -> None:
        self.wfile.write(self.framing.encode(self.message[::-1]))


class Fragile(reactor.MessageHandler):
    def handle(self) -> None:
        if self.message == b"boom\n":
            raise ValueError("boom")
        self.request.sendall(self.message)


class Big(reactor.MessageHandler):
    """Replies 4 MiB to every line: more than the kernel buffers, so output stays queued."""

    def handle(self) -> None:
        self.request.sendall(b"x" * (4 << 20))


# ------------------------------------------------------ one class, six families


@pytest.mark.timeout(20)
@pytest.mark.parametrize("handler, payloads, replies", [
    pytest.param(Upper, [b"one\n", b"two\n"], [b"ONE\n", b"TWO\n"], id="recv-sendall"),
    pytest.param(ReverseLine, [b"abc\n", b"stressed\n"], [b"cba\n", b"desserts\n"], id="readline-write"),
])  # fmt: skip
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES + DGRAM_FAMILIES))
def test_one_handler_class_serves_every_family(places, name, handler, payloads, replies):
    with make(places, name, handler) as server:
        kinds = set()
        server.request_table.add_observer(lambda record, *_: kinds.add(record.kind))
        assert server.RequestHandlerClass is handler
        with served(server):
            if FAMILIES[name][2] == socket.SOCK_STREAM:
                # Both messages on one connection; EOF after the replies.
                assert client_exchange(name, server.server_address, b"".join(payloads)) == b"".join(replies)
                wait_for(lambda: server.request_table.totals["finished"] == 1)
                assert kinds == {Kind.CONNECTION}
            else:
                # One datagram is one message; the reply is one datagram.
                with dgram_client(name, places) as client:
                    for payload, reply in zip(payloads, replies):
                        client.sendto(payload, server.server_address)
                        assert client.recv(65536) == reply
                wait_for(lambda: server.request_table.totals["finished"] == 2)
                assert kinds == {Kind.DATAGRAM}
        assert server.errors == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_chunk_framing_with_the_recv_seed(places, name):
    with make(places, name, UpperChunk) as server, served(server):
        with connect(server) as client:
            for payload in (b"no newline at all", b"a\nb\nc", b"x" * 1000):
                client.sendall(payload)
                # Chunk: whatever one read returned is a message.
                assert recv_exactly(client, len(payload)) == payload.upper()
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b""
    assert server.errors == []


@pytest.mark.timeout(10)
def test_chunk_bytes_the_recv_seed_did_not_read_are_not_lost(places):
    # Where Chunk cuts depends on how much one read returned, so a chunk can
    # be longer than the handler's recv(1024).  A classic handler would find
    # the rest still in the socket; a framed one must not lose it either.
    with make(places, "tcp4", UpperChunk) as server, served(server), connect(server) as client:
        payload = bytes(range(97, 123)) * 200  # 5200 bytes, sent at once
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == payload.upper()


# ---------------------------------------------------------------- streams


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_hundred_pipelined_lines_are_answered_in_order(places, name):
    lines = [b"line %03d %s\n" % (i, b"abc" * (i % 17)) for i in range(100)]
    with make(places, name, Upper) as server, served(server):
        with connect(server) as client:
            client.sendall(b"".join(lines))  # one write: many messages per read
            expected = b"".join(line.upper() for line in lines)
            assert recv_exactly(client, len(expected)) == expected
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b""  # nothing more than the 100 replies
    totals = server.request_table.totals
    assert (totals["opened"], totals["finished"], totals["failed"]) == (1, 1, 0)


class CountingSocket:
    """An accepted socket that counts its ``send`` calls (everything else passes through)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def send(self, data: Any, *flags: int) -> int:
        sent = self._sock.send(data, *flags)
        self.sends.append(sent)
        return sent


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_replies_to_one_read_of_pipelined_messages_go_out_in_one_send(places, name):
    accepted: list[CountingSocket] = []

    def get_request(self: Any) -> Any:
        sock, address = self.socket.accept()
        accepted.append(CountingSocket(sock))
        return accepted[-1], address

    lines = b"".join(b"line %02d\n" % i for i in range(16))
    with make(places, name, Upper, get_request=get_request) as server, served(server):
        with connect(server) as client:
            client.sendall(lines)  # one small write: one segment, one read on the server
            assert recv_exactly(client, len(lines)) == lines.upper()
            wait_for(lambda: accepted[0].sends)  # the count is taken after send() returns
            assert accepted[0].sends == [len(lines)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6"]))
def test_framed_tcp_connections_do_not_wait_for_nagle(places, name):
    class NoDelay(reactor.MessageHandler):
        def handle(self) -> None:
            on = self.connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            self.wfile.write(b"%d\n" % bool(on))

    with make(places, name, NoDelay) as server, served(server):
        assert client_exchange(name, server.server_address, b"?\n") == b"1\n"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_half_close_gets_every_reply_then_eof(places, name):
    with make(places, name, Upper) as server:
        finals = ends(server)
        with served(server), connect(server) as client:
            client.sendall(b"a\nbb\nccc\n")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"A\nBB\nCCC\n"
            wait_for(lambda: finals)
    assert list(finals.values()) == [(State.CLOSED, Event.FINISH)]
    assert server.request_table.totals["finished"] == 1


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_connection_data_is_per_connection_and_close_ends_it_after_the_reply(places, name):
    with make(places, name, Counting) as server:
        finals = ends(server)
        with served(server), connect(server) as a, connect(server) as b:
            for n in (1, 2):
                a.sendall(b"x\n")
                assert recv_exactly(a, 4) == b"%d x\n" % n
                b.sendall(b"y\n")
                assert recv_exactly(b, 4) == b"%d y\n" % n
            a.sendall(b"bye\n")
            assert read_all(a) == b"3 bye\n"  # the reply, then EOF
            a.close()  # the server may linger for our EOF before it closes its end
            wait_for(lambda: server.request_table.totals["finished"] == 1)
            assert list(finals.values()) == [(State.CLOSED, Event.FINISH)]
            b.sendall(b"y\n")  # the other connection is untouched
            assert recv_exactly(b, 4) == b"3 y\n"
    assert server.errors == []


@pytest.mark.timeout(10)
def test_close_in_a_handler_answers_no_pipelined_message_after_it(places):
    with make(places, "tcp4", Counting) as server, served(server), connect(server) as client:
        client.sendall(b"bye\nafter\n")  # one write: both are buffered when bye is handled
        # close(): "close once the current reply (and anything queued) is sent".
        assert read_all(client) == b"1 bye\n"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_length_prefixed_binary_messages(places, name):
    payloads = [b"", b"\x00", b"\n\r\n", bytes(range(256)), b"", bytes(i * 7 % 256 for i in range(50000))]
    with make(places, name, ReversePrefixed) as server, served(server), connect(server) as client:
        client.sendall(b"".join(PREFIXED.encode(p) for p in payloads))
        frames = reactor.FrameBuffer(reactor.LengthPrefixed(4))
        got: list[bytes] = []
        while len(got) < len(payloads):
            chunk = client.recv(65536)
            assert chunk, f"EOF after {len(got)} replies"
            frames.feed(chunk)
            got.extend(frames)
        assert got == [p[::-1] for p in payloads]
        assert frames.buffered == 0


# ------------------------------------------------------------ failures


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_handler_exception_fails_only_its_connection(places, name):
    with make(places, name, Fragile) as server:
        finals = ends(server)
        with served(server), connect(server) as bad, connect(server) as good:
            bad.sendall(b"ok\n")
            assert recv_exactly(bad, 3) == b"ok\n"
            bad.sendall(b"boom\n")
            try:
                assert read_all(bad) == b""  # closed: EOF ...
            except ConnectionResetError:
                pass  # ... or a reset, either says "closed"
            # handle_error runs, and the record fails (the socket closes): wait for both.
            wait_for(lambda: server.errors and server.request_table.totals["failed"] == 1)
            assert [type(exc) for _, exc in server.errors] == [ValueError]
            assert server.errors[0][0].message == b"boom\n"  # handle_error got the failed message
            assert list(finals.values()) == [(State.FAILED, Event.ERROR)]
            good.sendall(b"still here\n")  # the same server serves the other client
            assert recv_exactly(good, 11) == b"still here\n"


class WritesThenRaises(reactor.MessageHandler):
    """Writes a reply, then raises on ``boom``: the reply must not go out."""

    def handle(self) -> None:
        self.wfile.write(b"half of " + self.message)
        if self.message.startswith(b"boom"):
            raise ValueError("boom")


@pytest.mark.timeout(15)
@pytest.mark.parametrize("dispatch", ["inline", "pool", "fork"])
@pytest.mark.parametrize("name", family_params(["udp4", "unix-dgram"]))
def test_a_datagram_handler_that_raises_sends_nothing_under_every_strategy(places, name, dispatch):
    """The request ends one way, whatever ran it: failed, its half-made reply
    is dropped (inline too: it used to go out there, as if nothing had gone wrong)."""
    strategies = {"inline": reactor.Inline, "pool": lambda: reactor.ThreadPool(2), "fork": lambda: reactor.Fork(2)}
    with make(places, name, WritesThenRaises, dispatch=strategies[dispatch]()) as server:
        datagrams: list[tuple[State, Event]] = []  # the datagrams' final moves (not the children's)

        def observe(record: Any, old: Any, event: Any, new: State, reason: str) -> None:
            if record.kind is Kind.DATAGRAM and new in (State.DONE, State.FAILED):
                datagrams.append((new, event))

        server.request_table.add_observer(observe)
        with served(server), dgram_client(name, places) as client:
            client.sendto(b"boom\n", server.server_address)
            wait_for(lambda: datagrams == [(State.FAILED, Event.ERROR)], what="the failed datagram's record")
            client.sendto(b"fine\n", server.server_address)
            assert client.recv(100) == b"half of fine\n"  # the first reply there is: none came for boom
            wait_for(lambda: len(datagrams) == 2, what="both records ended")
        assert datagrams == [(State.FAILED, Event.ERROR), (State.DONE, Event.FINISH)]
        if dispatch != "fork":  # a child's handle_error runs in the child
            assert [type(exc) for _, exc in server.errors] == [ValueError]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("when", ["mid-message", "reply-pending"])
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6"]))
def test_peer_reset_closes_that_connection_quietly(places, name, when):
    with make(places, name, Big) as server:
        finals = ends(server)
        with served(server) as r:
            rude = socket.socket(server.address_family, socket.SOCK_STREAM)
            with rude:
                rude.settimeout(CLIENT_TIMEOUT)
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                rude.connect(server.server_address)
                if when == "mid-message":
                    rude.sendall(b"half a li")
                    wait_for(lambda: any(rec.bytes_in for rec in server.request_table))
                else:
                    rude.sendall(b"go\n")
                    wait_for(lambda: [rec.state for rec in server.request_table] == [State.WRITING])
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # closed with SO_LINGER (1, 0): the server gets a RST
            wait_for(lambda: len(finals) == 1 and not server.connections)
            assert list(finals.values()) == [(State.CLOSED, Event.ABORT)]
            assert server.request_table.counters.get("resets", 0) == 1
            assert server.errors == []  # quietly: not an error of the server's
            with connect(server) as other:
                other.settimeout(CLIENT_TIMEOUT)
                other.sendall(b"more\n")
                assert len(recv_exactly(other, 4 << 20)) == 4 << 20
            assert r.servers == (server,)


# ------------------------------------------------------- datagram, classic


class ClassicDatagram(reactor.DatagramRequestHandler):
    def handle(self) -> None:
        self.socket.sendto(b"first:" + self.packet, self.client_address)
        self.wfile.write(self.packet.upper())


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["udp4", "unix-dgram"]))
def test_classic_datagram_handler_through_a_served_reactor(places, name):
    with make(places, name, ClassicDatagram) as server:
        finals = ends(server)
        with served(server), dgram_client(name, places) as client:
            client.sendto(b"hi", server.server_address)
            assert client.recv(65536) == b"first:hi"  # self.socket.sendto, during handle()
            assert client.recv(65536) == b"HI"  # wfile, sent by finish()
            wait_for(lambda: finals)
    assert list(finals.values()) == [(State.DONE, Event.FINISH)]
    assert server.errors == []


# ------------------------------------------------------ without a reactor


@pytest.mark.timeout(10)
def test_handle_request_serves_one_framed_connection_to_its_end(places):
    replies: list[bytes] = []
    closed = threading.Event()

    def client(address: Any) -> None:
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
            for line in (b"a\n", b"b\n"):  # one at a time: each reply before the next message
                sock.sendall(line)
                replies.append(recv_exactly(sock, 4))
            closed.set()

    with make(places, "tcp4", Counting, timeout=CLIENT_TIMEOUT) as server:
        thread = threading.Thread(target=client, args=(server.server_address,))
        thread.start()
        try:
            server.handle_request()  # returns once that connection is over
            assert closed.is_set(), "handle_request() returned before the client closed"
        finally:
            thread.join(CLIENT_TIMEOUT)
        assert not thread.is_alive()
    assert replies == [b"1 a\n", b"2 b\n"]
    totals = server.request_table.totals
    assert (totals["opened"], totals["finished"], totals["failed"]) == (1, 1, 0)
    assert len(server.request_table) == 0 and server.connections == ()


# ------------------------------------------------------------------ trace


@pytest.mark.timeout(10)
def test_a_framed_exchange_is_traced(places, caplog):
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    with make(places, "tcp4", Upper) as server, served(server):
        assert client_exchange("tcp4", server.server_address, b"trace me\n") == b"TRACE ME\n"
        wait_for(lambda: server.request_table.totals["finished"] == 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "reactor.trace" and "->" in r.getMessage()]
    moves = [next((i for i, line in enumerate(lines) if step in line), None) for step in (
        "ACCEPTED -> READING: start",
        "READING -> READY: message",
        "READY -> PROCESSING: dispatch",
        "PROCESSING -> READING: reply",
        "READING -> CLOSING: eof",
        "CLOSING -> CLOSED: finish",
    )]  # fmt: skip
    assert None not in moves, lines
    assert moves == sorted(moves), lines


# ------------------------------------------------ pushing to other connections


class Broadcast(reactor.MessageHandler):
    """Each line goes to every other connection of the server; the sender gets its byte count."""

    def handle(self) -> None:
        others = [c for c in self.server.connections if c is not self.connection]
        for other in others:
            other.send(self.message)
        self.wfile.write(b"sent to %d, %d queued here\n" % (len(others), self.connection.queued))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("dispatch", [reactor.Inline, lambda: reactor.ThreadPool(2)], ids=["inline", "pool"])
def test_send_pushes_to_other_connections_in_order(places, dispatch):
    with make(places, "tcp4", Broadcast, dispatch=dispatch()) as server, served(server):
        with connect(server) as a, connect(server) as b:
            wait_for(lambda: len(server.connections) == 2)
            answer = b"sent to 1, 0 queued here\n"
            a.sendall(b"one\n")
            assert recv_exactly(a, len(answer)) == answer
            a.sendall(b"two\n")
            assert recv_exactly(a, len(answer)) == answer
            assert recv_exactly(b, 8) == b"one\ntwo\n"


@pytest.mark.timeout(10)
def test_send_to_a_closing_connection_raises_closed_error(places):
    results: list[Any] = []

    class Quit(reactor.MessageHandler):
        def handle(self) -> None:
            self.connection.close()
            self.wfile.write(b"bye\n")
            results.append(self.connection)

    with make(places, "tcp4", Quit) as server, served(server) as r:
        with connect(server) as client:
            client.sendall(b"x\n")
            assert read_all(client) == b"bye\n"
        wait_for(lambda: not server.connections)
        done = threading.Event()

        def try_send() -> None:
            try:
                results[0].send(b"late\n")
            except reactor.ClosedError as exc:
                results.append(exc)
            done.set()

        r.call_soon_threadsafe(try_send)
        assert done.wait(CLIENT_TIMEOUT)
        assert isinstance(results[-1], reactor.ClosedError), results


class UpperDatagram(handlers.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class UpperStream(handlers.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


@pytest.mark.timeout(10)
@pytest.mark.parametrize("hook", ["process_request", "finish_request", "shutdown_request", "close_request"])
@pytest.mark.parametrize("where", ["class", "instance"])
@pytest.mark.parametrize(
    "name, handler, requests",
    [("tcp4", Upper, 3), ("udp4", Upper, 1), ("udp4", UpperDatagram, 1), ("tcp4", UpperStream, 1)],
    ids=["tcp-framed", "udp-framed", "udp-classic", "tcp-classic"],
)
def test_an_overridden_hook_runs_for_every_request(places, hook, where, name, handler, requests):
    # socketserver runs every hook for every request: an overridden one,
    # on the class or the instance, must run every time here too.
    calls: list[str] = []

    def counting(self: Any, *args: Any) -> None:
        calls.append(hook)
        getattr(super(type(self), self), hook)(*args)

    if where == "class":
        server = make(places, name, handler, **{hook: counting})
    else:
        server = make(places, name, handler)
        setattr(server, hook, counting.__get__(server))
    with server, served(server):
        assert client_exchange(name, server.server_address, b"a\nb\nc\n") == b"A\nB\nC\n"
    assert calls == [hook] * requests


@pytest.mark.timeout(10)
@pytest.mark.parametrize("hook", ["process_request", "finish_request", "shutdown_request", "close_request",
                                  "verify_request"])
@pytest.mark.parametrize(
    "name, handler, requests",
    [("tcp4", Upper, 3), ("udp4", Upper, 1), ("udp4", UpperDatagram, 1), ("tcp4", UpperStream, 1),
     ("unix", Upper, 3), ("unix", UpperStream, 1)],
    ids=["tcp-framed", "udp-framed", "udp-classic", "tcp-classic", "unix-framed", "unix-classic"],
)
def test_a_hook_assigned_while_serve_forever_runs_is_honoured(places, hook, name, handler, requests):
    """socketserver looks every hook up on every request: so must we, even once serving has begun."""
    calls: list[str] = []

    def counting(self: Any, *args: Any) -> Any:
        calls.append(hook)
        return getattr(type(self), hook)(self, *args)

    server = make(places, name, handler)
    with server, ServingThread(server, close=False):
        wait_for(lambda: server.reactor is not None, what="serve_forever() has added the server to its reactor")
        setattr(server, hook, counting.__get__(server))
        assert client_exchange(name, server.server_address, b"a\nb\nc\n", places) == b"A\nB\nC\n"
    expected = 1 if hook == "verify_request" and handler is Upper and name != "udp4" else requests
    assert calls == [hook] * expected


@pytest.mark.timeout(10)
@pytest.mark.parametrize("dispatch", ["inline", "pool"])
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_the_ending_hooks_run_for_a_message_whose_handler_raised(places, name, dispatch):
    """As socketserver does after ``handle_error``: ``shutdown_request`` and
    ``close_request`` run for the failed message too (inline as on a worker)."""
    calls: list[str] = []

    def counting(hook: str) -> Any:
        def hooked(self: Any, request: Any) -> None:
            calls.append(hook)
            getattr(super(type(self), self), hook)(request)
        return hooked

    strategy = reactor.Inline() if dispatch == "inline" else reactor.ThreadPool(2)
    with make(places, name, Fragile, dispatch=strategy, shutdown_request=counting("shutdown_request"),
              close_request=counting("close_request")) as server:  # fmt: skip
        with served(server), connect(server) as client:
            client.sendall(b"ok\nboom\n")
            assert read_all(client) == b"ok\n"
            wait_for(lambda: len(calls) == 4, what="both messages' ending hooks")
    assert calls == ["shutdown_request", "close_request"] * 2


# ------------------------------------------------ a failing handler loses nothing


class KeyValue(reactor.MessageHandler):
    """SET/GET on the connection's data; BOOM raises; BIG replies 4 MiB."""

    def handle(self) -> None:
        words = self.message.split()
        store = self.connection.data
        if words[0] == b"BOOM":
            raise ValueError("boom")
        if words[0] == b"BIG":
            self.wfile.write(b"x" * (4 << 20) + b"\n")
        elif words[0] == b"SET":
            store[words[1]] = words[2]
            self.wfile.write(b"OK\n")
        else:
            self.wfile.write(store.get(words[1], b"nil") + b"\n")


STRATEGIES = {
    "inline": reactor.Inline,
    "pool": lambda: reactor.ThreadPool(2),
    "fork": lambda: reactor.Fork(2),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("dispatch", list(STRATEGIES))
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_replies_finished_before_a_handler_raises_still_go_out(places, name, dispatch):
    """``SET a 1\\nBOOM\\nGET a\\n`` in one write: the SET reply arrives, then EOF."""
    with make(places, name, KeyValue, dispatch=STRATEGIES[dispatch]()) as server:
        finals = ends(server)
        with served(server), connect(server) as client:
            client.sendall(b"SET a 1\nBOOM\nGET a\n")
            assert read_all(client) == b"OK\n"  # the SET's reply, nothing after BOOM
            wait_for(lambda: server.request_table.totals["failed"] >= 1 and not server.connections)
            assert (State.FAILED, Event.ERROR) in finals.values()
            if dispatch != "fork":  # a forked handler's error is reported in the child
                assert [type(exc) for _, exc in server.errors] == [ValueError]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dispatch", list(STRATEGIES))
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_queued_output_goes_out_before_a_failed_connection_closes(places, name, dispatch):
    """A 4 MiB reply still queued when the next message's handler raises is sent whole."""
    # Reading resumes (and BOOM is handled) while up to 1 MiB is still queued.
    bounds = {"output_high_water": 2 << 20, "output_low_water": 1 << 20}
    with make(places, name, KeyValue, dispatch=STRATEGIES[dispatch](), **bounds) as server:
        with served(server), connect(server) as client:
            client.sendall(b"BIG\nBOOM\nGET a\n")
            data = read_all(client)
            assert len(data) == (4 << 20) + 1 and data.endswith(b"x\n")
            wait_for(lambda: server.request_table.totals["failed"] >= 1 and not server.connections)


class Waiting(reactor.MessageHandler):
    """Replies once the test lets it go (``server.go``), after saying it started (``server.started``)."""

    def handle(self) -> None:
        self.server.started.set()
        assert self.server.go.wait(CLIENT_TIMEOUT)
        self.wfile.write(self.message)


@pytest.mark.timeout(20)
def test_with_nobody_watching_a_snapshot_still_sees_the_message_processing(places):
    with make(places, "tcp4", Waiting) as server, served(server), connect(server) as client:
        server.started, server.go = threading.Event(), threading.Event()
        assert not server.request_table.watched()
        client.sendall(b"one\n")
        assert server.started.wait(CLIENT_TIMEOUT)
        [record] = server.request_table.snapshot()  # from this thread, while the handler runs on the loop's
        assert record.state is State.PROCESSING
        server.go.set()
        assert recv_exactly(client, 4) == b"one\n"
        wait_for(lambda: [rec.state for rec in server.request_table] == [State.READING])
