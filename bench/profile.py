"""The reactor's hot path, driven in one process, for profilers.

    python -m bench.profile line|chunk|udp|stdlib-udp|floor|asyncio-proto|asyncio-streams
                            [--rounds N] [--depth D] [--cprofile]

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
the difference of two runs cancels start-up.  ``--depth 16`` pipelines 16
lines per client per round.  ``asyncio-proto`` and ``asyncio-streams`` run
the same rounds against asyncio's Protocol and streams echo servers, for
comparison; ``floor`` against bench/floor.py, the stdlib's hooks and
``LineEcho`` with nothing around them (no table, no bounds): what the
handler API itself costs; ``stdlib-udp`` against the stdlib's own
``socketserver.UDPServer`` with the same ``DatagramEcho``.  ``--cprofile`` prints the functions by total time, and the
total of calls profiled ("SYSTEM: N calls", builtins included; start-up
cancels in the difference of two runs as above).  It prints CPU
microseconds per request (client work included) either way.
``python -m bench`` runs both methods itself: bench/counts.py.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import time
from typing import Any

import reactor
from handlers.echo import ChunkEcho, DatagramEcho, LineEcho

CLIENTS = 50
MESSAGE = b"x" * 31 + b"\n"


def timed_rounds(clients: list[socket.socket], step: Any, rounds: int, depth: int) -> float:
    """CPU seconds for ``rounds`` rounds: each client sends ``depth`` lines, ``step(1)`` runs the
    server once (on loopback every line is already in: one step answers all), each reads its echo."""
    began = time.process_time()
    for _ in range(rounds):
        for client in clients:
            client.send(MESSAGE * depth)
        step(1)
        for client in clients:
            got = b""
            while len(got) < len(MESSAGE) * depth:
                got += client.recv(65536)
            if got != MESSAGE * depth:
                raise AssertionError("wrong echo")
    return time.process_time() - began


def stream_rounds(handler: type, rounds: int, depth: int = 1) -> float:
    server = reactor.TCPServer(("127.0.0.1", 0), handler)
    with reactor.Reactor() as loop:
        loop.add_server(server)
        clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(CLIENTS)]
        while len(server.connections) < CLIENTS:
            loop.run_once(1)
        spent = timed_rounds(clients, loop.run_once, rounds, depth)
        for client in clients:
            client.close()
        while server.connections:
            loop.run_once(1)
        loop.remove_server(server)
    server.server_close()
    return spent


def floor_rounds(rounds: int, depth: int = 1) -> float:
    """The same rounds against bench/floor.py: the handler API's hooks and nothing around them."""
    from .floor import FloorServer

    server = FloorServer()
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(CLIENTS)]
    while len(server.connections) < CLIENTS:
        server.run_once(1)
    spent = timed_rounds(clients, server.run_once, rounds, depth)
    for client in clients:
        client.close()
    server.close()
    return spent


def stdlib_datagram_rounds(rounds: int) -> float:
    """The same rounds against the stdlib's ``socketserver.UDPServer`` and the
    same handler: each readiness, one ``_handle_request_noblock()`` (what its
    ``serve_forever`` does per datagram), the floor for datagrams."""
    import selectors
    import socketserver

    server = socketserver.UDPServer(("127.0.0.1", 0), DatagramEcho)
    server.socket.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
    began = time.process_time()
    for _ in range(rounds):
        for client in clients:
            client.sendto(MESSAGE, server.server_address)
        for _ in range(CLIENTS):
            selector.select(1)
            server._handle_request_noblock()
        for client in clients:
            client.settimeout(5)
            if client.recv(64) != MESSAGE:
                raise AssertionError("wrong echo")
    spent = time.process_time() - began
    for client in clients:
        client.close()
    selector.close()
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


def asyncio_rounds(kind: str, rounds: int, depth: int = 1) -> float:
    """The same rounds against asyncio's Protocol echo or streams ``readline`` echo.

    asyncio's loop is stepped with its private ``_run_once()`` (a measuring
    tool's licence): a no-op callback first, so that a turn never blocks.
    """
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def lines(reader: Any, writer: Any) -> None:
        while line := await reader.readline():
            writer.write(line)
        writer.close()

    loop = asyncio.new_event_loop()
    if kind == "asyncio-proto":
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
    else:
        server = loop.run_until_complete(asyncio.start_server(lines, "127.0.0.1", 0))
    clients = [socket.create_connection(server.sockets[0].getsockname()) for _ in range(CLIENTS)]
    loop.run_until_complete(asyncio.sleep(0.2))  # every connection accepted
    # Blocking sockets read with MSG_DONTWAIT: "nothing yet" comes back at
    # once (a socket with a timeout would wait for it), and asyncio turns.
    began = time.process_time()
    for _ in range(rounds):
        for client in clients:
            client.send(MESSAGE * depth)
        for client in clients:
            got = 0
            while got < len(MESSAGE) * depth:
                try:
                    got += len(client.recv(65536, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    loop.call_soon(lambda: None)
                    loop._run_once()
    spent = time.process_time() - began
    for client in clients:
        client.close()
    loop.run_until_complete(asyncio.sleep(0.1))
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["line", "chunk", "udp", "stdlib-udp", "floor", "asyncio-proto", "asyncio-streams"])
    parser.add_argument("--depth", type=int, default=1, help="lines pipelined per client per round (stream systems)")
    parser.add_argument("--rounds", type=int, default=400, help="rounds of 50 requests (default 400)")
    parser.add_argument("--cprofile", action="store_true", help="print the functions by total time")
    args = parser.parse_args(argv)
    if args.system == "udp":
        run = lambda: datagram_rounds(args.rounds)  # noqa: E731
    elif args.system == "stdlib-udp":
        run = lambda: stdlib_datagram_rounds(args.rounds)  # noqa: E731
    elif args.system == "floor":
        run = lambda: floor_rounds(args.rounds, args.depth)  # noqa: E731
    elif args.system.startswith("asyncio"):
        run = lambda: asyncio_rounds(args.system, args.rounds, args.depth)  # noqa: E731
    else:
        handler = LineEcho if args.system == "line" else ChunkEcho
        run = lambda: stream_rounds(handler, args.rounds, args.depth)  # noqa: E731
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    spent = run()
    if profiler is not None:
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        print(f"{args.system}: {stats.total_calls} calls")  # type: ignore[attr-defined]
    depth = 1 if "udp" in args.system else args.depth
    print(f"{args.system}: {spent / (args.rounds * CLIENTS * depth) * 1e6:.2f} us CPU per request (client included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
