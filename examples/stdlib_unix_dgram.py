"""The stdlib documentation's upper-casing server, on a Unix datagram socket.

What it shows: the documentation's UDP example moved to a Unix datagram
socket, on ``reactor.UnixDatagramServer`` after one changed line,
``import reactor as socketserver``.  The handler is a
``DatagramRequestHandler``: it reads the datagram from ``self.rfile`` and
writes it upper-cased to ``self.wfile``, which the server sends back as
one datagram.  Only the server class and the address change: a path in a
fresh temporary directory instead of ``(HOST, PORT)``.

**A client must bind its own socket to a path to get a reply.**  A Unix
datagram socket that sends without binding has no address: the server
receives the datagram (and the handler runs) but has nowhere to send the
answer, so none is sent.  ``nc -uU`` binds a temporary path for you;
with socat, add ``bind=``.  The self-test shows both kinds of client.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/stdlib_unix_dgram.py              # until Ctrl-C
    .venv/bin/python examples/stdlib_unix_dgram.py --seconds 30 # or 30 seconds
    .venv/bin/python examples/stdlib_unix_dgram.py --self-test  # two clients, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the server is closed (which removes its socket file) and the
temporary directory is removed.

Poke it with the line it prints, or with socat:

    printf 'hello\\n' | nc -u -w1 -U /tmp/reactor-.../upper.dsock   # -> HELLO
    echo hello | socat - UNIX-SENDTO:/tmp/reactor-.../upper.dsock,bind=/tmp/me.dsock
    rm /tmp/me.dsock    # socat leaves its own socket file behind

Shortcuts taken on purpose:

* The reply is the whole datagram upper-cased; the documentation's UDP
  version strips it first, and this one keeps the newline so that a
  terminal shows each answer on a line of its own.
* The server's socket lives in a new temporary directory, removed at
  exit; there is no option to put it elsewhere.  The self-test's bound
  client puts its own socket file there too, and removes it.
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

import reactor as socketserver  # the one changed line; the rest is stdlib code

CLIENT_TIMEOUT = 5.0


class UpperDatagram(socketserver.DatagramRequestHandler):
    """One datagram in, the same upper-cased out (to a client that has an address)."""

    def handle(self):
        data = self.rfile.read()
        print(f"{self.client_address or 'a client with no address'} wrote: {data!r}")
        self.wfile.write(data.upper())  # sent back as one datagram after handle()


def serve(server: socketserver.UnixDatagramServer, seconds: float | None) -> None:
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


def talk(server_path: str, client_path: str) -> dict[str, bytes | None]:
    """An unbound client sends first, then a bound one; only the bound one is answered.

    The server handles datagrams in the order they arrive, so once the
    bound client has its reply, the unbound client's datagram has been
    handled too: if a reply were coming for it, it would be there already.
    """
    found: dict[str, bytes | None] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as bound:
        unbound.sendto(b"from a client with no address\n", server_path)
        bound.settimeout(CLIENT_TIMEOUT)
        bound.bind(client_path)  # now the server has somewhere to answer
        try:
            bound.sendto(b"hello over a unix datagram socket\n", server_path)
            found["bound"] = bound.recv(65536)
        except OSError as exc:
            found["bound"] = f"<{type(exc).__name__}: {exc}>".encode()
        finally:
            os.unlink(client_path)
        unbound.setblocking(False)
        try:
            found["unbound"] = unbound.recv(65536)
        except BlockingIOError:
            found["unbound"] = None  # nothing came, as expected
    return found


def self_test(server: socketserver.UnixDatagramServer, directory: str) -> bool:
    """Serve here while a client thread talks; its end stops the server."""
    found: dict[str, bytes | None] = {}

    def client() -> None:
        try:
            found.update(talk(server.server_address, os.path.join(directory, "client.dsock")))
        finally:
            server.shutdown()  # from another thread: returns once serve_forever() has

    thread = threading.Thread(target=client, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)
    bound = found.get("bound", b"<no reply>")
    good = bound == b"HELLO OVER A UNIX DATAGRAM SOCKET\n"
    print(f"  unix-dgram  reply {bound!r}  {'ok' if good else 'WRONG'}")
    silent = "unbound" in found and found["unbound"] is None
    print(f"  unbound     {'no reply' if silent else repr(found.get('unbound'))}  {'ok' if silent else 'WRONG'}")
    return good and silent


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to the server, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    directory = tempfile.mkdtemp(prefix="reactor-")
    path = os.path.join(directory, "upper.dsock")
    ok = True
    try:
        with socketserver.UnixDatagramServer(path, UpperDatagram) as server:
            print("the stdlib's upper-casing server on a Unix datagram socket:")
            print(f"  unix-dgram  {server.server_address}")
            if args.self_test:
                ok = self_test(server, directory)
            else:
                print(f"              printf 'hello\\n' | nc -u -w1 -U {path}")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    finally:
        leftovers = os.listdir(directory)  # server_close() removed the socket file
        shutil.rmtree(directory, ignore_errors=True)

    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
