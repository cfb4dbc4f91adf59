"""One Reactor serving TCP, UDP, Unix stream and Unix datagram at once.

What it shows: four echo servers, one per socket family, added to ONE
``reactor.Reactor`` and served by one thread through one ``select()``.
The handlers are the ready-made ``handlers.echo.StreamLineEcho`` (sends
every line back until EOF) and ``DatagramEcho`` (sends each datagram back).

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/four_families.py              # until Ctrl-C
    .venv/bin/python examples/four_families.py --seconds 30 # or 30 seconds
    .venv/bin/python examples/four_families.py --self-test  # talk to each once, exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the servers are closed and the temporary directory is removed.

It prints the four addresses and a command to poke each one, such as:

    printf 'hello\\n' | nc -N 127.0.0.1 PORT               # TCP
    printf 'hello\\n' | nc -u -w1 127.0.0.1 PORT           # UDP
    printf 'hello\\n' | nc -N -U /tmp/reactor-.../echo.sock # Unix stream

or, with socat (the same on every system; nc's flags are not):

    printf 'hello\\n' | socat - TCP:127.0.0.1:PORT
    printf 'hello\\n' | socat - UDP:127.0.0.1:PORT
    printf 'hello\\n' | socat - UNIX-CONNECT:/tmp/reactor-.../echo.sock
    printf 'hello\\n' | socat - UNIX-SENDTO:/tmp/reactor-.../echo.dsock,bind=/tmp/me.dsock

Shortcuts taken on purpose:

* The stream servers are the plain, synchronous ``TCPServer`` and
  ``UnixStreamServer``: the handler runs inside the loop and reads its
  socket in blocking mode, so while one stream client stays connected the
  other three servers wait, and so does the ``--seconds`` timer.  That is
  socketserver's contract for these classes.  Send and close (``nc -N``)
  rather than typing into an interactive session, or use the
  ``Threading*`` classes.
* A Unix datagram client must bind its socket to a path, or the server has
  no address to send the echo to (``nc -uU`` binds one for you; with socat,
  add ``bind=``).
* Servers listen on 127.0.0.1 and in a fresh temporary directory only.
  The directory and its socket files are removed at exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading

import reactor
from handlers.echo import DatagramEcho, StreamLineEcho

CLIENT_TIMEOUT = 5.0


def server_specs(directory: str) -> list[tuple[str, type, object, type]]:
    """(label, server class, address, handler) for each family.

    Port 0 lets the kernel choose a free port; ``server_address`` says which.
    """
    return [
        ("tcp", reactor.TCPServer, ("127.0.0.1", 0), StreamLineEcho),
        ("udp", reactor.UDPServer, ("127.0.0.1", 0), DatagramEcho),
        ("unix", reactor.UnixStreamServer, os.path.join(directory, "echo.sock"), StreamLineEcho),
        ("unix-dgram", reactor.UnixDatagramServer, os.path.join(directory, "echo.dsock"), DatagramEcho),
    ]


def poke_command(label: str, address: object) -> str:
    """A shell line that sends one line to the server (OpenBSD netcat)."""
    if label == "tcp":
        host, port = address  # type: ignore[misc]
        return f"printf 'hello\\n' | nc -N {host} {port}"
    if label == "udp":
        host, port = address  # type: ignore[misc]
        return f"printf 'hello\\n' | nc -u -w1 {host} {port}"
    if label == "unix":
        return f"printf 'hello\\n' | nc -N -U {address}"
    return f"printf 'hello\\n' | nc -u -w1 -U {address}"


# ------------------------------------------------------------- self-test


def stream_exchange(family: int, address: object, payload: bytes) -> bytes:
    """Send ``payload``, close our sending side, read until the server closes."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # StreamLineEcho echoes until it sees EOF
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


def datagram_exchange(family: int, address: object, payload: bytes, bind_to: str | None = None) -> bytes:
    """Send one datagram, wait for one back."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        if bind_to is not None:
            sock.bind(bind_to)  # so the server has an address to answer
        try:
            sock.sendto(payload, address)
            return sock.recv(65536)
        finally:
            if bind_to is not None:
                os.unlink(bind_to)


def talk_to_each(servers: dict[str, reactor.BaseServer], directory: str, results: dict[str, bytes]) -> None:
    """The self-test's client: one exchange per server, from another thread."""
    for label, server in servers.items():
        payload = f"hello over {label}\n".encode()
        address = server.server_address
        try:
            if label == "tcp":
                reply = stream_exchange(socket.AF_INET, address, payload)
            elif label == "udp":
                reply = datagram_exchange(socket.AF_INET, address, payload)
            elif label == "unix":
                reply = stream_exchange(socket.AF_UNIX, address, payload)
            else:
                client_path = os.path.join(directory, "client.dsock")
                reply = datagram_exchange(socket.AF_UNIX, address, payload, bind_to=client_path)
        except OSError as exc:
            reply = f"<{type(exc).__name__}: {exc}>".encode()
        results[label] = reply


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to each server once, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    directory = tempfile.mkdtemp(prefix="reactor-")
    servers: dict[str, reactor.BaseServer] = {}
    loop = reactor.Reactor()
    ok = True
    try:
        for label, server_class, address, handler in server_specs(directory):
            servers[label] = server_class(address, handler)
            loop.add_server(servers[label])

        print(f"one Reactor ({type(loop.selector).__name__}) serving:")
        for label, server in servers.items():
            print(f"  {label:<10}  {server.server_address}")
            if not args.self_test:
                print(f"  {'':<10}  {poke_command(label, server.server_address)}")
        sys.stdout.flush()

        if args.seconds is not None:
            loop.call_later(args.seconds, loop.stop)

        if args.self_test:
            results: dict[str, bytes] = {}

            def client() -> None:
                try:
                    talk_to_each(servers, directory, results)
                finally:
                    loop.call_soon_threadsafe(loop.stop)  # the one thread-safe way in

            if args.seconds is None:
                loop.call_later(30, loop.stop)  # a deadline, in case a reply never comes
            thread = threading.Thread(target=client, name="self-test client")
            thread.start()
            try:
                loop.run()
            finally:
                thread.join(CLIENT_TIMEOUT)
            for label in servers:
                expected = f"hello over {label}\n".encode()
                reply = results.get(label, b"<no reply>")
                ok = ok and reply == expected
                print(f"  {label:<10}  reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
        else:
            print("serving; Ctrl-C to stop")
            loop.run()
    except KeyboardInterrupt:
        print()
    finally:
        loop.close()  # stops watching the servers' sockets
        for server in servers.values():
            server.server_close()  # closes them; Unix servers unlink their socket files
        leftovers = os.listdir(directory)
        shutil.rmtree(directory, ignore_errors=True)

    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
