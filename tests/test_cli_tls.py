"""``python -m reactor serve --tls-cert/--tls-key/--tls-ca/--handshake-timeout``: TLS from the command line.

The real command in a subprocess (cli_support.Command) with the session's
throw-away certificates (the ``certs`` fixture), talked to over loopback
TCP and Unix sockets by two clients: Python's ssl module and the real
``openssl s_client`` (skipped, saying so, where it is missing).  Client
certificates, the handshake timeout, the trace, and every bad input
(exit 2, one line naming the file and the reason).
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

import pytest

from cli_support import EXIT_TIMEOUT, ROOT, Command
from conftest import CLIENT_TIMEOUT, client_exchange, wait_for
from tls_support import read_lines, tls_connect

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="the openssl command is not installed (make test installs it from Debian's openssl package)",
)


def tls_args(certs: Any, *more: str) -> list[str]:
    return ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key, *more]


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reactor", "serve", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=EXIT_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def python_exchange(family: str, address: Any, context: ssl.SSLContext, payload: bytes) -> bytes:
    """Send ``payload`` over TLS (the server's name checked: localhost), read as many lines back,
    then close_notify (the server's EOF) and wait for the server's."""
    where = types.SimpleNamespace(
        address_family=socket.AF_UNIX if family == "unix" else socket.AF_INET, server_address=address
    )
    with tls_connect(where, context) as client:
        client.sendall(payload)
        reply = read_lines(client, payload.count(b"\n"))
        client.unwrap().close()
    return reply


def openssl_exchange(target: list[str], payload: bytes, *more: str) -> bytes:
    """``openssl s_client`` (the server's certificate checked against the CA, for localhost):
    ``payload`` on its stdin, as many lines read from its stdout within CLIENT_TIMEOUT; then
    stdin is closed, and ``-no_ign_eof`` makes it send close_notify and exit 0."""
    command = ["openssl", "s_client", *target, "-verify_return_error", "-verify_hostname", "localhost",
               *more, "-quiet", "-no_ign_eof"]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        try:
            proc.stdin.write(payload)
            proc.stdin.flush()
            reply = b""
            deadline = time.monotonic() + CLIENT_TIMEOUT
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                while reply.count(b"\n") < payload.count(b"\n") and time.monotonic() < deadline:
                    if selector.select(deadline - time.monotonic()):
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if not chunk:
                            break
                        reply += chunk
            proc.stdin.close()
            status = proc.wait(CLIENT_TIMEOUT)
            errors.seek(0)
            assert status == 0, (status, errors.read())
            return reply
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            if not proc.stdin.closed:
                proc.stdin.close()


def plain_text_gets_no_echo(address: Any) -> bool:
    """A plain-text client is closed (EOF, or a reset: its unread line was discarded), never echoed."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as plain:
        plain.sendall(b"plain\n")
        try:
            return plain.recv(100) == b""
        except ConnectionResetError:
            return True


# ------------------------------------------------------ serving over TLS


@pytest.mark.timeout(60)
@needs_openssl
@pytest.mark.parametrize("dispatch", ["inline", "fork:2"])
@pytest.mark.parametrize("handler", ["LineEcho", "StreamLineEcho"], ids=["framed", "classic"])
def test_tls_on_tcp_and_unix_for_python_and_openssl_clients(places, certs, handler, dispatch):
    unix = os.path.join(places.dir, "tls.sock")
    command = Command(f"handlers.echo:{handler}", "--tcp", "127.0.0.1:0", "--unix", unix,
                      "--dispatch", dispatch, *tls_args(certs))  # fmt: skip
    try:
        found = command.serving(2)
        assert found == {"tcp4": found["tcp4"], "unix": unix}
        host, port = found["tcp4"]
        payload = b"hello over TLS\nsecond line \x00\xff\n"
        context = certs.client_context()
        assert python_exchange("tcp4", (host, port), context, payload) == payload
        assert python_exchange("unix", unix, context, payload) == payload
        assert openssl_exchange(["-connect", f"{host}:{port}", "-CAfile", certs.ca], payload) == payload
        assert openssl_exchange(["-unix", unix, "-CAfile", certs.ca], payload) == payload
        assert plain_text_gets_no_echo((host, port))  # the server speaks TLS only
        assert command.stop() == 0, command.stderr()
        assert not os.path.exists(unix)
        assert "Traceback" not in command.stderr()
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_with_mixed_addresses_the_datagram_servers_stay_plain(places, certs):
    dgram = os.path.join(places.dir, "d.sock")
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                      "--unix-dgram", dgram, *tls_args(certs))  # fmt: skip
    try:
        lines = [command.proc.stdout.readline() for _ in range(3)]
        assert [line.endswith("(LineEcho, inline, TLS)\n") for line in lines] == [True, False, False], lines
        found = {line.split()[1]: line.split()[2] for line in lines}
        host, _, port = found["tcp4"].rpartition(":")
        udp_host, _, udp_port = found["udp4"].rpartition(":")
        assert python_exchange("tcp4", (host, int(port)), certs.client_context(), b"secure\n") == b"secure\n"
        assert client_exchange("udp4", (udp_host, int(udp_port)), b"plain\n") == b"plain\n"
        assert client_exchange("unix-dgram", dgram, b"plain too\n", places) == b"plain too\n"
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", ["LineEcho", "StreamLineEcho"], ids=["framed", "classic"])
def test_tls_ca_refuses_a_client_without_a_certificate_and_accepts_one_with(places, certs, handler):
    command = Command(f"handlers.echo:{handler}", "--tcp", "127.0.0.1:0", *tls_args(certs, "--tls-ca", certs.ca),
                      "--log-level", "debug")  # fmt: skip
    try:
        address = command.serving(1)["tcp4"]
        assert python_exchange("tcp4", address, certs.client_context(with_cert=True), b"mine\n") == b"mine\n"
        with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: refused at the client's first read
            python_exchange("tcp4", address, certs.client_context(), b"anyone\n")
        wait_for(lambda: "TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE; closed" in command.stderr(),
                 what="the refusal logged at DEBUG")  # fmt: skip
        if shutil.which("openssl"):
            target = ["-connect", f"{address[0]}:{address[1]}", "-CAfile", certs.ca]
            mine = openssl_exchange(target, b"openssl's\n", "-cert", certs.client_cert, "-key", certs.client_key)
            assert mine == b"openssl's\n"
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_handshake_timeout_closes_a_silent_client_while_others_are_served(places, certs):
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", *tls_args(certs, "--handshake-timeout", "0.5"),
                      "--log-level", "debug")  # fmt: skip
    try:
        address = command.serving(1)["tcp4"]
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as silent:  # says nothing
            began = time.monotonic()
            assert python_exchange("tcp4", address, certs.client_context(), b"meanwhile\n") == b"meanwhile\n"
            assert silent.recv(100) == b""  # closed by the server (the default would wait 60 s)
            assert 0.4 <= time.monotonic() - began < 4.0
        wait_for(lambda: "no TLS handshake within handshake_timeout (0.5 s); closed" in command.stderr(),
                 what="the timeout logged at DEBUG")  # fmt: skip
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_trace_shows_the_handshake(places, certs):
    unix = os.path.join(places.dir, "traced.sock")
    command = Command("handlers.echo:LineEcho", "--unix", unix, *tls_args(certs), "--trace")
    try:
        command.serving(1)
        assert python_exchange("unix", unix, certs.client_context(), b"traced\n") == b"traced\n"
        wait_for(lambda: "#1 CLOSING -> CLOSED" in command.stderr(), what="the connection is over")
        assert command.stop() == 0
        err = command.stderr()
        assert f"trace: unix {unix} #1 ACCEPTED -> HANDSHAKING: handshake (TLS)\n" in err, err
        assert f"trace: unix {unix} #1 HANDSHAKING -> ACCEPTED: secured (TLSv1.3, " in err, err
        assert f"trace: unix {unix} #1 READING -> READY: message (7 B)" in err, err
    finally:
        command.close()


# ------------------------------------------------------------- bad inputs


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["only cert", "only key", "missing cert", "missing key", "cert is a directory",
                                  "key not matching", "cert is a key", "key is a cert", "missing CA", "CA is a key",
                                  "CA alone", "handshake-timeout alone", "only udp", "only unix-dgram"])  # fmt: skip
