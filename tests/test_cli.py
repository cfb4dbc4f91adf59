"""``python -m reactor serve``: the real command in a subprocess, on real sockets.

Each test starts the command with port 0 / paths in a short temp dir, learns
the real addresses from the ``serving`` lines it prints, talks to every
server, stops it with a signal and checks the exit status and that the
Unix socket files are gone.  The framed echo handlers it serves are also
tested in-process.  A process still alive at the end is killed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import urllib.request

import pytest

from cli_support import EXIT_TIMEOUT, ROOT, Command
from conftest import ServingThread, client_exchange, family_params, wait_for
from handlers.echo import ChunkEcho, LineEcho, Upper
from reactor.cli import UsageFailure, load_handler, parse_address



def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reactor", "serve", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=EXIT_TIMEOUT,
    )  # fmt: skip


def sockets_in(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".sock")]


# ------------------------------------------------ the command, end to end

REPLIES = {
    "LineEcho": lambda data: data,
    "ChunkEcho": lambda data: data,
    "Upper": lambda data: data.upper(),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("dispatch", ["inline", "thread:2", "fork:2"])
@pytest.mark.parametrize("handler", ["LineEcho", "Upper", "ChunkEcho"])
def test_serve_all_four_families_then_sigterm(places, handler, dispatch):
    unix, dgram = os.path.join(places.dir, "s.sock"), os.path.join(places.dir, "d.sock")
    command = Command(
        f"handlers.echo:{handler}", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
        "--unix", unix, "--unix-dgram", dgram, "--dispatch", dispatch,
    )  # fmt: skip
    try:
        found = command.serving(4)
        assert found == {"tcp4": found["tcp4"], "udp4": found["udp4"], "unix": unix, "unix-dgram": dgram}
        assert found["tcp4"][1] != 0 and found["udp4"][1] != 0
        reply = REPLIES[handler]
        for family, address in found.items():
            payload = b"hello, " + family.encode() + b"\n"  # the family names are conftest's
            if family in ("tcp4", "unix"):
                payload += b"second line\n" + bytes(range(10)) + b"\xff\n"
            assert client_exchange(family, address, payload, places) == reply(payload), family
        assert sorted(sockets_in(places.dir)) == ["d.sock", "s.sock"]
        assert command.stop(signal.SIGTERM) == 0, command.stderr()
        assert sockets_in(places.dir) == []
        assert "Traceback" not in command.stderr()
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_sigint_stops_it_too_and_ipv6_works(places):
    args = ["handlers.echo:LineEcho", "--unix", os.path.join(places.dir, "s.sock")]
    if socket.has_ipv6:
        args += ["--tcp", "[::1]:0"]
    command = Command(*args)
    try:
        found = command.serving(len(args) // 2)
        if "tcp6" in found:
            assert found["tcp6"][0] == "::1"
            assert client_exchange("tcp6", found["tcp6"], b"six\n") == b"six\n"
        assert command.stop(signal.SIGINT) == 0, command.stderr()
        assert sockets_in(places.dir) == []
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_trace_shows_every_transition_and_wakeup(places):
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--trace")
    try:
        found = command.serving(1)
        assert client_exchange("tcp4", found["tcp4"], b"traced\n") == b"traced\n"
        assert command.stop() == 0
        err = command.stderr()
        assert "READING -> READY: message (7 B)" in err, err
        assert "loop woke after" in err
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_bounds_are_set_on_every_server(places):
    # A 4-byte message limit: a longer line closes the connection without an echo.
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--max-message-size", "4",
                      "--idle-timeout", "5", "--request-timeout", "none", "--max-connections", "10")
    try:
        found = command.serving(1)
        assert client_exchange("tcp4", found["tcp4"], b"ok\n") == b"ok\n"
        assert client_exchange("tcp4", found["tcp4"], b"far too long\n") == b""
        assert command.stop() == 0
    finally:
        command.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, mode", [("660", 0o660), ("0o600", 0o600), ("0666", 0o666)])
def test_socket_mode_sets_the_mode_of_every_unix_socket_file(places, text, mode):
    unix, dgram = os.path.join(places.dir, "s.sock"), os.path.join(places.dir, "d.sock")
    command = Command("handlers.echo:LineEcho", "--unix", unix, "--unix-dgram", dgram, "--tcp", "127.0.0.1:0",
                      "--socket-mode", text)
    try:
        found = command.serving(3)
        for path in (unix, dgram):
            assert stat.S_IMODE(os.lstat(path).st_mode) == mode, (path, oct(os.lstat(path).st_mode))
        assert client_exchange("unix", found["unix"], b"moded\n") == b"moded\n"
        assert command.stop() == 0, command.stderr()
        assert os.listdir(places.dir) == []  # the socket files and their lock files
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_a_second_command_on_the_same_path_exits_2_and_the_first_keeps_serving(places):
    unix = os.path.join(places.dir, "s.sock")
    first = Command("handlers.echo:LineEcho", "--unix", unix)
    try:
        first.serving(1)
        result = run_command("handlers.echo:LineEcho", "--unix", unix)
        assert result.returncode == 2
        assert f"cannot bind unix {unix}: [Errno 98] {unix} is in use by another process" in result.stderr
        assert client_exchange("unix", unix, b"still mine\n") == b"still mine\n"
        assert first.stop() == 0, first.stderr()
    finally:
        first.close()


# ------------------------------------------------------------- errors


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "option, text",
    [("--tcp", "x"), ("--tcp", "::1:9000"), ("--udp", "127.0.0.1:99999"), ("--tcp", "127.0.0.1:"), ("--unix", "")],
)
def test_a_bad_address_exits_2_with_one_line(option, text):
    result = run_command("handlers.echo:LineEcho", option, text)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"bad {option} address {text!r}: expected" in lines[0], result.stderr


@pytest.mark.timeout(30)
def test_a_port_in_use_exits_2_and_closes_what_was_opened(places):
    unix = os.path.join(places.dir, "first.sock")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command("handlers.echo:LineEcho", "--unix", unix, "--tcp", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"cannot bind tcp 127.0.0.1:{port}: [Errno 98] Address already in use")
    assert len(result.stderr.splitlines()) == 1
    assert sockets_in(places.dir) == []  # the Unix server opened first was closed


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "spec, why",
    [
        ("nope:X", "No module named 'nope'"),
        ("handlers.echo:Nothing", "module 'handlers.echo' has no 'Nothing'"),
        ("handlers.framing:Line", "not a request handler class"),
        ("handlers.echo", "expected MODULE:CLASS"),
    ],
)
def test_a_handler_that_cannot_be_imported_exits_2(spec, why):
    result = run_command(spec, "--tcp", "127.0.0.1:0")
    assert result.returncode == 2
    assert f"cannot import handler {spec!r}: {why}" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [[], ["--tcp", "127.0.0.1:0", "--dispatch", "fork:0"],
                                  ["--tcp", "127.0.0.1:0", "--dispatch", "pool"],
                                  ["--tcp", "127.0.0.1:0", "--idle-timeout", "-1"]])
def test_usage_errors_exit_2(args):
    result = run_command("handlers.echo:LineEcho", *args)
    assert result.returncode == 2
    assert "error:" in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("option", ["--idle-timeout", "--request-timeout", "--write-timeout"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0"])
def test_a_non_finite_or_non_positive_timeout_exits_2(option, value):
    """--idle-timeout inf exited 1 on the first connection; nan spun a core."""
    result = run_command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", f"{option}={value}")
    assert result.returncode == 2
    assert f"expected finite seconds greater than 0 or 'none', not {value!r}" in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", ["abc", "8", "-1", "10000", "0x1ff", "", "6.6"])
def test_a_bad_socket_mode_exits_2_saying_what_is_accepted(text):
    result = run_command("handlers.echo:LineEcho", "--unix", "/nonexistent/s.sock", "--socket-mode", text)
    assert result.returncode == 2
    assert "--socket-mode" in result.stderr and "octal" in result.stderr, result.stderr
    assert f"{text!r}" in result.stderr


@pytest.mark.timeout(30)
def test_socket_mode_without_a_unix_address_exits_2():
    result = run_command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--socket-mode", "600")
    assert result.returncode == 2
    assert "--socket-mode needs a --unix or --unix-dgram address" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.timeout(30)
def test_help_mentions_every_option():
    result = run_command("--help")
    assert result.returncode == 0
    for option in ["MODULE:CLASS", "--tcp", "--udp", "--unix", "--unix-dgram", "--dispatch", "--max-connections",
                   "--max-message-size", "--idle-timeout", "--request-timeout", "--write-timeout", "--log-level",
                   "--socket-mode", "--trace", "SIGTERM", "examples:"]:
        assert option in result.stdout, option


# ------------------------------------------------- parsing, in-process


@pytest.mark.timeout(10)
def test_parse_address():
    assert parse_address("tcp", "127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address("udp", "[::1]:0") == ("::1", 0)
    assert parse_address("tcp", "localhost:80") == ("localhost", 80)
    assert parse_address("unix", "/tmp/x.sock") == "/tmp/x.sock"
    for bad in ["", "9000", ":9000", "host:", "host:port", "[::1]", "::1:80", "[1.2.3.4]:80", "h:65536"]:
        with pytest.raises(UsageFailure, match="expected HOST:PORT"):
            parse_address("tcp", bad)


@pytest.mark.timeout(10)
def test_load_handler():
    assert load_handler("handlers.echo:Upper") is Upper
    with pytest.raises(UsageFailure, match="not a request handler class"):
        load_handler("handlers.echo:__all__")


# --------------------------------------------- the echo handlers in-process


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(["tcp4", "unix-dgram"]))
@pytest.mark.parametrize("handler, payload, reply", [
    (LineEcho, b"one\n", b"one\n"),
    (ChunkEcho, b"any bytes \x00\xff", b"any bytes \x00\xff"),
    (Upper, b"shout\n", b"SHOUT\n"),
])  # fmt: skip
def test_echo_handlers_in_process(places, name, handler, payload, reply):
    server = places.make_server(name, handler)
    with ServingThread(server):
        assert client_exchange(name, server.server_address, payload, places) == reply


@pytest.mark.timeout(20)
def test_line_echo_answers_pipelined_lines_in_order(places):
    server = places.make_server("tcp4", LineEcho)
    with ServingThread(server):
        payload = b"".join(b"line %d\n" % i for i in range(200))
        assert client_exchange("tcp4", server.server_address, payload) == payload


# ------------------------------------------------- handlers written for the stdlib


@pytest.mark.timeout(30)
def test_the_stdlibs_own_http_handler_is_served(tmp_path):
    """``http.server:SimpleHTTPRequestHandler`` (a subclass of the stdlib's socketserver classes) was refused."""
    (tmp_path / "hello.txt").write_text("served by reactor\n")
    command = Command("http.server:SimpleHTTPRequestHandler", "--tcp", "127.0.0.1:0", "--dispatch", "thread:2",
                      cwd=tmp_path)
    try:
        host, port = command.serving(1)["tcp4"]
        with urllib.request.urlopen(f"http://{host}:{port}/hello.txt", timeout=EXIT_TIMEOUT) as reply:
            assert reply.status == 200 and reply.read() == b"served by reactor\n"
        assert command.stop() == 0
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_a_handler_written_with_import_socketserver_is_served(tmp_path):
    (tmp_path / "legacy.py").write_text(
        "import socketserver\n\n\n"
        "class Shout(socketserver.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        self.wfile.write(self.rfile.readline().upper())\n"
    )
    command = Command("legacy:Shout", "--tcp", "127.0.0.1:0", env={"PYTHONPATH": str(tmp_path)})
    try:
        found = command.serving(1)
        assert client_exchange("tcp4", found["tcp4"], b"quiet\n") == b"QUIET\n"
        assert command.stop() == 0
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_under_fork_a_childs_copy_of_the_table_says_it_is_the_childs():
    """The trace showed ``#1 PROCESSING -> CLOSED`` twice, the child's copy speaking as the parent."""
    lines = traced_exchange("fork:2", until="(the child ended)")
    closed = [line for line in lines if "#1 PROCESSING -> CLOSED" in line]
    children = [line for line in closed if re.search(r"\[child \d+\] #1", line)]
    assert len(closed) == 2 and len(children) == 1, closed  # the parent's line, and the child's, labelled


def traced_exchange(dispatch: str, until: str) -> list[str]:
    """Serve StreamLineEcho with ``--trace``, echo one line, wait for ``until`` in the trace, stop: the stderr lines."""
    command = Command("handlers.echo:StreamLineEcho", "--tcp", "127.0.0.1:0", "--dispatch", dispatch, "--trace")
    try:
        found = command.serving(1)
        assert client_exchange("tcp4", found["tcp4"], b"echoed\n") == b"echoed\n"
        wait_for(lambda: until in command.stderr(), what=f"{until!r} in the trace")
        assert command.stop() == 0
        return command.stderr().splitlines()
    finally:
        command.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("level, tracebacks", [("warning", 2), ("critical", 1)])
def test_a_failing_handler_shows_its_traceback_twice_unless_the_log_level_hides_one(tmp_path, level, tracebacks):
    """docs/cli.md, "When a handler raises": the log record and the stdlib's block; --log-level critical keeps one."""
    (tmp_path / "fragile.py").write_text(
        "import reactor\n\n\n"
        "class Fragile(reactor.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        raise ValueError(self.rfile.readline())\n"
    )
    command = Command("fragile:Fragile", "--tcp", "127.0.0.1:0", "--log-level", level,
                      env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    try:
        found = command.serving(1)
        client_exchange("tcp4", found["tcp4"], b"boom\n")
        wait_for(lambda: command.stderr().count("Traceback") >= tracebacks and "-" * 40 in command.stderr())
        assert command.stop() == 0
        err = command.stderr()
        assert err.count("Traceback (most recent call last)") == tracebacks, err
        assert "Exception occurred during processing of request from" in err  # the stdlib's block, always
        assert ("ERROR reactor: exception while processing a request" in err) == (level == "warning"), err
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_the_trace_names_worker_threads_and_marks_the_stop():
    lines = traced_exchange("thread:2", until="PROCESSING -> CLOSED")
    closed = [line for line in lines if "#1 PROCESSING -> CLOSED" in line]
    assert closed and re.match(r"trace: \[reactor worker \d+\] tcp4 ", closed[0]), closed  # the worker's move
    traced = [line for line in lines if line.startswith("trace: ")]
    assert traced[-1] == "trace: the loop stops: stop() was asked for", traced[-3:]  # whenever SIGTERM came


@pytest.mark.timeout(30)
def test_the_trace_calls_an_unbound_unix_client_an_unnamed_unix_socket(places):
    """A Unix stream peer showed as ``from ''``."""
    path = os.path.join(places.dir, "named.sock")
    command = Command("handlers.echo:LineEcho", "--unix", path, "--trace")
    try:
        found = command.serving(1)
        assert client_exchange("unix", found["unix"], b"who\n") == b"who\n"
        wait_for(lambda: "CLOSED" in command.stderr(), what="the connection is over")
        assert command.stop() == 0
        err = command.stderr()
        assert "#1 ACCEPTED: new unix request from an unnamed Unix socket" in err, err
        assert "from ''" not in err
    finally:
        command.close()
