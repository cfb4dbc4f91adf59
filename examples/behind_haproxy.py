"""A server behind HAProxy that still knows who its clients are: the PROXY protocol.

What it shows: a framed handler (``reactor.MessageHandler``) on a
``reactor.TCPServer`` with ``proxy_protocol = True``.  A proxy that relays
a connection (HAProxy's ``send-proxy-v2`` here) starts it with a header
naming the real client; the server reads it in its loop before anything
else, so ``self.client_address`` is the client, not the proxy, and the
proxy's own address is ``self.connection.record.proxy_address``.  Only
peers in ``proxy_from`` may send one: here 127.0.0.1, where HAProxy runs.
A client that bypasses the proxy and talks to the backend directly sends
no header and is closed (counted as ``proxy_invalid``).

If the ``haproxy`` command is installed (Debian: ``apt-get install
haproxy``), the example starts it in front of the server, with a health
check every second (which sends the header too: v2's LOCAL command), on
another port, and removes its configuration at exit.  ``--no-haproxy``
serves the backend alone: then you are the proxy.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/behind_haproxy.py                 # until Ctrl-C
    .venv/bin/python examples/behind_haproxy.py --no-haproxy    # the backend alone
    .venv/bin/python examples/behind_haproxy.py --self-test     # talk to it, then exit

Poke it with the addresses it prints:

    printf 'hello\\n' | nc -q1 127.0.0.1 HAPROXY_PORT            # "you are 127.0.0.1:YOUR_PORT ..."
    printf 'PROXY TCP4 203.0.113.7 192.0.2.1 41000 443\\r\\nhello\\n' | nc -q1 127.0.0.1 BACKEND_PORT
    printf 'hello\\n' | nc -q1 127.0.0.1 BACKEND_PORT            # no header: closed

Shortcuts taken on purpose: everything listens on 127.0.0.1 on ports the
kernel picks (HAProxy's is picked free just before it starts); HAProxy
runs in the foreground (``-db``) as this process's child, with no logging.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import reactor

CLIENT_TIMEOUT = 5.0
HAPROXY_CONFIG = """\
global
    stats socket {stats} mode 600
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
listen front
    bind 127.0.0.1:{port}
    server backend 127.0.0.1:{backend} send-proxy-v2 check inter 1s
"""


class Greeter(reactor.MessageHandler):
    """Each line gets: who you are (the client the proxy names), whom you came through, what you said."""

    framing = reactor.Line()

    def handle(self) -> None:
        host, port = self.client_address[:2]
        via = self.connection.record.proxy_address  # the proxy's address: the socket's own peer
        said = self.message.strip().decode("utf-8", "replace")
        self.wfile.write(f"you are {host}:{port}, via {via[0]}:{via[1]}; you said {said!r}\n".encode())


class Backend(reactor.TCPServer):
    proxy_protocol = True  # every connection starts with a PROXY header, v1 or v2
    proxy_from = ["127.0.0.1/32"]  # ... which only the local HAProxy may send
    proxy_timeout = 5.0  # seconds it has to send it


class HAProxy:
    """``haproxy -db`` in front of ``backend`` on a free port, its configuration in a temporary directory."""

    def __init__(self, backend: tuple) -> None:
        self.dir = tempfile.mkdtemp(prefix="reactor-haproxy-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = probe.getsockname()
        stats = os.path.join(self.dir, "stats.sock")
        config = os.path.join(self.dir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(HAPROXY_CONFIG.format(stats=stats, port=self.address[1], backend=backend[1]))
        self.proc = subprocess.Popen(["haproxy", "-f", config, "-db"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not os.path.exists(stats):  # it is listening once its stats socket is there
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                sys.exit("behind_haproxy.py: haproxy did not start (see its messages above)")
            time.sleep(0.01)  # a polling interval

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------- self-test


def ask(address: tuple, payload: bytes) -> tuple[bytes, tuple]:
    """Send ``payload``, half-close, read to EOF: (the reply, our own address).

    A server that closes the connection first (no header: it does at once)
    may make sending fail or end the reading with a reset: that is its answer.
    """
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        own, reply = sock.getsockname(), b""
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(4096):
                reply += chunk
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
        return reply, own


def self_test(server: Backend, front: HAProxy | None, why_not: str) -> bool:
    """Serve here while a client thread talks through HAProxy and around it; its end stops the server."""
    results: list[tuple[str, bytes, bytes]] = []
    backend = server.server_address[:2]

    def client() -> None:
        try:
            if front is not None:
                reply, (host, port) = ask(front.address, b"through haproxy\n")
                results.append(("haproxy", reply, f"you are {host}:{port}, via 127.0.0.1:".encode()))
            reply, _ = ask(backend, b"PROXY TCP4 203.0.113.7 192.0.2.1 41000 443\r\nby hand\n")
            results.append(("header", reply, b"you are 203.0.113.7:41000, via 127.0.0.1:"))
            reply, _ = ask(backend, b"no header\n")
            results.append(("direct", reply, b""))
        except OSError as exc:
            results.append(("error", f"<{type(exc).__name__}: {exc}>".encode(), b"?"))
        finally:
            server.shutdown()

    thread = threading.Thread(target=client, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)
    ok = len(results) == (3 if front is not None else 2)
    if front is None:
        print(f"  haproxy  {why_not}: skipped")
    for label, reply, expected in results:
        good = reply.startswith(expected) and (bool(expected) or not reply)
        ok = ok and good
        print(f"  {label:<7}  reply {reply!r}  {'ok' if good else 'WRONG'}")
    invalid = server.request_table.counters.get("proxy_invalid", 0)
    print(f"  counted  proxy_invalid {invalid}  {'ok' if invalid == 1 else 'WRONG'}")
    return ok and invalid == 1


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-haproxy", action="store_true", help="serve the backend alone, without HAProxy")
    parser.add_argument("--self-test", action="store_true", help="talk to it through HAProxy and around it, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    ok, front = True, None
    try:
        with Backend(("127.0.0.1", 0), Greeter) as server:
            print("a framed greeter behind a PROXY protocol proxy (Greeter on a reactor.TCPServer, proxy_protocol=True):")
            print(f"  backend  {server.server_address}")
            why_not = "not started (--no-haproxy)" if args.no_haproxy else "not installed"
            if not args.no_haproxy and shutil.which("haproxy") is not None:
                front = HAProxy(server.server_address)
                print(f"  haproxy  {front.address}")
            if args.self_test:
                ok = self_test(server, front, why_not)
            else:
                print("serving; Ctrl-C to stop", flush=True)
                server.serve_forever()
    except KeyboardInterrupt:
        print()
    finally:
        if front is not None:
            front.close()

    print("closed; socket files left: none")  # TCP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
