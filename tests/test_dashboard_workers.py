"""A dashboard of worker processes: ``serve --workers N --dashboard HOST:PORT`` and ``Workers(dashboard=...)``.

Real processes: the supervisor is a subprocess serving the dashboard,
its workers report to it on socketpairs, clients talk to the workers
over TCP and a Unix socket; /metrics is read with prometheus-client's
own parser.  Then the parts alone: ``WorkersSource`` merging two reports
sent on real socketpairs, and the ``Reporter`` dropping a report when its
socket is full, and cutting one that is too large.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.error
import urllib.request
from typing import Any

import pytest
from cli_support import EXIT_TIMEOUT, ROOT, Command, children
from conftest import CLIENT_TIMEOUT, wait_for
from test_dashboard_http import Events
from test_workers import gone

import reactor
from reactor.dashboard import report as report_module
from reactor.dashboard.report import QUIET, WATCH, Reporter, report_pair
from reactor.dashboard.source import MAX_RECORDS, MAX_TRANSITIONS
from reactor.dashboard.workers import WorkersSource

#: A program run from elsewhere imports reactor from this checkout.
THIS_CHECKOUT = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as reply:
        assert reply.status == 200
        return reply.read()


def table(url: str) -> dict[str, Any]:
    return json.loads(fetch(url + "table.json"))


def exchange(address: Any, lines: int = 1, hold: bool = False) -> socket.socket | None:
    """One connection, ``lines`` echoed lines; closed unless ``hold`` (then returned, open)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
        for n in range(lines):
            sock.sendall(b"line %d\n" % n)
            got = b""
            while not got.endswith(b"\n"):
                chunk = sock.recv(100)
                assert chunk, "the echo server closed"
                got += chunk
            assert got == b"line %d\n" % n
    except BaseException:
        sock.close()
        raise
    if hold:
        return sock
    sock.close()
    return None


