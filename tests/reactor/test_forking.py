"""The Fork strategy's own mechanics.

Without pidfds, SIGCHLD wakes the loop to reap.  A child closes every
descriptor of the parent's but its own request's; a request ends when its
child exits (a grandchild holding the output pipe does not hold it up);
a failure between taking a slot and a running child gives the slot back.
(The family x strategy matrix is in test_strategies.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, connect, family_params, run_until

import reactor
from handlers.echo import DatagramEcho, LineEcho
from reactor import Kind


class Upper(reactor.MessageHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


def exchange(r: reactor.Reactor, client: socket.socket, lines: bytes) -> bytes:
    """Send ``lines``, stepping ``r`` until as many lines came back; return them."""
    client.sendall(lines)
    client.setblocking(False)
    replies = bytearray()

    def answered() -> bool:
        with contextlib.suppress(BlockingIOError):
            replies.extend(client.recv(100))
        return replies.count(b"\n") == lines.count(b"\n")

    run_until(r, answered)
    return bytes(replies)


@pytest.mark.timeout(20)
def test_children_are_reaped_through_sigchld_where_there_are_no_pidfds(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    previous = signal.getsignal(signal.SIGCHLD)
    strategy = reactor.Fork(2)
    server = reactor.TCPServer(("127.0.0.1", 0), Upper, dispatch=strategy)
    try:
        with reactor.Reactor() as r, socket.create_connection(server.server_address, CLIENT_TIMEOUT) as client:
            r.add_server(server)
            assert exchange(r, client, b"one\ntwo\n") == b"ONE\nTWO\n"
            run_until(r, lambda: not strategy.children)  # reaped, not left as zombies
            assert signal.getsignal(signal.SIGCHLD) is not previous  # the fallback was used
            r.remove_server(server)
    finally:
        server.server_close()
        signal.signal(signal.SIGCHLD, previous)
    assert server.request_table.totals["failed"] == 0


@pytest.mark.timeout(20)
def test_a_first_child_that_exits_before_the_sigchld_handler_is_set_is_still_reaped(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    real_fork = os.fork

    def fork_and_let_it_exit() -> int:  # the child is quicker than the parent, every time
        pid = real_fork()
        if pid:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: its SIGCHLD is gone
        return pid

    monkeypatch.setattr(os, "fork", fork_and_let_it_exit)
    previous = signal.getsignal(signal.SIGCHLD)
    strategy = reactor.Fork(2)
    server = reactor.TCPServer(("127.0.0.1", 0), Upper, dispatch=strategy)
    try:
        with reactor.Reactor() as r, socket.create_connection(server.server_address, CLIENT_TIMEOUT) as client:
            r.add_server(server)
            assert exchange(r, client, b"one\n") == b"ONE\n"  # sent once the child is reaped
            assert not strategy.children
            r.remove_server(server)
    finally:
        server.server_close()
        signal.signal(signal.SIGCHLD, previous)


# ============================================================ hardening (issue 10)
#
# A child holds nothing but its own request; a request ends when its child
# exits; every failure on the way to a running child gives its slot back.


def touch(path: str) -> None:
    open(path, "w").close()


def wait_for_file(path: str, limit: float = 10.0) -> None:
    """In a child: wait (bounded polling) until the test creates ``path``."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def fd_table() -> dict[int, str]:
    """This process's descriptors and what each one is (``socket:[123]``, ``pipe:[45]``, ...)."""
    table = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return table


def respond(line: bytes, request: Any, server: Any) -> bytes:
    """What the test handlers do, in the child: ``hold`` waits for ``server.flag``; ``fds``
    reports the child's descriptors; ``spawn`` starts a background grandchild that inherits
    every descriptor; anything else is sent back upper-cased."""
    if line == b"hold\n":
        wait_for_file(server.flag)
        return b"HELD\n"
    if line == b"fds\n":
        own = request.fileno()
        return json.dumps({"fds": fd_table(), "own": own}).encode() + b"\n"
    if line == b"spawn\n":
        # A background process that keeps every descriptor, the output pipe and the
        # connection among them (as one started by multiprocessing's fork would).
        grandchild = os.fork()
        if grandchild == 0:
            wait_for_file(server.flag)  # at most 10 s
            os._exit(0)
        with open(server.pidfile, "w") as f:
            f.write(str(grandchild))
        return b"%d\n" % grandchild
    return line.upper()


