"""The stdlib documentation's ThreadedTCPServer, on reactor; then with a bounded pool.

What it shows: the "Asynchronous Mixins" example of the ``socketserver``
documentation, after one changed line, ``import reactor as
socketserver``.  ``ThreadedTCPServer`` is ``ThreadingMixIn`` +
``TCPServer``, and its handler answers with the name of the thread it
runs on, followed by what the client sent, so each reply says where it
was handled.  The self-test runs it as the documentation does: the server
loop on a thread of its own, three clients one after the other from the
main thread, then ``shutdown()`` and ``server_close()``.

Then the variant the stdlib has no spelling for: a bounded pool.
``ThreadingMixIn`` starts one thread per request, with no limit, so a
flood of clients is a flood of threads.  One keyword gives any server a
pool of at most N worker threads instead:

    server = socketserver.TCPServer(address, Handler, dispatch=socketserver.ThreadPool(4))

(or, keeping the mix-in, a class attribute: ``max_workers = 4`` in a
subclass of ``ThreadedTCPServer``).  When every worker is busy, further
requests wait their turn in the server's request table, and beyond the
pool's queue the server stops accepting: the clients wait in the
kernel's listen backlog rather than in a queue of ours.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/stdlib_threaded.py               # a thread per request, until Ctrl-C
    .venv/bin/python examples/stdlib_threaded.py --workers 4   # a pool of 4 threads
    .venv/bin/python examples/stdlib_threaded.py --port 9999 --seconds 30
    .venv/bin/python examples/stdlib_threaded.py --self-test   # the documentation's run, both ways

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server, which waits for the
request threads.

Poke it with the line it prints:

    printf 'hello\\n' | nc -N 127.0.0.1 PORT
    # -> reactor request ('127.0.0.1', 51234): hello     (a thread per request)
    # -> reactor worker 1: hello                         (--workers N)

Shortcuts taken on purpose:

* The thread names are reactor's: ``reactor request (address)`` for the
  mix-in's threads, ``reactor worker N`` for a pool's, where the stdlib
  says ``Thread-N``.  A pool's names repeat, because its threads do.
* The handler works on bytes and sends back what one ``recv(1024)``
  returned, where the documentation's decodes it as ASCII first (and
  fails on anything else).
* Before closing, it shuts down the reading side of connections still
  open, so that a handler waiting in ``recv()`` for an idle client (a
  quiet ``nc``) returns and ``server_close()`` does not wait for ever.
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise.  ``--seconds`` stops it with ``server.shutdown()`` from a
  timer thread.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

import reactor as socketserver  # the one changed line; the rest is stdlib code

CLIENT_TIMEOUT = 5.0


class ThreadedTCPRequestHandler(socketserver.BaseRequestHandler):
    """Answers ``<thread name>: <what the client sent>``."""

    def handle(self):
        data = self.request.recv(1024)
        name = threading.current_thread().name
        self.request.sendall(name.encode() + b": " + data)


class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    pass


def make_server(address: tuple, workers: int | None) -> socketserver.TCPServer:
    """The documentation's server, or (``workers``) a plain one with a bounded pool."""
    if workers is None:
        return ThreadedTCPServer(address, ThreadedTCPRequestHandler)
    return socketserver.TCPServer(address, ThreadedTCPRequestHandler, dispatch=socketserver.ThreadPool(workers))


def hang_up(server: socketserver.TCPServer) -> None:
    """Shut down the reading side of every connection still open.

    A handler blocked in ``recv()`` then sees EOF and returns, so
    ``server_close()`` can join its thread.
    """
    for record in server.request_table.snapshot():
        sock = record.request  # None once the record has finished
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # its handler closed it meanwhile


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
        hang_up(server)


# ------------------------------------------------------------- self-test


def client(ip: str, port: int, message: bytes) -> bytes:
    """The documentation's client: connect, send, read the answer."""
    try:
        with socket.create_connection((ip, port), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(1024):
                reply += chunk
            return reply
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>".encode()


def self_test(workers: int | None) -> bool:
    """The documentation's run: the server loop on a thread, three clients from this one."""
    ok = True
    with make_server(("127.0.0.1", 0), workers) as server:
        ip, port = server.server_address
        server_thread = threading.Thread(target=server.serve_forever, name="server loop")
        server_thread.start()
        kind = "a thread per request" if workers is None else f"a pool of {workers}"
        print(f"{kind}; server loop running in thread: {server_thread.name}")
        try:
            for n in (1, 2, 3):
                message = f"hello world {n}".encode()
                reply = client(ip, port, message)
                # Right: "<name>: <message>", where the name is neither this
                # thread's nor the server loop's: a thread of the server's.
                name, _, echoed = reply.decode(errors="replace").partition(": ")
                good = echoed == message.decode() and name not in ("", "MainThread", server_thread.name)
                ok = ok and good
                print(f"  tcp  reply {reply!r}  {'ok' if good else 'WRONG'}")
        finally:
            server.shutdown()
            server_thread.join(CLIENT_TIMEOUT)
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--workers", type=int, default=None, help="a pool of this many threads (default: a thread per request)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="the documentation's run, both ways, then exit")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    ok = True
    try:
        if args.self_test:
            ok = self_test(None)
            ok = self_test(args.workers or 4) and ok
        else:
            with make_server(("127.0.0.1", args.port), args.workers) as server:
                host, port = server.server_address
                kind = "a thread per request" if args.workers is None else f"a pool of {args.workers} threads"
                print(f"the stdlib's ThreadedTCPServer example, {kind}:")
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
