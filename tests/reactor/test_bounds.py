"""Bounds and failure handling: slow, idle, numerous, non-reading and over-long peers,
the connection limit, running out of descriptors, big datagrams and full datagram
sockets.  Each bound is set small on a server subclass; each hit is counted."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, ReactorThread, ServingThread, connect, family_params, wait_for

import reactor
from reactor import State

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def served(server: Any) -> Iterator[reactor.Reactor]:
    r = reactor.Reactor()
    r.add_server(server)
    with ReactorThread(r):
        yield r


def make(places: Any, name: str, handler: type, **attrs: Any) -> Any:
    """A server of family ``name`` whose class has ``attrs`` (bounds, hooks); handle_error records."""

    def handle_error(self: Any, request: Any, client_address: Any) -> None:
        self.errors.append(sys.exc_info()[1])

    cls = type("Bounded", (FAMILIES[name][0],), {"handle_error": handle_error, **attrs})
    server = places.make_server(name, handler, cls=cls)
    server.errors = []
    return server


def counter(server: Any, name: str) -> int:
    return server.request_table.counters.get(name, 0)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(1 << 20, n - len(data)))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


@contextlib.contextmanager
def dgram_client(name: str, places: Any) -> Iterator[socket.socket]:
    family = FAMILIES[name][1]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(CLIENT_TIMEOUT)
    path = places.path("cli") if family == socket.AF_UNIX else None
    try:
        if path:
            sock.bind(path)
        yield sock
    finally:
        sock.close()
        if path:
            os.unlink(path)


class Echo(reactor.MessageHandler):
    def handle(self) -> None:
        self.request.sendall(self.message)


# ---------------------------------------------------------------- slow peers


@pytest.mark.timeout(30)
def test_slowloris_does_not_make_the_server_deaf_and_is_dropped(places):
    with make(places, "tcp4", Echo, request_timeout=1.0) as server, served(server), contextlib.ExitStack() as stack:
        stalled = [stack.enter_context(connect(server)) for _ in range(200)]
        for sock in stalled:
            sock.sendall(b"GET /slowly HTTP/1.1 Host: exa")  # half a line, then nothing
        sent = time.monotonic()
        wait_for(lambda: sum(1 for rec in server.request_table if rec.bytes_in) == 200, what="200 reads")
        with connect(server) as good:
            good.settimeout(1.0)  # answered within 1 s, or TimeoutError fails the test
            good.sendall(b"hello\n")
            assert recv_exactly(good, 6) == b"hello\n"
            assert len(server.request_table) == 201  # the 200 were all still there
        for sock in stalled:
            sock.settimeout(max(0.05, sent + 3.0 - time.monotonic()))
            assert sock.recv(64) == b""  # dropped: EOF within ~3 s of stalling
        wait_for(lambda: counter(server, "request_timeout") == 200)
        assert counter(server, "idle_timeout") == 0 and server.errors == []


@pytest.mark.timeout(30)
def test_an_idle_connection_is_closed_and_an_active_one_is_not(places):
    with make(places, "tcp4", Echo, idle_timeout=0.3) as server, served(server):
        with connect(server) as idle, connect(server) as active:
            idle.sendall(b"once\n")
            assert recv_exactly(idle, 5) == b"once\n"
            idle_since, closed_after = time.monotonic(), None
            for _ in range(6):  # a line every ~0.1 s for 0.6 s: never idle for 0.3 s
                active.sendall(b"tick\n")
                assert recv_exactly(active, 5) == b"tick\n"
                # The pace: up to 0.1 s waiting for the idle client's EOF (once seen, just the wait).
                if select.select([] if closed_after else [idle], [], [], 0.1)[0]:
                    assert idle.recv(64) == b""
                    closed_after = time.monotonic() - idle_since
            assert closed_after is not None and 0.25 <= closed_after < 0.6, closed_after
            active.sendall(b"still\n")
            assert recv_exactly(active, 6) == b"still\n"
        assert counter(server, "idle_timeout") == 1


# -------------------------------------------------------------- many peers


@contextlib.contextmanager
def descriptors(need: int) -> Iterator[None]:
    """Raise RLIMIT_NOFILE's soft limit to ``need`` if it is lower (restored after); skip if the hard one is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} descriptors this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft if soft == resource.RLIM_INFINITY else max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(120)