class ClassicProbe(reactor.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(respond(self.rfile.readline(), self.request, self.server))


class FramedProbe(reactor.MessageHandler):
    def handle(self) -> None:
        self.wfile.write(respond(self.rfile.readline(), self.request, self.server))


class DatagramProbe(reactor.MessageHandler):  # the same, on a datagram server: one datagram, one message
    def handle(self) -> None:
        self.wfile.write(respond(self.message, self.request, self.server))


PROBES = {"classic": ClassicProbe, "framed": FramedProbe}


class Recording:
    """A server mix-in whose handle_error keeps the exception (in this process)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors.append(sys.exc_info()[1])


def probe_server(places: Any, name: str, kind: str, dispatch: Any) -> Any:
    base = FAMILIES[name][0]
    handler = DatagramProbe if FAMILIES[name][2] == socket.SOCK_DGRAM else PROBES[kind]
    server = places.make_server(name, handler, cls=type("Probe", (Recording, base), {}), dispatch=dispatch)
    server.errors = []
    server.flag = os.path.join(places.dir, f"flag-{id(server)}")
    server.pidfile = os.path.join(places.dir, f"pid-{id(server)}")
    return server


class Peer:
    """A connected client socket the test reads while it steps the loop itself: nonblocking
    (it never waits; the test's deadlines are run_until's)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.data = bytearray()
        self.eof = False

    def poll(self) -> "Peer":
        while not self.eof:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            self.data += chunk
            self.eof = not chunk
        return self

    def lines(self) -> int:
        return self.poll().data.count(b"\n")


def serve_on(stack: contextlib.ExitStack, r: reactor.Reactor, *servers: Any) -> None:
    """Serve ``servers`` on ``r`` (stepped by the test); each closed when ``stack`` ends."""
    for server in servers:
        stack.callback(server.server_close)
        r.add_server(server)


def child_record_pids(server: Any) -> list[int]:
    pids: list[int] = []
    server.request_table.add_observer(
        lambda record, old, *_: pids.append(record.peer) if old is None and record.kind is Kind.CHILD else None
    )
    return pids


# -------------------------------- 4. a child holds no other request's descriptors


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_a_half_close_reaches_its_client_while_another_clients_child_runs(name: str, kind: str, places: Any) -> None:
    fork = reactor.Fork(2)
    subject = probe_server(places, name, kind, fork)
    other = places.make_server(name, LineEcho)  # Inline: its connections live in the parent
    pids = child_record_pids(subject)
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, subject, other)
        idle = [Peer(stack.enter_context(connect(other)))]  # B: another server's framed connection
        idle[0].sock.sendall(b"b\n")
        run_until(r, lambda: idle[0].lines() == 1)
        if kind == "framed":  # and one of the same server's connections, idle too
            idle.append(Peer(stack.enter_context(connect(subject))))
            run_until(r, lambda: len(subject.connections) == 1)
        stack.callback(touch, subject.flag)  # whatever happens, the held child may go
        holder = Peer(stack.enter_context(connect(subject)))
        holder.sock.sendall(b"hold\n")
        run_until(r, lambda: len(pids) == 1)  # the child is forked, and waits for the flag
        for peer in idle:
            peer.sock.shutdown(socket.SHUT_WR)
        run_until(r, lambda: all(peer.poll().eof for peer in idle), timeout=3.0)
        assert pids[0] in fork.children and not os.path.exists(subject.flag)  # still running
        assert bytes(idle[0].data) == b"b\n"
        touch(subject.flag)
        run_until(r, lambda: holder.lines() == 1)
        assert bytes(holder.data) == b"HELD\n"
        run_until(r, lambda: not fork.children)
    assert subject.errors == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_a_child_holds_no_descriptor_of_the_parent_but_its_own_request(name: str, kind: str, places: Any) -> None:
    before = set(fd_table().items())  # pytest's own files and the like: not the library's
    fork = reactor.Fork(2)
    subject = probe_server(places, name, kind, fork)
    other = places.make_server("unix" if name == "tcp4" else "tcp4", LineEcho)
    datagrams = places.make_server("udp4", DatagramEcho)
    queued = probe_server(places, "tcp4", "classic", reactor.Fork(1))  # one child running, one request READY
    clients = []
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, subject, other, datagrams, queued)
        stack.callback(touch, queued.flag)
        framed = Peer(stack.enter_context(connect(other)))
        framed.sock.sendall(b"x\n")
        run_until(r, lambda: framed.lines() == 1)
        holding = Peer(stack.enter_context(connect(queued)))
        holding.sock.sendall(b"hold\n")
        waiting = Peer(stack.enter_context(connect(queued)))
        waiting.sock.sendall(b"w\n")  # (its child must not wait for an EOF: it holds our end too)
        run_until(r, lambda: queued.request_table.counts().get("READY") == 1)
        clients = [framed, holding, waiting]
        if kind == "framed":
            clients.append(Peer(stack.enter_context(connect(subject))))  # an idle connection of its own server
            run_until(r, lambda: len(subject.connections) == 1)
        asking = Peer(stack.enter_context(connect(subject)))
        clients.append(asking)
        asking.sock.sendall(b"fds\n")
        run_until(r, lambda: asking.lines() == 1)
        report = json.loads(bytes(asking.data))
        mine = {(peer.sock.fileno(), os.readlink(f"/proc/self/fd/{peer.sock.fileno()}")) for peer in clients}
        library = set(fd_table().items()) - before - mine  # what the library holds in the parent
        listeners = {os.readlink(f"/proc/self/fd/{s.fileno()}") for s in (subject, other, datagrams, queued)}
        assert listeners <= {target for _, target in library}
        child = {(int(fd), target) for fd, target in report["fds"].items()}
        own = {(fd, target) for fd, target in child if fd == report["own"]}
        assert own, report
        assert child & library <= own, f"the child holds {sorted(child & library - own)}"
        touch(queued.flag)
        run_until(r, lambda: holding.lines() == 1 and waiting.lines() == 1)
        run_until(r, lambda: not fork.children and not queued.dispatch.children and not queued.request_table.counts())
    assert subject.errors == [] and queued.errors == []


