"""Real HAProxy (Debian's ``haproxy``) in front of ``python -m reactor serve --proxy-protocol``.

Each test writes a configuration to a temporary directory, runs ``haproxy
-f CFG -db`` (in the foreground) on loopback ports picked free, and talks
to it with plain clients bound to 127.0.0.2 (or ::1), so the address the
proxy connects from is never the client's own:

* ``send-proxy`` (v1) and ``send-proxy-v2`` to a TCP and to a Unix stream
  backend, for a classic and a framed handler: each sees the client's
  real address and port, and its socket's peer is HAProxy;
* two ``serve`` instances (two ports standing for two machines) balanced
  with health checks (``check inter 100ms fall 1 rise 1``, which send the
  PROXY header too: v2's LOCAL command): one is killed mid-run, and once
  HAProxy has marked it down (read from its stats socket) every request
  is served by the other (``retries``, ``option redispatch``).

Skipped, saying so, where haproxy is not installed (``make test``
installs it from Debian's package).
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

import pytest

from cli_support import ROOT, Command
from conftest import CLIENT_TIMEOUT, HAVE_IPV6, read_all, wait_for

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (make test installs it from Debian's haproxy package)"
)
ENV = {"PYTHONPATH": str(ROOT / "tests")}  # the command finds tests/proxy_handlers.py

DEFAULTS = """\
global
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    timeout connect 200ms
    timeout client 5s
    timeout server 5s
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on now (HAProxy binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class HAProxy:
    """``haproxy -f CFG -db`` with the given ``listen`` sections; ``stat(proxy, server)`` reads its stats socket."""

    def __init__(self, where: str, sections: str, whole: str | None = None) -> None:
        """``sections`` after DEFAULTS; or ``whole``, a configuration of its own whose stats socket
        is ``{stats}`` (filled in)."""
        self.stats = os.path.join(where, "stats.sock")
        self.config = os.path.join(where, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write((DEFAULTS + sections if whole is None else whole).format(stats=self.stats))
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.config, "-db"], stdin=subprocess.DEVNULL,
                                     stdout=self.errors, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for(lambda: os.path.exists(self.stats) or self.proc.poll() is not None, what="haproxy started")
            assert self.proc.poll() is None, f"haproxy exited: {self.output()}"
        except BaseException:
            self.close()
            raise

    def stat(self, proxy: str, server: str) -> str:
        """The server's status as HAProxy's ``show stat`` says it: ``UP``, ``DOWN``, ``UP 1/2`` ..."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(self.stats)
            sock.sendall(b"show stat\n")
            lines = read_all(sock).decode().splitlines()
        fields = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(fields, line.split(",")))
            if row.get("pxname") == proxy and row.get("svname") == server:
                return row["status"]
        raise AssertionError(f"no {proxy}/{server} in {lines}")

    def output(self) -> str:
        self.errors.seek(0)
        return self.errors.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errors.close()


def ask(address: Any, payload: bytes, source: str = "127.0.0.2") -> tuple[Any, Any]:
    """Connect from ``source``, send ``payload``, half-close, read to EOF: (the reply lines parsed, our address)."""
    with socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.bind((source, 0))
        sock.connect(address)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        replies = [ast.literal_eval(line) for line in read_all(sock).decode().splitlines()]
        return replies, sock.getsockname()


def serve(*args: str) -> tuple[Command, dict[str, Any]]:
    command = Command(*args, env=ENV)
    try:
        return command, command.serving(sum(arg in ("--tcp", "--unix") for arg in args))
    except BaseException:
        command.close()
        raise


@pytest.fixture
def workdir() -> Iterator[str]:
    where = tempfile.mkdtemp(prefix="rx-hap-")  # short: it holds Unix socket paths
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.mark.timeout(60)
def test_send_proxy_v1_and_v2_to_tcp_and_unix_backends_classic_and_framed(workdir):
    commands, backends = [], {}
    try:
        for handler in ("WhoClassic", "WhoFramed"):
            unix = os.path.join(workdir, f"{handler}.sock")
            command, found = serve(f"proxy_handlers:{handler}", "--tcp", "127.0.0.1:0", "--unix", unix,
                                   "--proxy-protocol")  # fmt: skip
            commands.append(command)
            backends[(handler, "tcp")] = "{}:{}".format(*found["tcp4"])
            backends[(handler, "unix")] = unix
        sections, fronts = "", {}
        for (handler, kind), backend in backends.items():
            for version, option in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
                hosts = ["127.0.0.1", "::1"] if HAVE_IPV6 else ["127.0.0.1"]
                ports = {host: free_port(host) for host in hosts}
                binds = "".join(f"    bind {'[::1]' if ':' in h else h}:{p}\n" for h, p in ports.items())
                sections += f"listen {handler}-{kind}-{version}\n{binds}    server s {backend} {option}\n"
                fronts[(handler, kind, version)] = ports
        haproxy = HAProxy(workdir, sections)
        try:
            for (handler, kind, version), ports in fronts.items():
                pid = commands[0 if handler == "WhoClassic" else 1].proc.pid
                for host, port in ports.items():
                    source = "::1" if ":" in host else "127.0.0.2"
                    replies, own = ask((host, port), b"first\nsecond\n", source)
                    where = f"{handler} {kind} {version} from {own}"
                    assert [r[3] for r in replies] == [b"first", b"second"], where
                    served_by, client, peer, _ = replies[0]
                    assert served_by == pid and client == own, where  # the real address and port
                    if kind == "unix":
                        assert peer == "", where  # HAProxy's unnamed Unix socket
                    else:
                        assert peer[0] == "127.0.0.1" and peer[1] != own[1], where  # HAProxy's own connection
        finally:
            haproxy.close()
        for command in commands:
            assert command.stop() == 0, command.stderr()
            assert "Traceback" not in command.stderr(), command.stderr()
    finally:
        for command in commands:
            command.close()


@pytest.mark.timeout(60)
def test_balanced_over_two_instances_with_health_checks_one_killed_the_other_serves_everyone(workdir):
    a, found_a = serve("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", "--proxy-protocol", "v2")
    try:
        b, found_b = serve("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", "--proxy-protocol", "v2", "--trace")
        try:
            _balance(workdir, a, found_a["tcp4"], b, found_b["tcp4"])
        finally:
            b.close()
    finally:
        a.close()


def _balance(workdir: str, a: Command, a_address: Any, b: Command, b_address: Any) -> None:
    port = free_port()
    check = "send-proxy-v2 check inter 100ms fall 1 rise 1"
    haproxy = HAProxy(workdir, f"""\
listen lb
    bind 127.0.0.1:{port}
    balance roundrobin
    retries 3
    option redispatch
    server a {a_address[0]}:{a_address[1]} {check}
    server b {b_address[0]}:{b_address[1]} {check}
""")  # fmt: skip
    try:
        wait_for(lambda: haproxy.stat("lb", "a") == haproxy.stat("lb", "b") == "UP", what="both servers UP")
        served = set()
        for n in range(40):  # round robin: both answer, each sees the real client
            replies, own = ask(("127.0.0.1", port), f"before {n}\n".encode())
            served.add(replies[0][0])
            assert replies[0][1] == own and replies[0][3] == f"before {n}".encode()
            if served == {a.proc.pid, b.proc.pid}:
                break
        assert served == {a.proc.pid, b.proc.pid}, served

        a.proc.kill()  # mid-run, without a word
        a.proc.wait(CLIENT_TIMEOUT)
        failed_meanwhile, asked = 0, 0
        deadline = time.monotonic() + 10
        while haproxy.stat("lb", "a") != "DOWN":  # keep asking until HAProxy has noticed (fall 1, inter 100ms)
            assert time.monotonic() < deadline and asked < 5000, "haproxy never marked the killed server DOWN"
            try:
                asked += 1
                ask(("127.0.0.1", port), b"meanwhile\n")
            except (OSError, SyntaxError, ValueError):
                failed_meanwhile += 1  # informational: redispatch usually saves these too
        for n in range(30):  # once it is DOWN: no failure at all, all on b
            replies, own = ask(("127.0.0.1", port), f"after {n}\n".encode())
            assert replies == [(b.proc.pid, own, replies[0][2], f"after {n}".encode())], replies
        assert haproxy.stat("lb", "b") == "UP"
        assert b.stop(signal.SIGTERM) == 0, b.stderr()
        assert "Traceback" not in b.stderr(), b.stderr()
        assert "PROXYING -> ACCEPTED: proxied (v2 LOCAL UNKNOWN: the peer (" in b.stderr()  # a health check
        print(f"before DOWN: {failed_meanwhile} of {asked} requests failed")
    finally:
        haproxy.close()


@pytest.mark.timeout(60)
def test_the_example_configuration_balances_two_serve_instances(workdir):
    """examples/deploy/haproxy.cfg as shipped, but for its addresses: two
    ``serve --proxy-protocol v2`` instances behind it, both UP by its own
    health checks, each client seen with its real address."""
    config = (ROOT / "examples" / "deploy" / "haproxy.cfg").read_text()
    assert subprocess.run([HAPROXY, "-c", "-f", str(ROOT / "examples" / "deploy" / "haproxy.cfg")],
                          capture_output=True, timeout=30).returncode == 0  # fmt: skip
    a, found_a = serve("proxy_handlers:WhoFramed", "--tcp", "127.0.0.1:0", "--proxy-protocol", "v2")
    try:
        b, found_b = serve("proxy_handlers:WhoClassic", "--tcp", "127.0.0.1:0", "--proxy-protocol", "v2")
        try:
            port = free_port()
            config = config.replace("{", "{{").replace("}", "}}")  # (none today; the stats path is filled in)
            for shipped, ours in (("/run/haproxy/reactor.sock", "{stats}"), ("bind :9000", f"bind 127.0.0.1:{port}"),
                                  ("10.0.0.11:9000", "{}:{}".format(*found_a["tcp4"])),
                                  ("10.0.0.12:9000", "{}:{}".format(*found_b["tcp4"])),
                                  ("check inter 2s", "check inter 100ms")):  # fmt: skip
                assert shipped in config, shipped
                config = config.replace(shipped, ours)
            haproxy = HAProxy(workdir, "", whole=config)
            try:
                wait_for(lambda: haproxy.stat("reactors", "machine1") == haproxy.stat("reactors", "machine2") == "UP",
                         what="both backends UP by the example's health checks")  # fmt: skip
                served = set()
                for n in range(20):  # leastconn, one at a time: both get clients
                    replies, own = ask(("127.0.0.1", port), f"hello {n}\n".encode())
                    served.add(replies[0][0])
                    assert replies[0][1] == own and replies[0][3] == f"hello {n}".encode(), replies
                assert served == {a.proc.pid, b.proc.pid}, served
            finally:
                haproxy.close()
            for command in (a, b):
                assert command.stop() == 0, command.stderr()
        finally:
            b.close()
    finally:
        a.close()