def test_2000_concurrent_connections(places):
    with descriptors(4200), make(places, "tcp4", Echo) as server, served(server):
        with contextlib.ExitStack() as stack:
            clients: list[socket.socket] = []
            for _ in range(20):  # batches of 100, each accepted before the next
                clients += [stack.enter_context(connect(server)) for _ in range(100)]
                wait_for(lambda: len(server.request_table) == len(clients), timeout=10)
            for i, sock in enumerate(clients):
                sock.sendall(b"client %04d\n" % i)
            for i, sock in enumerate(clients):
                assert recv_exactly(sock, 12) == b"client %04d\n" % i
            assert len(server.connections) == 2000
    assert server.request_table.totals["opened"] == 2000 and server.errors == []


REPLY = 16384
LINE = 1024


def request(n: int) -> bytes:
    return (b"%05d " % n).ljust(LINE - 1, b"-") + b"\n"


def reply(n: int) -> bytes:
    return (b"%05d " % n).ljust(REPLY - 1, b".") + b"\n"


class Bulky(reactor.MessageHandler):
    def handle(self) -> None:
        self.request.sendall(reply(int(self.message[:5])))


def kernel_buffer(option: int, size: int) -> Any:
    """A verify_request hook: it sees each accepted socket before the reactor takes it."""

    def verify_request(self: Any, request: socket.socket, client_address: Any) -> bool:
        request.setsockopt(socket.SOL_SOCKET, option, size)
        return True

    return verify_request


@pytest.mark.timeout(60)
def test_a_peer_that_never_reads_cannot_grow_the_server(places):
    # A small kernel send buffer: the server's own bound is the one that counts.
    with make(places, "tcp4", Bulky, verify_request=kernel_buffer(socket.SO_SNDBUF, 65536)) as server:
        moves: list[tuple[Any, Any]] = []
        server.request_table.add_observer(lambda rec, old, event, new, why: moves.append((old, new)))
        with served(server), socket.socket() as hog:
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # a small window: no autotuning
            hog.settimeout(0.5)
            hog.connect(server.server_address)
            data, sent = b"".join(request(n) for n in range(2000)), 0
            with contextlib.suppress(TimeoutError):
                while sent < len(data):  # send until the kernel takes no more (or all of it)
                    sent += hog.send(data[sent : sent + 65536])
            wait_for(lambda: [rec.state for rec in server.request_table] == [State.WRITING], what="WRITING")
            assert counter(server, "backpressure") >= 1
            (conn,) = server.connections
            before = (conn.record.bytes_in, conn.messages)  # it does not read a WRITING connection
            with connect(server) as other:  # served promptly meanwhile
                other.settimeout(1.0)
                other.sendall(request(7))
                assert recv_exactly(other, REPLY) == reply(7)
            bytes_in, queued, messages = conn.record.bytes_in, conn.queued, conn.messages
            assert (bytes_in, messages) == before, "it went on reading a peer that does not read"
            assert queued <= server.output_high_water + REPLY
            assert messages < 200 and bytes_in <= sent // 2, (bytes_in, sent, messages)
            assert bytes_in - messages * LINE <= 3 * 65536  # read ahead: at most a few reads' worth
            # Now it reads: everything comes, in order, while it sends the rest.
            hog.settimeout(10)
            sender = threading.Thread(target=hog.sendall, args=(data[sent:],))
            sender.start()
            try:
                got = recv_exactly(hog, 2000 * REPLY)
            finally:
                sender.join(15)
            assert got == b"".join(reply(n) for n in range(2000))
            assert (State.WRITING, State.READING) in moves
            assert [rec.state for rec in server.request_table] == [State.READING]
    assert server.errors == []


# ----------------------------------------------------------- limits, errors


class ShortLines(Echo):
    framing = reactor.Line(max_length=1024)


