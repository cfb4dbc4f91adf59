"""The examples run: each one's ``--self-test``, as a separate process.

A self-test starts the example's servers, talks to each once with a real
client, prints the replies and exits 0 only if every reply was right and
no socket file was left behind.  ``-X dev`` makes unclosed sockets show up
as ResourceWarning on stderr, which fails the test too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_self_test(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "dev", str(EXAMPLES / name), "--self-test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def check(result: subprocess.CompletedProcess[str], labels: list[str]) -> None:
    report = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, report
    for label in labels:
        payload = f"hello over {label}\n".encode()
        expected = f"reply {payload!r}  ok"  # as the example prints it
        assert expected in result.stdout, f"no good reply from {label}\n{report}"
    assert "socket files left: none" in result.stdout, report
    assert "Traceback" not in result.stderr, report
    assert "ResourceWarning" not in result.stderr, report


@pytest.mark.timeout(90)
def test_four_families() -> None:
    check(run_self_test("four_families.py"), ["tcp", "udp", "unix", "unix-dgram"])


@pytest.mark.timeout(90)
def test_select_fileno() -> None:
    check(run_self_test("select_fileno.py"), ["tcp", "udp", "unix"])


@pytest.mark.timeout(90)
def test_asyncio_embed() -> None:
    result = run_self_test("asyncio_embed.py")
    check(result, ["tcp", "udp", "unix", "unix-dgram"])
    assert "reactor timer fired under asyncio" in result.stdout, result.stdout