def open_events(url: str) -> Events:
    """``GET /events`` of the dashboard at ``url`` (test_dashboard_http's reader)."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    return Events(types.SimpleNamespace(server_address=(host, int(port))))


class Supervised(Command):
    """``serve handlers.echo:LineEcho --tcp ... --unix PATH --workers 2 --dashboard 127.0.0.1:0``."""

    def __init__(self, path: str, *args: str) -> None:
        super().__init__("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--unix", path, "--workers", "2",
                         "--dashboard", "127.0.0.1:0", "--log-level", "INFO", *args)  # fmt: skip
        found = self.serving(2)
        self.tcp, self.unix = found["tcp4"], found["unix"]
        line = self.proc.stdout.readline()
        assert line.startswith("dashboard http://127.0.0.1:"), (line, self.stderr())
        self.url = line.split()[1]
        self.tables = {"tcp4": f"tcp4 {self.tcp[0]}:{self.tcp[1]}", "unix": f"unix {path}"}

    def close(self) -> None:
        """Stopped gracefully if still running (its socket file removed), then as ``Command`` does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        super().close()

    def shown(self, snapshot: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
        """(worker, table name) -> SERVER, for the workers' servers of a snapshot."""
        return {(s["worker"], s["table"]): s for s in snapshot["servers"] if "worker" in s}


def total(snapshot: dict[str, Any], table_name: str, field: str = "finished") -> int:
    return sum(s["totals"][field] for s in snapshot["servers"] if s.get("table") == table_name)


@pytest.mark.timeout(40)
def test_one_page_and_one_metrics_show_every_worker(places: Any) -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client (a dev extra) is not installed")
    path = places.path()
    command = Supervised(path)
    held: list[Any] = []
    try:
        wait_for(lambda: len(children(command.proc.pid)) == 2, 5, "two workers")
        workers = children(command.proc.pid)
        first = table(command.url)
        wait_for(lambda: len(command.shown(table(command.url))) == 4, 5, "both workers' reports")
        snapshot = table(command.url)
        shown = command.shown(snapshot)
        assert set(shown) == {(k, name) for k in (1, 2) for name in command.tables.values()}
        assert {s["pid"] for s in shown.values()} == set(children(command.proc.pid))
        assert all(s["name"] == f"worker {k}: {name}" for (k, name), s in shown.items())
        assert [s["dashboard"] for s in snapshot["servers"]] == [False] * 4 + [True]  # the supervisor's own last
        assert [w["worker"] for w in snapshot["workers"]] == [1, 2] and snapshot["supervisor"]["started"] == 2
        assert first["time"] <= snapshot["time"]

        # Clients on both addresses: 30 connections of 2 lines each, and 2 left half-way (READING).
        for n in range(30):
            exchange(command.tcp if n % 2 else command.unix, lines=2)
        for address in (command.tcp, command.unix):
            sock = exchange(address, hold=True)
            sock.sendall(b"half a li")
            held.append(sock)

        def settled() -> bool:
            now = table(command.url)
            reading = sum(s["states"].get("READING", 0) for s in now["servers"] if "worker" in s)
            return total(now, command.tables["tcp4"]) == 15 and total(now, command.tables["unix"]) == 15 and reading == 2

        wait_for(settled, 5, "the records to move")
        records = [r for s in command.shown(table(command.url)).values() for r in s["records"]]
        assert sorted(r["state"] for r in records) == ["READING", "READING"]

        text = fetch(command.url + "metrics").decode()
        families = {family.name: family for family in parser.text_string_to_metric_families(text)}

        def summed(family: str, sample: str, **labels: str) -> float:
            found = [s for s in families[family].samples if s.name == sample and labels.items() <= s.labels.items()]
            assert found and all("worker" in s.labels for s in found), (family, labels)
            return sum(s.value for s in found)

        for name in command.tables.values():
            assert summed("reactor_requests", "reactor_requests_total", server=name, outcome="finished") == 15
            assert summed("reactor_requests_opened", "reactor_requests_opened_total", server=name) == 16
            assert summed("reactor_handler_runs", "reactor_handler_runs_total", server=name) == 15 * 2 + 1
            assert summed("reactor_handler_seconds", "reactor_handler_seconds_total", server=name) > 0
        workers_seen = {s.labels["worker"] for s in families["reactor_loop_wakeups"].samples}
        assert workers_seen == {"1", "2"}
        gauge = {s.labels["state"]: s.value for s in families["reactor_workers"].samples}
        assert gauge == {"wanted": 2, "alive": 2, "reporting": 2}
        events = {s.labels["event"]: s.value for s in families["reactor_worker_events"].samples}
        assert events == {"started": 2, "died": 0, "replaced": 0, "killed": 0}

        # The events: a snapshot, then updates carrying both workers' transitions.
        stream = open_events(command.url)
        try:
            name, data = stream.next()
            assert name == "snapshot" and len(command.shown(data)) == 4
            seen: set[int] = set()
            deadline = time.monotonic() + 15
            rounds = 0
            while seen != {1, 2} and time.monotonic() < deadline and rounds < 40:  # bounded: 40 rounds, 15 s
                rounds += 1
                for n in range(6):
                    exchange(command.tcp if n % 2 else command.unix)
                name, data = stream.next()
                assert name == "update"
                for t in data["transitions"]:
                    if "worker" in t:
                        assert t["server"].startswith(f"worker {t['worker']}: ")
                        seen.add(t["worker"])
            assert seen == {1, 2}, f"transitions seen from workers {seen} only"
        finally:
            stream.close()
        for sock in held:
            sock.close()
        held.clear()
        assert command.stop() == 0, command.stderr()
        assert gone(workers) and not os.path.exists(path)
    finally:
        for sock in held:
            sock.close()
        command.close()


@pytest.mark.timeout(40)
def test_a_killed_worker_leaves_the_page_its_replacement_comes_and_sigterm_leaves_nothing(places: Any) -> None:
    path = places.path()
    command = Supervised(path)
    stalled = None
    try:
        wait_for(lambda: len(command.shown(table(command.url))) == 4, 5, "both workers' reports")
        # A reader of the supervisor's events that never reads: the workers go on at their pace.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", int(command.url.rstrip("/").rsplit(":", 1)[1])))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")  # and never read
        started = time.monotonic()
        for n in range(200):  # bounded: 200 exchanges
            exchange(command.tcp if n % 2 else command.unix)
        assert time.monotonic() - started < 10, "the workers were slowed down"
        wait_for(lambda: total(table(command.url), command.tables["tcp4"]) == 100, 5, "the supervisor to keep up")

        victim_slot = 2
        victim = next(s["pid"] for s in table(command.url)["servers"] if s.get("worker") == victim_slot)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in {s.get("pid") for s in table(command.url)["servers"]}, 5, "the dead one to go")

        def replaced() -> bool:
            now = command.shown(table(command.url))
            return {k for k, _ in now} == {1, 2} and all(s["pid"] != victim for s in now.values())

        wait_for(replaced, 10, "its replacement to report")
        snapshot = table(command.url)
        new = command.shown(snapshot)[(victim_slot, command.tables["tcp4"])]
        assert new["totals"]["opened"] == 0  # its counts start again
        assert snapshot["supervisor"]["died"] == 1 and snapshot["supervisor"]["started"] == 3
        pids = children(command.proc.pid)
        assert command.stop() == 0, command.stderr()
        assert gone(pids + [victim]) and not os.path.exists(path)
        with pytest.raises(urllib.error.URLError):
            fetch(command.url + "table.json")  # the dashboard is gone too
    finally:
        if stalled is not None:
            stalled.close()
        command.close()


