"""Step 5 of the tutorial: a silent client, and the timer that ends it.

What it shows: step 1's deaf server was stuck on a client that connected
and said nothing.  The reactor is never stuck on it (step 4), but it
still holds the connection for ever.  ``idle_timeout`` on the server
bounds that: a connection that waits longer than that between messages
is closed.  It costs no thread and no polling: the connection has a
timer, and the loop's ``select()`` never sleeps past the nearest one
(watch its ``timeout`` shrink in the trace).  When it fires, the
connection goes ``CLOSING``: the server shuts its sending side, the
client reads EOF, and once the client hangs up too the record is
``CLOSED``.

Run it and poke it with ``nc``; each event is one iteration:

    .venv/bin/python examples/tutorial/step5_timers.py --port 8005
    nc 127.0.0.1 8005            # or: socat - TCP:127.0.0.1:8005; then say nothing for 30 s

    .venv/bin/python examples/tutorial/step5_timers.py --self-test

Shortcuts taken on purpose: ``run_once()`` by hand, as in step 4; the
self-test lowers the idle timeout to one second, which is far longer
than anything else takes.
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
    idle_timeout = 30.0  # seconds a connection may wait without starting a message


iteration = 0


def turn(loop: reactor.Reactor, timeout: float | None = None) -> None:
    """One iteration of the event loop, with a banner."""
    global iteration
    iteration += 1
    print(f"--- iteration {iteration}")
    loop.run_once(timeout)


def self_test(loop: reactor.Reactor, server: EchoServer) -> bool:
    table = server.request_table
    server.idle_timeout = 1.0  # not 30 s: the self-test waits for it

    def turn_until(done) -> None:  # at most 20 iterations of at most 2 s
        for _ in range(20):
            if done():
                return
            turn(loop, 2.0)
        raise RuntimeError("the loop did not get there in 20 iterations")

    def replied(sock: socket.socket) -> bool:  # has the client something to read?
        return bool(select.select([sock], [], [], 0)[0])

    address = server.server_address
    with socket.create_connection(address, timeout=5) as a:
        print("client A connects and says nothing")
        turn_until(lambda: len(table) == 1)
        with socket.create_connection(address, timeout=5) as b:
            print("client B connects and sends b'hello\\n'")
            b.sendall(b"hello\n")
            turn_until(lambda: replied(b))
            got_b = b.recv(100)
            print(f"client B: got {got_b!r} while A is connected; B hangs up")
        turn_until(lambda: len(table) == 1)
        print("client A still says nothing; the next iteration sleeps until its idle timer")
        turn_until(lambda: replied(a))
        got_a = a.recv(100)
        print(f"client A: got {got_a!r} (the server closed); A hangs up")
    turn_until(lambda: len(table) == 0)
    print("statistics:", table.statistics())
    return got_b == b"hello\n" and got_a == b"" and table.counters.get("idle_timeout") == 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--self-test", action="store_true", help="serve two scripted clients, then exit")
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
            print(f"try: nc {host} {port}, then wait {server.idle_timeout:g} s   (Ctrl-C to stop)")
            while True:  # the event loop, by hand: what loop.run() does, with banners
                turn(loop)
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    sys.exit(main())
