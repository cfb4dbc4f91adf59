"""Run an example the way a user does: start it, talk to it, ``kill`` it.

Every example in ``examples/`` follows one convention when it serves
(no ``--self-test``):

* for each server it prints a line ``  <label>  <address>``, where the
  address is a Python repr of an inet address (``('127.0.0.1', 4242)``)
  or a Unix socket path (``/tmp/.../echo.sock``);
* once every server is listening it prints ``serving; Ctrl-C to stop``;
* SIGINT or SIGTERM closes everything, prints
  ``closed; socket files left: none`` and exits 0.

``self_test(name)`` runs an example's ``--self-test`` and ``check_clean``
checks what every self-test promises (exit 0, no socket file left, no
traceback or ResourceWarning).

``served(name, *args)`` starts one in a subprocess (under ``-X dev``, so an
unclosed socket shows up as a ResourceWarning), waits for the ready line
and yields a ``Served`` with the addresses by label; leaving the block sends
SIGTERM and checks the exit status, the closing line, stderr and that
every Unix socket file is gone.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
READY = "serving; Ctrl-C to stop"
CLOSED = "closed; socket files left: none"
_ADDRESS = re.compile(r"^\s+(?P<label>[\w.-]+)\s+(?:fd \d+\s+)?(?P<address>\(.*\)|/\S+)\s*$")


@dataclass
class Served:
    """A running example: its process, the lines it printed, its addresses."""

    process: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    addresses: dict[str, Any] = field(default_factory=dict)

    def unix_paths(self) -> list[str]:
        return [a for a in self.addresses.values() if isinstance(a, str)]


def _read_until_ready(process: subprocess.Popen[bytes], deadline: float) -> list[str]:
    # Unbuffered reads of whatever is there: a buffered readline() could
    # swallow the ready line into its buffer while select() waits for more.
    assert process.stdout is not None
    fd = process.stdout.fileno()
    pending = b""
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # the example exited before it was ready
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines.extend(line.decode() for line in complete)
            if READY in lines:
                return lines
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"example never printed {READY!r}; stdout: {lines}; stderr: {err.decode()}")


def untraced_environment() -> dict[str, str]:
    """This process's environment, minus what starts coverage in a child.

    A process stopped by a signal whose handler raises (``KeyboardInterrupt``
    from SIGINT, or from SIGTERM through ``signal.default_int_handler``, as
    the examples do) can be interrupted inside coverage's tracer while it
    holds its data lock; the lock is never released and the process hangs
    at its next traced line (seen in CI: the stack ended in coverage's
    ``Collector.lock_data``).  So what is stopped by a signal runs untraced;
    the self-tests, which end by themselves, are still measured.
    """
    return {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_START"}


def parse_addresses(lines: list[str]) -> dict[str, Any]:
    """``{label: address}`` from the lines an example printed before it was ready."""
    found: dict[str, Any] = {}
    for line in lines:
        match = _ADDRESS.match(line)
        if match:
            text = match["address"]
            found[match["label"]] = ast.literal_eval(text) if text.startswith("(") else text
    return found


@contextlib.contextmanager
def served(name: str, *args: str, timeout: float = 20.0, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run ``examples/<name>`` until the block ends, then SIGTERM it and check it."""
    process = subprocess.Popen(
        [sys.executable, "-X", "dev", "-X", "faulthandler", str(EXAMPLES / name), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**untraced_environment(), **(env or {})},
    )
    try:
        lines = _read_until_ready(process, time.monotonic() + timeout)
        run = Served(process, lines, parse_addresses(lines))
        yield run
    except BaseException:
        process.kill()
        process.communicate(timeout=10)
        raise
    process.send_signal(signal.SIGTERM)
    try:
        out, err_bytes = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGABRT makes faulthandler print every thread's stack: where it hung.
        process.send_signal(signal.SIGABRT)
        try:
            out, err_bytes = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err_bytes = process.communicate(timeout=10)
        raise AssertionError(
            f"no exit within {timeout}s of SIGTERM\n--- stdout\n{os.linesep.join(run.lines)}\n{out.decode()}"
            f"--- stderr (with the stacks at SIGABRT)\n{err_bytes.decode()}"
        ) from None
    err = err_bytes.decode()
    run.lines.extend(out.decode().splitlines())
    report = f"exit {process.returncode}\n--- stdout\n{os.linesep.join(run.lines)}\n--- stderr\n{err}"
    assert process.returncode == 0, report
    assert CLOSED in run.lines, report
    assert "Traceback" not in err, report
    assert "ResourceWarning" not in err, report
    for path in run.unix_paths():
        assert not os.path.exists(path), f"{path} left behind\n{report}"


def self_test(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name> --self-test`` (under ``-X dev``) to its end."""
    return subprocess.run(
        [sys.executable, "-X", "dev", str(EXAMPLES / name), "--self-test", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_clean(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 0, nothing left behind, no traceback or ResourceWarning; returns the report."""
    report = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, report
    assert "socket files left: none" in result.stdout, report
    assert "Traceback" not in result.stderr, report
    assert "ResourceWarning" not in result.stderr, report
    return report
