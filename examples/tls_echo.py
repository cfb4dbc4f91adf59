"""A framed line echo over TLS: a MessageHandler on a reactor server with an ssl_context.

What it shows: a ``reactor.MessageHandler`` (``framing = Line()``) that
sends each line back, served over TLS by ``reactor.TCPServer(...,
ssl_context=context)``.  The handler is the same as on plain TCP: the
reactor runs each client's handshake in its loop, without blocking, then
reads and writes the socket the same way, with TLS run between the
socket and the frames over memory buffers, and the handler sees
decrypted lines.  What TLS negotiated is on ``self.connection.tls``, an
``ssl.SSLObject``: the handler prints its ``version()`` and ``cipher()``
at a connection's first line.  A client that connects and never sends its
ClientHello holds nothing but its own connection, for at most the
server's ``handshake_timeout``.

Certificates: ``--cert FILE --key FILE`` serve with yours.  Without them
it makes a throw-away self-signed certificate for ``localhost``,
127.0.0.1 and ::1 with the ``openssl`` command, in a temporary directory,
prints where it is, and removes it at exit.  Clients trust that
certificate by being given it as their CA (``-CAfile``).

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/tls_echo.py                    # until Ctrl-C
    .venv/bin/python examples/tls_echo.py --port 9443 --seconds 30
    .venv/bin/python examples/tls_echo.py --cert server.pem --key server.key
    .venv/bin/python examples/tls_echo.py --self-test        # talk to it once, then exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the ``with`` block closes the server (connections still open
are closed, handshakes under way aborted) and the temporary directory is
removed.

Poke it with the line it prints, then type lines (Ctrl-C ends it):

    openssl s_client -connect 127.0.0.1:PORT -CAfile /tmp/reactor-tls-.../cert.pem -quiet

Shortcuts taken on purpose:

* ``openssl s_client`` checks the certificate chain but, unless given
  ``-verify_hostname localhost`` (or ``-verify_ip 127.0.0.1``), not the
  name; and it goes on after a failed check unless given
  ``-verify_return_error``.  The self-test's client checks both.
* The connection stays open and every line is answered until the client
  closes; a line longer than the framing's limit (64 KiB) closes it.
* It listens on 127.0.0.1 and a port the kernel picks, unless told
  otherwise.  ``--seconds`` stops it with ``server.shutdown()`` from a
  timer thread.
* The throw-away certificate is its own CA, valid for one day, with an
  EC P-256 key.
"""

from __future__ import annotations

import argparse
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


class TLSLineEcho(reactor.MessageHandler):
    """Send each line back; at a connection's first line, print what TLS negotiated."""

    framing = reactor.Line()

    def handle(self) -> None:
        if self.connection.messages == 0:  # this connection's first line
            tls = self.connection.tls  # the connection's ssl.SSLObject: what TLS negotiated
            print(f"  #{self.connection.id} {self.client_address[0]}:{self.client_address[1]}  "
                  f"{tls.version()}, {tls.cipher()[0]}", flush=True)  # fmt: skip
        self.wfile.write(self.message)


