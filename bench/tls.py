"""What the TLS scenarios need: the load generator built with OpenSSL, and a certificate.

* ``build/bench/loadgen-tls``: bench/loadgen.c with bench/loadgen_tls.c,
  linked with ``-lssl -lcrypto`` (the headers are Debian's ``libssl-dev``;
  ``make bench-tools`` installs it when it can);
* a certificate made for each bench run with the ``openssl`` command, in a
  new directory under ``build/bench/`` that is removed when the run ends:
  self-signed, for ``localhost``, 127.0.0.1 and ::1, valid for one day.
  Nothing is checked in.  The load generator verifies the server's
  certificate against it (and that it names the IP connected to).

Its key is RSA-2048, so that in ``tls-handshakes`` the server, not the
load generator, is the limit.  A client's half of a full handshake costs
about 0.36 ms of CPU in OpenSSL 3.0 here whatever the key (0.25 ms of it
in the step that parses the server's certificate, about 0.09 ms in
OpenSSL 3.0, checks its signature and derives the keys; verifying the
chain adds almost nothing), which is about what a whole handshake costs a
Python server with an ECDSA P-256 key: one client core could not outrun
one server core.  With RSA-2048 the server signs (about 0.2 ms, the same
for every system) and the client's check is cheap (about 0.013 ms).

When either cannot be had, the TLS scenarios are skipped and the bench
says why in one line (``Unavailable``); everything else still runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
import tempfile

from . import build

#: One line for the report: what the TLS scenarios run with.
DESCRIPTION = ("TLS: the servers' ssl.create_default_context(Purpose.CLIENT_AUTH) with a self-signed RSA-2048 "
               "certificate made for the run; the load generator (OpenSSL, nonblocking) verifies it; every handshake "
               "is a full one, nothing resumed")  # fmt: skip


class Unavailable(RuntimeError):
    """The TLS scenarios cannot run here; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class Setup:
    loadgen: pathlib.Path  # the load generator with TLS
    cert: pathlib.Path  # the server's certificate, PEM: also what the load generator trusts
    key: pathlib.Path  # its private key, PEM
    dir: pathlib.Path  # where both are, removed by cleanup()


def make_certificate(where: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed RSA-2048 certificate for localhost, 127.0.0.1 and ::1, made in `where`: (cert, key)."""
    if shutil.which("openssl") is None:
        raise Unavailable("no openssl command to make a certificate (make bench-tools installs it)")
    cert, key = where / "cert.pem", where / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
               "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
               "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"openssl could not make a certificate: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise Unavailable(f"openssl could not make a certificate: {last}")
    return cert, key


def prepare() -> Setup:
    """Build the TLS load generator and make this run's certificate; Unavailable if either fails."""
    try:
        loadgen = build.loadgen_tls()
    except (build.NoCompiler, RuntimeError) as exc:
        lines = str(exc).strip().splitlines() or ["no message"]
        cause = next((line for line in lines[1:] if "error" in line), "")  # the compiler's or the linker's first error
        raise Unavailable(f"{lines[0]} {cause.strip()}".strip() + " (make bench-tools installs libssl-dev)") from exc
    build.BUILD.mkdir(parents=True, exist_ok=True)
    where = pathlib.Path(tempfile.mkdtemp(dir=build.BUILD, prefix="tls-"))
    try:
        cert, key = make_certificate(where)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
    return Setup(loadgen, cert, key, where)


def cleanup(setup: Setup | None) -> None:
    """Remove the run's certificate and key."""
    if setup is not None:
        shutil.rmtree(setup.dir, ignore_errors=True)