@pytest.mark.timeout(30)
def test_reuse_port_workers_are_shown_too() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = Command("handlers.echo:LineEcho", "--tcp", f"127.0.0.1:{port}", "--workers", "2", "--reuse-port",
                      "--dashboard", "127.0.0.1:0")  # fmt: skip
    try:
        command.serving(1)
        url = command.proc.stdout.readline().split()[1]
        name = f"tcp4 127.0.0.1:{port}"
        wait_for(lambda: sorted((s.get("worker"), s.get("table")) for s in table(url)["servers"] if "worker" in s)
                 == [(1, name), (2, name)], 5, "both workers' own sockets")  # fmt: skip
        for _ in range(10):
            exchange(("127.0.0.1", port))
        wait_for(lambda: total(table(url), name) == 10, 5, "the ten connections, on either worker")
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()


# ------------------------------------------------------------ the Python API

API_PROGRAM = textwrap.dedent("""
    import sys
    import reactor
    from handlers.echo import LineEcho

    def make_servers():
        return [reactor.TCPServer(("127.0.0.1", 0), LineEcho)]

    workers = None

    def serving(names):
        print("serving", names[0], workers.dashboard.url, flush=True)

    workers = reactor.Workers(make_servers, count=2, on_serving=serving, dashboard=("127.0.0.1", 0))
    sys.exit(workers.run())
""")


@pytest.mark.timeout(30)
def test_the_python_api_serves_a_dashboard_of_its_workers(tmp_path: Any) -> None:
    program = tmp_path / "api.py"
    program.write_text(API_PROGRAM)
    proc = subprocess.Popen([sys.executable, str(program)], cwd=ROOT, env=THIS_CHECKOUT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving tcp4 127.0.0.1:"), line
        name, url = line[len("serving ") :].rsplit(" ", 1)
        url = url.strip()
        wait_for(lambda: sorted(s["worker"] for s in table(url)["servers"] if "worker" in s) == [1, 2], 5, "reports")
        assert {s["table"] for s in table(url)["servers"] if "worker" in s} == {name}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=EXIT_TIMEOUT)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(20)
def test_a_dashboard_address_in_use_is_a_usage_error_before_any_worker() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "reactor", "serve", "handlers.echo:LineEcho", "--tcp",
                                 "127.0.0.1:0", "--workers", "2", "--dashboard", f"127.0.0.1:{port}"], cwd=ROOT,
                                capture_output=True, text=True, timeout=15)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(
        f"python -m reactor serve: error: cannot serve the dashboard on 127.0.0.1:{port}: "
    ), result.stderr
    assert "worker 1 started" not in result.stderr


# ------------------------------------------------------------ the parts


class FakeSupervisor:
    count = 2
    counters = {"started": 3, "died": 1, "replaced": 0, "killed": 0}
    pids = [101, 102]


def fake_report(time_: float, opened: int, transitions: list[dict[str, Any]], wakeups: float) -> dict[str, Any]:
    loop = {"wakeups_per_s": wakeups, "why_per_s": {"ready": wakeups, "wakeup": 0, "timers": 0, "timeout": 0},
            "busy_share": 0.5 if wakeups > 5 else 0.1, "wait_share": 0.5, "ready_per_wakeup": 2.0 if wakeups > 5 else 1.0,
            "totals": {"wakeups": 10, "why": {"ready": 10, "wakeup": 0, "timers": 0, "timeout": 0}, "ready": 15,
                       "busy": 1.0, "waiting": 2.0}}  # fmt: skip
    server = {"name": "tcp4 127.0.0.1:9000", "kind": "connection", "family": "tcp4", "address": "127.0.0.1:9000",
              "handler": "LineEcho", "strategy": "inline", "tls": False, "proxy": False, "dashboard": False,
              "states": {}, "records": [], "bytes_in": 0, "bytes_out": 0, "handlers": None, "counters": {},
              "totals": {"opened": opened, "finished": opened, "rejected": 0, "aborted": 0, "failed": 0}}  # fmt: skip
    return {"time": time_, "loop": loop, "servers": [server], "transitions": transitions, "reports_dropped": 0}


