"""The stdlib's file-serving HTTP handler, unchanged, served over TLS by a reactor server with a thread pool.

What it shows: ``http.server.SimpleHTTPRequestHandler``, the handler
behind ``python -m http.server``, served over HTTPS by
``reactor.TCPServer`` with a pool of worker threads.  The handler is the
stdlib's own class, not modified; TLS is one more keyword,
``ssl_context=``, beside ``dispatch=reactor.ThreadPool(8)``.

Each client's TLS handshake is run by the reactor's loop, without
blocking: a client that connects and never sends its ClientHello holds
neither the loop nor a worker, and everyone else is served meanwhile.
(The usual way with the stdlib's socketserver, ``server.socket =
context.wrap_socket(server.socket, server_side=True)``, runs the
handshake inside ``accept()``, where one silent client makes the whole
server deaf; reactor recognises that spelling too and runs its handshakes
in the loop.)  Once the handshake is done, the handler gets a blocking
``ssl.SSLSocket`` as its ``self.request`` and reads and writes it as it
would a plain socket, on a worker.

Certificates: ``--cert FILE --key FILE`` serve with yours.  Without them
it makes a throw-away self-signed certificate for ``localhost``,
127.0.0.1 and ::1 with the ``openssl`` command, in a temporary directory
of its own (never in the directory it serves, which would hand out the
private key), prints where it is, and removes it at exit.  Clients trust
that certificate by being given it as their CA (``curl --cacert``).

By default it creates a temporary directory with an ``index.html`` and a
``hello.txt`` and serves that; ``--directory DIR`` serves ``DIR`` instead
(read-only: the handler only reads files and lists directories).

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/https_files.py                        # until Ctrl-C
    .venv/bin/python examples/https_files.py --directory . --port 8443
    .venv/bin/python examples/https_files.py --cert server.pem --key server.key
    .venv/bin/python examples/https_files.py --workers 2 --seconds 30
    .venv/bin/python examples/https_files.py --self-test            # fetch two files, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server, which aborts handshakes
under way and joins the pool's workers, and the temporary directories it
made are removed.

Poke it with the line it prints:

    curl --cacert /tmp/reactor-tls-.../cert.pem https://localhost:PORT/hello.txt
    curl --cacert /tmp/reactor-tls-.../cert.pem https://127.0.0.1:PORT/   # index.html

and see that a silent client makes nobody wait, in two terminals:

    nc 127.0.0.1 PORT                                    # connects, sends no ClientHello
    curl --cacert .../cert.pem https://localhost:PORT/   # answered at once, even with --workers 1

Shortcuts taken on purpose:

* The handler logs every request to stderr, as ``python -m http.server``
  does; that is left on (see examples/http_files.py).
* The handler has no socket timeout (the stdlib's default): once its
  handshake is done, a client that says nothing holds a worker until it
  goes away.  The handshake itself is bounded by the server's
  ``handshake_timeout`` (60 seconds by default).  At exit the reading side
  of connections still open is shut down, so that no worker waits for
  ever on such a client; its handler sees EOF and returns.  (OpenSSL 3
  answers that EOF, which came without the client's close_notify, with a
  decode_error alert: that client learns of the exit as an error.)
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise; ``SO_REUSEADDR`` is set, as ``http.server.HTTPServer`` does.
  A client that asks for ``localhost`` may try ::1 first and then falls
  back to 127.0.0.1 (curl and Python's clients both do).
* The throw-away certificate is its own CA, valid for one day, with an
  EC P-256 key, quick to make.  Browsers will
  warn about it; curl, openssl and Python trust it when told to.
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
import ssl
import subprocess
import sys
import tempfile
import threading

import reactor

CLIENT_TIMEOUT = 5.0
NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"  # what the throw-away certificate covers

INDEX = b"""<!doctype html>
<title>reactor serves files over TLS</title>
<p>This page came from <code>http.server.SimpleHTTPRequestHandler</code>,
run by a <code>reactor.TCPServer</code> with a thread pool, over TLS.
<p>See also <a href="hello.txt">hello.txt</a>.
"""
HELLO = b"hello over TLS from a file served by reactor\n"


class FileServer(reactor.TCPServer):
    allow_reuse_address = True  # as http.server.HTTPServer: a restart may reuse the port at once


def make_site() -> str:
    """A new temporary directory with two files to serve."""
    directory = tempfile.mkdtemp(prefix="reactor-https-")
    for name, body in (("index.html", INDEX), ("hello.txt", HELLO)):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(body)
    return directory


def make_certificate(directory: str) -> tuple[str, str]:
    """A throw-away self-signed certificate and its key, made by ``openssl`` in ``directory``.

    It names localhost, 127.0.0.1 and ::1, and is its own CA: a client
    trusts it by taking the certificate file as its CA file.  Exits with
    a message if the command is missing or fails.
    """
    if shutil.which("openssl") is None:
        sys.exit("https_files.py: the openssl command is not installed, and it makes the throw-away "
                 "certificate; install it (Debian: apt-get install openssl) or give --cert and --key")  # fmt: skip
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", NAMES,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        sys.exit(f"https_files.py: openssl could not make the throw-away certificate: {detail.strip()}")
    return cert, key


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context with this certificate chain and key (the ssl module's defaults otherwise)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def hang_up(server: reactor.TCPServer) -> None:
    """Shut down the reading side of every connection still open.

    A handler blocked reading its request then sees EOF and returns, so
    ``server_close()`` can join its worker.  The plain socket's
    ``shutdown`` is called on purpose: ``SSLSocket.shutdown`` would also
    drop the TLS session under a worker that may be writing to it.
    """
    for record in server.request_table.snapshot():
        sock = record.request  # None once the record has finished
        if isinstance(sock, socket.socket):
            try:
                socket.socket.shutdown(sock, socket.SHUT_RD)
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


def fetch(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes, str]:
    """GET ``https://localhost:PORT/path``: (status, body, TLS version), or (0, a description of the error, "")."""
    connection = http.client.HTTPSConnection("localhost", port, timeout=CLIENT_TIMEOUT, context=context)
    try:
        connection.request("GET", path)
        version = connection.sock.version() or ""
        response = connection.getresponse()
        return response.status, response.read(), version
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError (a bad certificate, say) is an OSError
        return 0, f"<{type(exc).__name__}: {exc}>".encode(), ""
    finally:
        connection.close()


