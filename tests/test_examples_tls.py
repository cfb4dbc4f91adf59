"""The TLS examples, https_files.py and tls_echo.py, run as separate processes.

The same two ways as tests/test_examples.py (``--self-test``, and served
until SIGTERM), talked to by the real clients their docstrings name:
``curl --cacert`` and ``openssl s_client -CAfile``.  Without ``--cert``/
``--key`` each example makes a throw-away certificate with the openssl
command and prints ``certificate: PATH (...)``; the clients trust it as
their CA.  With them, the session's test CA (tests/tls_support.py) signs
the server's certificate.  A client that connects and never sends its
ClientHello is held open meanwhile: the handshake is the loop's, so
nobody waits for it.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import CLIENT_TIMEOUT, read_all
from examples_support import check_clean, self_test, served
from test_examples import check_lines

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="the openssl command is not installed (make test installs it)"
)
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (make test installs it)")
TLS_CLIENT_TIMEOUT = 10.0  # seconds a real client has; a server deaf during a handshake would make it wait 60


def certificate(lines: list[str]) -> str:
    """The certificate file an example printed it serves with."""
    found = [line.split()[1] for line in lines if line.startswith("certificate: ")]
    assert len(found) == 1, lines
    return found[0]


def curl(port: int, path: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    """``curl https://localhost:PORT/path``, localhost pinned to 127.0.0.1 (where the examples listen)."""
    assert CURL is not None
    command = [CURL, "--silent", "--show-error", "--max-time", str(TLS_CLIENT_TIMEOUT),
               "--resolve", f"localhost:{port}:127.0.0.1", *options, f"https://localhost:{port}{path}"]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=2 * TLS_CLIENT_TIMEOUT)


@needs_openssl
@pytest.mark.timeout(90)
def test_https_files_self_test() -> None:
    result = self_test("https_files.py")
    report = check_clean(result)
    for path in ("/", "/hello.txt"):  # the example compares each body with the file it wrote
        line = rf"^  https   GET {re.escape(path)} +200, \d+ bytes, TLSv1\.[23]  ok$"
        assert re.search(line, result.stdout, re.M), report
    assert "  silent  no ClientHello, HANDSHAKING while the files were served: 1  ok" in result.stdout, report
    cert = certificate(result.stdout.splitlines())
    assert not os.path.exists(os.path.dirname(cert)), "the throw-away certificate was left behind"


@needs_openssl
@pytest.mark.timeout(90)
def test_tls_echo_self_test() -> None:
    result = self_test("tls_echo.py")
    check_lines(
        result,
        [
            r"line    reply b'hello over TLSv1.3\n'  ok",
            r"pieces  reply b'half a line, then the rest\n'  ok",
            "silent  no ClientHello, HANDSHAKING while the others were echoed: 1  ok",
        ],
    )
    assert not os.path.exists(os.path.dirname(certificate(result.stdout.splitlines())))


@needs_openssl
@needs_curl
@pytest.mark.timeout(90)
def test_https_files_answers_curl_while_a_client_is_silent() -> None:
    """One worker; a client connected first never sends its ClientHello; curl still gets its file at once.

    The silent client's handshake waits in the loop, not on the worker
    and not in a blocking accept: were it either, curl would wait for its
    handshake_timeout (60 s) and give up after TLS_CLIENT_TIMEOUT.
    """
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with silent:
        with served("https_files.py", "--workers", "1") as run:
            port = run.addresses["https"][1]
            cert = certificate(run.lines)
            assert f"         curl --cacert {cert} https://localhost:{port}/hello.txt" in run.lines, run.lines
            site = next(line[len("serving files from ") : -1] for line in run.lines if line.startswith("serving files"))
            silent.settimeout(CLIENT_TIMEOUT)
            silent.connect(("127.0.0.1", port))  # and says nothing
            for path, expected in (("/hello.txt", b"hello over TLS from a file served by reactor\n"), ("/", None)):
                got = curl(port, path, "--cacert", cert)
                assert got.returncode == 0, got.stderr.decode()
                if expected is not None:
                    assert got.stdout == expected
                else:
                    assert b"<title>reactor serves files over TLS</title>" in got.stdout, got.stdout
            untrusted = curl(port, "/hello.txt")  # no --cacert: the throw-away certificate is not trusted
            assert (untrusted.returncode, untrusted.stdout) == (60, b""), untrusted  # 60: the certificate failed
            silent.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open, still waiting for its handshake
                silent.recv(1)
            silent.settimeout(CLIENT_TIMEOUT)
            # SIGTERM with the silent client still connected: its handshake is
            # aborted, the example exits 0 at once (checked by served()).
        assert read_all(silent) == b""  # closed, without a word: there was no session
    assert not os.path.exists(os.path.dirname(cert)), "the throw-away certificate was left behind"
    assert not os.path.exists(site), "the temporary site was left behind"


