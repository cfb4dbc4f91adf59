"""reactor's public names: socketserver's, plus its own; handlers stands alone."""

from __future__ import annotations

import inspect
import socket
import socketserver as stdlib_socketserver
import subprocess
import sys
import threading

import pytest
from conftest import CLIENT_TIMEOUT

import handlers
import reactor

STDLIB_NAMES = sorted(set(stdlib_socketserver.__all__) | {"ForkingUnixStreamServer", "ForkingUnixDatagramServer"})


@pytest.mark.parametrize("name", STDLIB_NAMES)
def test_every_stdlib_name_is_a_class_here(name: str) -> None:
    assert hasattr(reactor, name), f"reactor has no {name}"
    assert inspect.isclass(getattr(reactor, name))
    assert name in reactor.__all__  # and `from reactor import *` brings it


def test_stdlib_names_keep_their_relationships() -> None:
    # Same shape as the stdlib: a mix-in composed with a server class, etc.
    for name in STDLIB_NAMES:
        ours, theirs = getattr(reactor, name), getattr(stdlib_socketserver, name, None)
        if theirs is None:
            continue
        for base_name in ("BaseServer", "TCPServer", "UDPServer", "ThreadingMixIn", "ForkingMixIn"):
            assert issubclass(ours, getattr(reactor, base_name)) == issubclass(
                theirs, getattr(stdlib_socketserver, base_name)
            ), (name, base_name)


def test_reactor_all_is_sound() -> None:
    assert len(reactor.__all__) == len(set(reactor.__all__)), "duplicates in reactor.__all__"
    missing = [name for name in reactor.__all__ if not hasattr(reactor, name)]
    assert missing == []
    assert set(reactor.SOCKETSERVER_NAMES) <= set(reactor.__all__)


def test_star_import_matches_all() -> None:
    namespace: dict = {}
    exec("from reactor import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(reactor.__all__)


@pytest.mark.parametrize("name", ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"])
def test_handlers_are_reexported(name: str) -> None:
    assert getattr(reactor, name) is getattr(handlers, name)


def test_handlers_package_does_not_import_reactor() -> None:
    code = "import handlers, handlers.echo, sys; assert not any(m == 'reactor' or m.startswith('reactor.') for m in sys.modules), sorted(m for m in sys.modules if m.startswith('reactor'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(20)
def test_stdlib_style_program_runs_on_reactor() -> None:
    # The "Asynchronous Mixins" example of the socketserver docs, with
    # `import reactor as socketserver` the only change.
    import reactor as socketserver

    class ThreadedTCPRequestHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = str(self.request.recv(1024), "ascii")
            cur_thread = threading.current_thread()
            response = bytes("{}: {}".format(cur_thread.name, data.upper()), "ascii")
            self.request.sendall(response)

    class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
        pass

    def client(ip: str, port: int, message: str) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect((ip, port))
            sock.sendall(bytes(message, "ascii"))
            return str(sock.recv(1024), "ascii")

    server = ThreadedTCPServer(("127.0.0.1", 0), ThreadedTCPRequestHandler)
    with server:
        ip, port = server.server_address
        server_thread = threading.Thread(target=server.serve_forever)
        server_thread.start()
        try:
            replies = [client(ip, port, f"Hello World {i}") for i in range(1, 4)]
        finally:
            server.shutdown()
            server_thread.join(CLIENT_TIMEOUT)
    assert not server_thread.is_alive()
    for i, reply in enumerate(replies, 1):
        thread_name, _, text = reply.partition(": ")
        assert text == f"HELLO WORLD {i}"
        assert thread_name not in ("MainThread", server_thread.name)
