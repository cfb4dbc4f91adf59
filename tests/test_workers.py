"""Worker processes: ``python -m reactor serve ... --workers N`` and ``reactor.Workers``.

Real processes: the supervisor is a subprocess, its workers are its
children (read from /proc), and each connection says which worker served
it (the handler replies with its pid).  Every client loop is bounded in
count and in time; waits poll with ``wait_for``.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from cli_support import ROOT, Command, children
from conftest import CLIENT_TIMEOUT, wait_for

PID_HANDLER = """\
import os
from handlers import MessageHandler
from handlers.framing import Line

class Pid(MessageHandler):
    '''Replies to each line with the pid of the process that served it.'''
    framing = Line()

    def handle(self):
        self.wfile.write(b"%d\\n" % os.getpid())
"""

# A module that imports fine in the supervisor, but whose every forked child dies at once.
CRASH_HANDLER = """\
import os
os.register_at_fork(after_in_child=lambda: os._exit(3))
from handlers.echo import LineEcho
"""


@pytest.fixture
def modules(tmp_path: Any) -> dict[str, str]:
    (tmp_path / "pid.py").write_text(PID_HANDLER)
    (tmp_path / "crash.py").write_text(CRASH_HANDLER)
    return {"PYTHONPATH": str(tmp_path)}




def line(sock: socket.socket) -> bytes:
    """Bytes from ``sock`` up to and including the first newline (or all there was, at EOF)."""
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        got += chunk
    return got


def gone(pids: Any) -> bool:
    """No process left with any of these pids (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except OSError:
            pass
    return True


class Supervisor(Command):
    """``python -m reactor serve pid:Pid ... --workers N``, with its workers and a client."""

    def __init__(self, modules: dict[str, str], *args: str, count: int = 2) -> None:
        super().__init__("pid:Pid", *args, "--workers", str(count), "--log-level", "INFO", env=modules)
        self.count = count

    def workers(self, count: int | None = None) -> list[int]:
        """Wait until it has ``count`` (default: N) workers; return their pids."""
        count = self.count if count is None else count
        wait_for(lambda: len(children(self.proc.pid)) == count, 5, f"{count} workers")
        return children(self.proc.pid)

    def ask(self, address: Any, timeout: float = CLIENT_TIMEOUT) -> int:
        """One connection, one line: the pid of the worker that answered.  Raises on any failure."""
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"who?\n")
            reply = line(sock)
        assert reply.endswith(b"\n"), f"no reply (got {reply!r}); stderr: {self.stderr()}"
        return int(reply)

    def stop_and_check(self, pids: Any, paths: Any = ()) -> None:
        """SIGTERM: exit 0, every worker gone, every socket file removed."""
        assert self.stop(signal.SIGTERM) == 0, self.stderr()
        assert gone(pids), f"workers left running: {[p for p in pids if os.path.exists(f'/proc/{p}')]}"
        for path in paths:
            assert not os.path.exists(path), f"{path} left behind"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dispatch", ["inline", "thread:2"])