@pytest.mark.timeout(10)
def test_workers_source_merges_two_reports() -> None:
    with reactor.Reactor() as loop:
        source = WorkersSource(loop, None, FakeSupervisor())
        pairs = [report_pair() for _ in range(2)]
        try:
            for k, (ours, _) in enumerate(pairs, 1):
                source.add(k, 100 + k, ours)
            source.watch(True)
            assert [theirs.recv(8) for _, theirs in pairs] == [WATCH, WATCH]
            move = {"t": 1.0, "server": "tcp4 127.0.0.1:9000", "id": 1, "old": None, "event": None, "new": "ACCEPTED",
                    "reason": ""}  # fmt: skip
            pairs[0][1].send(json.dumps(fake_report(5.0, 3, [move], 10.0)).encode())
            pairs[1][1].send(json.dumps(fake_report(2.0, 4, [dict(move, t=1.5)], 2.0)).encode())
            deadline = time.monotonic() + 5
            while len(source._shown()) < 2 and time.monotonic() < deadline:
                loop.run_once(0.1)
            assert source.changed()
            update = source.update()
            assert not source.changed()
            names = [s["name"] for s in update["servers"]]
            assert names == ["worker 1: tcp4 127.0.0.1:9000", "worker 2: tcp4 127.0.0.1:9000"]
            assert [(s["worker"], s["pid"], s["table"]) for s in update["servers"]] == [
                (1, 101, "tcp4 127.0.0.1:9000"), (2, 102, "tcp4 127.0.0.1:9000")]  # fmt: skip
            merged = update["loop"]
            assert merged["wakeups_per_s"] == 12.0 and merged["why_per_s"]["ready"] == 12.0
            assert merged["busy_share"] == pytest.approx(0.3) and merged["totals"]["wakeups"] == 20
            assert merged["ready_per_wakeup"] == pytest.approx((2.0 * 10 + 1.0 * 2) / 12)
            assert [w["worker"] for w in update["workers"]] == [1, 2] and update["workers"][0]["loop"]["wakeups_per_s"] == 10
            assert update["supervisor"] == {"workers": 2, "alive": 2, "reporting": 2, **FakeSupervisor.counters}
            transitions = update["transitions"]
            assert sorted((t["worker"], t["server"]) for t in transitions) == [
                (1, "worker 1: tcp4 127.0.0.1:9000"), (2, "worker 2: tcp4 127.0.0.1:9000")]  # fmt: skip
            # Each worker's clock moved to the supervisor's: its move came (its time - t) before it arrived.
            late = {t["worker"]: t["t"] for t in transitions}
            assert late[2] - late[1] == pytest.approx((5.0 - 1.0) - (2.0 - 1.5), abs=0.2)
            more = source.more_metrics(update).decode()
            assert 'reactor_workers{state="reporting"} 2' in more and 'reactor_worker_events_total{event="died"} 1' in more
            source.watch(False)
            assert [theirs.recv(8) for _, theirs in pairs] == [QUIET, QUIET]
            source.remove(101)  # exited: gone from the view at once
            assert [s["worker"] for s in source.snapshot()["servers"]] == [2]
            pairs[1][1].close()  # the other's end of file: gone too
            deadline = time.monotonic() + 5
            while source.workers and time.monotonic() < deadline:
                loop.run_once(0.1)
            assert source.snapshot()["servers"] == [] and source.snapshot()["loop"]["wakeups_per_s"] == 0
        finally:
            source.close()
            for ours, theirs in pairs:
                ours.close()
                theirs.close()


def spin(loop: Any, predicate: Any) -> None:
    """Run ``loop`` until ``predicate()``; fail after 5 s."""
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, "the loop did not get there"
        loop.run_once(0.05)