def unread(sock: socket.socket) -> int:
    """Bytes waiting in ``sock``'s receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("size", [2000, 200_000], ids=["one-read", "many-reads"])
@pytest.mark.parametrize("err", [None, b"ERR too long\n"], ids=["no-reply", "reply"])
@pytest.mark.parametrize("limit", ["max_message_size", "Line(max_length)"])
def test_an_over_long_line_closes_only_its_connection(places, limit, err, size):
    errors: list[Exception] = []

    def protocol_error_reply(self, error, connection):
        errors.append(error)
        return err

    attrs = {"max_message_size": 1024} if limit == "max_message_size" else {}
    handler = Echo if limit == "max_message_size" else ShortLines
    # verify_request: room in the kernel for the whole over-long line.
    hooks = {"protocol_error_reply": protocol_error_reply, "verify_request": kernel_buffer(socket.SO_RCVBUF, 1 << 20)}
    with make(places, "tcp4", handler, **hooks, **attrs) as server:
        with served(server) as r, connect(server) as good, connect(server) as offender:
            good.sendall(b"before\n")
            assert recv_exactly(good, 7) == b"before\n"
            offender.sendall(b"ok\n")
            assert recv_exactly(offender, 3) == b"ok\n"
            (conn,) = [c for c in server.connections if c.client_address == offender.getsockname()]
            # Hold the loop while the whole line arrives, so the server meets it
            # as a peer that sends faster than it reads: more than one read waits.
            holding, release = threading.Event(), threading.Event()
            r.call_soon_threadsafe(lambda: (holding.set(), release.wait(CLIENT_TIMEOUT)))
            try:
                assert holding.wait(CLIENT_TIMEOUT)
                offender.sendall(b"x" * size)  # no newline in sight after 1024 bytes
                wait_for(lambda: unread(conn.sock) == size, what="the line in the server's receive queue")
            finally:
                release.set()
            data, ending = bytearray(), "EOF"
            try:
                while chunk := offender.recv(65536):
                    data += chunk
            except ConnectionResetError:
                ending = "reset"
            assert data == (err or b"")
            # A reset says "closed" too, but after a reply it must be EOF: closing
            # with the peer's bytes unread sends a RST, which can destroy the reply.
            assert err is None or ending == "EOF", "the reply was followed by a reset, not EOF"
            offender.close()  # the server may linger for our EOF before it closes its end
            wait_for(lambda: len(server.request_table) == 1)
            assert counter(server, "too_long") == 1
            assert [type(e) for e in errors] == [reactor.MessageTooLong]
            good.sendall(b"after\n")
            assert recv_exactly(good, 6) == b"after\n"
    assert server.errors == []


@pytest.mark.timeout(20)
def test_max_connections_pauses_accepting_until_one_closes(places):
    with make(places, "tcp4", Echo, max_connections=3) as server:
        live: list[int] = []
        server.request_table.add_observer(lambda rec, old, *_: old is None and live.append(len(server.request_table)))
        with served(server), contextlib.ExitStack() as stack:
            first = [stack.enter_context(connect(server)) for _ in range(3)]
            for sock in first:
                sock.sendall(b"in\n")
                assert recv_exactly(sock, 3) == b"in\n"
            late = [stack.enter_context(connect(server)) for _ in range(2)]  # the kernel's backlog takes them
            for sock in late:
                sock.sendall(b"late\n")
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    sock.recv(64)  # not served while 3 are open
            assert counter(server, "accept_paused") >= 1 and len(server.request_table) == 3
            for gone, waiting in zip(first, late):
                gone.close()  # one leaves: one waiting client is taken, no more
                waiting.settimeout(CLIENT_TIMEOUT)
                assert recv_exactly(waiting, 5) == b"late\n"
            with connect(server) as newcomer:  # still 3 open: waits for the next slot
                newcomer.sendall(b"new\n")
                first[2].close()
                assert recv_exactly(newcomer, 4) == b"new\n"  # the listener resumed
    assert max(live) <= 3 and server.request_table.totals["opened"] == 6


EMFILE_SCRIPT = r"""
import json, os, resource, socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
import reactor