def test_every_worker_serves_a_share_of_100_connections(places, modules, dispatch):
    path = places.path()
    command = Supervisor(modules, "--tcp", "127.0.0.1:0", "--unix", path, "--dispatch", dispatch)
    try:
        found = command.serving(2)  # printed once, when both workers serve
        workers = command.workers()
        shares = collections.Counter(command.ask(found["tcp4"]) for _ in range(100))
        assert set(shares) == set(workers), (shares, workers)  # both served, and only they did
        assert all(shares[pid] > 0 for pid in workers)
        assert command.ask(path) in workers  # the Unix socket too: the same file for both
        command.stop_and_check(workers, [path])
        assert command.proc.stdout.read() == ""  # the serving lines came once, from the supervisor
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_a_killed_worker_is_replaced_within_2s_and_no_other_request_fails(places, modules):
    command = Supervisor(modules, "--tcp", "127.0.0.1:0")
    try:
        address = command.serving(1)["tcp4"]
        first = command.workers()
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as held:  # a connection that stays open
            held.sendall(b"who?\n")
            survivor = int(line(held))
            victim = next(pid for pid in first if pid != survivor)
            os.kill(victim, signal.SIGKILL)
            killed, served = time.monotonic(), 0
            while time.monotonic() - killed < 2.0 and served < 2000:  # bounded: 2 s, 2000 requests
                command.ask(address)  # every one succeeds, before and after the replacement
                served += 1
                now = children(command.proc.pid)
                if len(now) == 2 and victim not in now:
                    break
            assert victim not in now and len(now) == 2, f"not replaced within 2 s: {now}"
            held.sendall(b"who?\n")
            assert int(line(held)) == survivor  # the open connection on the other worker carried on
        assert "was killed by SIGKILL" in command.stderr()
        command.stop_and_check(now + [victim])
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_sighup_replaces_both_workers_and_refuses_no_connection(places, modules):
    path = places.path()
    command = Supervisor(modules, "--tcp", "127.0.0.1:0", "--unix", path)
    try:
        address = command.serving(2)["tcp4"]
        old = set(command.workers())
        start, served, seen = time.monotonic(), 0, collections.Counter()
        replaced = False
        while time.monotonic() - start < 10 and served < 3000:  # bounded: 10 s, 3000 connections
            seen[command.ask(address if served % 2 else path)] += 1  # refused, reset or unanswered: raises
            served += 1
            if served == 50:
                command.proc.send_signal(signal.SIGHUP)
            now = set(children(command.proc.pid))
            if served > 50 and len(now) == 2 and not now & old and set(seen) & now:
                replaced = True
                break
        assert replaced, f"not both replaced after {served} connections: old {old}, now {now}; {command.stderr()}"
        assert old <= set(seen)  # the old ones served before the reload
        assert command.stderr().count("replaces pid") == 2
        command.stop_and_check(old | now, [path])
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_sigterm_lets_a_taken_request_finish_then_exits_0_with_nothing_left(places, modules):
    path = places.path()
    command = Supervisor(modules, "--tcp", "127.0.0.1:0", "--unix", path, "--dispatch", "thread:2",
                         "--drain-timeout", "5")  # fmt: skip
    try:
        command.serving(2)
        workers = command.workers()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(CLIENT_TIMEOUT)
            client.connect(path)
            client.sendall(b"who?\n")
            pid = int(line(client))  # taken: this worker has the connection
            client.sendall(b"half a line")
            command.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: command.stderr().count("SIGTERM: stopping; running requests") == 2, 5, "workers stopping")
            client.sendall(b", the rest\n")
            assert int(line(client)) == pid  # served by the stopping worker
            assert command.proc.poll() is None  # it waits for this connection ...
        assert command.proc.wait(5) == 0, command.stderr()  # ... and ends once it is closed
        assert gone(workers) and not os.path.exists(path)
        assert not os.path.exists(path + ".lock")
    finally:
        command.close()


@pytest.mark.timeout(40)
def test_workers_serve_tls_with_the_supervisor_s_context(places, modules, certs):
    from tls_support import read_lines, tls_connect

    path = places.path()
    command = Supervisor(modules, "--tcp", "127.0.0.1:0", "--unix", path, "--tls-cert", certs.server_cert,
                         "--tls-key", certs.server_key, "--dispatch", "thread:2")  # fmt: skip
    try:
        lines = [command.proc.stdout.readline() for _ in range(2)]
        assert all(line.endswith(" (Pid, thread:2, TLS, 2 workers)\n") for line in lines), lines
        host, port = lines[0].split()[2].rsplit(":", 1)
        workers = command.workers()
        for family, address in (("tcp4", (host, int(port))), ("unix", path)):
            where = type("Where", (), {"address_family": socket.AF_UNIX if family == "unix" else socket.AF_INET,
                                       "server_address": address})  # fmt: skip
            with tls_connect(where, certs.client_context()) as client:
                client.sendall(b"who?\n")
                assert int(read_lines(client, 1)) in workers
        command.stop_and_check(workers, [path])
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_workers_stop_when_their_supervisor_is_killed(places, modules):
    path = places.path()
    command = Supervisor(modules, "--tcp", "127.0.0.1:0", "--unix", path)
    try:
        command.serving(2)
        workers = command.workers()
        command.proc.kill()  # no chance to stop them: each sees its lifeline pipe close
        command.proc.wait()
        wait_for(lambda: gone(workers), 5, "orphaned workers to stop")
        assert command.stderr().count("the supervisor is gone; stopping") == 2
    finally:
        command.close()
        for leftover in (path, path + ".lock"):  # the supervisor's to remove, and it was killed
            if os.path.exists(leftover):
                os.unlink(leftover)