@needs_curl
@pytest.mark.timeout(90)
def test_https_files_with_a_given_certificate(certs: Any, tmp_path: Path) -> None:
    """--cert/--key: the test CA's server certificate; curl trusts that CA; the files are left alone.

    A client secured first and then silent holds a worker, its handler
    blocked reading the request line; SIGTERM still ends the example at
    once (it shuts down the reading side of such connections).
    """
    (tmp_path / "note.txt").write_bytes(b"a note over TLS\n")
    args = ("--cert", certs.server_cert, "--key", certs.server_key, "--directory", str(tmp_path))
    secured: Any = None
    try:
        with served("https_files.py", *args) as run:
            port = run.addresses["https"][1]
            assert f"certificate: {certs.server_cert} (key {certs.server_key})" in run.lines, run.lines
            assert f"         curl https://localhost:{port}/hello.txt" in run.lines, run.lines
            plain = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
            secured = plain  # closed in the end, whether the handshake succeeds or not
            secured = certs.client_context().wrap_socket(plain, server_hostname="localhost")  # and says nothing
            # Connections are accepted in order, and this one's handshake was
            # done (on our side) before curl connected: once curl is answered,
            # the silent one is secured and its handler holds a worker.
            got = curl(port, "/note.txt", "--cacert", certs.ca)
            assert (got.returncode, got.stdout) == (0, b"a note over TLS\n"), got.stderr.decode()
            missing = curl(port, "/missing.txt", "--cacert", certs.ca, "--write-out", "%{http_code}", "-o", os.devnull)
            assert (missing.returncode, missing.stdout) == (0, b"404"), missing
        # Exit 0 at once (checked by served()).  The client then sees its
        # connection end; how depends on OpenSSL (3.x answers the EOF its
        # handler was given with a decode_error alert, not close_notify).
        try:
            assert secured.recv(100) == b""
        except ssl.SSLError:
            pass
    finally:
        if secured is not None:
            secured.close()
    assert os.path.exists(certs.server_key) and (tmp_path / "note.txt").exists(), "the user's files are theirs"


def read_until(fd: int, end: bytes, timeout: float) -> bytes:
    """Read from a pipe until ``end`` has come, EOF, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while end not in data and time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
    return data


@needs_openssl
@pytest.mark.timeout(90)
@pytest.mark.parametrize("given", [False, True], ids=["throw-away", "given"])
def test_tls_echo_with_openssl_s_client(given: bool, request: pytest.FixtureRequest) -> None:
    """openssl s_client, as the example prints it (and checking the name), gets its line back.

    A silent client, connected first, is held open all along.  ``-quiet``
    ignores stdin's EOF; ``-no_ign_eof`` after it makes s_client close (with
    close_notify) and exit once stdin is closed.
    """
    args: tuple[str, ...] = ()
    if given:
        certs = request.getfixturevalue("certs")
        args = ("--cert", certs.server_cert, "--key", certs.server_key)
    with served("tls_echo.py", *args) as run:
        host, port = run.addresses["tls"]
        cert = certificate(run.lines)
        ca = certs.ca if given else cert
        printed = f"       openssl s_client -connect {host}:{port} -CAfile {cert} -quiet"
        assert printed in run.lines, run.lines
        command = [*printed.split(), "-verify_return_error", "-verify_hostname", "localhost", "-no_ign_eof"]
        command[command.index("-CAfile") + 1] = ca
        with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT) as silent:
            client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert client.stdin is not None and client.stdout is not None
                line = b"hello from openssl s_client\n"
                client.stdin.write(line)
                client.stdin.flush()
                echoed = read_until(client.stdout.fileno(), b"\n", TLS_CLIENT_TIMEOUT)
                out, err = client.communicate(timeout=TLS_CLIENT_TIMEOUT)  # closes stdin: s_client ends
            finally:
                if client.returncode is None:
                    client.kill()
                    client.communicate()
            assert echoed + out == line, err.decode()
            assert client.returncode == 0, err.decode()
            assert b"verify return:1" in err, err.decode()
            silent.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open, still waiting for its handshake
                silent.recv(1)
    assert any(re.fullmatch(r"  #\d+ 127\.0\.0\.1:\d+  TLSv1\.3, \S+", line) for line in run.lines), run.lines
    if not given:
        assert not os.path.exists(os.path.dirname(cert)), "the throw-away certificate was left behind"
