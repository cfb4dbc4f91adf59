"""Stopping ``python -m reactor serve``: signals, the drain timeout, closing, descriptor limits.

The real command in a subprocess, as in test_cli.py: a classic handler
blocked reading a silent client must not make the command unkillable (a
second signal ends it at once, socket files removed), a graceful stop ends
within ``--drain-timeout``, a handler module that calls ``sys.exit()`` is
a usage error, and the default connection limit fits the descriptor limit.
Function-level tests of the close loop run in-process.
"""

from __future__ import annotations

import os
import pathlib
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, wait_for

from reactor import TCPServer, UnixStreamServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: A stop that works ends well within this; a hang is what the tests catch.
PROMPT = 6.0


class Serve:
    """``python -m reactor serve ARGS`` in a subprocess; stderr goes to a file we can poll."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, limit: tuple[int, int] | None = None) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "serve", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.errors, text=True,
            env={**os.environ, **(env or {})}, preexec_fn=lower_limit if limit else None,
        )  # fmt: skip

    def serving(self, count: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for _ in range(count):
            line = self.proc.stdout.readline()
            assert line.startswith("serving "), f"expected a serving line, got {line!r}; stderr: {self.stderr()}"
            family, where = line.split()[1:3]
            if family.startswith(("tcp", "udp")):
                host, _, port = where.rpartition(":")
                found[family] = (host.strip("[]"), int(port))
            else:
                found[family] = where
        return found

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_for(lambda: self.stderr().count(text) >= count or self.proc.poll() is not None, PROMPT, f"{text!r} logged")
        assert self.stderr().count(text) >= count, f"{text!r} not logged; stderr: {self.stderr()}"

    def exit_status(self, seconds: float = PROMPT) -> int:
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {seconds}s later; stderr: {self.stderr()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.errors.close()


def silent_client(family: str, address: Any) -> socket.socket:
    """A connected client that never sends (the classic handler blocks reading it)."""
    sock = socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT)
    sock.connect(address)
    return sock


def sockets_in(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".sock")]


def start_blocked(places: Any, family: str, dispatch: str, *more: str) -> tuple[Serve, socket.socket]:
    """The command with a classic line echo on TCP and Unix, and a silent client whose
    handler is running (blocked in readline()) on the ``family`` server."""
    command = Serve("handlers.echo:StreamLineEcho", "--tcp", "127.0.0.1:0", "--unix",
                    os.path.join(places.dir, "s.sock"), "--dispatch", dispatch, "--trace", "--log-level", "INFO",
                    *more)  # fmt: skip
    found = command.serving(2)
    client = silent_client(family, found["tcp4" if family == "tcp" else "unix"])
    command.wait_log("ACCEPTED -> PROCESSING")  # the handler has the socket and reads it
    return command, client


# --------------------------------------------------- a handler that exits


@pytest.mark.timeout(30)
def test_a_handler_module_that_calls_sys_exit_is_a_usage_error(tmp_path):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(7)\n")
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "exits_at_import:Handler", "--tcp", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=PROMPT * 2,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "python -m reactor serve: error: cannot import handler 'exits_at_import:Handler': module called sys.exit(7)"
    ]
