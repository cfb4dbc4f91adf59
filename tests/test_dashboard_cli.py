"""``--dashboard HOST:PORT`` on the command line: ``python -m reactor serve`` and ``demo``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from cli_support import EXIT_TIMEOUT, ROOT, Command
from conftest import CLIENT_TIMEOUT


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as reply:
        assert reply.status == 200
        return reply.read()


def dashboard_line(proc: Any) -> str:
    """Read stdout up to the ``dashboard URL`` line; return the URL."""
    for _ in range(200):
        line = proc.stdout.readline()
        assert line, "stdout ended before the dashboard line"
        if line.startswith("dashboard "):
            return line.split()[1]
    raise AssertionError("no dashboard line")


@pytest.mark.timeout(30)
def test_serve_with_a_dashboard_prints_its_line_and_serves_metrics() -> None:
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--dashboard", "127.0.0.1:0")
    try:
        found = command.serving(1)
        line = command.proc.stdout.readline()
        assert line.startswith("dashboard http://127.0.0.1:") and line.endswith("/\n"), line
        url = line.split()[1]
        host, port = found["tcp4"]
        metrics = fetch(url + "metrics").decode()
        assert f'reactor_requests_opened_total{{server="tcp4 {host}:{port}"}} 0' in metrics
        snapshot = json.loads(fetch(url + "table.json"))
        assert [s["dashboard"] for s in snapshot["servers"]] == [False, True]
        assert command.stop() == 0
    finally:
        command.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--dashboard", "0.0.0.0:0"], "0.0.0.0 is not a loopback address"),
        (["--dashboard", "nowhere"], "bad --dashboard address 'nowhere': expected HOST:PORT"),
        (["--dashboard-remote"], "--dashboard-remote needs --dashboard HOST:PORT"),
        (["--dashboard", "0.0.0.0:0", "--workers", "2"], "0.0.0.0 is not a loopback address"),
    ],
)
def test_bad_dashboard_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", *args)
    try:
        assert command.proc.wait(EXIT_TIMEOUT) == 2
        errors = command.stderr().splitlines()
        assert len(errors) == 1 and errors[0].startswith("python -m reactor serve: error: ") and message in errors[0]
        assert command.proc.stdout.read() == ""
    finally:
        command.close()


@pytest.mark.timeout(30)
def test_demo_with_a_dashboard_keeps_serving_until_a_signal() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "reactor", "demo", "--quiet", "--dashboard", "127.0.0.1:0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = dashboard_line(proc)
        snapshot = json.loads(fetch(url + "table.json"))
        families = sorted(server["family"] for server in snapshot["servers"])
        assert families == ["tcp4", "tcp4", "udp4", "unix", "unix-dgram"]  # the four, and the dashboard's
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=EXIT_TIMEOUT)
        assert proc.returncode == 0, err
        assert "demo ok" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
