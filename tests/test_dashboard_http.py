"""The dashboard's server side: its HTTP routes, snapshots, event stream, metrics and bounds.

Real sockets on loopback and Unix sockets: a reactor on a thread serving
LineEcho servers and a dashboard, clients of both.  /metrics is read with
the prometheus-client package's own parser (a test-only dependency).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
import time
from typing import Any, Iterator

import pytest
from conftest import CLIENT_TIMEOUT, ReactorThread, connect, wait_for

import reactor
from handlers.echo import LineEcho
from reactor.dashboard import add_dashboard, parse_address
from reactor.dashboard.feed import MAX_TRANSITIONS
from reactor.dashboard.http import MAX_HEAD, BadRequest, parse_head
from reactor.loopstats import LoopStats


@contextlib.contextmanager
def shown(places: Any, dispatch: Any = None, **options: Any) -> Iterator[tuple[Any, list[Any], Any]]:
    """A running reactor with a TCP and a Unix LineEcho server and a dashboard: (reactor, servers, dashboard)."""
    loop = reactor.Reactor()
    servers: list[Any] = []
    dashboard = None
    try:
        servers.append(reactor.TCPServer(("127.0.0.1", 0), LineEcho, dispatch=dispatch() if dispatch else None))
        servers.append(reactor.UnixStreamServer(places.path(), LineEcho, dispatch=dispatch() if dispatch else None))
        for server in servers:
            loop.add_server(server)
        dashboard = add_dashboard(loop, ("127.0.0.1", 0), **options)
        with ReactorThread(loop, close=False):
            yield loop, servers, dashboard
    finally:
        if dashboard is not None:
            dashboard.close()
        for server in servers:
            server.server_close()
        loop.close()


def get(dashboard: Any, path: str, method: str = "GET", conn: Any = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library's client: (status, headers, body)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(*dashboard.server_address[:2], timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        if own:
            conn.close()


def raw(dashboard: Any, data: bytes) -> bytes:
    """Send ``data`` as is and read the answer until the server closes."""
    with socket.create_connection(dashboard.server_address[:2], timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


class Events:
    """A Server-Sent Events reader of ``GET /events`` on a raw socket."""

    def __init__(self, dashboard: Any) -> None:
        self.sock = socket.create_connection(dashboard.server_address[:2], timeout=CLIENT_TIMEOUT)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"Content-Type: text/event-stream" in head

    def _until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the event stream ended"
            self.buffer += chunk
        found, _, self.buffer = self.buffer.partition(end)
        return found

    def next(self) -> tuple[str, Any]:
        """The next event (name, data); comments are skipped."""
        while True:
            block = self._until(b"\n\n").decode()
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if fields:
                return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.sock.close()


def echo(sock: socket.socket, line: bytes) -> None:
    sock.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "the echo server closed"
        got += chunk
    assert got == line


# ----------------------------------------------------------------- routes


@pytest.mark.timeout(20)
def test_every_route_answers(places: Any) -> None:
    with shown(places) as (loop, servers, dashboard):
        assert dashboard.url == f"http://127.0.0.1:{dashboard.server_address[1]}/"
        status, headers, body = get(dashboard, "/")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8" and b"<" in body
        assert not re.search(rb"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", body)  # self-contained
        status, headers, body = get(dashboard, "/table.json")
        assert status == 200 and headers["content-type"] == "application/json"
        assert {"time", "loop", "servers"} <= set(json.loads(body))
        status, headers, body = get(dashboard, "/states.json")
        machines = json.loads(body)
        assert status == 200 and set(machines) == {kind.value for kind in reactor.Kind}
        assert machines["connection"]["initial"] == "ACCEPTED" and "CLOSED" in machines["connection"]["final"]
        assert ["READING", "message", "READY"] in machines["connection"]["transitions"]
        status, headers, body = get(dashboard, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        status, headers, body = get(dashboard, "/", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        # Keep-alive: three requests on one connection.
        conn = http.client.HTTPConnection(*dashboard.server_address[:2], timeout=CLIENT_TIMEOUT)
        try:
            for path in ("/table.json", "/metrics", "/states.json"):
                assert get(dashboard, path, conn=conn)[0] == 200
            assert dashboard.server.request_table.totals["opened"] == 5 + 1  # one connection for the three
        finally:
            conn.close()


@pytest.mark.timeout(20)
def test_bad_requests_get_clear_answers(places: Any) -> None:
    with shown(places) as (loop, servers, dashboard):
        assert get(dashboard, "/nowhere")[0] == 404
        status, headers, _ = get(dashboard, "/", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        assert raw(dashboard, b"BREW /pot\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw(dashboard, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # no Host
        assert raw(dashboard, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw(dashboard, b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw(dashboard, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").startswith(b"HTTP/1.1 400 ")
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n"
        assert raw(dashboard, huge).startswith(b"HTTP/1.1 431 ")
        counters = dashboard.server.request_table.counters
        assert counters["too_long"] == 1 and counters["http_400"] == 5 and counters["http_404"] == 1
        # The servers shown never noticed.
        assert all(server.request_table.counters == {} for server in servers)


def test_parse_head() -> None:
    request = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert (request.method, request.path, request.keep_alive, request.has_body) == ("GET", "/metrics", False, False)
    assert parse_head(b"GET / HTTP/1.0\n\n").keep_alive is False
    for bad in (b"\r\n\r\n", b"GET /\r\n\r\n", b"GET x HTTP/1.1\r\nHost: h\r\n\r\n", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n"):
        with pytest.raises(BadRequest):
            parse_head(bad)


@pytest.mark.timeout(30)
def test_hundreds_of_clients_are_answered_and_the_servers_shown_go_on(places: Any) -> None:
    with shown(places) as (loop, servers, dashboard):
        clients = []
        try:
            for _ in range(200):  # more than the dashboard's max_connections (128): the rest wait their turn
                sock = socket.create_connection(dashboard.server_address[:2], timeout=CLIENT_TIMEOUT)
                clients.append(sock)
                sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            with connect(servers[0]) as echoing:
                echo(echoing, b"still serving\n")
            for sock in clients:
                assert sock.recv(65536).startswith(b"HTTP/1.1 404 ")
                sock.close()  # the server's lingering close ends, and its slot frees for the next one
        finally:
            for sock in clients:
                sock.close()
        assert dashboard.server.request_table.counters["http_404"] == 200
        assert servers[0].request_table.counters == {}


# -------------------------------------------------------------- snapshots


@pytest.mark.timeout(20)
@pytest.mark.parametrize("dispatch", [None, lambda: reactor.ThreadPool(2)], ids=["inline", "threads"])
def test_snapshot_shows_every_server_and_its_records(places: Any, dispatch: Any) -> None:
    with shown(places, dispatch) as (loop, servers, dashboard):
        clients = [connect(server) for server in servers for _ in range(2)]
        try:
            for sock in clients:
                echo(sock, b"hello\n")
                sock.sendall(b"half a li")  # a record left READING
            wait_for(lambda: all(s.request_table.counts() == {"READING": 2} for s in servers), what="READING records")
            snapshot = json.loads(get(dashboard, "/table.json")[2])
        finally:
            for sock in clients:
                sock.close()
    by_name = {server["name"]: server for server in snapshot["servers"]}
    assert len(by_name) == 3
    strategy = "inline" if dispatch is None else "threads:2"
    for server, family in zip(servers, ("tcp4", "unix")):
        shown_server = by_name[server.request_table.name]
        assert shown_server["kind"] == "connection" and shown_server["family"] == family
        assert shown_server["handler"] == "LineEcho" and shown_server["strategy"] == strategy
        assert shown_server["tls"] is False and shown_server["proxy"] is False and shown_server["dashboard"] is False
        assert shown_server["states"] == {"READING": 2} and shown_server["totals"]["opened"] == 2
        assert [r["state"] for r in shown_server["records"]] == ["READING", "READING"]
        record = shown_server["records"][0]
        assert record["bytes_in"] == len(b"hello\nhalf a li") and record["bytes_out"] == len(b"hello\n")
        assert record["age"] >= record["since"] >= 0
    assert by_name[servers[0].request_table.name]["records"][0]["peer"].startswith("127.0.0.1:")
    own = by_name[dashboard.server.request_table.name]
    assert own["dashboard"] is True and own["states"] == {"PROCESSING": 1}  # this very request
    assert set(snapshot["loop"]) == {"wakeups_per_s", "why_per_s", "busy_share", "wait_share", "ready_per_wakeup",
                                     "totals"}  # fmt: skip
    assert set(snapshot["loop"]["totals"]) == {"wakeups", "why", "ready", "busy", "waiting"}
    for server in servers:  # one message each from two clients: two handler runs, timed
        shown_server = by_name[server.request_table.name]
        assert shown_server["handlers"]["runs"] == 2 and shown_server["handlers"]["seconds"] > 0
        assert shown_server["bytes_in"] == 2 * len(b"hello\nhalf a li") and shown_server["bytes_out"] == 2 * len(b"hello\n")
    assert snapshot["loop"]["wakeups_per_s"] > 0 and 0 <= snapshot["loop"]["busy_share"] <= 1


# ----------------------------------------------------------------- events


@pytest.mark.timeout(20)
def test_events_carry_a_snapshot_then_batched_transitions(places: Any) -> None:
    with shown(places) as (loop, servers, dashboard):
        table = servers[0].request_table
        assert not table.watched()  # nobody watches: no observer, the quiet paths
        events = Events(dashboard)
        try:
            name, snapshot = events.next()
            assert name == "snapshot" and len(snapshot["servers"]) == 3
            wait_for(table.watched, what="the feed to observe the table")
            with connect(servers[0]) as sock:
                echo(sock, b"one\n")
                echo(sock, b"two\n")
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while not any(t["new"] == "CLOSED" for t in seen) and time.monotonic() < deadline:
                name, update = events.next()
                assert name == "update" and {"time", "loop", "servers", "transitions"} <= set(update)
                seen += [t for t in update["transitions"] if t["server"] == table.name]
            moves = [(t["old"], t["event"], t["new"]) for t in seen]
            assert (None, None, "ACCEPTED") in moves and ("READING", "message", "READY") in moves
            assert ("READY", "dispatch", "PROCESSING") in moves and moves[-1][2] == "CLOSED"
            assert sum(1 for m in moves if m[1] == "message") == 2
            assert [t["reason"] for t in seen if t["event"] == "message"] == ["4 B", "4 B"]
        finally:
            events.close()
        # The reader went away: the feed drops its stream and stops observing.
        wait_for(lambda: not table.watched() and not dashboard.feed.streams, what="the feed to stop watching")


@pytest.mark.timeout(20)
def test_a_busy_server_is_watched_for_at_most_a_batch_per_update(places: Any) -> None:
    with shown(places, interval=0.5) as (loop, servers, dashboard):
        table = servers[0].request_table
        events = Events(dashboard)
        try:
            assert events.next()[0] == "snapshot"
            with connect(servers[0]) as sock:
                for _ in range(400):  # three moves each: more than one batch
                    echo(sock, b"x\n")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                name, update = events.next()
                if update.get("truncated"):
                    break
            assert update.get("truncated") is True, "no update said it was cut short"
            assert len(update["transitions"]) == MAX_TRANSITIONS and update["dropped"] >= 1
            wait_for(table.watched, what="the observers to come back after the update")
        finally:
            events.close()


@pytest.mark.timeout(20)
def test_at_most_max_streams_then_503(places: Any) -> None:
    with shown(places, max_streams=2) as (loop, servers, dashboard):
        readers = [Events(dashboard), Events(dashboard)]
        try:
            answer = raw(dashboard, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in answer
        finally:
            for reader in readers:
                reader.close()


@pytest.mark.timeout(30)
def test_a_stalled_event_reader_is_dropped_and_the_servers_shown_go_on(places: Any) -> None:
    with shown(places, interval=0.02) as (loop, servers, dashboard):
        dashboard.server.output_low_water = 8192
        dashboard.server.output_high_water = 32768
        idle = [connect(servers[0]) for _ in range(100)]  # records: big updates
        stalled = socket.socket()
        try:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.settimeout(CLIENT_TIMEOUT)
            stalled.connect(dashboard.server_address[:2])
            stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
            wait_for(lambda: dashboard.feed.streams, what="the stream to open")
            counters = dashboard.server.request_table.counters
            with connect(servers[0]) as sock:
                deadline = time.monotonic() + 20
                for n in range(100_000):  # each exchange makes transitions, hence an update
                    echo(sock, b"ping %d\n" % n)
                    if counters.get("slow_event_readers") or time.monotonic() > deadline:
                        break
                assert counters.get("slow_event_readers") == 1, "the stalled reader was not dropped"
                echo(sock, b"still serving\n")
            wait_for(lambda: not dashboard.feed.streams, what="the stream to be forgotten")
        finally:
            stalled.close()
            for client in idle:
                client.close()
        assert servers[0].request_table.counters == {}


# ---------------------------------------------------------------- metrics


@pytest.mark.timeout(20)
def test_metrics_parse_with_the_prometheus_parser(places: Any) -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client (a dev extra) is not installed")
    with shown(places) as (loop, servers, dashboard):
        servers[0].max_message_size = 8
        with connect(servers[0]) as sock:
            echo(sock, b"hi\n")
        with connect(servers[0]) as sock:
            sock.sendall(b"far too long a line\n")
            assert sock.recv(100) == b""  # closed: too_long
        waiting = connect(servers[1])
        try:
            waiting.sendall(b"part")
            wait_for(lambda: servers[1].request_table.counts() == {"READING": 1} and len(servers[0].request_table) == 0)
            text = get(dashboard, "/metrics")[2].decode()
        finally:
            waiting.close()
    families = {family.name: family for family in parser.text_string_to_metric_families(text)}
    tcp, unix = servers[0].request_table.name, servers[1].request_table.name

    def value(family: str, sample: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
        assert len(found) == 1, (family, labels, families[family].samples)
        return found[0]

    assert families["reactor_requests"].type == "counter"
    assert value("reactor_requests", "reactor_requests_total", server=tcp, outcome="finished") == 2
    assert value("reactor_requests_opened", "reactor_requests_opened_total", server=tcp) == 2
    assert value("reactor_received_bytes", "reactor_received_bytes_total", server=tcp) == len(b"hi\nfar too long a line\n")
    assert value("reactor_sent_bytes", "reactor_sent_bytes_total", server=tcp) == len(b"hi\n")
    assert value("reactor_received_bytes", "reactor_received_bytes_total", server=unix) == 4  # a live record's
    assert families["reactor_records"].type == "gauge"
    assert value("reactor_records", "reactor_records", server=unix, state="READING") == 1
    assert value("reactor_records", "reactor_records", server=tcp, state="READING") == 0
    assert value("reactor_table_counter", "reactor_table_counter_total", server=tcp, counter="too_long") == 1
    assert value("reactor_server_info", "reactor_server_info", server=tcp, kind="connection", handler="LineEcho",
                 strategy="inline", dashboard="false") == 1  # fmt: skip
    assert value("reactor_handler_runs", "reactor_handler_runs_total", server=tcp) == 1  # "hi": the other was too long
    assert value("reactor_handler_runs", "reactor_handler_runs_total", server=unix) == 0  # a part of a line: no run yet
    assert value("reactor_handler_seconds", "reactor_handler_seconds_total", server=tcp) > 0
    wakeups = {s.labels["reason"]: s.value for s in families["reactor_loop_wakeups"].samples}
    assert set(wakeups) == {"ready", "wakeup", "timers", "timeout"} and wakeups["ready"] > 0
    assert value("reactor_loop_busy_seconds", "reactor_loop_busy_seconds_total") > 0
    assert value("reactor_loop_wait_seconds", "reactor_loop_wait_seconds_total") > 0
    assert value("reactor_loop_ready_descriptors", "reactor_loop_ready_descriptors_total") >= wakeups["ready"]


# ------------------------------------------------------ the loop's statistics


@pytest.mark.timeout(10)
def test_loop_stats_cost_nothing_unless_attached_and_say_why_the_loop_woke() -> None:
    with reactor.Reactor() as loop:
        assert loop._stats is None
        stats = LoopStats.attach(loop)
        assert LoopStats.attach(loop) is stats  # shared
        loop.run_once(0)
        assert stats.why["timeout"] == 1
        loop.call_soon(lambda: None)
        loop.run_once()
        assert stats.why["timers"] == 1
        thread = threading.Thread(target=loop.wakeup)
        thread.start()
        thread.join()
        loop.run_once()
        assert stats.why["wakeup"] == 1
        left, right = socket.socketpair()
        with left, right:
            loop.add_reader(left, left.recv, 1)
            right.send(b"x")
            loop.run_once()
            loop.remove_reader(left)
        assert stats.why["ready"] == 1 and stats.ready == 2 and stats.wakeups == 4  # the wakeup pair was ready too
        assert stats.busy >= 0 and stats.waiting >= 0
        rates = stats.rates()
        assert rates["wakeups_per_s"] > 0 and sum(rates["why_per_s"].values()) == pytest.approx(rates["wakeups_per_s"])
        stats.detach()
        assert loop._stats is stats
        stats.detach()
        assert loop._stats is None


def test_remote_addresses_are_refused_unless_asked_for() -> None:
    with reactor.Reactor() as loop:
        with pytest.raises(reactor.UsageError, match="not loopback"):
            add_dashboard(loop, ("0.0.0.0", 0))
        assert loop.servers == () and loop._stats is None
    assert parse_address("[::1]:8090") == ("::1", 8090) and parse_address("localhost:0") == ("localhost", 0)
    for bad in ("8090", "::1:8090", "host:port", "127.0.0.1:70000"):
        with pytest.raises(reactor.UsageError, match="expected HOST:PORT"):
            parse_address(bad)
    with pytest.raises(reactor.UsageError, match="--dashboard-remote"):
        parse_address("192.0.2.1:8090")
    assert parse_address("192.0.2.1:8090", allow_remote=True) == ("192.0.2.1", 8090)
