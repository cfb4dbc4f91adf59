"""Throw-away certificates for the TLS tests, made with the ``openssl`` command.

Nothing is checked in that could expire: each test session makes a test
CA, a server certificate for ``localhost``, 127.0.0.1 and ::1 signed by
it, and a client certificate signed by it (for ``CERT_REQUIRED``), valid
for two days, in a temporary directory.  ``make test`` installs openssl
where it is missing; without it, the tests that need certificates skip,
saying so.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from typing import Any

import pytest


@dataclasses.dataclass(frozen=True)
class Certs:
    dir: str
    ca: str  # the test CA's certificate (PEM)
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context

    def client_context(self, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs() -> Certs:
    """A test CA, and a server and a client certificate it signed, in a new temporary directory."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (make test installs it from Debian's openssl package)")
    where = tempfile.mkdtemp(prefix="rx-tls-")
    key = ["-newkey", "rsa:2048", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=reactor test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)  # fmt: skip
    for name, subject, ext in (
        ("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=reactor test client", "extendedKeyUsage=clientAuth\n"),
    ):
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=where)
        with open(os.path.join(where, f"{name}.ext"), "w") as f:
            f.write(ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=where)  # fmt: skip
    join = lambda name: os.path.join(where, name)  # noqa: E731
    return Certs(where, join("ca.pem"), join("server.pem"), join("server.key"), join("client.pem"), join("client.key"))


def tls_connect(server: Any, context: ssl.SSLContext, timeout: float = 5.0, **kwargs: Any) -> ssl.SSLSocket:
    """A TLS client of ``server`` (TCP or Unix stream), handshake done; the name checked is localhost."""
    sock = socket.socket(server.address_family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(server.server_address)
        return context.wrap_socket(sock, server_hostname="localhost", **kwargs)
    except BaseException:
        sock.close()
        raise


def read_lines(sock: Any, n: int) -> bytes:
    """Read until ``n`` newlines have come (or EOF)."""
    data = b""
    while data.count(b"\n") < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
