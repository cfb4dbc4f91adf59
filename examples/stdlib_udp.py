"""The stdlib documentation's UDP server, unchanged on reactor.

What it shows: the UDP server from the examples in the ``socketserver``
documentation, on ``reactor.UDPServer`` after one changed line,
``import reactor as socketserver``.  The handler is the documentation's:
a ``BaseRequestHandler`` whose ``self.request`` is the pair
``(data, socket)``, which sends ``data`` back upper-cased with
``socket.sendto(..., self.client_address)``.  Its twin on
``DatagramRequestHandler`` reads ``self.rfile`` and writes ``self.wfile``
instead; the server sends what it wrote back as one datagram.

A datagram server never waits on a client: the whole datagram has
arrived before the handler runs, so even the plain, inline server is
never deaf.  And on reactor a reply never blocks the loop either: the
``sendto()`` goes through the server's reply queue, which keeps a reply
the socket cannot take yet instead of waiting for room.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/stdlib_udp.py                      # until Ctrl-C
    .venv/bin/python examples/stdlib_udp.py --handler datagram   # the rfile/wfile twin
    .venv/bin/python examples/stdlib_udp.py --host ::1 --port 9999 --seconds 30
    .venv/bin/python examples/stdlib_udp.py --self-test          # each handler once, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server.

Poke it with the line it prints, or with socat:

    printf 'hello\\n' | nc -u -w1 127.0.0.1 PORT     # -> HELLO
    echo hello | socat - UDP:127.0.0.1:PORT

Shortcuts taken on purpose:

* The reply is the whole datagram upper-cased; the documentation's
  version strips it first, and this one keeps the newline so that a
  terminal shows each answer on a line of its own.
* Each handler prints what it received, as the documentation's does.
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise.  ``--seconds`` stops it with ``server.shutdown()`` from a
  timer thread, the stdlib's way to end ``serve_forever()`` from
  elsewhere.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

import reactor as socketserver  # the one changed line; the rest is stdlib code

CLIENT_TIMEOUT = 5.0


class UpperBase(socketserver.BaseRequestHandler):
    """The documentation's handler: ``self.request`` is ``(data, socket)``."""

    def handle(self):
        data = self.request[0]
        sock = self.request[1]  # the server's socket: no connection, so say where to
        print(f"{self.client_address[0]} wrote: {data!r}")
        sock.sendto(data.upper(), self.client_address)


class UpperDatagram(socketserver.DatagramRequestHandler):
    """The same with files: ``rfile`` is the datagram, ``wfile`` the reply."""

    def handle(self):
        data = self.rfile.read()
        print(f"{self.client_address[0]} wrote: {data!r}")
        self.wfile.write(data.upper())  # sent back as one datagram after handle()


HANDLERS = {"base": UpperBase, "datagram": UpperDatagram}


def serve(server: socketserver.UDPServer, seconds: float | None) -> None:
    """``serve_forever()``, for at most ``seconds`` if given."""
    timer = None
    if seconds is not None:
        timer = threading.Timer(seconds, server.shutdown)
        timer.start()
    try:
        server.serve_forever()
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()


# ------------------------------------------------------------- self-test


def ask(address: tuple, payload: bytes) -> bytes:
    """Send one datagram, wait for one back."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.sendto(payload, address)  # no connect(): UDP has no connections
            return sock.recv(65536)
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>".encode()


def serve_while(server: socketserver.UDPServer, client) -> None:
    """Serve on this thread while ``client()`` runs on another; its end stops the server."""

    def run() -> None:
        try:
            client()
        finally:
            server.shutdown()  # from another thread: returns once serve_forever() has

    thread = threading.Thread(target=run, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)


def self_test(host: str) -> bool:
    ok = True
    for name, handler in HANDLERS.items():
        results: list[tuple[bytes, bytes]] = []
        with socketserver.UDPServer((host, 0), handler) as server:
            address = server.server_address[:2]
            print(f"{handler.__name__} on {address}:")
            payload = f"hello from a {name} client\n".encode()
            serve_while(server, lambda: results.append((ask(address, payload), payload.upper())))
        for reply, expected in results:
            ok = ok and reply == expected
            print(f"  {name:<8}  reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
        ok = ok and len(results) == 1
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; ::1 for IPv6 (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--handler", choices=HANDLERS, default="base", help="which handler serves (default base)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to each handler's server once, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    ok = True
    try:
        if args.self_test:
            ok = self_test(args.host)
        else:
            handler = HANDLERS[args.handler]
            with socketserver.UDPServer((args.host, args.port), handler) as server:
                host, port = server.server_address[:2]
                print(f"the stdlib's UDP server, handler {handler.__name__}:")
                print(f"  udp  {server.server_address}")
                print(f"       printf 'hello\\n' | nc -u -w1 {host} {port}")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    print("closed; socket files left: none")  # UDP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