# ------------------------------------- 5. a failure before the child runs gives the slot back


def failing(monkeypatch: Any, call: str, times: int) -> list[str]:
    """Make ``os.<call>`` fail with EMFILE on its next ``times`` calls; returns the failures so far."""
    real = getattr(os, call)
    failed: list[str] = []

    def fake(*args: Any) -> Any:
        if len(failed) < times:
            failed.append(call)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(*args)

    monkeypatch.setattr(os, call, fake)
    return failed


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call, kind", [("pipe", "framed"), ("fork", "framed"), ("fork", "classic")])
def test_a_request_that_cannot_start_fails_cleanly_and_gives_its_slot_back(
    call: str, kind: str, places: Any, monkeypatch: Any
) -> None:
    fork = reactor.Fork(2)
    server = probe_server(places, "tcp4", kind, fork)
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, server)
        failed = failing(monkeypatch, call, 2)  # as many as there are slots
        lost = [Peer(stack.enter_context(connect(server))) for _ in range(2)]
        for i, peer in enumerate(lost):
            peer.sock.sendall(b"lost %d\n" % i)
        run_until(r, lambda: len(failed) == 2 and all(peer.poll().eof for peer in lost))
        assert [bytes(peer.data) for peer in lost] == [b"", b""]  # closed, no reply
        assert [getattr(e, "errno", e) for e in server.errors] == [errno.EMFILE, errno.EMFILE]  # handle_error saw them
        assert fork.running == 0
        for peer in lost:  # a failed framed connection's close waits for its peer's EOF
            with contextlib.suppress(OSError):  # ENOTCONN: a classic one is closed already
                peer.sock.shutdown(socket.SHUT_WR)
        run_until(r, lambda: len(server.request_table) == 0)
        peer = Peer(stack.enter_context(connect(server)))
        peer.sock.sendall(b"after\n")
        run_until(r, lambda: peer.lines() == 1)
        assert bytes(peer.data) == b"AFTER\n"
        run_until(r, lambda: not fork.children)
    assert server.request_table.totals["failed"] == 2 and fork.running == 0


@pytest.mark.timeout(30)
def test_a_queued_request_that_cannot_start_fails_and_the_next_one_runs(places: Any, monkeypatch: Any, caplog: Any) -> None:
    # A datagram waits in the strategy's own queue (a framed stream message waits on its connection).
    fork = reactor.Fork(1, max_queue=2)
    server = probe_server(places, "udp4", "framed", fork)
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, server)
        stack.callback(touch, server.flag)
        client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        replies: list[bytes] = []

        def replied(n: int) -> bool:
            with contextlib.suppress(BlockingIOError):
                replies.append(client.recv(100))
            return len(replies) == n

        client.sendto(b"hold\n", server.server_address)
        run_until(r, lambda: fork.children)
        client.sendto(b"lost\n", server.server_address)
        run_until(r, lambda: fork.queued == 1)
        failed = failing(monkeypatch, "pipe", 1)
        touch(server.flag)
        run_until(r, lambda: replied(1) and failed and not fork.children)
        assert replies == [b"HELD\n"] and (fork.running, fork.queued, len(server.request_table)) == (0, 0, 0)
        client.sendto(b"after\n", server.server_address)
        run_until(r, lambda: replied(2))
        assert replies[1] == b"AFTER\n"
        run_until(r, lambda: not fork.children)
    assert "could not start" in caplog.text and server.request_table.totals["failed"] == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