def test_a_bad_tls_option_exits_2_with_one_line_naming_the_file_and_the_reason(places, certs, case):
    missing = os.path.join(certs.dir, "missing.pem")
    cert, key, address = certs.server_cert, certs.server_key, ["--tcp", "127.0.0.1:0"]
    args, why = {
        "only cert": (["--tls-cert", cert], "--tls-cert and --tls-key go together: --tls-key is missing"),
        "only key": (["--tls-key", key], "--tls-cert and --tls-key go together: --tls-cert is missing"),
        "missing cert": (["--tls-cert", missing, "--tls-key", key],
                         f"cannot read the TLS certificate file {missing!r}: No such file or directory"),
        "missing key": (["--tls-cert", cert, "--tls-key", missing],
                        f"cannot read the TLS private key file {missing!r}: No such file or directory"),
        "cert is a directory": (["--tls-cert", certs.dir, "--tls-key", key],
                                f"cannot read the TLS certificate file {certs.dir!r}: Is a directory"),
        "key not matching": (["--tls-cert", cert, "--tls-key", certs.client_key],
                             f"the TLS private key file {certs.client_key!r} does not match the certificate file "
                             f"{cert!r}"),
        "cert is a key": (["--tls-cert", key, "--tls-key", key],
                          f"no certificate in the TLS certificate file {key!r} (PEM expected)"),
        "key is a cert": (["--tls-cert", cert, "--tls-key", cert],
                          f"no private key in the TLS private key file {cert!r} (PEM expected)"),
        "missing CA": (tls_args(certs, "--tls-ca", missing),
                       f"cannot read the TLS CA file {missing!r}: No such file or directory"),
        "CA is a key": (tls_args(certs, "--tls-ca", key), f"no CA certificate in the TLS CA file {key!r} (PEM expected)"),
        "CA alone": (["--tls-ca", certs.ca], "--tls-ca needs --tls-cert and --tls-key"),
        "handshake-timeout alone": (["--handshake-timeout", "5"], "--handshake-timeout needs --tls-cert and --tls-key"),
        "only udp": (["--udp", "127.0.0.1:0", *tls_args(certs)], "TLS needs a --tcp or --unix address"),
        "only unix-dgram": (["--unix-dgram", os.path.join(places.dir, "d.sock"), *tls_args(certs)],
                            "TLS needs a --tcp or --unix address"),
    }[case]  # fmt: skip
    if case.startswith("only u"):
        address = []
    line = one_error_line(run_command("handlers.echo:LineEcho", *address, *args))
    assert line.startswith("python -m reactor serve: error: ") and why in line, line
    assert os.listdir(places.dir) == []  # nothing was opened


