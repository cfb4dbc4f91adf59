"""Dispatch strategies passed as ``dispatch=``: Inline, ThreadPool and Fork.

The family x strategy x handler matrix; full pools and max_children never
block the loop; a child killed mid-request; fork refused while worker
threads live; graceful shutdown (block_on_close, drain_timeout); the
mix-ins' bounded spellings; validation.  Children cannot report through
memory: they answer through the socket, or wait for a file to appear.
(The stdlib mix-ins themselves are tested in test_dispatch.py.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, FOUR_FAMILIES, ReactorThread, ServingThread, client_exchange, connect, wait_for
from conftest import read_all

import handlers
import reactor
from handlers.echo import DatagramEcho, StreamLineEcho
from reactor import Fork, Inline, Kind, ThreadPool
from reactor.dispatch import live_worker_threads

STRATEGIES: dict[str, Callable[[], Any]] = {"inline": Inline, "pool": lambda: ThreadPool(4), "fork": lambda: Fork(4)}

# ------------------------------------------------------------------ helpers


def touch(path: str) -> None:
    open(path, "w").close()


def handler(kind: str, respond: Callable[[bytes, Any], bytes]) -> type:
    """A classic (StreamRequestHandler) or framed (MessageHandler) handler that
    reads one line and writes ``respond(line, server)``."""
    base = handlers.StreamRequestHandler if kind == "classic" else reactor.MessageHandler

    class Handler(base):  # type: ignore[misc,valid-type]
        def handle(self) -> None:
            self.wfile.write(respond(self.rfile.readline(), self.server))

    return Handler


def upper_or_pid(line: bytes, server: Any) -> bytes:
    return b"%d\n" % os.getpid() if line == b"pid\n" else line.upper()


Upper = handler("framed", upper_or_pid)


def after_flag(line: bytes, server: Any) -> bytes:
    """For children: wait (bounded polling) for the server's ``flag`` file; reply with the line and the pid."""
    deadline = time.monotonic() + 10.0
    while not os.path.exists(server.flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return b"%s %d\n" % (line.strip().upper(), os.getpid())


def make(places: Any, name: str, handler: type, dispatch: Any = None, base: type | None = None, **attrs: Any) -> Any:
    """A server of family ``name`` (class ``base``, with ``attrs``) whose handle_error
    records the exception in ``server.errors`` (in this process only)."""

    def handle_error(self: Any, request: Any, client_address: Any) -> None:
        self.errors.append(sys.exc_info()[1])

    cls = type("Recording", (base or FAMILIES[name][0],), {"handle_error": handle_error, **attrs})
    server = places.make_server(name, handler, cls=cls, dispatch=dispatch)
    server.errors = []
    return server


def proc_children() -> set[int]:
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as f:
            found.update(int(pid) for pid in f.read().split())
    return found


@pytest.fixture
def child_pids() -> Any:
    """``child_pids(server)``: the live list of pids of the Kind.CHILD records ``server``
    opens (a child record's peer is its pid).  At teardown, any of them still our
    child (only after a failure) is SIGKILLed and reaped, before no_leaks looks."""
    seen: list[list[int]] = []

    def watch(server: Any) -> list[int]:
        pids: list[int] = []
        seen.append(pids)
        server.request_table.add_observer(
            lambda record, old, *_: pids.append(record.peer) if old is None and record.kind is Kind.CHILD else None
        )
        return pids

    yield watch
    for pid in {pid for pids in seen for pid in pids} & proc_children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def assert_reaped(pids: list[int]) -> None:
    """No zombie: none of ``pids`` is our child any more, and they were reaped (by us)."""
    assert pids and os.getpid() not in pids
    assert not set(pids) & proc_children(), f"still children of ours: {set(pids) & proc_children()}"
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def close_within(server: Any, seconds: float, rescue: Callable[[], None] | None = None) -> float:
    """``server_close()`` on a thread; its duration.  A hang fails this test (after ``rescue()``), not the run.
    (An exception there reaches pytest's thread-exception warning, an error here.)"""
    thread = threading.Thread(target=server.server_close, name="server_close", daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - start
    if thread.is_alive():
        if rescue is not None:
            rescue()
        thread.join(CLIENT_TIMEOUT)
        pytest.fail(f"server_close() had not returned after {seconds}s (rescued: {not thread.is_alive()})")
    return elapsed


def unstick_fork(fork: Fork) -> None:
    """Rescue for a Fork.close() spinning on reaped children whose output pipes nobody reads."""
    for info in list(fork.children.values()):
        fd, info["pipe"] = info.get("pipe"), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    fork.children.clear()


def cut_short(server: Any, payload: bytes) -> bytes:
    """Send ``payload`` on a new connection whose request is expected to fail; what came back."""
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # the server may have closed (and reset) already
            sock.sendall(payload)
        try:
            return read_all(sock)
        except ConnectionResetError:
            return b""


def read_lines(sock: socket.socket, n: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < n and (chunk := sock.recv(65536)):
        buf += chunk
    return buf.splitlines()[:n]


class Gate:
    """Counts the handlers running at once; each waits for ``release`` before replying."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.peak = self.timed_out = 0
        self.release = threading.Event()
        self.handler = handler("classic", self.respond)

    def respond(self, line: bytes, server: Any) -> bytes:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        if not self.release.wait(CLIENT_TIMEOUT * 2):
            self.timed_out += 1
        with self.lock:
            self.active -= 1
        return line.upper()


def shared_reactor(stack: contextlib.ExitStack, *servers: Any) -> None:
    """Serve ``servers`` on one Reactor running on a thread; all closed when ``stack`` ends."""
    for server in reversed(servers):
        stack.callback(server.server_close)
    r = reactor.Reactor()
    for server in servers:
        r.add_server(server)
    stack.enter_context(ReactorThread(r))


def send_lines(stack: contextlib.ExitStack, server: Any, lines: list[bytes]) -> list[socket.socket]:
    """One connection per line, each sending its line at once."""
    socks = []
    for line in lines:
        socks.append(stack.enter_context(connect(server)))
        socks[-1].sendall(line)
    return socks


# ============================================================ 1. the matrix

MATRIX = [(name, strategy, kind) for name in FOUR_FAMILIES for strategy in STRATEGIES for kind in ("classic", "framed")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name, strategy, kind", MATRIX)
def test_every_family_strategy_and_handler(name: str, strategy: str, kind: str, places: Any, child_pids: Any) -> None:
    classic = StreamLineEcho if FAMILIES[name][2] == socket.SOCK_STREAM else DatagramEcho
    dispatch = STRATEGIES[strategy]()
    server = make(places, name, classic if kind == "classic" else Upper, dispatch)
    assert server.dispatch is dispatch
    opened: list[Kind] = []
    server.request_table.add_observer(lambda record, old, *_: opened.append(record.kind) if old is None else None)
    pids = child_pids(server)
    exchanges = []
    with ServingThread(server):
        for i in range(3):
            payload = b"exchange %d over %s via %s\n" % (i, name.encode(), strategy.encode())
            exchanges.append((payload, client_exchange(name, server.server_address, payload, places)))
        if kind == "framed":
            handler_pid = int(client_exchange(name, server.server_address, b"pid\n", places))
    for payload, reply in exchanges:
        assert reply == (payload if kind == "classic" else payload.upper())
    table = server.request_table
    assert len(table) == 0, table.describe()
    assert table.totals["failed"] == 0 and server.errors == []
    n = 3 + (kind == "framed")
    if strategy == "fork":
        assert opened.count(Kind.CHILD) == n and len(set(pids)) == n
        assert table.totals["opened"] == 2 * n  # each request's record and its child's
        assert_reaped(pids)
        if kind == "framed":
            assert handler_pid in pids and handler_pid != os.getpid()
    else:
        assert Kind.CHILD not in opened and table.totals["opened"] == n
        if kind == "framed":
            assert handler_pid == os.getpid()
    if strategy != "inline":
        stats = dispatch.statistics()
        assert (stats["running"], stats["queued"], stats["completed"]) == (0, 0, n)


# ============================================ 2. a full pool waits, the loop does not


@pytest.mark.timeout(60)
def test_thread_pool_bounds_concurrency_and_never_blocks_the_loop(places: Any) -> None:
    gate, clients = Gate(), 50
    pool = make(places, "tcp4", gate.handler, ThreadPool(4))  # max_queue: 16
    other = make(places, "tcp4", Upper)
    table = pool.request_table
    with contextlib.ExitStack() as stack:
        shared_reactor(stack, pool, other)
        stack.callback(gate.release.set)
        socks = send_lines(stack, pool, [b"client %d\n" % i for i in range(clients)])
        wait_for(
            lambda: gate.active == 4 and table.counts().get("READY") == 16 and table.counters.get("dispatch_full"),
            what="4 handlers running, 16 requests READY, accepting paused",
        )
        stats = pool.dispatch.statistics()
        assert (stats["running"], stats["queued"]) == (4, 16)
        start = time.monotonic()
        assert client_exchange("tcp4", other.server_address, b"meanwhile\n") == b"MEANWHILE\n"
        assert time.monotonic() - start < 2.0
        assert gate.active == 4 and table.counts().get("READY") == 16  # they still wait
        gate.release.set()
        assert [read_all(sock) for sock in socks] == [b"CLIENT %d\n" % i for i in range(clients)]
        wait_for(lambda: len(table) == 0, what="every request finished")
    assert gate.peak == 4 and gate.timed_out == 0
    assert table.totals["opened"] == clients and table.totals["failed"] == 0
    assert pool.errors == [] and other.errors == []
    assert pool.dispatch.statistics()["completed"] == clients


# ==================================== 3. Fork at max_children: READY, not blocked


@pytest.mark.timeout(60)
def test_fork_at_max_children_waits_ready_and_the_loop_goes_on(places: Any, child_pids: Any) -> None:
    fork = Fork(2)
    forked = make(places, "tcp4", handler("framed", after_flag), fork)
    forked.flag = os.path.join(places.dir, "release")
    inline = make(places, "tcp4", Upper)
    pids = child_pids(forked)
    table = forked.request_table
    with contextlib.ExitStack() as stack:
        shared_reactor(stack, forked, inline)
        stack.callback(touch, forked.flag)
        socks = send_lines(stack, forked, [b"c%d m0\nc%d m1\n" % (i, i) for i in (0, 1)])
        wait_for(lambda: len(pids) == 2, what="two children forked")
        socks += send_lines(stack, forked, [b"c2 m0\nc2 m1\n"])
        wait_for(lambda: table.counts().get("READY") == 1, what="the third connection's message READY")
        start = time.monotonic()
        assert client_exchange("tcp4", inline.server_address, b"prompt\n") == b"PROMPT\n"
        assert time.monotonic() - start < 2.0
        assert table.counts() == {"PROCESSING": 4, "READY": 1}  # 2 connections + their 2 children
        stats = fork.statistics()
        assert (stats["running"], len(stats["children"]), len(pids)) == (2, 2, 2)
        touch(forked.flag)
        got = {}
        for i, sock in enumerate(socks):
            got[i] = read_lines(sock, 2)
            sock.shutdown(socket.SHUT_WR)
            assert read_all(sock) == b""
        wait_for(lambda: len(table) == 0 and not fork.children, what="every child reaped by the loop")
    reply_pids = []
    for i, lines in got.items():
        assert [line.rsplit(b" ", 1)[0] for line in lines] == [b"C%d M0" % i, b"C%d M1" % i]
        reply_pids += [int(line.rsplit(b" ", 1)[1]) for line in lines]
    assert sorted(reply_pids) == sorted(pids) and len(set(pids)) == 6
    assert_reaped(pids)
    assert table.totals["failed"] == 0 and forked.errors == [] and inline.errors == []


# ====================================================== 4. a child killed mid-request


def die_or_echo(line: bytes, server: Any) -> bytes:
    if line == b"die\n":
        os.kill(os.getpid(), signal.SIGKILL)
    return line.upper()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
def test_a_child_killed_by_a_signal_fails_its_request(kind: str, places: Any, child_pids: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")
    server = make(places, "tcp4", handler(kind, die_or_echo), Fork(2))
    pids = child_pids(server)
    table = server.request_table
    with ServingThread(server):
        assert cut_short(server, b"die\n") == b""  # closed (EOF or reset), no reply
        wait_for(lambda: table.counters.get("children_killed") == 1, what="the killed child counted")
        assert client_exchange("tcp4", server.server_address, b"next\n") == b"NEXT\n"
    killed = [r.getMessage() for r in caplog.records if r.name == "reactor" and r.levelno >= logging.ERROR]
    assert len(killed) == 1 and "killed by signal 9" in killed[0] and str(pids[0]) in killed[0]
    assert table.counters["children_killed"] == 1 and server.dispatch.killed == 1
    assert table.totals["failed"] == 2 and len(table) == 0  # the child's record and its request's
    assert_reaped(pids)


# ======================================== 5. no fork while pool threads are alive


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
def test_fork_is_refused_while_pool_threads_are_alive(kind: str, places: Any, child_pids: Any) -> None:
    wait_for(lambda: live_worker_threads() == 0, what="no worker threads left from earlier tests")
    forked = make(places, "tcp4", handler(kind, upper_or_pid), Fork(2))
    pool = make(places, "tcp4", StreamLineEcho, ThreadPool(2))
    pids = child_pids(forked)
    with ServingThread(forked):
        with ServingThread(pool):
            assert client_exchange("tcp4", pool.server_address, b"pool\n") == b"pool\n"
            assert live_worker_threads() >= 1  # the worker stays, idle, until close
            assert cut_short(forked, b"refused\n") == b""
            wait_for(lambda: forked.errors, what="handle_error called")
            assert pids == []
        assert live_worker_threads() == 0  # server_close joined the pool's workers
        assert client_exchange("tcp4", forked.server_address, b"forked\n") == b"FORKED\n"
    (error,) = forked.errors
    assert isinstance(error, reactor.UsageError) and "thread" in str(error)
    assert len(pids) == 1
    assert_reaped(pids)
    assert forked.request_table.totals["failed"] == 1 and len(forked.request_table) == 0
    assert pool.errors == []


# ========================================================= 6. graceful shutdown


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy, kind", [("pool", "classic"), ("fork", "classic"), ("fork", "framed")])
def test_server_close_waits_for_running_requests(strategy: str, kind: str, places: Any, child_pids: Any) -> None:
    finished: list[bytes] = []  # in a child, the child's own copy

    def slow(line: bytes, server: Any) -> bytes:
        time.sleep(0.5)  # the request's work, not an ordering device
        finished.append(line)
        return line.upper()

    dispatch = ThreadPool(2) if strategy == "pool" else Fork(2)
    server = make(places, "tcp4", handler(kind, slow), dispatch)
    pids = child_pids(server)
    with connect(server) as sock:
        with ServingThread(server, close=False):
            sock.sendall(b"slow\n")
            wait_for(lambda: dispatch.running == 1 and (strategy == "pool" or pids), what="the request running")
        # The loop is gone, the request still runs: block_on_close waits for it.
        close_within(server, 5.0, (lambda: unstick_fork(dispatch)) if strategy == "fork" else None)
        if strategy == "pool":
            assert finished == [b"slow\n"]
        else:
            assert not dispatch.children
            assert_reaped(pids)
        if kind == "classic":
            assert read_all(sock) == b"SLOW\n"  # the worker or child owned the socket: full reply
    assert len(server.request_table) == 0, server.request_table.describe()
    assert dispatch.statistics()["running"] == 0


@pytest.mark.timeout(30)
def test_pool_drain_timeout_shuts_a_stuck_connection_down(places: Any) -> None:
    workers: list[threading.Thread] = []

    class Echo(StreamLineEcho):
        def setup(self) -> None:
            workers.append(threading.current_thread())
            super().setup()

    server = make(places, "tcp4", Echo, ThreadPool(2), drain_timeout=0.2)
    with connect(server) as silent:  # connects, never sends: the handler blocks in readline()
        with ServingThread(server, close=False):
            wait_for(lambda: workers, what="the handler started")
        assert close_within(server, 5.0) < 1.5
        assert [t for t in workers if t.is_alive()] == [], "a worker is still blocked after server_close()"
        assert read_all(silent) == b""  # the connection was shut down under the worker
    assert live_worker_threads() == 0


def sleep_long(line: bytes, server: Any) -> bytes:
    time.sleep(30)  # a child that will not finish in time
    return line


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["classic", "framed"])
def test_fork_drain_timeout_terminates_and_reaps_children(kind: str, places: Any, child_pids: Any) -> None:
    fork = Fork(2)
    server = make(places, "tcp4", handler(kind, sleep_long), fork, drain_timeout=0.2)
    pids = child_pids(server)
    with connect(server) as sock:
        with ServingThread(server, close=False):
            sock.sendall(b"sleep\n")
            wait_for(lambda: pids, what="the child forked")
        assert close_within(server, 5.0, lambda: unstick_fork(fork)) < 3.0
        assert not fork.children, fork.statistics()
        assert_reaped(pids)
        with contextlib.suppress(ConnectionResetError):
            assert read_all(sock) == b""  # no reply: the request was cut short
    assert len(server.request_table) == 0, server.request_table.describe()


# ============================================ 7. the mix-ins' bounded spellings


@pytest.mark.timeout(30)
def test_threading_mixin_with_max_workers_is_a_bounded_pool(places: Any) -> None:
    gate, clients = Gate(), 6
    server = make(places, "tcp4", gate.handler, base=reactor.ThreadingTCPServer, max_workers=3)
    assert isinstance(server.dispatch, ThreadPool) and server.dispatch.max_workers == 3
    table = server.request_table
    with contextlib.ExitStack() as stack:
        stack.enter_context(ServingThread(server))
        stack.callback(gate.release.set)
        socks = send_lines(stack, server, [b"client %d\n" % i for i in range(clients)])
        wait_for(lambda: gate.active == 3 and table.counts().get("READY") == 3, what="3 running, 3 READY")
        stats = server.dispatch.statistics()
        assert [stats[k] for k in ("strategy", "limit", "running", "queued", "completed")] == ["thread", 3, 3, 3, 0]
        gate.release.set()
        assert [read_all(sock) for sock in socks] == [b"CLIENT %d\n" % i for i in range(clients)]
    stats = server.dispatch.statistics()
    assert [stats[k] for k in ("running", "queued", "completed", "rejected")] == [0, 0, clients, 0]
    assert gate.peak == 3 and gate.timed_out == 0
    assert server.errors == [] and table.totals["failed"] == 0 and len(table) == 0
    assert live_worker_threads() == 0


@pytest.mark.timeout(60)
def test_forking_mixin_max_children_never_blocks_the_loop(places: Any, child_pids: Any) -> None:
    forked = make(places, "tcp4", handler("classic", after_flag), base=reactor.ForkingTCPServer, max_children=2)
    forked.flag = os.path.join(places.dir, "release")
    assert isinstance(forked.dispatch, Fork) and forked.dispatch.max_children == 2
    inline = make(places, "tcp4", Upper)
    pids = child_pids(forked)
    table = forked.request_table
    with contextlib.ExitStack() as stack:
        shared_reactor(stack, forked, inline)
        stack.callback(touch, forked.flag)
        socks = send_lines(stack, forked, [b"client %d\n" % i for i in range(3)])
        wait_for(
            lambda: len(forked.active_children or ()) == 2 and table.counts().get("READY") == 1,
            what="2 children busy, the third request READY",
        )
        start = time.monotonic()
        assert client_exchange("tcp4", inline.server_address, b"meanwhile\n") == b"MEANWHILE\n"
        assert time.monotonic() - start < 2.0
        assert len(forked.active_children) == 2
        touch(forked.flag)
        replies = [read_all(sock).rsplit(b" ", 1)[0] for sock in socks]
        assert replies == [b"CLIENT %d" % i for i in range(3)]
        wait_for(lambda: not forked.active_children and len(table) == 0, what="children reaped")
    assert len(pids) == 3
    assert_reaped(pids)
    assert forked.errors == [] and table.totals["failed"] == 0


# ================================================================ 8. validation


@pytest.mark.timeout(10)
def test_dispatch_must_be_a_strategy_and_repr_shows_parameters() -> None:
    with pytest.raises(reactor.UsageError, match="dispatch"):
        reactor.TCPServer(("127.0.0.1", 0), StreamLineEcho, dispatch="thread")  # type: ignore[arg-type]
    assert repr(Inline()) == "Inline()"
    assert repr(ThreadPool(4)) == "ThreadPool(4, max_queue=16)"
    assert repr(ThreadPool(3, max_queue=0)) == "ThreadPool(3, max_queue=0)"
    assert repr(Fork(2)) == "Fork(2, max_queue=2)"
    assert Inline().statistics() == {"strategy": "inline"}
    stats = Fork(5, max_queue=1).statistics()
    assert [stats[k] for k in ("strategy", "limit", "running", "queued", "completed")] == ["fork", 5, 0, 0, 0]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "build",
    [lambda: ThreadPool(0), lambda: Fork(0), lambda: ThreadPool(2, max_queue=-1), lambda: Fork(2, max_queue=-1)],
    ids=["pool-0", "fork-0", "pool-negative-queue", "fork-negative-queue"],
)
def test_bounded_strategies_refuse_empty_bounds(build: Callable[[], Any]) -> None:
    with pytest.raises(reactor.UsageError):
        build()


@pytest.mark.timeout(20)
def test_threading_mixin_server_close_waits_at_most_drain_timeout():
    started = threading.Event()

    class Silent(handlers.BaseRequestHandler):
        def handle(self) -> None:
            started.set()
            self.request.recv(1)  # blocks until the client closes

    class Server(reactor.ThreadingTCPServer):
        drain_timeout = 0.5

    server = Server(("127.0.0.1", 0), Silent)
    with connect(server) as client:
        with ServingThread(server, close=False):
            assert started.wait(CLIENT_TIMEOUT)
        begun = time.monotonic()
        server.server_close()
        waited = time.monotonic() - begun
    # the client is closed now: the handler's recv returns and its thread ends
    wait_for(lambda: not any(t.name.startswith("reactor request") for t in threading.enumerate()))
    assert 0.4 <= waited < 5.0, waited
