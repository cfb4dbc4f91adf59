"""Unix servers and their socket files: who may take a path, who may remove it, its mode.

The rules under test (docs/servers.md, "Unix socket files"):
* a path another live process holds is never unlinked nor taken over,
  whether it holds our lock beside the socket or is a foreign socket
  (bound, listening, or listening with a full backlog), and the check
  never blocks and never connects to a live server;
* a socket file whose owner died is reclaimed;
* only the process that bound the file removes it (not a forked copy);
* ``socket_mode`` is the file's mode before anyone can use it.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, ServingThread, client_exchange, connect, read_all

import reactor
from handlers.echo import DatagramEcho, StreamLineEcho

ROOT = Path(__file__).resolve().parent.parent.parent
UNIX = ["unix", "unix-dgram"]


def handler_for(name: str) -> type:
    return StreamLineEcho if name == "unix" else DatagramEcho


def lock_of(path: str) -> str:
    return path + ".lock"


def identity(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def file_mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_in_use(err: pytest.ExceptionInfo) -> None:
    assert err.value.errno == errno.EADDRINUSE, err.value
    assert "in use" in str(err.value), err.value


@pytest.fixture
def umask_022():
    """A known umask for the test (it is process-wide: restored after)."""
    before = os.umask(0o022)
    yield
    os.umask(before)


# ------------------------------------------------- a path someone else holds


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", UNIX)
def test_a_second_server_on_the_path_fails_and_the_first_keeps_its_clients(name, places):
    cls = FAMILIES[name][0]
    path = places.path()
    with ServingThread(cls(path, handler_for(name))) as first:
        before = identity(path)
        client = connect(first) if name == "unix" else None  # a connection open across the attempt
        try:
            with pytest.raises(OSError) as err:
                cls(path, handler_for(name))
            assert_in_use(err)
            assert lock_of(path) in str(err.value)  # says why: the owner's lock is held
            assert identity(path) == before
            if client is not None:
                client.sendall(b"still here\n")
                client.shutdown(socket.SHUT_WR)
                assert read_all(client) == b"still here\n"
        finally:
            if client is not None:
                client.close()
        assert client_exchange(name, path, b"a new client\n", places) == b"a new client\n"
    assert not os.path.exists(path) and not os.path.exists(lock_of(path))


def foreign_socket(path: str, kind: int = socket.SOCK_STREAM, backlog: int | None = None) -> socket.socket:
    """A socket bound at ``path`` by code that knows nothing of our lock (socat, say)."""
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(path)
    if backlog is not None:
        sock.listen(backlog)
    return sock


def close_foreign(sock: socket.socket, path: str) -> None:
    sock.close()
    if os.path.exists(path):
        os.unlink(path)  # its owner would; nobody else may


@pytest.mark.timeout(20)
@pytest.mark.parametrize("owner", ["reactor", "foreign"])
def test_a_live_listener_sees_no_probe_connection(owner, places):
    path = places.path()
    if owner == "reactor":
        first = reactor.UnixStreamServer(path, StreamLineEcho)
        listener = first.socket
    else:
        listener = foreign_socket(path, backlog=8)
    try:
        with pytest.raises(OSError) as err:
            reactor.UnixStreamServer(path, StreamLineEcho)
        assert_in_use(err)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()[0].close()  # nothing connected to find out
    finally:
        if owner == "reactor":
            first.server_close()
        else:
            close_foreign(listener, path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("owner", ["reactor", "foreign", "foreign-dgram"])
def test_a_bound_but_not_listening_owner_is_not_taken_over(owner, places):
    # Two instances starting together, or bind_and_activate=False: bound,
    # not listening yet, so a connect() is refused, yet the path is taken.
    path = places.path()
    if owner == "reactor":
        first = reactor.UnixStreamServer(path, StreamLineEcho, bind_and_activate=False)
        first.server_bind()
    else:
        sock = foreign_socket(path, socket.SOCK_DGRAM if owner == "foreign-dgram" else socket.SOCK_STREAM)
    try:
        before = identity(path)
        for cls in (reactor.UnixStreamServer, reactor.UnixDatagramServer):
            with pytest.raises(OSError) as err:
                cls(path, handler_for("unix" if cls is reactor.UnixStreamServer else "unix-dgram"))
            assert_in_use(err)
            assert identity(path) == before
            assert os.path.exists(lock_of(path)) == (owner == "reactor")  # a refused server leaves no lock file
        if owner == "reactor":
            first.server_activate()  # and it serves, on its own file
            with ServingThread(first, close=False):
                assert client_exchange("unix", path, b"mine\n") == b"mine\n"
    finally:
        if owner == "reactor":
            first.server_close()
        else:
            close_foreign(sock, path)


def fill_backlog(path: str, limit: int = 64) -> list[socket.socket]:
    """Nonblocking connects to ``path`` until its backlog is full (EAGAIN)."""
    clients = []
    for _ in range(limit):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            client.connect(path)
        except BlockingIOError:
            client.close()
            return clients
        clients.append(client)
    for client in clients:
        client.close()
    pytest.fail(f"the backlog of {path} was not full after {limit} connections")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("owner", ["reactor", "foreign"])
def test_a_full_backlog_does_not_hang_the_constructor(owner, places):
    path = places.path()

    class Small(reactor.UnixStreamServer):
        request_queue_size = 0

    if owner == "reactor":
        first = Small(path, StreamLineEcho)
        listener = first.socket
    else:
        listener = foreign_socket(path, backlog=0)
    queued = fill_backlog(path)
    outcome: list = []

    def second_server() -> None:
        try:
            reactor.UnixStreamServer(path, StreamLineEcho).server_close()
            outcome.append("bound")
        except OSError as exc:
            outcome.append(exc.errno)

    attempt = threading.Thread(target=second_server, name="second server")
    attempt.start()
    attempt.join(CLIENT_TIMEOUT)
    hung = attempt.is_alive()
    for client in queued:
        client.close()
    if owner == "reactor":
        first.server_close()
    else:
        close_foreign(listener, path)
    attempt.join(CLIENT_TIMEOUT)  # a hung connect() ends once the listener is gone
    assert not hung, "the constructor blocked on a full backlog"
    assert outcome == [errno.EADDRINUSE]


DIES = {
    # a plain socket bound, then the process exits: the file stays, no lock file
    "raw-exited": "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, {kind}); s.bind(sys.argv[1])\n",
    # one of ours, killed: the socket file and the (no longer held) lock file stay
    "reactor-killed": "import sys, reactor, handlers.echo as e\n"
    "s = reactor.{cls}(sys.argv[1], e.{handler})\n"
    "print('ready', flush=True); sys.stdin.read()\n",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", UNIX)
@pytest.mark.parametrize("died", list(DIES))
def test_a_socket_file_whose_owner_died_is_reclaimed(name, died, places, caplog):
    cls, _, kind = FAMILIES[name]
    path = places.path()
    script = DIES[died].format(kind=int(kind), cls=cls.__name__, handler=handler_for(name).__name__)
    proc = subprocess.Popen([sys.executable, "-c", script, path], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if died == "reactor-killed":
            assert proc.stdout.readline() == "ready\n"
            proc.kill()
        assert proc.wait(CLIENT_TIMEOUT) in (0, -signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert os.path.exists(lock_of(path)) == (died == "reactor-killed")
    caplog.set_level("INFO", logger="reactor")
    with ServingThread(cls(path, handler_for(name))):
        assert client_exchange(name, path, b"reclaimed\n", places) == b"reclaimed\n"
    assert any("stale" in r.getMessage() for r in caplog.records if r.name == "reactor")
    assert not os.path.exists(path) and not os.path.exists(lock_of(path))


def test_abstract_addresses_have_no_file_and_no_lock(places):
    name = f"\0reactor-test-{os.getpid()}-{id(places)}"
    before = set(os.listdir(os.getcwd()))
    with reactor.UnixStreamServer(name, StreamLineEcho) as server:
        with pytest.raises(OSError) as err:
            reactor.UnixStreamServer(name, StreamLineEcho)
        assert err.value.errno == errno.EADDRINUSE  # the kernel's own check
        with ServingThread(server, close=False):
            assert client_exchange("unix", name, b"abstract\n") == b"abstract\n"
    assert set(os.listdir(os.getcwd())) == before


# ------------------------------------------------------- a forked copy


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", UNIX)
def test_a_forked_copy_closing_the_server_leaves_the_files_to_the_parent(name, places):
    cls = FAMILIES[name][0]
    server = cls(places.path(), handler_for(name))
    path = server.server_address
    try:
        pid = os.fork()
        if pid == 0:  # the child: leave a `with server:` block, say, then exit
            status = 1
            try:
                server.server_close()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert stat.S_ISSOCK(os.lstat(path).st_mode), "the child removed the parent's socket file"
        assert os.path.exists(lock_of(path)), "the child removed the parent's lock file"
        with pytest.raises(OSError) as err:
            cls(path, handler_for(name))  # the parent still holds the lock
        assert_in_use(err)
        with ServingThread(server, close=False):
            assert client_exchange(name, path, b"after the child\n", places) == b"after the child\n"
    finally:
        server.server_close()
    assert not os.path.exists(path) and not os.path.exists(lock_of(path))


class ReportsTheLock(reactor.StreamRequestHandler):
    """Answers whether this process (a forked child) has the lock file open."""

    def handle(self):
        lock = lock_of(self.server.server_address)
        held = [fd for fd in os.listdir("/proc/self/fd") if _points_at(f"/proc/self/fd/{fd}", lock)]
        self.wfile.write(b"held\n" if held else b"not held\n")


def _points_at(link: str, path: str) -> bool:
    try:
        return os.readlink(link) == path
    except OSError:
        return False


@pytest.mark.timeout(20)
def test_children_of_the_fork_strategy_do_not_hold_the_lock(places):
    path = places.path()
    with ServingThread(reactor.UnixStreamServer(path, ReportsTheLock, dispatch=reactor.Fork(2))):
        for _ in range(2):
            assert client_exchange("unix", path, b"") == b"not held\n"
        with pytest.raises(OSError) as err:
            reactor.UnixStreamServer(path, StreamLineEcho)  # the parent still does
        assert_in_use(err)
    assert not os.path.exists(path) and not os.path.exists(lock_of(path))


# ------------------------------------------------------------ socket_mode


class RecordingSocket(socket.socket):
    """Records the socket file's mode the moment bind() has created it."""

    modes_at_bind: list[int]

    def bind(self, address):
        super().bind(address)
        self.modes_at_bind = [file_mode(address)]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", UNIX)
