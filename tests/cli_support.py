"""``python -m reactor serve`` as a subprocess, for the CLI tests (test_cli.py, test_cli_stop.py)."""

from __future__ import annotations

import os
import pathlib
import resource
import signal
import subprocess
import sys
import tempfile
from typing import Any

from examples_support import untraced_environment

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXIT_TIMEOUT = 10.0


class Command:
    """``python -m reactor serve ARGS`` as a subprocess; stderr goes to a file (never a full pipe).

    ``env`` adds to the environment (or replaces its variables);
    ``cwd`` is where it runs (the project by default); ``limit`` is the RLIMIT_NOFILE (soft, hard) to
    start it with; ``traced=False`` for a command whose signal handler may raise
    (see ``untraced_environment``).
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, limit: tuple[int, int] | None = None,
                 traced: bool = True, cwd: Any = ROOT) -> None:  # fmt: skip
        self.errors = tempfile.TemporaryFile(mode="w+")

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "serve", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=self.errors, text=True,
            env={**(os.environ if traced else untraced_environment()), **(env or {})},
            preexec_fn=lower_limit if limit else None,
        )  # fmt: skip

    def serving(self, count: int) -> dict[str, Any]:
        """Read ``count`` "serving" lines: family name -> the bound address."""
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

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(EXIT_TIMEOUT)

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.errors.close()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
