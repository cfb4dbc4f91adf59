"""socat, an independent client, against ``python -m reactor serve``.

The command serves ``handlers.echo:LineEcho`` or ``handlers.echo:Upper`` on
TCP, UDP, Unix stream and Unix datagram addresses, and TCP and UDP on
``[::1]`` where there is an IPv6 loopback, all at once in one command, with
each dispatch strategy.  For every address a
``socat`` process sends bytes from its stdin and prints what comes back;
the reply is checked byte for byte.  Then SIGTERM: exit 0, socket files
gone.

socat's stdin stays open until the whole reply has come back, so no
timing guess decides the result: closing stdin then makes socat shut down
its side of a stream (the server answers EOF by closing, and socat exits)
or, for a datagram, wait ``-t`` seconds for more and exit.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time

import pytest

from conftest import HAVE_IPV6
from test_cli import Command, sockets_in

SOCAT = shutil.which("socat")
pytestmark = pytest.mark.skipif(SOCAT is None, reason="socat is not installed (Debian package socat)")

TIMEOUT = 10.0
STREAM_PAYLOAD = b"hello, socat\nsecond line\n\x00\x01binary \xff\xfe\n"
DGRAM_PAYLOAD = b"one datagram, one line\n"
REPLY = {"LineEcho": lambda data: data, "Upper": lambda data: data.upper()}


def socat(address: str, payload: bytes, expected: bytes) -> None:
    """Run ``socat - ADDRESS`` with ``payload`` on stdin; its stdout must be exactly ``expected``."""
    proc = subprocess.Popen(
        [SOCAT, "-t", "0.2", "-", address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    got = b""
    try:
        proc.stdin.write(payload)  # one write: one datagram for the datagram addresses
        proc.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if len(got) >= len(expected) and not proc.stdin.closed:
                    proc.stdin.close()  # the whole reply is back: now socat may finish
                if sel.select(deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break  # socat is done
                    got += chunk
        if not proc.stdin.closed:
            proc.stdin.close()  # a short reply: let socat end, and the assert below say what came
        proc.wait(TIMEOUT)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    assert (got, proc.returncode, err) == (expected, 0, b""), address


def check_each_address(found: dict, handler: str, client_path: str) -> None:
    reply = REPLY[handler]
    for family, address in found.items():
        if family in ("tcp4", "tcp6", "unix"):
            payload = STREAM_PAYLOAD
            target = {"tcp4": "TCP:{0}:{1}", "tcp6": "TCP6:[{0}]:{1}", "unix": "UNIX-CONNECT:{}"}[family]
        else:
            payload = DGRAM_PAYLOAD
            target = {"udp4": "UDP:{0}:{1}", "udp6": "UDP6:[{0}]:{1}", "unix-dgram": "UNIX-SENDTO:{}"}[family]
            if family == "unix-dgram":
                target += f",bind={client_path}"  # an address for the reply to come back to
        where = target.format(*address) if isinstance(address, tuple) else target.format(address)
        socat(where, payload, reply(payload))
        assert not os.path.exists(client_path)  # socat removes the socket file it bound


@pytest.mark.timeout(40)
@pytest.mark.parametrize("dispatch", ["inline", "thread:4", "fork:2"])
@pytest.mark.parametrize("handler", ["LineEcho", "Upper"])
def test_socat_on_every_family_at_once(places, handler, dispatch):
    unix, dgram = os.path.join(places.dir, "s.sock"), os.path.join(places.dir, "d.sock")
    args = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--unix", unix, "--unix-dgram", dgram]
    if HAVE_IPV6:
        args += ["--tcp", "[::1]:0", "--udp", "[::1]:0"]  # socat's TCP6 and UDP6
    command = Command(f"handlers.echo:{handler}", *args, "--dispatch", dispatch)
    try:
        found = command.serving(len(args) // 2)
        families = {"tcp4", "udp4", "unix", "unix-dgram"} | ({"tcp6", "udp6"} if HAVE_IPV6 else set())
        assert set(found) == families
        assert all(found[f][0] == "::1" for f in families if f.endswith("6"))
        check_each_address(found, handler, os.path.join(places.dir, "socat.sock"))
        assert sorted(sockets_in(places.dir)) == ["d.sock", "s.sock"]
        assert command.stop(signal.SIGTERM) == 0, command.stderr()
        assert sockets_in(places.dir) == []
        assert "Traceback" not in command.stderr()
    finally:
        command.close()
