"""Step 6 of the tutorial: where does the handler run?  Inline, ThreadPool, Fork.

What it shows: one slow framed handler (it sleeps 50 ms per line, as a
stand-in for real work) served three times, each time with another
dispatch strategy, by two clients that send a line at the same moment.
Each line of the trace says when it happened (in seconds since the
clients sent; when serving, since the start) and where (the thread, or
the child process), so the three runs can be compared:

* ``Inline()``: the handler runs on the loop's thread; while it sleeps,
  the loop sleeps with it, and a timer due 20 ms in fires some 80 ms late;
* ``ThreadPool(2)``: the loop hands each message to a worker thread and
  goes on turning; a worker's reply wakes the loop through its wakeup
  socketpair ("wakeup read", then "posted by another thread: ...");
* ``Fork(2)``: each message's handler runs in a child process, which the
  request table tracks as a record of its own (``new child, pid <pid>,
  running #<n>``); the loop learns of the child's exit from its pidfd.

Run it:

    .venv/bin/python examples/tutorial/step6_strategies.py --self-test
    .venv/bin/python examples/tutorial/step6_strategies.py --strategy pool --port 8006
    nc 127.0.0.1 8005        # from two terminals; type a line in each

Shortcuts taken on purpose: ``time.sleep()`` in a handler, which a real
handler on the loop must never do (that is the point of the Inline run);
the self-test turns the loop by hand, as step 4 does.  The ThreadPool's
workers are gone (``server_close()`` joins them) before the Fork run
starts: reactor refuses to fork while its worker threads are alive.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import time

import reactor

PARENT = os.getpid()
START = [time.monotonic()]  # the trace's time zero; reset for each run
trace = logging.getLogger("reactor.trace")
log = logging.getLogger("step5")


class WhenAndWhere(logging.Filter):
    """Adds %(t)s, seconds since START, and %(where)s, the thread or the child."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.t = f"{time.monotonic() - START[0]:+.3f}s"
        record.where = record.threadName if os.getpid() == PARENT else f"child {os.getpid()}"
        return True


class SlowEcho(reactor.MessageHandler):
    def handle(self) -> None:
        log.info("handler starts on %r", self.message)
        time.sleep(0.05)  # slow work
        self.wfile.write(self.message)
        log.info("handler done")


def heartbeat() -> None:
    """A timer callback; the trace's "timer fired" line says how late it ran."""


def replied(sock: socket.socket) -> bool:  # has the client something to read?
    return bool(select.select([sock], [], [], 0)[0])


def run(strategy: reactor.Strategy) -> bool:
    """Two clients, one line each, on a server with ``strategy``; print the trace."""
    print(f"=== {strategy!r}")

    with reactor.Reactor() as loop, reactor.TCPServer(("127.0.0.1", 0), SlowEcho, dispatch=strategy) as server:
        table = server.request_table

        def turn_until(done) -> None:  # at most 50 iterations of at most 1 s
            for _ in range(50):
                if done():
                    return
                loop.run_once(1.0)
            raise RuntimeError("the loop did not get there in 50 iterations")

        loop.add_server(server)
        clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(2)]
        try:
            turn_until(lambda: table.counts().get("READING") == 2)  # both accepted (step 4 showed how)
            START[0] = time.monotonic()
            trace.setLevel(logging.DEBUG)
            for n, client in enumerate(clients, 1):
                client.sendall(b"line %d\n" % n)
            loop.call_later(0.02, heartbeat)
            turn_until(lambda: all(replied(client) for client in clients))
            replies = [client.recv(100) for client in clients]
        finally:
            trace.setLevel(logging.NOTSET)  # the closing is as in step 4
            for client in clients:
                client.close()
        turn_until(lambda: len(table) == 0)
    print("replies:", replies)
    return replies == [b"line 1\n", b"line 2\n"]


def main(argv: list[str] | None = None) -> int:
    strategies = {"inline": reactor.Inline, "pool": lambda: reactor.ThreadPool(2), "fork": lambda: reactor.Fork(2)}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=strategies, default="inline", help="how to run the handler")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--self-test", action="store_true", help="run all three with two clients each, then exit")
    args = parser.parse_args(argv)
    # Line buffering, so that a forked child never inherits (and prints again) half-written output.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(WhenAndWhere())
    handler.setFormatter(logging.Formatter("%(t)s %(where)-16s %(message)s"))
    logging.getLogger().addHandler(handler)
    log.setLevel(logging.INFO)

    if args.self_test:
        ok = all([run(strategies[name]()) for name in ("inline", "pool", "fork")])
        print("self-test:", "ok" if ok else "FAILED")
        return 0 if ok else 1
    trace.setLevel(logging.DEBUG)
    address, strategy = ("127.0.0.1", args.port), strategies[args.strategy]()
    with reactor.Reactor() as loop, reactor.TCPServer(address, SlowEcho, dispatch=strategy) as server:
        loop.add_server(server)
        host, port = server.server_address
        print(f"{server.dispatch!r}; try: nc {host} {port}   (Ctrl-C to stop)")
        try:
            loop.run()
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    sys.exit(main())
