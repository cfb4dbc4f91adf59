"""``python -m reactor serve --proxy-protocol [v1|v2] --proxy-from CIDR,... --proxy-timeout S``.

The real command in a subprocess (cli_support.Command), serving the
handlers of tests/proxy_handlers.py, talked to over loopback TCP and a
Unix socket by a client that plays the proxy: it writes a PROXY header,
then its line.  The serving lines, the trace, who is trusted, and every
usage error (exit 2).  HAProxy itself is in test_haproxy.py.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

from cli_support import EXIT_TIMEOUT, ROOT, Command
from conftest import CLIENT_TIMEOUT, read_all, wait_for

#: The command finds tests/proxy_handlers.py on its path (the project itself stays first: ``-m`` puts it there).
ENV = {"PYTHONPATH": str(ROOT / "tests")}
V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 41000 443\r\n"
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"


def ask(address: Any, payload: bytes) -> Any:
    """Send ``payload`` and half-close; the one reply line, parsed, or None if the server closed."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = read_all(sock)
        except (BrokenPipeError, ConnectionResetError):
            return None
        return ast.literal_eval(reply.decode()) if reply else None


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reactor", "serve", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=EXIT_TIMEOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", ["WhoFramed", "WhoClassic"])
def test_every_stream_server_reads_the_header_and_the_trace_shows_the_real_client(places, handler):
    unix = places.path()
    command = Command(f"proxy_handlers:{handler}", "--tcp", "127.0.0.1:0", "--unix", unix, "--udp", "127.0.0.1:0",
                      "--proxy-protocol", "--trace", env=ENV)  # fmt: skip
    try:
        found = command.serving(3)
        pid = command.proc.pid
        assert ask(found["tcp4"], V1 + b"over tcp\n")[:2] == (pid, ("203.0.113.7", 41000))
        assert ask(found["unix"], V1 + b"over unix\n")[:2] == (pid, ("203.0.113.7", 41000))
        _, client, peer, line = ask(found["tcp4"], V2_LOCAL + b"health\n")  # LOCAL: the peer is the client
        assert client == peer and client[0] == "127.0.0.1" and line == b"health"
        wait_for(lambda: command.stderr().count(" -> CLOSED") == 3, what="three connections over")
        assert command.stop() == 0, command.stderr()
        err = command.stderr()
    finally:
        command.close()
    tcp = f"tcp4 127.0.0.1:{found['tcp4'][1]}"
    assert f"trace: {tcp} #1 ACCEPTED -> PROXYING: proxy (a PROXY header (v1 or v2) is expected)\n" in err, err
    assert f"trace: {tcp} #1 PROXYING -> ACCEPTED: proxied (v1 TCP4: client ('203.0.113.7', 41000) via " in err, err
    assert f"trace: unix {unix} #1 PROXYING -> ACCEPTED: proxied (v1 TCP4: client ('203.0.113.7', 41000) via ''" in err
    assert "Traceback" not in err


@pytest.mark.timeout(30)
def test_the_serving_lines_say_which_servers_read_a_header(places):
    unix = places.path()
    command = Command("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--unix", unix,
                      "--proxy-protocol", "v1", env=ENV)  # fmt: skip
    try:
        lines = [command.proc.stdout.readline() for _ in range(3)]
        assert command.stop(signal.SIGINT) == 0, command.stderr()
    finally:
        command.close()
    assert lines[0].endswith("(WhoFramed, inline, PROXY)\n") and lines[2].endswith("(WhoFramed, inline, PROXY)\n")
    assert lines[1].startswith("serving udp4 ") and lines[1].endswith("(WhoFramed, inline)\n"), lines


@pytest.mark.timeout(30)
def test_proxy_from_proxy_timeout_and_one_version(places):
    unix = places.path()
    command = Command("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", "--unix", unix, "--proxy-protocol", "v2",
                      "--proxy-from", "10.0.0.0/8,192.168.0.0/16", "--proxy-timeout", "0.3", "--log-level", "DEBUG",
                      env=ENV)  # fmt: skip
    try:
        found = command.serving(2)
        assert ask(found["tcp4"], V2_LOCAL + b"from loopback\n") is None  # not in --proxy-from: closed
        assert ask(found["unix"], V2_LOCAL + b"over unix\n")[3] == b"over unix"  # a Unix peer always is
        assert ask(found["unix"], V1 + b"v1\n") is None  # v2 only
        with socket.socket(socket.AF_UNIX) as silent:
            silent.settimeout(CLIENT_TIMEOUT)
            silent.connect(unix)
            assert silent.recv(10) == b""  # closed after --proxy-timeout
        assert command.stop() == 0, command.stderr()
        err = command.stderr()
    finally:
        command.close()
    assert "not in proxy_from: a PROXY header is not accepted from it; closed" in err, err
    assert "invalid PROXY header: a v1 header, and only v2 is accepted; closed" in err, err
    assert "no whole PROXY header within proxy_timeout (0.3 s); closed" in err, err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args, why", [
    (["--tcp", "127.0.0.1:0", "--proxy-from", "10.0.0.0/8"], "--proxy-from needs --proxy-protocol"),
    (["--tcp", "127.0.0.1:0", "--proxy-timeout", "3"], "--proxy-timeout needs --proxy-protocol"),
    (["--udp", "127.0.0.1:0", "--proxy-protocol"], "--proxy-protocol needs a --tcp or --unix address"),
    (["--tcp", "127.0.0.1:0", "--proxy-protocol", "--proxy-from", "10.0.0.0/33"], "--proxy-from: '10.0.0.0/33' is "),
    (["--tcp", "127.0.0.1:0", "--proxy-protocol", "--proxy-from", "10.0.0.1/8"], "has host bits set"),
])  # fmt: skip
def test_a_proxy_option_that_cannot_apply_exits_2_with_one_line(args, why):
    result = run_command("proxy_handlers:WhoFramed", *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and why in result.stderr, result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args, why", [
    (["--proxy-protocol", "v3"], "expected v1 or v2 (or no value: both), not 'v3'"),
    (["--proxy-protocol", "--proxy-timeout", "0"], "expected finite seconds greater than 0"),
    (["--proxy-protocol", "--proxy-timeout", "nan"], "expected finite seconds greater than 0"),
])  # fmt: skip
def test_a_bad_proxy_value_is_a_usage_error(args, why):
    result = run_command("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", *args)
    assert result.returncode == 2 and why in result.stderr, result.stderr


@pytest.mark.timeout(30)
def test_help_mentions_the_proxy_options():
    result = run_command("--help")
    assert result.returncode == 0
    for option in ("--proxy-protocol", "--proxy-from", "--proxy-timeout", "127.0.0.0/8,::1/128"):
        assert option in result.stdout, option