def test_a_child_whose_pidfd_cannot_be_opened_is_still_reaped(kind: str, places: Any, monkeypatch: Any) -> None:
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfds here")
    fork = reactor.Fork(2)
    server = probe_server(places, "tcp4", kind, fork)
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, server)
        failed = failing(monkeypatch, "pidfd_open", 1)
        peer = Peer(stack.enter_context(connect(server)))
        peer.sock.sendall(b"x\n")
        run_until(r, lambda: peer.lines() == 1 and not fork.children)  # reaped by the loop, not at close
        assert bytes(peer.data) == b"X\n" and failed and fork.running == 0
    assert server.errors == [] and server.request_table.totals["failed"] == 0


# ------------------------------------------- 6. a request ends when its child exits

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def grandchildren() -> Any:
    """For the test, orphaned grandchildren become our children (``PR_SET_CHILD_SUBREAPER``),
    so that the test can reap them.  Append a pid file's path; at teardown, the pid in it is
    killed and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not sys.platform.startswith("linux") or libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("no PR_SET_CHILD_SUBREAPER here")
    pidfiles: list[str] = []
    try:
        yield pidfiles
    finally:
        for path in pidfiles:
            with contextlib.suppress(OSError):
                with open(path) as f:
                    pid = int(f.read())
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # ours since its parent, the forked child, exited
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def running(pid: int) -> bool:
    """Is ``pid`` alive (not exited, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "name, kind", [("tcp4", "framed"), ("unix", "framed"), ("udp4", "framed"), ("tcp4", "classic")]
)
def test_a_request_ends_when_its_child_exits_not_when_a_grandchild_does(
    name: str, kind: str, places: Any, grandchildren: Any
) -> None:
    fork = reactor.Fork(2)
    server = probe_server(places, name, kind, fork)
    grandchildren.append(server.pidfile)
    stream = FAMILIES[name][2] == socket.SOCK_STREAM
    with reactor.Reactor() as r, contextlib.ExitStack() as stack:
        serve_on(stack, r, server)
        stack.callback(touch, server.flag)  # the grandchild may go
        start = time.monotonic()
        if stream:
            peer = Peer(stack.enter_context(connect(server)))
            peer.sock.sendall(b"spawn\n")
            run_until(r, lambda: peer.lines() == 1)
            reply = bytes(peer.data)
        else:
            client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            client.settimeout(CLIENT_TIMEOUT)
            client.sendto(b"spawn\n", server.server_address)
            client.setblocking(False)
            got: list[bytes] = []

            def replied() -> bool:
                with contextlib.suppress(BlockingIOError):
                    got.append(client.recv(100))
                return bool(got)

            run_until(r, replied)
            reply = got[0]
        grandchild = int(reply)
        # It runs until the test creates the flag (or for 10 s): a reply that waited for it is late.
        assert time.monotonic() - start < 8.0 and running(grandchild), "the reply waited for the grandchild to exit"
        run_until(r, lambda: not fork.children)
        assert fork.running == 0 and len(server.request_table) == (1 if stream and kind == "framed" else 0)
        assert running(grandchild)  # the slot came back while the grandchild still runs
        if stream and kind == "framed":  # the connection goes on
            peer.sock.sendall(b"next\n")
            run_until(r, lambda: peer.lines() == 2)
            assert bytes(peer.data).endswith(b"NEXT\n")
        elif stream:  # the child shut the connection down before it exited
            run_until(r, lambda: peer.poll().eof)
    assert server.errors == [] and server.request_table.totals["failed"] == 0


# ------------------------------------- the connection limit, for forked requests


class EchoOneLine(reactor.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_a_forked_connection_that_ends_frees_its_place_under_max_connections(name: str, places: Any) -> None:
    """With ``max_connections = 1``, accepting pauses while the first child
    runs and resumes when it has exited: the parent ends the request through
    the server's end path, which tells the admission (it stayed FULL for good)."""
    server = places.make_server(name, EchoOneLine, dispatch=reactor.Fork(4))
    server.max_connections = 1
    with reactor.Reactor() as r:
        r.add_server(server)
        try:
            for n in range(3):
                with connect(server) as client:
                    assert exchange(r, client, b"line %d\n" % n) == b"line %d\n" % n
                run_until(r, lambda: not server.dispatch.children and server.request_table.live(Kind.STREAM) == 0)
            assert server.request_table.counters.get("accept_paused", 0) >= 1  # the limit was met each time
        finally:
            r.remove_server(server)
            server.server_close()
