"""examples/behind_haproxy.py, run as a separate process, the two ways of tests/test_examples.py.

``--self-test`` (with HAProxy in front when the command is installed, and
with ``--no-haproxy``), and served until SIGTERM: a client through the
real HAProxy sees its own address and port in the reply, a client that
writes the header by hand is believed, one that bypasses the proxy
without a header is closed.
"""

from __future__ import annotations

import errno
import shutil
import socket
from typing import Any

import pytest

from conftest import CLIENT_TIMEOUT, read_all
from examples_support import served, self_test
from test_examples import check_lines

needs_haproxy = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (make test installs it from Debian's package)"
)
BY_HAND = b"PROXY TCP4 203.0.113.7 192.0.2.1 41000 443\r\n"


def ask(address: Any, payload: bytes) -> tuple[bytes, Any]:
    """Send ``payload``, half-close, read to EOF (a reset counts as the end): (the reply, our address)."""
    with socket.create_connection(address[:2], timeout=CLIENT_TIMEOUT) as sock:
        own = sock.getsockname()
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock), own
        except OSError as exc:  # closed before we were done: EPIPE, ECONNRESET, or ENOTCONN from shutdown()
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
            return b"", own


@pytest.mark.timeout(90)
@pytest.mark.parametrize("args", [(), ("--no-haproxy",)], ids=["haproxy-if-installed", "no-haproxy"])
def test_behind_haproxy_self_test(args):
    result = self_test("behind_haproxy.py", *args)
    expected = ["direct   reply b''  ok", "counted  proxy_invalid 1  ok"]
    check_lines(result, expected)
    assert "header   reply b\"you are 203.0.113.7:41000, via 127.0.0.1:" in result.stdout, result.stdout
    if args or shutil.which("haproxy") is None:
        assert "haproxy  not " in result.stdout and "skipped" in result.stdout, result.stdout
    else:
        assert "haproxy  reply b\"you are 127.0.0.1:" in result.stdout, result.stdout


@needs_haproxy
@pytest.mark.timeout(90)
def test_behind_haproxy_served():
    with served("behind_haproxy.py") as run:
        front, backend = run.addresses["haproxy"], run.addresses["backend"]
        reply, (host, port) = ask(front, b"hello\nagain\n")
        lines = reply.decode().splitlines()
        assert len(lines) == 2 and all(line.startswith(f"you are {host}:{port}, via 127.0.0.1:") for line in lines), reply
        assert lines[1].endswith("you said 'again'"), reply
        reply, _ = ask(backend, BY_HAND + b"hi\n")
        assert reply.startswith(b"you are 203.0.113.7:41000, via 127.0.0.1:"), reply
        assert ask(backend, b"no header\n")[0] == b""


@pytest.mark.timeout(90)
def test_behind_haproxy_served_alone():
    with served("behind_haproxy.py", "--no-haproxy") as run:
        assert "haproxy" not in run.addresses
        reply, own = ask(run.addresses["backend"], BY_HAND + b"hi\n")
        assert reply == b"you are 203.0.113.7:41000, via 127.0.0.1:%d; you said 'hi'\n" % own[1], reply