class Echo(reactor.MessageHandler):
    def handle(self):
        self.request.sendall(self.message)

# CLIENTS - KEEP close at the end; those still in the backlog then take
# descriptors when accepted, so all that waits must fit in what is freed.
LIMIT, CLIENTS, KEEP = 64, 100, 20
out, clients = {}, []
server = reactor.TCPServer(("127.0.0.1", 0), Echo)
server.max_connections = None  # no connection limit (the default would fit LIMIT): the descriptors run out
thread = threading.Thread(target=server.serve_forever)
thread.start()
try:
    # The clients' descriptors go above LIMIT (fill the low numbers, open
    # them, free the low numbers): only the server's accept() runs out.
    pad = [os.open(os.devnull, os.O_RDONLY)]
    while pad[-1] < LIMIT:
        pad.append(os.open(os.devnull, os.O_RDONLY))
    clients = [socket.socket() for _ in range(CLIENTS)]
    list(map(os.close, pad))
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    for c in clients:
        c.settimeout(5.0)
        c.connect(server.server_address)  # the backlog takes each one
    counters, deadline = server.request_table.counters, time.monotonic() + 10
    while not counters.get("accept_errors") and time.monotonic() < deadline:
        time.sleep(0.01)  # polling, with a deadline
    out["accepted"] = server.request_table.totals["opened"]
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(1.0)  # the window measured: the backlog stays full all along
    out["cpu"], out["wall"] = time.process_time() - cpu, time.monotonic() - wall
    out["during"], out["echoes"] = dict(counters), []
    out["listening"] = server.socket.fileno() != -1 and server.reactor is not None
    list(map(socket.socket.close, clients[:-KEEP]))
    for i in range(KEEP + 1):
        try:
            c = clients[CLIENTS - KEEP + i] if i < KEEP else socket.create_connection(server.server_address, 5.0)
            c.sendall(b"echo %d\n" % i)
            out["echoes"].append(c.recv(64).decode())
            c.close()
        except OSError as exc:
            out["echoes"].append(repr(exc))
finally:
    list(map(socket.socket.close, clients))
    server.shutdown()
    thread.join(5)
    server.server_close()
    out["counters"] = dict(server.request_table.counters)
    print(json.dumps(out))
