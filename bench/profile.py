"""The reactor's hot path, driven in one process, for profilers.

    python -m bench.profile line|chunk|udp [--rounds N] [--cprofile]

Throughput figures come from ``make bench``; this is the tool for looking
inside one system.  It serves ``LineEcho`` or ``ChunkEcho`` on TCP (or
``DatagramEcho`` on UDP) on a reactor it steps itself with ``run_once()``,
and plays 50 blocking clients in the same thread: each round, every
client sends one 32-byte line, the reactor runs until every request is
answered, every client reads its reply.  The work per request is then the
same from run to run (the loop always finds all 50 ready), so it can be
counted rather than timed:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.profile line --rounds 20     # note "Collected"
    ... --rounds 120                                         # again
    # (Collected at 120 - Collected at 20) / (100 rounds * 50) = instructions per request

Instruction counts do not move with the machine's load, unlike seconds;
the difference of two runs cancels start-up.  ``--cprofile`` prints the
functions by total time instead.  It prints CPU microseconds per request
(client work included) either way.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import time

import reactor
from handlers.echo import ChunkEcho, DatagramEcho, LineEcho

CLIENTS = 50
MESSAGE = b"x" * 31 + b"\n"


def stream_rounds(handler: type, rounds: int) -> float:
    server = reactor.TCPServer(("127.0.0.1", 0), handler)
    with reactor.Reactor() as loop:
        loop.add_server(server)
        clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(CLIENTS)]
        while len(server.connections) < CLIENTS:
            loop.run_once(1)
        began = time.process_time()
        for _ in range(rounds):
            for client in clients:
                client.send(MESSAGE)
            loop.run_once(1)  # on loopback every line is already in: one iteration answers all
            for client in clients:
                if client.recv(64) != MESSAGE:
                    raise AssertionError("wrong echo")
        spent = time.process_time() - began
        for client in clients:
            client.close()
        while server.connections:
            loop.run_once(1)
        loop.remove_server(server)
    server.server_close()
    return spent


def datagram_rounds(rounds: int) -> float:
    server = reactor.UDPServer(("127.0.0.1", 0), DatagramEcho)
    with reactor.Reactor() as loop:
        loop.add_server(server)
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
        began = time.process_time()
        for n in range(1, rounds + 1):
            for client in clients:
                client.sendto(MESSAGE, server.server_address)
            while server.request_table.totals["opened"] < n * CLIENTS:
                loop.run_once(1)
            for client in clients:
                client.settimeout(5)
                if client.recv(64) != MESSAGE:
                    raise AssertionError("wrong echo")
        spent = time.process_time() - began
        for client in clients:
            client.close()
        loop.remove_server(server)
    server.server_close()
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["line", "chunk", "udp"])
    parser.add_argument("--rounds", type=int, default=400, help="rounds of 50 requests (default 400)")
    parser.add_argument("--cprofile", action="store_true", help="print the functions by total time")
    args = parser.parse_args(argv)
    if args.system == "udp":
        run = lambda: datagram_rounds(args.rounds)  # noqa: E731
    else:
        handler = LineEcho if args.system == "line" else ChunkEcho
        run = lambda: stream_rounds(handler, args.rounds)  # noqa: E731
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    spent = run()
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    print(f"{args.system}: {spent / (args.rounds * CLIENTS) * 1e6:.2f} us CPU per request (client included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
