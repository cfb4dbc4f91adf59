"""The stdlib documentation's TCP server, unchanged on reactor; then framed.

What it shows: the TCP server from the examples in the ``socketserver``
documentation, running on ``reactor.TCPServer`` after one changed line,
``import reactor as socketserver``.  The rest is the stdlib's code:
a ``StreamRequestHandler`` that reads one line and sends it back
upper-cased (or its twin on ``BaseRequestHandler``, which upper-cases
whatever one ``recv(1024)`` returns), ``TCPServer((HOST, PORT), Handler)``
in a ``with`` block, and ``serve_forever()``.

Then one more changed line, which the stdlib has no equivalent for: the
handler's base class.

    class UpperFramed(socketserver.MessageHandler):  # was: StreamRequestHandler
        framing = socketserver.Line()                # the default, spelled out
        def handle(self): ...                        # the same body

The stdlib's handler runs in the loop and blocks in ``readline()`` until
its client sends a whole line, so one client that sends half a line and
waits keeps every other client waiting (the stdlib behaves the same).
The framed handler never waits: the reactor reads without blocking, a
half line waits in its buffer, and ``handle()`` runs only on a line that
has arrived in full, so other clients are answered meanwhile.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/stdlib_tcp.py                  # the stdlib's handler, until Ctrl-C
    .venv/bin/python examples/stdlib_tcp.py --handler base   # its recv() twin
    .venv/bin/python examples/stdlib_tcp.py --framed         # the MessageHandler
    .venv/bin/python examples/stdlib_tcp.py --host ::1 --port 9999 --seconds 30
    .venv/bin/python examples/stdlib_tcp.py --self-test      # each handler once, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server.

Poke it with the line it prints:

    printf 'hello\\n' | nc -N 127.0.0.1 PORT      # -> HELLO
    printf 'hello\\n' | socat - TCP:127.0.0.1:PORT  # the same with socat

and see the difference framing makes, in two terminals:

    (printf 'half a li'; sleep 30) | nc 127.0.0.1 PORT   # holds half a line
    printf 'hello\\n' | nc -N 127.0.0.1 PORT              # answered at once only with --framed

Shortcuts taken on purpose:

* The reply keeps the line's newline, which the documentation's version
  strips, so that a terminal shows each answer on a line of its own.
* A framed handler runs once per message, not once per connection: with
  ``--framed`` the connection stays open and every line is answered until
  the client closes its side (``nc -N`` does, after sending).
* Each handler prints what it received, as the documentation's does.
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise; the documentation's ``"localhost", 9999`` would fail when
  that port is taken.  ``--seconds`` stops it with ``server.shutdown()``
  from a timer thread, the stdlib's way to end ``serve_forever()`` from
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


class UpperStream(socketserver.StreamRequestHandler):
    """The documentation's handler: one line in, the same line upper-cased out."""

    def handle(self):
        # self.rfile is a buffered reader over the socket: readline() calls
        # recv() as many times as it takes to see a newline.
        self.data = self.rfile.readline()
        print(f"{self.client_address[0]} wrote: {self.data!r}")
        self.wfile.write(self.data.upper())


class UpperBase(socketserver.BaseRequestHandler):
    """The documentation's other handler: one ``recv()`` in, upper-cased out."""

    def handle(self):
        # self.request is the connected socket; one recv() returns what one
        # sendall() of a short message sent, however it ends.
        self.data = self.request.recv(1024)
        print(f"{self.client_address[0]} wrote: {self.data!r}")
        self.request.sendall(self.data.upper())


class UpperFramed(socketserver.MessageHandler):  # the one line that changed
    """``UpperStream`` with a framed base: ``handle()`` runs on a complete line."""

    framing = socketserver.Line()  # a message is one line (the default, spelled out)

    def handle(self):
        # The line has already arrived: readline() returns it without waiting.
        self.data = self.rfile.readline()
        print(f"{self.client_address[0]} wrote: {self.data!r}")
        self.wfile.write(self.data.upper())


HANDLERS = {"stream": UpperStream, "base": UpperBase, "framed": UpperFramed}


def serve(server: socketserver.TCPServer, seconds: float | None) -> None:
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


def read_all(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    return reply


def ask(address: tuple, payload: bytes) -> bytes:
    """Connect, send ``payload``, close our sending side, read until the server closes."""
    try:
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>".encode()


def while_one_waits(address: tuple) -> list[tuple[str, bytes, bytes]]:
    """A client holds half a line; another is answered meanwhile (framed only).

    Under the plain server the second client would wait until the first
    one finished its line, and ``ask()`` would give up after CLIENT_TIMEOUT.
    """
    results = []
    try:
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as slow:
            slow.sendall(b"half a li")  # no newline yet
            quick = b"answered while another client waits\n"
            results.append(("quick", ask(address, quick), quick.upper()))
            slow.sendall(b"ne, then the rest\n")
            slow.shutdown(socket.SHUT_WR)
            results.append(("slow", read_all(slow), b"HALF A LINE, THEN THE REST\n"))
    except OSError as exc:
        results.append(("slow", f"<{type(exc).__name__}: {exc}>".encode(), b"HALF A LINE, THEN THE REST\n"))
    return results


def serve_while(server: socketserver.TCPServer, client) -> None:
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
        results: list[tuple[str, bytes, bytes]] = []
        with socketserver.TCPServer((host, 0), handler) as server:
            address = server.server_address[:2]
            print(f"{handler.__name__} on {address}:")

            def client() -> None:
                payload = f"hello from a {name} client\n".encode()
                results.append((name, ask(address, payload), payload.upper()))
                if handler is UpperFramed:
                    results.extend(while_one_waits(address))

            serve_while(server, client)
        for label, reply, expected in results:
            ok = ok and reply == expected
            print(f"  {label:<6}  reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; ::1 for IPv6 (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--handler", choices=HANDLERS, default="stream", help="which handler serves (default stream)")
    parser.add_argument("--framed", dest="handler", action="store_const", const="framed", help="same as --handler framed")
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
            with socketserver.TCPServer((args.host, args.port), handler) as server:
                host, port = server.server_address[:2]
                print(f"the stdlib's TCP server, handler {handler.__name__}:")
                print(f"  tcp  {server.server_address}")
                print(f"       printf 'hello\\n' | nc -N {host} {port}")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    print("closed; socket files left: none")  # TCP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