@pytest.mark.timeout(30)
def test_reuse_port_gives_each_worker_its_own_socket(modules):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = Supervisor(modules, "--tcp", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{port}", "--reuse-port")
    try:
        found = command.serving(2)
        assert found == {"tcp4": ("127.0.0.1", port), "udp4": ("127.0.0.1", port)}
        workers = command.workers()
        shares = collections.Counter(command.ask(found["tcp4"]) for _ in range(100))  # spread by the kernel's hash
        assert set(shares) == set(workers), (shares, workers)
        datagrams = set()
        for _ in range(40):  # each from a port of its own: hashed to either socket
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(CLIENT_TIMEOUT)
                udp.sendto(b"who?\n", found["udp4"])
                datagrams.add(int(udp.recv(100)))
        assert datagrams <= set(workers) and datagrams
        command.stop_and_check(workers)
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_workers_that_die_at_start_make_the_supervisor_give_up(modules):
    command = Command("crash:LineEcho", "--tcp", "127.0.0.1:0", "--workers", "2", "--log-level", "INFO", env=modules)
    try:
        assert command.proc.wait(15) == 1, command.stderr()
        errors = command.stderr()
        assert "5 workers in a row died within 1 s of their start: giving up" in errors
        assert errors.count("exited with status 3 before it served") == 5
        started_pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in errors.splitlines() if " started (pid " in line]
        assert len(started_pids) == 5 and gone(started_pids)
        assert command.proc.stdout.read() == ""  # never serving
    finally:
        command.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("args, error", [
    (["--tcp", "127.0.0.1:9", "--reuse-port"], "--reuse-port needs --workers N"),
    (["--tcp", "127.0.0.1:0", "--workers", "2", "--reuse-port"], "--reuse-port needs a fixed port, not --tcp"),
    (["--unix", "/tmp/rx-none.sock", "--workers", "2", "--reuse-port"], "--reuse-port is for --tcp and --udp"),
    (["--tcp", "127.0.0.1:0", "--workers", "0"], "argument --workers: expected a whole number of at least 1"),
])  # fmt: skip
def test_worker_options_that_cannot_work_are_usage_errors(args, error):
    result = subprocess.run([sys.executable, "-m", "reactor", "serve", "handlers.echo:LineEcho", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=15)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert error in result.stderr.splitlines()[-1], result.stderr  # the one line (argparse's usage comes first)


@pytest.mark.timeout(20)
def test_reuse_port_on_a_port_in_use_is_a_usage_error(modules):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "reactor", "serve", "handlers.echo:LineEcho", "--tcp",
                                 f"127.0.0.1:{port}", "--workers", "2", "--reuse-port"], cwd=ROOT, capture_output=True,
                                text=True, timeout=15)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"python -m reactor serve: error: cannot bind tcp 127.0.0.1:{port}: [Errno 98] Address already in use"
    )


# ------------------------------------------------------------ the Python API