def self_test(server: reactor.TCPServer, cert: str) -> bool:
    """Serve here while a client thread fetches two files over TLS; its end stops the server.

    The client trusts the throw-away certificate and checks the name
    ``localhost`` against it.  Meanwhile another client is connected and
    silent (no ClientHello): it waits in HANDSHAKING, in the loop.
    """
    wanted = {"/": INDEX, "/hello.txt": HELLO}  # "/" is index.html
    got: dict[str, tuple[int, bytes, str]] = {}
    waiting: list[int] = []  # connections in HANDSHAKING once the files were served
    context = ssl.create_default_context(cafile=cert)
    port = server.server_address[1]

    def client() -> None:
        try:
            with socket.create_connection(server.server_address[:2], timeout=CLIENT_TIMEOUT):  # silent
                for path in wanted:
                    got[path] = fetch(port, path, context)
                waiting.append(server.request_table.counts().get("HANDSHAKING", 0))
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
        status, reply, version = got.get(path, (0, b"<no reply>", ""))
        good = status == 200 and reply == body
        ok = ok and good
        print(f"  https   GET {path:<11} {status}, {len(reply)} bytes, {version or 'no TLS'}  "
              f"{'ok' if good else 'WRONG: ' + repr(reply[:80])}")  # fmt: skip
    good = waiting == [1]
    ok = ok and good
    print(f"  silent  no ClientHello, HANDSHAKING while the files were served: {waiting[0] if waiting else '?'}  "
          f"{'ok' if good else 'WRONG'}")  # fmt: skip
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", default=None, help="serve this directory (default: a new temporary one)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--workers", type=int, default=8, help="worker threads in the pool (default 8)")
    parser.add_argument("--cert", default=None, help="certificate chain, PEM (default: a throw-away self-signed one)")
    parser.add_argument("--key", default=None, help="the certificate's private key, PEM")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="fetch two files over TLS, then exit")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.self_test and (args.directory is not None or args.cert is not None):
        parser.error("--self-test serves a temporary directory with a throw-away certificate of its own; "
                     "leave out --directory, --cert and --key")  # fmt: skip
    if args.directory is not None and not os.path.isdir(args.directory):
        parser.error(f"--directory {args.directory}: not a directory")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    made = args.directory is None
    directory = make_site() if made else os.path.abspath(args.directory)
    keys = tempfile.mkdtemp(prefix="reactor-tls-") if args.cert is None else None  # the throw-away certificate's
    ok = True
    try:
        if keys is not None:
            cert, key = make_certificate(keys)
            about = "throw-away, self-signed by openssl for localhost, 127.0.0.1 and ::1; removed at exit"
        else:
            cert, key = args.cert, args.key
            about = f"key {key}"
        try:
            context = server_context(cert, key)
        except (OSError, ValueError) as exc:  # a missing file, a key that does not match, not PEM
            sys.exit(f"https_files.py: cannot serve with --cert {cert} --key {key}: {exc}")
        # The stdlib's handler, unchanged; partial() gives it the directory to serve.
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
        pool = reactor.ThreadPool(args.workers)
        with FileServer(("127.0.0.1", args.port), handler, dispatch=pool, ssl_context=context) as server:
            port = server.server_address[1]
            print(f"http.server.SimpleHTTPRequestHandler over TLS, on a pool of {args.workers} threads,")
            print(f"serving files from {directory}:")
            print(f"certificate: {cert} ({about})")
            print(f"  https  {server.server_address}")
            if args.self_test:
                ok = self_test(server, cert)
            else:
                trust = f"--cacert {cert} " if keys is not None else ""  # yours may be signed by a CA curl trusts
                print(f"         curl {trust}https://localhost:{port}/hello.txt")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    finally:
        if made:
            shutil.rmtree(directory, ignore_errors=True)
        if keys is not None:
            shutil.rmtree(keys, ignore_errors=True)

    print("closed; socket files left: none")  # TCP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