@pytest.mark.timeout(10)
def test_the_reporter_drops_a_report_the_socket_cannot_take_and_says_so() -> None:
    with reactor.Reactor() as loop:
        ours, theirs = report_pair()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # full after a few reports
        reporter = Reporter(loop, theirs, interval=60)
        try:
            sent = 0
            while reporter.send_report() and sent < 10_000:  # bounded
                sent += 1
            assert reporter.reports_dropped == 1 and 0 < sent < 10_000
            assert reporter.send_report() is False and reporter.reports_dropped == 2  # still full: not blocking
            packets = []
            while True:
                try:
                    packets.append(json.loads(ours.recv(1 << 20)))
                except BlockingIOError:
                    break
            assert len(packets) == sent and all(p["reports_dropped"] == 0 for p in packets)
            assert reporter.send_report() is True
            assert json.loads(ours.recv(1 << 20))["reports_dropped"] == 2  # the next report says so
            # The supervisor asks for transitions, then no more; its end of file stops the reporter.
            ours.send(WATCH)
            spin(loop, lambda: reporter.watching)
            ours.send(QUIET)
            spin(loop, lambda: not reporter.watching)
            ours.close()
            spin(loop, lambda: reporter.closed)
            assert loop._stats is None  # it detached the loop's statistics
        finally:
            reporter.close()
            ours.close()


@pytest.mark.timeout(10)
def test_a_report_too_large_for_a_packet_goes_without_its_records(monkeypatch: Any) -> None:
    record = {"id": 999999, "state": "PROCESSING", "peer": "[::ffff:127.0.0.1]:65535", "age": 123456.1234,
              "since": 123456.1234, "bytes_in": 10**12, "bytes_out": 10**12}  # fmt: skip
    move = {"t": 123456.1234, "server": "tcp6 [::ffff:127.0.0.1]:65535", "id": 999999, "old": "PROCESSING",
            "event": "dispatch", "new": "PROCESSING", "reason": "from [::ffff:127.0.0.1]:65535", "worker": 16}  # fmt: skip
    largest = fake_report(1.0, 10**9, [move] * MAX_TRANSITIONS, 1.0)
    largest["servers"][0]["records"] = [record] * MAX_RECORDS
    size = len(json.dumps(largest, separators=(",", ":")))
    # The largest report of one server: what the buffer is sized for, with room for several servers.
    assert size * 4 < report_module.BUFFER, size
    with reactor.Reactor() as loop:
        ours, theirs = report_pair()
        reporter = Reporter(loop, theirs, interval=60)
        try:
            huge = fake_report(1.0, 1, [], 1.0)
            huge["servers"][0]["records"] = [record] * MAX_RECORDS
            huge["servers"] *= 100  # a worker of 100 full servers: over a packet
            monkeypatch.setattr(reporter, "report", lambda: json.loads(json.dumps(huge)))
            assert reporter.send_report() is True
            packet = json.loads(ours.recv(report_module.BUFFER + 1))
            assert packet["records_dropped"] is True
            assert all(s["records"] == [] and s["more"] == MAX_RECORDS for s in packet["servers"])
            monkeypatch.setattr(report_module, "BUFFER", 1000)  # even without records too large: dropped, no crash
            assert reporter.send_report() is False and reporter.reports_dropped == 1
        finally:
            reporter.close()
            ours.close()


@pytest.mark.timeout(60)
def test_the_page_lists_the_workers_and_their_servers(places: Any) -> None:
    from dashboard_support import load_script

    script = load_script()
    if script.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian package chromium; make tools installs it)")
    command = Supervised(places.path())
    try:
        wait_for(lambda: len(command.shown(table(command.url))) == 4, 5, "both workers' reports")
        pids = sorted(w["pid"] for w in table(command.url)["workers"])
        with script.Browser() as browser:
            browser.open(command.url)
            browser.wait("document.querySelectorAll('#workers tbody tr').length == 2")
            rows = browser.evaluate("[...document.querySelectorAll('#workers tbody tr')]"
                                    ".map((tr) => [...tr.cells].map((td) => td.textContent))")  # fmt: skip
            assert [row[0] for row in rows] == ["1", "2"] and sorted(int(row[1]) for row in rows) == pids
            panels = browser.evaluate("[...document.querySelectorAll('section.server')].map((s) => s.dataset.server)")
            assert panels[:4] == [f"worker {k}: {name}" for k in (1, 2) for name in command.tables.values()]
            title = browser.evaluate("document.querySelector('#loop h2').textContent")
            assert title == "The loops of 2 workers (wake-ups summed, time averaged)", title
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()
