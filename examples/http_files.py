"""The stdlib's file-serving HTTP handler, unchanged, on a reactor server with a thread pool.

What it shows: ``http.server.SimpleHTTPRequestHandler``, the handler
behind ``python -m http.server``, served by ``reactor.TCPServer`` with a
pool of worker threads.  The handler is the stdlib's own class, imported
from ``http.server`` and not modified: it is a classic
``socketserver.StreamRequestHandler`` that reads the request from a
blocking socket, and reactor runs such handlers as they are.  The pool is
one keyword, ``dispatch=reactor.ThreadPool(8)``: at most 8 requests run at
once, the next ones wait their turn in the server's request table, and
beyond the pool's queue the server stops accepting until a worker is free
(``python -m http.server`` starts a thread per connection, without a
limit).

By default it creates a temporary directory with an ``index.html`` and a
``hello.txt`` and serves that; ``--directory DIR`` serves ``DIR`` instead
(read-only: the handler only reads files and lists directories).

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/http_files.py                        # until Ctrl-C
    .venv/bin/python examples/http_files.py --directory . --port 8000
    .venv/bin/python examples/http_files.py --workers 2 --seconds 30
    .venv/bin/python examples/http_files.py --self-test            # fetch two files, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server, which joins the pool's
workers, and a temporary directory it made is removed.

Poke it with the line it prints:

    curl -s http://127.0.0.1:PORT/            # index.html
    curl -s http://127.0.0.1:PORT/hello.txt

Shortcuts taken on purpose:

* The handler logs every request to stderr, as ``python -m http.server``
  does; that is left on.  Nothing needs it quiet: the tests that serve
  this example collect stderr and look only for tracebacks and
  ResourceWarnings, and a few dozen log lines fit in the pipe.
* The handler has no socket timeout (the stdlib's default), so a client
  that connects and says nothing holds a worker until it goes away, and
  as many such clients as workers keep the server busy.  A real server
  would set ``timeout`` on a handler subclass.  At exit the reading side
  of connections still open is shut down, so that no worker waits for
  ever on such a client.
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise; ``SO_REUSEADDR`` is set, as ``http.server.HTTPServer`` does,
  so a fixed ``--port`` can be reused at once after a restart.
  ``--seconds`` stops it with ``server.shutdown()`` from a timer thread.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import http.server
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading

import reactor

CLIENT_TIMEOUT = 5.0

INDEX = b"""<!doctype html>
<title>reactor serves files</title>
<p>This page came from <code>http.server.SimpleHTTPRequestHandler</code>,
run by a <code>reactor.TCPServer</code> with a thread pool.
<p>See also <a href="hello.txt">hello.txt</a>.
"""
HELLO = b"hello from a file served by reactor\n"


class FileServer(reactor.TCPServer):
    allow_reuse_address = True  # as http.server.HTTPServer: a restart may reuse the port at once


def make_site() -> str:
    """A new temporary directory with two files to serve."""
    directory = tempfile.mkdtemp(prefix="reactor-http-")
    for name, body in (("index.html", INDEX), ("hello.txt", HELLO)):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(body)
    return directory


def hang_up(server: reactor.TCPServer) -> None:
    """Shut down the reading side of every connection still open.

    A handler blocked reading its request then sees EOF and returns, so
    ``server_close()`` can join its worker.
    """
    for record in server.request_table.snapshot():
        sock = record.request  # None once the record has finished
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # its handler closed it meanwhile


def serve(server: reactor.TCPServer, seconds: float | None) -> None:
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


def fetch(address: tuple, path: str) -> tuple[int, bytes]:
    """GET ``path``: (status, body), or (0, a description of the error)."""
    connection = http.client.HTTPConnection(*address[:2], timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"<{type(exc).__name__}: {exc}>".encode()
    finally:
        connection.close()


def self_test(server: reactor.TCPServer) -> bool:
    """Serve here while a client thread fetches two files; its end stops the server."""
    wanted = {"/": INDEX, "/hello.txt": HELLO}  # "/" is index.html
    got: dict[str, tuple[int, bytes]] = {}

    def client() -> None:
        try:
            for path in wanted:
                got[path] = fetch(server.server_address, path)
        finally:
            server.shutdown()  # from another thread: returns once serve_forever() has

    thread = threading.Thread(target=client, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)
    ok = True
    for path, body in wanted.items():
        status, reply = got.get(path, (0, b"<no reply>"))
        good = status == 200 and reply == body
        ok = ok and good
        print(f"  http  GET {path:<11} {status}, {len(reply)} bytes  {'ok' if good else 'WRONG: ' + repr(reply[:80])}")
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", default=None, help="serve this directory (default: a new temporary one)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--workers", type=int, default=8, help="worker threads in the pool (default 8)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="fetch two files from a temporary directory, then exit")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.self_test and args.directory is not None:
        parser.error("--self-test serves a temporary directory of its own; leave out --directory")
    if args.directory is not None and not os.path.isdir(args.directory):
        parser.error(f"--directory {args.directory}: not a directory")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    made = args.directory is None
    directory = make_site() if made else os.path.abspath(args.directory)
    # The stdlib's handler, unchanged; partial() gives it the directory to serve.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    ok = True
    try:
        with FileServer(("127.0.0.1", args.port), handler, dispatch=reactor.ThreadPool(args.workers)) as server:
            host, port = server.server_address
            print(f"http.server.SimpleHTTPRequestHandler on a pool of {args.workers} threads,")
            print(f"serving files from {directory}:")
            print(f"  http  {server.server_address}")
            if args.self_test:
                ok = self_test(server)
            else:
                print(f"        curl -s http://{host}:{port}/")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    finally:
        if made:
            shutil.rmtree(directory, ignore_errors=True)

    print("closed; socket files left: none")  # TCP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