def make_certificate(directory: str) -> tuple[str, str]:
    """A throw-away self-signed certificate and its key, made by ``openssl`` in ``directory``.

    It names localhost, 127.0.0.1 and ::1, and is its own CA: a client
    trusts it by taking the certificate file as its CA file.  Exits with
    a message if the command is missing or fails.
    """
    if shutil.which("openssl") is None:
        sys.exit("tls_echo.py: the openssl command is not installed, and it makes the throw-away "
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
        sys.exit(f"tls_echo.py: openssl could not make the throw-away certificate: {detail.strip()}")
    return cert, key


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


# ------------------------------------------------------------- self-test


def read_line(sock: ssl.SSLSocket) -> bytes:
    """Read until a newline (or EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def talk(address: tuple, context: ssl.SSLContext) -> list[tuple[str, bytes, bytes]]:
    """One TLS client (the name checked: localhost): a line, a line in two pieces, then close_notify."""
    results = []
    try:
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as plain:
            with context.wrap_socket(plain, server_hostname="localhost") as tls:
                line = f"hello over {tls.version()}\n".encode()
                tls.sendall(line)
                results.append(("line", read_line(tls), line))
                tls.sendall(b"half a li")
                tls.sendall(b"ne, then the rest\n")
                results.append(("pieces", read_line(tls), b"half a line, then the rest\n"))
                tls.unwrap()  # close_notify; the server answers with its own
    except OSError as exc:  # ssl.SSLError (a bad certificate, say) is an OSError
        results.append(("error", f"<{type(exc).__name__}: {exc}>".encode(), b""))
    return results


def self_test(server: reactor.TCPServer, cert: str) -> bool:
    """Serve here while a client thread talks over TLS; its end stops the server.

    Meanwhile another client is connected and silent (no ClientHello):
    it waits in HANDSHAKING, and the echo goes on.
    """
    results: list[tuple[str, bytes, bytes]] = []
    waiting: list[int] = []  # connections in HANDSHAKING once the echo was done
    context = ssl.create_default_context(cafile=cert)
    address = server.server_address[:2]

    def client() -> None:
        try:
            with socket.create_connection(address, timeout=CLIENT_TIMEOUT):  # silent
                results.extend(talk(address, context))
                waiting.append(server.request_table.counts().get("HANDSHAKING", 0))
        finally:
            server.shutdown()  # from another thread: returns once serve_forever() has

    thread = threading.Thread(target=client, name="self-test client")
    thread.start()
    try:
        server.serve_forever()
    finally:
        thread.join(4 * CLIENT_TIMEOUT)
    ok = bool(results)
    for label, reply, expected in results:
        good = reply == expected
        ok = ok and good
        print(f"  {label:<6}  reply {reply!r}  {'ok' if good else 'WRONG'}")
    good = waiting == [1]
    ok = ok and good
    print(f"  silent  no ClientHello, HANDSHAKING while the others were echoed: {waiting[0] if waiting else '?'}  "
          f"{'ok' if good else 'WRONG'}")  # fmt: skip
    return ok


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--cert", default=None, help="certificate chain, PEM (default: a throw-away self-signed one)")
    parser.add_argument("--key", default=None, help="the certificate's private key, PEM")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to it over TLS once, then exit")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.self_test and args.cert is not None:
        parser.error("--self-test makes a throw-away certificate of its own; leave out --cert and --key")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    keys = tempfile.mkdtemp(prefix="reactor-tls-") if args.cert is None else None  # the throw-away certificate's
    ok = True
    try:
        if keys is not None:
            cert, key = make_certificate(keys)
            about = "throw-away, self-signed by openssl for localhost, 127.0.0.1 and ::1; removed at exit"
        else:
            cert, key = args.cert, args.key
            about = f"key {key}"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:  # a missing file, a key that does not match, not PEM
            sys.exit(f"tls_echo.py: cannot serve with --cert {cert} --key {key}: {exc}")
        with reactor.TCPServer(("127.0.0.1", args.port), TLSLineEcho, ssl_context=context) as server:
            host, port = server.server_address[:2]
            print(f"a framed line echo over TLS ({TLSLineEcho.__name__} on reactor.TCPServer):")
            print(f"certificate: {cert} ({about})")
            print(f"  tls  {server.server_address}")
            if args.self_test:
                ok = self_test(server, cert)
            else:
                print(f"       openssl s_client -connect {host}:{port} -CAfile {cert} -quiet")
                print("serving; Ctrl-C to stop", flush=True)
                serve(server, args.seconds)
    except KeyboardInterrupt:
        print()
    finally:
        if keys is not None:
            shutil.rmtree(keys, ignore_errors=True)

    print("closed; socket files left: none")  # TCP has none; the line is the examples' convention
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