API_PROGRAM = textwrap.dedent("""
    import logging, os, sys
    import reactor
    from handlers import MessageHandler
    from handlers.framing import Line

    class Hello(MessageHandler):
        framing = Line()

        def handle(self):
            self.wfile.write(f"{os.getpid()} {self.server.greeting}\\n".encode())

    def make_servers():  # once, in the supervisor: every worker serves these sockets
        return [reactor.TCPServer(("127.0.0.1", 0), Hello), reactor.UnixStreamServer(sys.argv[1], Hello,
                dispatch=reactor.ThreadPool(2))]

    def setup(servers):  # in each worker, before it serves
        if sys.argv[2] == "crash":
            raise RuntimeError("this worker cannot start")
        for server in servers:
            server.greeting = f"hello from {os.getpid()}"

    def serving(names):
        for name in names:
            print("serving", name, flush=True)

    logging.basicConfig(level=logging.WARNING)
    workers = reactor.Workers(make_servers, count=2, setup=setup, on_serving=serving, drain_timeout=2, backoff=0.01)
    status = workers.run()
    print("counters", workers.counters["started"], workers.counters["died"], flush=True)
    sys.exit(status)
""")


#: A program run from elsewhere imports reactor from this checkout, not from wherever it is installed.
THIS_CHECKOUT = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.timeout(30)
def test_the_python_api_runs_workers_with_a_setup_hook(places, tmp_path):
    program = tmp_path / "api.py"
    program.write_text(API_PROGRAM)
    path = places.path()
    proc = subprocess.Popen([sys.executable, str(program), path, "serve"], cwd=ROOT, env=THIS_CHECKOUT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        host, port = lines[0].split()[2].rsplit(":", 1)
        assert lines[0].startswith("serving tcp4 127.0.0.1:") and lines[1] == f"serving unix {path}\n"
        wait_for(lambda: len(children(proc.pid)) == 2, 5, "two workers")
        workers = children(proc.pid)
        for address, family in (((host, int(port)), socket.AF_INET), (path, socket.AF_UNIX)):
            with socket.socket(family) as sock:
                sock.settimeout(CLIENT_TIMEOUT)
                sock.connect(address)
                sock.sendall(b"hi\n")
                pid, text = line(sock).decode().split(" ", 1)
                assert int(pid) in workers and text == f"hello from {pid}\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == "counters 2 0\n"
        assert gone(workers) and not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(30)
def test_the_python_api_gives_up_when_every_worker_crashes_at_start(places, tmp_path):
    program = tmp_path / "api.py"
    program.write_text(API_PROGRAM)
    path = places.path()
    result = subprocess.run([sys.executable, str(program), path, "crash"], cwd=ROOT, env=THIS_CHECKOUT,
                            capture_output=True, text=True, timeout=20)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout == "counters 5 5\n"
    assert result.stderr.count("RuntimeError: this worker cannot start") == 5  # each worker's traceback
    assert not os.path.exists(path)  # the supervisor's socket file, removed as it ends


@pytest.mark.timeout(10)
def test_workers_refuses_nonsense_before_forking_anything():
    import threading

    import reactor

    for kwargs, error in [
        ({"count": 0}, "count must be a whole number of at least 1, not 0"),
        ({"count": True}, "count must be a whole number"),
        ({"count": 2, "max_quick_failures": 0}, "max_quick_failures must be a whole number of at least 1"),
        ({"count": 2, "backoff": float("nan")}, "backoff must be a finite number of seconds"),
        ({"count": 2, "drain_timeout": -1}, "drain_timeout must be a finite number of seconds, 0 or more"),
    ]:
        with pytest.raises(reactor.UsageError, match=error):
            reactor.Workers(list, **kwargs)
    with pytest.raises(reactor.UsageError, match="make_servers must be a callable"):
        reactor.Workers([], 2)
    made: list[Any] = []
    failures: list[BaseException] = []

    def off_the_main_thread() -> None:
        try:
            reactor.Workers(lambda: made.append(1) or [], 2).run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=off_the_main_thread)
    thread.start()
    thread.join(CLIENT_TIMEOUT)
    assert isinstance(failures[0], reactor.UsageError) and "main thread" in str(failures[0])
    assert made == []  # refused before it made anything