@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666, 0o700])
def test_socket_mode_is_the_files_mode_from_the_start(name, mode, places, umask_022):
    class Server(FAMILIES[name][0]):
        socket_mode = mode

    path = places.path()
    server = Server(path, handler_for(name), bind_and_activate=False)
    server.socket.close()
    server.socket = RecordingSocket(socket.AF_UNIX, server.socket_type)
    with server:
        server.server_bind()
        server.server_activate()
        assert file_mode(path) == mode
        # Never more open than asked, not even between bind() and the chmod:
        # a datagram server can be sent to from the moment it is bound.
        assert server.socket.modes_at_bind[0] & ~mode == 0, oct(server.socket.modes_at_bind[0])
        with ServingThread(server, close=False):
            assert client_exchange(name, path, b"mode\n", places) == b"mode\n"


@pytest.mark.parametrize("name", UNIX)
def test_without_socket_mode_the_umask_decides(name, places):
    before = os.umask(0o077)
    try:
        with FAMILIES[name][0](places.path(), handler_for(name)) as server:
            assert file_mode(server.server_address) == 0o700
    finally:
        os.umask(before)
    assert reactor.UnixStreamServer.socket_mode is None and reactor.UnixDatagramServer.socket_mode is None


@pytest.mark.parametrize("name", UNIX)
@pytest.mark.parametrize("bad", [-1, 0o10000, "660", 6.6, True])
def test_a_bad_socket_mode_is_refused_clearly(name, bad, places):
    class Server(FAMILIES[name][0]):
        socket_mode = bad

    with pytest.raises(reactor.UsageError, match=r"socket_mode must be None or an int from 0 to 0o7777") as err:
        Server(places.path(), handler_for(name))
    assert repr(bad) in str(err.value)
    assert os.listdir(places.dir) == []  # no socket file, no lock file


def test_socket_mode_on_an_abstract_address_is_refused():
    class Server(reactor.UnixStreamServer):
        socket_mode = 0o600

    with pytest.raises(reactor.UsageError, match="abstract"):
        Server(f"\0reactor-test-{os.getpid()}", StreamLineEcho)
