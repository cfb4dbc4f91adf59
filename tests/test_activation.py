"""Servers on sockets made elsewhere: ``from_socket`` for every family, ``reactor.activation``, and
``python -m reactor serve`` started by ``systemd-socket-activate`` (Debian's systemd package).

``listen_fds()`` reads descriptors 3, 4, ...: those of a fresh subprocess, which puts sockets
(or a file, for the nonsense cases) there itself and sets ``LISTEN_PID`` to its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from typing import Any

import pytest
from cli_support import ROOT, Command, children
from conftest import CLIENT_TIMEOUT, FAMILIES, ServingThread, client_exchange, family_params, wait_for

import reactor
from handlers.echo import LineEcho
from reactor.activation import server_class_for, server_on

# ------------------------------------------------------------ from_socket


def made_socket(name: str, places: Any) -> socket.socket:
    """A bound socket of family ``name`` (listening if it is a stream one), made the way a supervisor would."""
    _, family, kind = FAMILIES[name]
    sock = socket.socket(family, kind)
    sock.bind(places.server_address(name))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6", "udp4", "udp6", "unix", "unix-dgram"]))
def test_a_server_on_a_given_socket_serves_it_and_removes_no_file(places, name):
    sock = made_socket(name, places)
    where = sock.getsockname()
    assert server_class_for(sock) is FAMILIES[name][0]
    server = server_on(sock, LineEcho, dispatch=reactor.ThreadPool(2))
    assert type(server) is FAMILIES[name][0] and server.socket is sock
    assert server.server_address == where and server.address_family == sock.family
    with ServingThread(server):
        assert client_exchange(name, where, b"hello\n", places) == b"hello\n"
    assert sock.fileno() == -1  # the server took it: server_close() closed it
    if isinstance(where, str):
        assert os.path.exists(where), "a server made on a given socket removed a file it did not create"
        os.unlink(where)


@pytest.mark.timeout(10)
def test_from_socket_refuses_a_socket_it_cannot_serve(places):
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as seqpacket:
        with pytest.raises(reactor.UsageError, match="not bound"):
            reactor.TCPServer.from_socket(tcp, LineEcho)
        tcp.bind(("127.0.0.1", 0))
        with pytest.raises(reactor.UsageError, match="not listening"):
            reactor.TCPServer.from_socket(tcp, LineEcho)
        tcp.listen()
        for cls in (reactor.UDPServer, reactor.UnixStreamServer):
            with pytest.raises(reactor.UsageError, match="server_class_for"):
                cls.from_socket(tcp, LineEcho)
        assert tcp.fileno() != -1  # a refused socket is left as it was
        with pytest.raises(reactor.UsageError, match="no server class serves a AF_UNIX SOCK_SEQPACKET"):
            server_class_for(seqpacket)
    with pytest.raises(reactor.UsageError, match="expected an open socket"):
        reactor.TCPServer.from_socket(tcp, LineEcho)


# ------------------------------------------------------------ listen_fds()

# Puts sockets (or, with "file", a regular file) at descriptors 3, 4, ... and calls listen_fds().
CHILD = textwrap.dedent("""
    import json, os, socket, sys
    from reactor.activation import listen_fds
    from reactor.errors import UsageError
    kinds, env = sys.argv[1].split(","), json.loads(sys.argv[2])
    for fd, kind in enumerate(kinds, 3):
        if kind == "file":
            made = os.open(os.devnull, os.O_RDONLY)
        else:
            family, type_ = {"tcp": (socket.AF_INET, socket.SOCK_STREAM), "udp": (socket.AF_INET, socket.SOCK_DGRAM),
                             "unix": (socket.AF_UNIX, socket.SOCK_STREAM)}[kind]
            sock = socket.socket(family, type_)
            sock.bind(("127.0.0.1", 0) if family != socket.AF_UNIX else "")
            made = sock.detach()
        if made != fd:
            os.dup2(made, fd)
            os.close(made)
        os.set_inheritable(fd, True)  # as a service manager passes them
    os.environ.update({k: (str(os.getpid()) if v == "ME" else v) for k, v in env.items()})
    try:
        passed = listen_fds()
    except UsageError as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(0)
    print(json.dumps({
        "passed": [[p.socket.fileno(), p.socket.family.name, p.socket.type.name, p.name] for p in passed],
        "inheritable": [os.get_inheritable(p.socket.fileno()) for p in passed],
        "left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }))
""")


def activated(kinds: str, **env: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", CHILD, kinds, json.dumps(env)], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(30)
def test_listen_fds_reads_the_passed_sockets_and_unsets_the_variables():
    found = activated("tcp,udp,unix", LISTEN_PID="ME", LISTEN_FDS="3", LISTEN_FDNAMES="web:dns:local")
    assert found["passed"] == [[3, "AF_INET", "SOCK_STREAM", "web"], [4, "AF_INET", "SOCK_DGRAM", "dns"],
                               [5, "AF_UNIX", "SOCK_STREAM", "local"]]  # fmt: skip
    assert found["inheritable"] == [False, False, False]  # close-on-exec: a program it starts gets none
    assert found["left"] == []
    unnamed = activated("tcp", LISTEN_PID="ME", LISTEN_FDS="1")
    assert unnamed["passed"] == [[3, "AF_INET", "SOCK_STREAM", ""]] and unnamed["left"] == []


@pytest.mark.timeout(30)
def test_listen_fds_ignores_variables_meant_for_another_process():
    assert activated("tcp", LISTEN_PID="1", LISTEN_FDS="1") == {"passed": [], "inheritable": [], "left": []}
    assert activated("tcp", LISTEN_FDS="1") == {"passed": [], "inheritable": [], "left": []}  # no LISTEN_PID


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kinds, env, error", [
    ("tcp", {"LISTEN_PID": "ME", "LISTEN_FDS": "one"}, "LISTEN_FDS must be a whole number, not 'one'"),
    ("tcp", {"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID must be a whole number, not 'me'"),
    ("tcp,file", {"LISTEN_PID": "ME", "LISTEN_FDS": "2"}, "LISTEN_FDS=2, but descriptor 4 is not a socket"),
    ("tcp", {"LISTEN_PID": "ME", "LISTEN_FDS": "2"}, "LISTEN_FDS=2, but descriptor 4 is not open"),
    ("tcp", {"LISTEN_PID": "ME", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "LISTEN_FDNAMES names 2 socket"),
])  # fmt: skip
def test_listen_fds_says_what_is_wrong(kinds, env, error):
    assert error in activated(kinds, **env)["error"]


# ------------------------------------------------- systemd-socket-activate

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None, reason="systemd-socket-activate not installed (Debian's systemd package; make tools)"
)

PID_HANDLER = """\
import os
from handlers import MessageHandler
from handlers.framing import Line

class Pid(MessageHandler):
    '''Replies with the pid of the process that served it, and what LISTEN_FDS is there.'''
    framing = Line()

    def handle(self):
        self.wfile.write(f"{os.getpid()} {os.environ.get('LISTEN_FDS', '-')}\\n".encode())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Activated(Command):
    """``systemd-socket-activate -l 127.0.0.1:PORT -l PATH python -m reactor serve pid:Pid ARGS``.

    It listens, and execs the command (same pid) at the first connection.
    It passes no environment of its own, hence ``-E PYTHONPATH``.
    """

    def __init__(self, path: str, modules: str, *args: str) -> None:  # Command's methods, the tool's process
        self.path = path
        for _ in range(3):  # a port picked free can be taken (or in TIME_WAIT) before the tool binds it
            self.port = free_port()
            tool = [SOCKET_ACTIVATE, "-E", f"PYTHONPATH={modules}", "-l", f"127.0.0.1:{self.port}", "-l", path,
                    "--fdname=web:local", sys.executable, "-m", "reactor", "serve", "pid:Pid", *args]  # fmt: skip
            self.errors = tempfile.TemporaryFile(mode="w+")
            self.proc = subprocess.Popen(tool, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.errors, text=True)
            wait_for(lambda: f"Listening on {path}" in self.stderr() or self.proc.poll() is not None, 10,
                     "systemd-socket-activate listening")  # fmt: skip
            if self.proc.poll() is None:
                return
            assert "Address already in use" in self.stderr(), self.stderr()
            self.close()
            if os.path.exists(path):
                os.unlink(path)
        pytest.fail("no free port for systemd-socket-activate in 3 tries")

    def ask(self, address: Any) -> list[str]:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(address)
            sock.sendall(b"who?\n")
            with sock.makefile("rb") as reader:
                return reader.readline().decode().split()


@pytest.mark.timeout(40)
@needs_socket_activate
@pytest.mark.parametrize("workers", [[], ["--workers", "2"], ["--workers", "2", "--dashboard", "127.0.0.1:0"]],
                         ids=["one-process", "workers", "workers-dashboard"])  # fmt: skip
def test_serve_started_by_systemd_socket_activate_serves_the_passed_sockets(places, workers):
    with open(os.path.join(places.dir, "pid.py"), "w") as f:
        f.write(PID_HANDLER)
    path = places.path("activated")
    command = Activated(path, places.dir, "--log-level", "INFO", *workers)
    try:
        pid, listen = command.ask(("127.0.0.1", command.port))  # the first connection: the tool execs the command
        served = command.serving(2)
        assert served == {"tcp4": ("127.0.0.1", command.port), "unix": path}
        assert listen == "-"  # read and removed from the environment: nothing it starts takes the sockets
        if "--dashboard" in workers:  # the supervisor's dashboard shows both workers' passed sockets
            line = command.proc.stdout.readline()
            assert line.startswith("dashboard http://127.0.0.1:"), line
            url = line.split()[1]

            def shown() -> set[tuple[int, str]]:
                with urllib.request.urlopen(url + "table.json", timeout=CLIENT_TIMEOUT) as answer:
                    snapshot = json.load(answer)
                return {(s["worker"], s["table"]) for s in snapshot["servers"] if "worker" in s}

            tables = {f"tcp4 127.0.0.1:{command.port}", f"unix {path}"}
            wait_for(lambda: shown() == {(w, t) for w in (1, 2) for t in tables}, 5, "both workers' reports")
        assert command.ask(path)[1] == "-"
        expected = {command.proc.pid} if not workers else set()
        if workers:
            wait_for(lambda: len(children(command.proc.pid)) == 2, 5, "two workers")
            expected = set(children(command.proc.pid))
        assert {int(pid)} <= expected
        assert command.stop(signal.SIGTERM) == 0, command.stderr()
        assert os.path.exists(path), "the socket file is the tool's: the server must not remove it"
        for worker in expected - {command.proc.pid}:
            assert not os.path.exists(f"/proc/{worker}"), f"worker {worker} left running"
    finally:
        command.close()
        if os.path.exists(path):
            os.unlink(path)




@pytest.mark.timeout(20)
def test_serve_with_no_address_and_no_activation_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run([sys.executable, "-m", "reactor", "serve", "handlers.echo:LineEcho"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=15)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().endswith("(or start the command by socket activation)")
    assert result.stderr.count("\n") == 1
