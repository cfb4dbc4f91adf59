"""The stdlib documentation's upper-casing server, on a Unix stream socket.

What it shows: the documentation's TCP example moved to a Unix stream
socket, on ``reactor.UnixStreamServer`` after one changed line,
``import reactor as socketserver``.  The handler is the documentation's
``StreamRequestHandler``, which reads one line and sends it back
upper-cased; only the server class and the address change: a path in a
fresh temporary directory instead of ``(HOST, PORT)``.

One visible difference from the stdlib: its ``UnixStreamServer`` leaves
the socket file behind at exit, so the next start fails with "Address
already in use"; this one removes it in ``server_close()``, which the
``with`` block calls.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/stdlib_unix_stream.py              # until Ctrl-C
    .venv/bin/python examples/stdlib_unix_stream.py --seconds 30 # or 30 seconds
    .venv/bin/python examples/stdlib_unix_stream.py --self-test  # one client, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the server is closed (which removes its socket file) and the
temporary directory is removed.

Poke it with the line it prints, or with socat:

    printf 'hello\\n' | nc -N -U /tmp/reactor-.../upper.sock   # -> HELLO
    echo hello | socat - UNIX-CONNECT:/tmp/reactor-.../upper.sock

Shortcuts taken on purpose:

* The server is the plain, synchronous ``UnixStreamServer``: the handler
  runs in the loop and blocks in ``readline()``, so a client that
  connects and sends half a line keeps the others waiting (socketserver's
  contract).  ``stdlib_tcp.py --framed`` shows the one-line change to a
  ``MessageHandler`` that removes that wait; it works on this server too.
* The reply keeps the line's newline, which the documentation's version
  strips, so that a terminal shows each answer on a line of its own.
* The socket lives in a new temporary directory, removed at exit;
  there is no option to put it elsewhere.
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


class UpperStream(socketserver.StreamRequestHandler):
    """The documentation's handler: one line in, the same line upper-cased out."""

    def handle(self):
        self.data = self.rfile.readline()
        # A Unix client that did not bind has no address (''): nothing to print for it.
        print(f"a client wrote: {self.data!r}")
        self.wfile.write(self.data.upper())


def serve(server: socketserver.UnixStreamServer, seconds: float | None) -> None:
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


def ask(path: str, payload: bytes) -> bytes:
    """Connect, send ``payload``, close our sending side, read until the server closes."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(path)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            return reply
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>".encode()


def self_test(server: socketserver.UnixStreamServer) -> bool:
    """Serve here while a client thread talks once; its end stops the server."""
    payload = b"hello over a unix stream socket\n"
    replies: list[bytes] = []

    def client() -> None:
        try:
            replies.append(ask(server.server_address, payload))
        finally:
            server.shutdown()  # from another thread: returns once serve_forever() has

    thread = threading.Thread(target=client, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)
    reply = replies[0] if replies else b"<no reply>"
    print(f"  unix  reply {reply!r}  {'ok' if reply == payload.upper() else 'WRONG'}")
    return reply == payload.upper()


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to the server once, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    directory = tempfile.mkdtemp(prefix="reactor-")
    path = os.path.join(directory, "upper.sock")
    ok = True
    try:
        with socketserver.UnixStreamServer(path, UpperStream) as server:
            print("the stdlib's upper-casing server on a Unix stream socket:")
            print(f"  unix  {server.server_address}")
            if args.self_test:
                ok = self_test(server)
            else:
                print(f"        printf 'hello\\n' | nc -N -U {path}")
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