"""


@pytest.mark.timeout(60)
def test_out_of_descriptors_the_listener_rests_instead_of_spinning():
    proc = subprocess.run([sys.executable, "-c", EMFILE_SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["during"].get("accept_errors", 0) >= 1, out
    assert out["accepted"] < 64, out
    assert out["cpu"] < 0.3, f"{out['cpu']:.2f}s of CPU in {out['wall']:.2f}s with a full backlog: {out}"
    assert out["listening"], out
    assert out["echoes"] == [f"echo {i}\n" for i in range(21)], out


# ------------------------------------------------------------------ datagrams


class Sizes(reactor.MessageHandler):
    def handle(self) -> None:
        self.server.seen.append(len(self.message))
        self.request.sendall(self.message)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["udp4", "udp6", "unix-dgram"]))
def test_a_big_datagram_is_handled_whole(places, name):
    payload = bytes(i % 251 for i in range(60000))
    with make(places, name, Sizes) as server, served(server), dgram_client(name, places) as client:
        server.seen = []
        client.sendto(payload, server.server_address)
        assert client.recv(65536) == payload
        assert server.seen == [60000] and counter(server, "truncated") == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["udp4", "unix-dgram"]))
def test_a_datagram_over_max_packet_size_is_dropped_not_truncated(places, name, caplog):
    caplog.set_level(logging.WARNING, logger="reactor")
    with make(places, name, Sizes, max_packet_size=1024) as server, served(server):
        server.seen = []
        with dgram_client(name, places) as client:
            client.sendto(b"y" * 2000, server.server_address)
            client.sendto(b"z" * 1024, server.server_address)  # exactly the limit: handled
            assert client.recv(65536) == b"z" * 1024  # the first reply is the second datagram's
        wait_for(lambda: server.request_table.totals["rejected"] == 1)
        assert server.seen == [1024] and counter(server, "truncated") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "max_packet_size" in r.getMessage()]
    assert len(warnings) == 1


def flood(server: Any, sock: socket.socket, until: str) -> int:
    """Send datagrams, each handled before the next, until counter ``until`` moves; return how many."""
    table, sent = server.request_table, 0
    while not counter(server, until):
        assert sent < 2000, f"{until} never counted"
        sock.sendto(b"%04d" % sent, server.server_address)
        sent += 1
        wait_for(lambda: table.totals["opened"] == sent and all(r.state is State.SENDING for r in table),
                 what=f"the server to read and handle datagram {sent}")
    return sent


@pytest.mark.timeout(20)
def test_replies_to_a_datagram_peer_that_never_reads_are_bounded(places):
    with make(places, "unix-dgram", Echo, max_queued_replies=4) as server:
        depths: list[int] = []  # the reply queue's length, seen at every move of the table
        server.request_table.add_observer(lambda *_: depths.append(len(server._reply_queue)))
        with served(server), dgram_client("unix-dgram", places) as stuck, dgram_client("unix-dgram", places) as good:
            flood(server, stuck, "replies_dropped")  # its receive queue fills, then the server's
            assert counter(server, "replies_queued") >= 1
            good.settimeout(1.0)
            for i in range(3):  # answered meanwhile
                good.sendto(b"ping %d" % i, server.server_address)
                assert good.recv(64) == b"ping %d" % i
    assert max(depths) <= 4 and server.errors == []


@pytest.mark.timeout(20)
def test_a_waiting_datagram_reply_neither_deafens_nor_spins_the_loop(places):
    with make(places, "unix-dgram", Echo) as server, served(server):
        with dgram_client("unix-dgram", places) as stuck, dgram_client("unix-dgram", places) as other:
            sent = flood(server, stuck, "replies_queued")  # one reply waits for stuck to read
            cpu = time.process_time()  # this whole process: the loop thread included
            time.sleep(0.5)  # the window measured, not a wait for an event
            cpu = time.process_time() - cpu
            assert cpu < 0.1, f"the loop used {cpu:.2f}s of CPU in 0.5s waiting for a peer that does not read"
            other.sendto(b"hello", server.server_address)
            wait_for(lambda: server.request_table.totals["opened"] == sent + 1, what="the server to read on")
            assert [stuck.recv(64) for _ in range(sent)] == [b"%04d" % i for i in range(sent)]
            assert other.recv(64) == b"hello"
            stuck.sendto(b"again", server.server_address)
            assert stuck.recv(64) == b"again"
    assert server.errors == []


# ------------------------------------------------- timeouts: long, infinite, NaN


class LineEcho(reactor.MessageHandler):
    def handle(self) -> None:
        self.wfile.write(self.message)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_a_month_long_idle_timeout_serves(places, name):
    """``idle_timeout = 30 days`` died in serve_forever() (epoll's timeout overflowed)."""
    server = make(places, name, LineEcho, idle_timeout=30 * 86400)
    with server, ServingThread(server), connect(server) as client:
        client.sendall(b"still here\n")
        assert recv_exactly(client, 11) == b"still here\n"


BAD_SECONDS = [float("nan"), float("inf"), -float("inf"), -1, 0, "60", True]


@pytest.mark.parametrize("bound", ["idle_timeout", "request_timeout", "write_timeout"])
@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_a_bad_timeout_is_refused_where_it_is_set(places, bound, value):
    with pytest.raises(reactor.UsageError, match=bound):  # in a class body
        type("Bad", (reactor.TCPServer,), {bound: value})
    with reactor.TCPServer(("127.0.0.1", 0), LineEcho) as server:
        with pytest.raises(reactor.UsageError, match=bound):  # on an instance
            setattr(server, bound, value)
        assert getattr(server, bound) == getattr(reactor.TCPServer, bound)  # unchanged


@pytest.mark.parametrize("value", [float("nan"), -1, float("inf")], ids=repr)
def test_a_bad_timeout_set_on_the_class_later_is_refused_by_the_constructor(places, value):
    class Late(reactor.TCPServer):
        pass

    Late.request_timeout = value  # past __init_subclass__ and __setattr__
    with pytest.raises(reactor.UsageError, match="request_timeout"):
        Late(("127.0.0.1", 0), LineEcho)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", [0, -1, 1.5, "8", True, None], ids=repr)
def test_a_bad_requests_per_wakeup_is_refused_where_it_is_set(places, value):
    with pytest.raises(reactor.UsageError, match="requests_per_wakeup"):  # in a class body
        type("Bad", (reactor.UDPServer,), {"requests_per_wakeup": value})
    with reactor.TCPServer(("127.0.0.1", 0), LineEcho) as server:
        with pytest.raises(reactor.UsageError, match="requests_per_wakeup"):  # on an instance
            server.requests_per_wakeup = value
        server.requests_per_wakeup = 1
        assert server.requests_per_wakeup == 1

    class Late(reactor.TCPServer):
        pass

    Late.requests_per_wakeup = value  # past __init_subclass__ and __setattr__
    with pytest.raises(reactor.UsageError, match="requests_per_wakeup"):
        Late(("127.0.0.1", 0), LineEcho)


@pytest.mark.timeout(10)
def test_requests_per_wakeup_bounds_what_one_readiness_takes(places):
    """Three clients waiting: with requests_per_wakeup = 1 one loop iteration accepts one of them."""
    server = places.make_server("tcp4", LineEcho)
    server.requests_per_wakeup = 1
    with reactor.Reactor() as loop:
        loop.add_server(server)
        clients = [socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT) for _ in range(3)]
        try:
            loop.run_once(CLIENT_TIMEOUT)
            assert server.request_table.totals["opened"] == 1
            loop.run_once(CLIENT_TIMEOUT)
            assert server.request_table.totals["opened"] == 2
        finally:
            for client in clients:
                client.close()
            server.server_close()


