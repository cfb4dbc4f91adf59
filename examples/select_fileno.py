"""The classic socketserver pattern: your own select() over several servers.

What it shows: three echo servers (TCP, UDP, Unix stream) and no Reactor
at all.  A hand-written loop passes the servers' ``fileno()`` to
``select.select()`` and calls ``handle_request()`` on each server that is
readable, exactly as the stdlib documentation suggests for
"monitoring multiple servers in the same process".  The loop is the
same with ``import socketserver``; one visible difference is that the
stdlib's ``UnixStreamServer`` leaves its socket file behind at exit, and
this one removes it.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/select_fileno.py              # until Ctrl-C
    .venv/bin/python examples/select_fileno.py --seconds 30 # or 30 seconds
    .venv/bin/python examples/select_fileno.py --self-test  # talk to each once, exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the servers are closed and the temporary directory is removed.

Poke it with the lines it prints, for example:

    printf 'hello\\n' | nc -N 127.0.0.1 PORT       # TCP
    printf 'hello\\n' | nc -u -w1 127.0.0.1 PORT   # UDP
    printf 'hello\\n' | socat - TCP:127.0.0.1:PORT  # or socat (UDP:, UNIX-CONNECT:PATH)

Shortcuts taken on purpose:

* ``handle_request()`` runs the handler right there, in the loop.  A
  stream client that stays connected holds the whole loop until it closes
  (the stdlib behaves the same).  For a loop that never waits on one
  client, add the servers to a ``reactor.Reactor`` instead
  (see four_families.py).
* The loop sleeps in ``select()`` with no timeout unless ``--seconds`` is
  given, so it never wakes up for nothing; Ctrl-C ends it.
* Servers listen on 127.0.0.1 and in a fresh temporary directory, which is
  removed at exit.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import reactor as socketserver  # the drop-in import
from handlers.echo import DatagramEcho, StreamLineEcho

CLIENT_TIMEOUT = 5.0


def serve(servers: list[socketserver.BaseServer], seconds: float | None, max_requests: int | None) -> int:
    """The hand-written loop.  Returns how many requests it handled.

    Stops after ``seconds`` (None: never) or ``max_requests`` (None: never).
    """
    by_fd = {server.fileno(): server for server in servers}
    deadline = None if seconds is None else time.monotonic() + seconds
    handled = 0
    while max_requests is None or handled < max_requests:
        wait = None
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
        readable, _, _ = select.select(list(by_fd), [], [], wait)
        for fd in readable:
            by_fd[fd].handle_request()  # readable: it takes one request without waiting
            handled += 1
    return handled


def poke_command(server: socketserver.BaseServer) -> str:
    address = server.server_address
    if isinstance(server, socketserver.UnixStreamServer):
        return f"printf 'hello\\n' | nc -N -U {address}"
    host, port = address[:2]
    if isinstance(server, socketserver.UDPServer):
        return f"printf 'hello\\n' | nc -u -w1 {host} {port}"
    return f"printf 'hello\\n' | nc -N {host} {port}"


# ------------------------------------------------------------- self-test


def exchange(server: socketserver.BaseServer, payload: bytes) -> bytes:
    """One plain blocking client exchange with ``server``."""
    family, kind = server.address_family, server.socket_type
    with socket.socket(family, kind) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        if kind == socket.SOCK_DGRAM:
            sock.sendto(payload, server.server_address)
            return sock.recv(65536)
        sock.connect(server.server_address)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # StreamLineEcho echoes until it sees EOF
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


def talk_to_each(named: dict[str, socketserver.BaseServer], results: dict[str, bytes]) -> None:
    for label, server in named.items():
        try:
            results[label] = exchange(server, f"hello over {label}\n".encode())
        except OSError as exc:
            results[label] = f"<{type(exc).__name__}: {exc}>".encode()


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to each server once, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    directory = tempfile.mkdtemp(prefix="reactor-")
    named: dict[str, socketserver.BaseServer] = {}
    ok = True
    try:
        named["tcp"] = socketserver.TCPServer(("127.0.0.1", 0), StreamLineEcho)
        named["udp"] = socketserver.UDPServer(("127.0.0.1", 0), DatagramEcho)
        named["unix"] = socketserver.UnixStreamServer(os.path.join(directory, "echo.sock"), StreamLineEcho)

        print("select() over three servers' fileno():")
        for label, server in named.items():
            print(f"  {label:<5} fd {server.fileno():<3} {server.server_address}")
            if not args.self_test:
                print(f"  {'':<5} {'':<6} {poke_command(server)}")
        sys.stdout.flush()

        if args.self_test:
            results: dict[str, bytes] = {}
            client = threading.Thread(target=talk_to_each, args=(named, results), name="self-test client")
            client.start()
            try:
                # One request per server; the deadline only matters if a reply never comes.
                serve(list(named.values()), seconds=args.seconds or 30, max_requests=len(named))
            finally:
                client.join(CLIENT_TIMEOUT)
            for label in named:
                expected = f"hello over {label}\n".encode()
                reply = results.get(label, b"<no reply>")
                ok = ok and reply == expected
                print(f"  {label:<5} reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
        else:
            print("serving; Ctrl-C to stop")
            handled = serve(list(named.values()), seconds=args.seconds, max_requests=None)
            print(f"handled {handled} request(s)")
    except KeyboardInterrupt:
        print()
    finally:
        for server in named.values():
            server.server_close()  # the Unix server unlinks its socket file
        leftovers = os.listdir(directory)
        shutil.rmtree(directory, ignore_errors=True)

    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