@pytest.mark.timeout(30)
def test_an_encrypted_key_exits_2_without_asking_for_a_password(certs, tmp_path):
    """OpenSSL would prompt on the terminal for the password; the command refuses at once instead."""
    encrypted = str(tmp_path / "encrypted.key")
    subprocess.run(["openssl", "pkey", "-in", certs.server_key, "-aes128", "-passout", "pass:secret", "-out", encrypted],
                   check=True, capture_output=True, timeout=EXIT_TIMEOUT)  # fmt: skip
    result = run_command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0",
                         "--tls-cert", certs.server_cert, "--tls-key", encrypted)  # fmt: skip
    assert f"the TLS private key file {encrypted!r} is encrypted" in one_error_line(result)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "soon"])
def test_a_bad_handshake_timeout_exits_2(certs, value):
    result = run_command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", *tls_args(certs),
                         f"--handshake-timeout={value}")  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert "argument --handshake-timeout: expected " in result.stderr and f"not {value!r}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(30)
def test_help_shows_the_tls_options_and_that_datagram_servers_stay_plain():
    result = run_command("--help")
    assert result.returncode == 0
    for text in ["--tls-cert FILE", "--tls-key FILE", "--tls-ca FILE", "--handshake-timeout S",
                 "--udp and --unix-dgram ones stay plain", "--tls-cert cert.pem --tls-key key.pem"]:  # fmt: skip
        assert text in result.stdout, text
