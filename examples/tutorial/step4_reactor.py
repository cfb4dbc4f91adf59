"""Step 4 of the tutorial: the same echo on reactor, one loop iteration at a time.

What it shows: steps 2 and 3 written with the library.  ``reactor.Reactor``
is the selector loop, a ``TCPServer`` whose handler is a framed
``MessageHandler`` is the accept/read/write code, and the server's
request table is step 3's table, with more states.  The handler is four
lines: it receives one whole line and writes it back; it never sees a
socket.  The loop is driven BY HAND, ``loop.run_once()`` in a ``while``,
with a numbered banner before each iteration, and the ``reactor.trace``
logger is on, so every iteration shows what woke the loop ("loop woke
...") and which transitions the request made.  One client, one line:
what a silent client costs is step 5.

Run it and poke it with ``nc``; each event is one iteration:

    .venv/bin/python examples/tutorial/step4_reactor.py --port 8004
    nc 127.0.0.1 8004            # or: socat - TCP:127.0.0.1:8004

    .venv/bin/python examples/tutorial/step4_reactor.py --self-test

Shortcuts taken on purpose: ``run_once()`` by hand instead of
``loop.run()`` or ``server.serve_forever()``, to watch each iteration; the
self-test's clients move between iterations, so the trace is the same on
every run (it lowers the idle timeout to one second, which is far longer
than anything else takes).
"""

from __future__ import annotations

import argparse
import logging
import select
import signal
import socket
import sys

import reactor


class Echo(reactor.MessageHandler):
    """A framed handler: ``self.message`` is one whole line (the default ``Line()`` framing)."""

    def handle(self) -> None:
        self.wfile.write(self.message)  # queued; the reactor sends it


class EchoServer(reactor.TCPServer):
    """The library's TCP server, as it comes."""


iteration = 0


def turn(loop: reactor.Reactor, timeout: float | None = None) -> None:
    """One iteration of the event loop, with a banner."""
    global iteration
    iteration += 1
    print(f"--- iteration {iteration}")
    loop.run_once(timeout)


def self_test(loop: reactor.Reactor, server: EchoServer) -> bool:
    table = server.request_table

    def turn_until(done) -> None:  # at most 20 iterations of at most 2 s
        for _ in range(20):
            if done():
                return
            turn(loop, 2.0)
        raise RuntimeError("the loop did not get there in 20 iterations")

    def replied(sock: socket.socket) -> bool:  # has the client something to read?
        return bool(select.select([sock], [], [], 0)[0])

    with socket.create_connection(server.server_address, timeout=5) as client:
        print("a client connects and sends b'hello\\n'")
        client.sendall(b"hello\n")
        turn_until(lambda: replied(client))
        got = client.recv(100)
        print(f"the client got {got!r}; it hangs up")
    turn_until(lambda: len(table) == 0)
    print("statistics:", table.statistics())
    return got == b"hello\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--self-test", action="store_true", help="serve one scripted client, then exit")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    # The trace goes to stdout, between the banners; the format drops the level.
    logging.basicConfig(stream=sys.stdout, format="%(name)s: %(message)s")
    logging.getLogger("reactor.trace").setLevel(logging.DEBUG)

    address = ("127.0.0.1", 0 if args.self_test else args.port)
    with reactor.Reactor() as loop, EchoServer(address, Echo) as server:
        loop.add_server(server)
        print(f"{server!r} listening on fd {server.fileno()}")
        try:
            if args.self_test:
                ok = self_test(loop, server)
                print("self-test:", "ok" if ok else "FAILED")
                return 0 if ok else 1
            host, port = server.server_address
            print(f"try: nc {host} {port}   (Ctrl-C to stop)")
            while True:  # the event loop, by hand: what loop.run() does, with banners
                turn(loop)
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    sys.exit(main())
