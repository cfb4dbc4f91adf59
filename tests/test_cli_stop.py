"""Stopping ``python -m reactor serve``: signals, the drain timeout, closing, descriptor limits.

The real command in a subprocess, as in test_cli.py: a classic handler
blocked reading a silent client must not make the command unkillable (a
second signal ends it at once, socket files removed), a graceful stop ends
within ``--drain-timeout``, a handler module that calls ``sys.exit()`` is
a usage error, and the default connection limit fits the descriptor limit.
Function-level tests of the close loop run in-process.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
from cli_support import ROOT, Command
from conftest import CLIENT_TIMEOUT, wait_for

from reactor import TCPServer, UnixStreamServer

#: A stop that works ends well within this; a hang is what the tests catch.
PROMPT = 6.0


class Serve(Command):
    """The command, with waits on its log and its exit."""

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_for(lambda: self.stderr().count(text) >= count or self.proc.poll() is not None, PROMPT, f"{text!r} logged")
        assert self.stderr().count(text) >= count, f"{text!r} not logged; stderr: {self.stderr()}"

    def exit_status(self, seconds: float = PROMPT) -> int:
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {seconds}s later; stderr: {self.stderr()}")


def silent_client(family: str, address: Any) -> socket.socket:
    """A connected client that never sends (the classic handler blocks reading it)."""
    sock = socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT)
    sock.connect(address)
    return sock


def sockets_in(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".sock")]


def start_blocked(places: Any, family: str, dispatch: str, *more: str) -> tuple[Serve, socket.socket]:
    """The command with a classic line echo on TCP and Unix, and a silent client whose
    handler is running (blocked in readline()) on the ``family`` server."""
    command = Serve("handlers.echo:StreamLineEcho", "--tcp", "127.0.0.1:0", "--unix",
                    os.path.join(places.dir, "s.sock"), "--dispatch", dispatch, "--trace", "--log-level", "INFO",
                    *more, traced=False)  # fmt: skip
    found = command.serving(2)
    client = silent_client(family, found["tcp4" if family == "tcp" else "unix"])
    command.wait_log("ACCEPTED -> PROCESSING")  # the handler has the socket and reads it
    return command, client


# ------------------------------------------------ a second signal ends it at once

SECOND = {"SIGTERM": (signal.SIGTERM, 128 + signal.SIGTERM), "SIGINT": (signal.SIGINT, 130)}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("dispatch", ["inline", "thread:2", "fork:2"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_second_signal_ends_a_blocked_classic_handler_at_once(places, name, family, dispatch):
    signum, status = SECOND[name]
    command, client = start_blocked(places, family, dispatch)
    try:
        command.proc.send_signal(signum)
        command.wait_log(f"{name}: stopping")  # handled: the next one is a second signal, not the same
        assert command.proc.poll() is None  # the handler is still blocked: the graceful stop waits
        command.proc.send_signal(signum)
        assert command.exit_status() == status, command.stderr()
        assert sockets_in(places.dir) == []
        err = command.stderr()
        assert f"{name} again: stopping at once" in err, err
        assert "Traceback" not in err, err
    finally:
        client.close()
        command.close()


@pytest.mark.timeout(30)
def test_a_first_signal_stops_an_idle_command_with_status_0(places):
    command = Serve("handlers.echo:StreamLineEcho", "--unix", os.path.join(places.dir, "s.sock"))
    try:
        command.serving(1)
        command.proc.send_signal(signal.SIGTERM)
        assert command.exit_status() == 0, command.stderr()
        assert sockets_in(places.dir) == []
    finally:
        command.close()


# ----------------------------------------------------------- --drain-timeout


@pytest.mark.timeout(40)
@pytest.mark.parametrize("dispatch", ["inline", "thread:2", "fork:2"])
def test_the_drain_timeout_ends_a_graceful_stop_and_says_what_it_cut_short(places, dispatch):
    command, client = start_blocked(places, "tcp", dispatch, "--drain-timeout", "0.5")
    try:
        port = client.getsockname()[1]
        command.proc.send_signal(signal.SIGTERM)
        assert command.exit_status() == 0, command.stderr()
        assert sockets_in(places.dir) == []
        warnings = [line for line in command.stderr().splitlines() if " WARNING " in line]
        cut = [line for line in warnings if f"('127.0.0.1', {port})" in line]
        assert cut, f"no WARNING names the request from port {port}: {warnings}"
        assert client.recv(10) == b""  # its connection was ended, not left hanging
    finally:
        client.close()
        command.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon", ""])
def test_a_bad_drain_timeout_is_a_usage_error(value):
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "handlers.echo:LineEcho", "--tcp", "127.0.0.1:0",
         "--drain-timeout", value],
        cwd=ROOT, capture_output=True, text=True, timeout=PROMPT * 2,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--drain-timeout" in result.stderr and "seconds" in result.stderr and repr(value) in result.stderr, result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["0", "none", "2.5"])
def test_drain_timeout_accepts_zero_none_and_seconds(places, value):
    command = Serve("handlers.echo:LineEcho", "--unix", os.path.join(places.dir, "s.sock"), "--drain-timeout", value)
    try:
        command.serving(1)
        command.proc.send_signal(signal.SIGTERM)
        assert command.exit_status() == 0, command.stderr()
    finally:
        command.close()


# --------------------------------------------------- a handler that exits


@pytest.mark.timeout(30)
def test_a_handler_module_that_calls_sys_exit_is_a_usage_error(tmp_path):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(7)\n")
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "exits_at_import:Handler", "--tcp", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=PROMPT * 2,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "python -m reactor serve: error: cannot import handler 'exits_at_import:Handler': module called sys.exit(7)"
    ]


# ------------------------------------------------------ the descriptor limit


@pytest.mark.timeout(60)
def test_the_default_connection_limit_fits_the_descriptor_limit(places):
    # 64 descriptors, soft and hard: the command cannot raise it.  Its
    # connection limit must leave room for everything else, so a flood of
    # silent clients pauses accepting instead of exhausting the process.
    command = Serve("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--log-level", "INFO", limit=(64, 64))
    clients: list[socket.socket] = []
    try:
        address = command.serving(1)["tcp4"]
        command.wait_log("descriptor limit 64; max_connections ")
        limit = int(re.search(r"descriptor limit 64; max_connections (\d+)", command.stderr()).group(1))
        assert 1 <= limit <= 64 - 16, limit
        for _ in range(limit):
            clients.append(socket.create_connection(address, CLIENT_TIMEOUT))
        command.wait_log("accepting paused")
        late = [socket.create_connection(address, CLIENT_TIMEOUT) for _ in range(20)]  # more than fit
        for sock in late:
            sock.close()  # gave up while waiting in the backlog: the server accepts and closes them later
        extra = socket.create_connection(address, CLIENT_TIMEOUT)  # connects at once (the backlog)
        clients.append(extra)
        extra.sendall(b"hello\n")
        open_fds = len(os.listdir(f"/proc/{command.proc.pid}/fd"))
        assert open_fds < 64 - 4, f"{open_fds} descriptors open in the server"
        clients.pop(0).close()  # one live connection ends: the backlog moves, the extra is served
        assert extra.recv(100) == b"hello\n"
        command.proc.send_signal(signal.SIGTERM)
        assert command.exit_status() == 0, command.stderr()
        assert "accept() failed" not in command.stderr()  # never ran out of descriptors
    finally:
        for sock in clients:
            sock.close()
        command.close()


@pytest.mark.timeout(30)
def test_the_command_raises_the_soft_descriptor_limit_and_logs_it(places):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 64:
        pytest.skip("no room to raise the descriptor limit here")
    command = Serve("handlers.echo:LineEcho", "--unix", os.path.join(places.dir, "s.sock"), "--log-level", "INFO",
                    limit=(64, hard))  # fmt: skip
    try:
        command.serving(1)
        command.wait_log("(raised from 64); max_connections ")
        line = re.search(r"descriptor limit (\d+) \(raised from 64\); max_connections (\d+)", command.stderr())
        assert line is not None, command.stderr()
        raised, limit = int(line.group(1)), int(line.group(2))
        assert raised > 64 and 1 <= limit <= 4096
        assert limit == min(4096, raised - max(32, raised // 16))
        command.proc.send_signal(signal.SIGTERM)
        assert command.exit_status() == 0, command.stderr()
    finally:
        command.close()


# ------------------------------------------------- the close loop, in-process


class Boom(Exception):
    pass


@pytest.mark.timeout(20)
@pytest.mark.parametrize("exception", [KeyboardInterrupt, Boom])
def test_close_servers_closes_every_server_whatever_one_raises(places, exception, caplog):
    from reactor.cli import close_servers

    first = UnixStreamServer(places.path(), None)
    second = TCPServer(("127.0.0.1", 0), None)
    third = UnixStreamServer(places.path(), None)
    closed = []

    def failing_close() -> None:
        closed.append("first")
        type(first).server_close(first)  # really closed, then it raises
        raise exception("while closing")

    first.server_close = failing_close
    with pytest.raises(exception, match="while closing"):
        close_servers([first, second, third])
    assert closed == ["first"]
    for server in (first, second, third):
        assert server.socket.fileno() == -1, server
    assert not os.path.exists(third.server_address)


@pytest.mark.timeout(20)
def test_close_servers_after_an_interrupt_does_not_wait_for_running_requests(places):
    from reactor.cli import close_servers

    # Once a KeyboardInterrupt came, the servers still to close get drain_timeout 0.
    first, second = TCPServer(("127.0.0.1", 0), None), TCPServer(("127.0.0.1", 0), None)
    first.server_close = lambda: (type(first).server_close(first), (_ for _ in ()).throw(KeyboardInterrupt()))
    second.drain_timeout = None
    with pytest.raises(KeyboardInterrupt):
        close_servers([first, second])
    assert second.drain_timeout == 0
    assert first.socket.fileno() == -1 and second.socket.fileno() == -1
    third = TCPServer(("127.0.0.1", 0), None)
    close_servers([third], hurry=True)
    assert third.drain_timeout == 0 and third.socket.fileno() == -1
    fourth = TCPServer(("127.0.0.1", 0), None)
    fourth.drain_timeout = 3.0
    close_servers([fourth])  # nothing raised, no hurry: the server's own drain_timeout stands
    assert fourth.drain_timeout == 3.0 and fourth.socket.fileno() == -1
