"""Shared test helpers: families, short Unix paths, loop stepping, leak checks.

Rules every test here follows (see ../shared/STYLE.md "Tests"):
* real sockets only, on 127.0.0.1 / ::1 or Unix sockets in a temp dir;
* every client socket has a timeout, every loop is driven with a deadline
  (``run_until``), never ``sleep()`` for ordering;
* the autouse ``no_leaks`` fixture fails a test that leaves threads, child
  processes or descriptors behind.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from typing import Any, Callable

import pytest

import reactor

CLIENT_TIMEOUT = 5.0

HAVE_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _probe:
        _probe.bind(("::1", 0))
except OSError:
    HAVE_IPV6 = False


# --------------------------------------------------------------- families

#: name -> (server class, address family, socket type)
FAMILIES = {
    "tcp4": (reactor.TCPServer, socket.AF_INET, socket.SOCK_STREAM),
    "tcp6": (reactor.TCPServer, socket.AF_INET6, socket.SOCK_STREAM),
    "udp4": (reactor.UDPServer, socket.AF_INET, socket.SOCK_DGRAM),
    "udp6": (reactor.UDPServer, socket.AF_INET6, socket.SOCK_DGRAM),
    "unix": (reactor.UnixStreamServer, socket.AF_UNIX, socket.SOCK_STREAM),
    "unix-dgram": (reactor.UnixDatagramServer, socket.AF_UNIX, socket.SOCK_DGRAM),
}
STREAM_FAMILIES = ["tcp4", "tcp6", "unix"]
DGRAM_FAMILIES = ["udp4", "udp6", "unix-dgram"]
FOUR_FAMILIES = ["tcp4", "udp4", "unix", "unix-dgram"]


def needs_ipv6(name: str) -> Any:
    return pytest.mark.skipif(name.endswith("6") and not HAVE_IPV6, reason="no IPv6 loopback here")


def family_params(names: list[str]) -> list[Any]:
    """pytest params for family names, skipping IPv6 ones where ::1 cannot be bound."""
    return [pytest.param(n, id=n, marks=needs_ipv6(n)) for n in names]


class Places:
    """Makes addresses: loopback ports chosen by the kernel, Unix paths in a short temp dir."""

    def __init__(self) -> None:
        # AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path can be
        # longer than that, so use a short directory of our own.
        self.dir = tempfile.mkdtemp(prefix="rx-")
        self._n = 0

    def path(self, stem: str = "s") -> str:
        self._n += 1
        return os.path.join(self.dir, f"{stem}{self._n}.sock")

    def server_address(self, name: str) -> Any:
        family = FAMILIES[name][1]
        if family == socket.AF_UNIX:
            return self.path("srv")
        return ("::1", 0) if family == socket.AF_INET6 else ("127.0.0.1", 0)

    def make_server(self, name: str, handler: Any, cls: type | None = None, **kwargs: Any) -> Any:
        server_cls = cls or FAMILIES[name][0]
        return server_cls(self.server_address(name), handler, **kwargs)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def places() -> Any:
    """Addresses for a test; fails it if a Unix socket file is left behind."""
    p = Places()
    yield p
    left = [name for name in os.listdir(p.dir) if stat.S_ISSOCK(os.lstat(os.path.join(p.dir, name)).st_mode)]
    p.cleanup()
    assert not left, f"socket files left behind: {left}"


def client_exchange(name: str, address: Any, payload: bytes, places: Places | None = None) -> bytes:
    """Send ``payload`` with a plain blocking client of family ``name``; return the reply.

    Stream clients half-close after sending and read until EOF; datagram
    clients wait for one datagram.
    """
    _, family, kind = FAMILIES[name]
    with socket.socket(family, kind) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        if kind == socket.SOCK_STREAM:
            sock.connect(address)
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                # The server answered and closed before reading it all (EPIPE,
                # ECONNRESET, or ENOTCONN from shutdown()): read what it said.
                if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        own = None
        if family == socket.AF_UNIX:
            assert places is not None, "a Unix datagram client needs a path to be answered at"
            own = places.path("cli")
            sock.bind(own)
        try:
            sock.sendto(payload, address)
            return sock.recv(65536)
        finally:
            if own:
                os.unlink(own)


def connect(server: Any) -> socket.socket:
    """A connected stream client (with a timeout) for ``server``."""
    sock = socket.socket(server.address_family, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT)
    try:
        sock.connect(server.server_address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until EOF."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------- driving loops


def run_until(r: reactor.Reactor, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Step ``r`` until ``predicate()`` is true; fail loudly after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        r.run_once(min(left, 0.1))


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` (state another thread changes) until true; fail loudly after ``timeout``.

    For a loop running on another thread; drive a loop of your own with ``run_until``.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.005)  # a polling interval, not an ordering assumption


class ServingThread:
    """``server.serve_forever()`` on a thread; shut down, joined and (unless close=False) closed on exit."""

    def __init__(self, server: Any, close: bool = True, **kwargs: Any) -> None:
        self.server = server
        self.close = close
        self.thread = threading.Thread(target=server.serve_forever, kwargs=kwargs, name=f"serving {server!r}")

    def __enter__(self) -> Any:
        self.thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(CLIENT_TIMEOUT)
        assert not self.thread.is_alive(), "serve_forever did not return after shutdown()"
        if self.close:
            self.server.server_close()


class ReactorThread:
    """A Reactor running on a thread; stopped, joined and (unless close=False) closed on exit."""

    def __init__(self, r: reactor.Reactor, close: bool = True) -> None:
        self.reactor = r
        self.close = close
        self.thread = threading.Thread(target=r.run, name="reactor loop")

    def __enter__(self) -> reactor.Reactor:
        self.thread.start()
        return self.reactor

    def __exit__(self, *exc: object) -> None:
        self.reactor.call_soon_threadsafe(self.reactor.stop)
        self.thread.join(CLIENT_TIMEOUT)
        assert not self.thread.is_alive(), "reactor.run() did not return after stop()"
        if self.close:
            self.reactor.close()


# -------------------------------------------------------------- leak check


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _children() -> set[int]:
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        except OSError:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Any:
    """Fail the test if it leaves threads, child processes or descriptors behind."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    children_before = _children()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = _children() - children_before
        fds = _open_fds() - fds_before
        if not (threads or children or fds) or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # a finished thread may still be on its way out
    assert not threads, f"threads left running: {threads}"
    assert not children, f"child processes left: {children}"
    details = {fd: _describe_fd(fd) for fd in fds}
    assert not fds, f"descriptors left open: {details}"


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


# ------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def certs() -> Any:
    """A throw-away test CA with a server and a client certificate (tests/tls_support.py)."""
    from tls_support import make_certs

    made = make_certs()
    yield made
    shutil.rmtree(made.dir, ignore_errors=True)