@pytest.mark.parametrize("bound, value", [("drain_timeout", 0), ("timeout", 0), ("idle_timeout", None), ("idle_timeout", 1e10)])
def test_good_timeouts_are_accepted(bound, value):
    with reactor.TCPServer(("127.0.0.1", 0), LineEcho) as server:
        setattr(server, bound, value)
        assert getattr(server, bound) == value


@pytest.mark.timeout(15)
def test_a_nan_timeout_cannot_block_the_other_timers(places):
    """--idle-timeout nan spun a core and kept request_timeout from ever firing."""
    server = make(places, "tcp4", LineEcho, request_timeout=0.2)
    with server:
        with pytest.raises(reactor.UsageError):
            server.idle_timeout = float("nan")
        with ServingThread(server), connect(server) as client:
            client.sendall(b"half a li")
            assert client.recv(100) == b""  # request_timeout still closes it
            wait_for(lambda: counter(server, "request_timeout") == 1)


# ------------------------------------------ closed connections are not kept alive


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_closed_connections_are_freed_while_a_long_timer_heads_the_heap(places, name):
    """Each closed connection's cancelled request_timeout timer held the connection until it was due."""
    server = make(places, name, LineEcho, request_timeout=60.0)
    with server, reactor.Reactor() as r:
        r.add_server(server)
        r.call_later(3600, lambda: None)  # one long timer at the head of the heap
        for _ in range(300):
            with connect(server) as client:
                client.sendall(b"half a line")  # arms request_timeout
                deadline = time.monotonic() + CLIENT_TIMEOUT
                while not any(rec.bytes_in for rec in server.request_table):
                    assert time.monotonic() < deadline
                    r.run_once(0.05)
            deadline = time.monotonic() + CLIENT_TIMEOUT
            while server.connections:  # the peer's close ends it
                assert time.monotonic() < deadline
                r.run_once(0.05)
        gc.collect()
        alive = [obj for obj in gc.get_objects() if type(obj) is reactor.connection.Connection]
        assert len(alive) == 0, f"{len(alive)} closed connections are still in memory"
        assert len(r._timers) < 300 // 2 + 2  # the heap was rebuilt without the cancelled timers
