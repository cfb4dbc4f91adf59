"""``python -m reactor demo``: four echo exchanges in one reactor, then a clean shutdown."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from reactor.demo import run_demo

LABELS = ["tcp", "udp", "unix", "unix-dgram"]
STREAM = {"tcp": True, "udp": False, "unix": True, "unix-dgram": False}


def exchange_line(label: str) -> re.Pattern[str]:
    payload = re.escape(repr(f"hello over {label}\n".encode()))
    return re.compile(rf"^\s+{re.escape(label)}\s+sent {payload}\s+got {payload}\s+\d+\.\d+ ms\s+ok$", re.MULTILINE)


def story_lines(label: str) -> list[str]:
    """The three transitions each demo request goes through, in order."""
    if STREAM[label]:
        return [r"ACCEPTED from .+", r"ACCEPTED -> PROCESSING \(dispatch\)", r"PROCESSING -> CLOSED \(finish\)"]
    return [r"RECEIVED from .+", r"RECEIVED -> PROCESSING \(dispatch\)", r"PROCESSING -> DONE \(finish\)"]


def check_output(text: str, verbose: bool = True) -> None:
    for label in LABELS:
        assert exchange_line(label).search(text), f"no successful {label} exchange in:\n{text}"
    assert "MISMATCH" not in text
    story_header = "the request table's story"
    if verbose:
        assert story_header in text
        lines = text.splitlines()
        for label in LABELS:
            own = [line for line in lines if re.match(rf"^\s+{re.escape(label)}\s+#1\s+[A-Z]", line)]
            assert len(own) == 3, (label, own)
            for line, pattern in zip(own, story_lines(label)):
                assert re.search(rf"#1\s+{pattern}$", line), (label, line, pattern)
    else:
        assert story_header not in text
    assert re.search(
        r"^summary: 4 requests, 4 finished, 0 failed, 0 still in the tables, loop thread stopped, "
        r"socket files left: none$",
        text,
        re.MULTILINE,
    ), text


@pytest.mark.timeout(90)
@pytest.mark.parametrize("quiet", [False, True], ids=["verbose", "quiet"])
def test_demo_command(quiet: bool, tmp_path: Any) -> None:
    args = [sys.executable, "-m", "reactor", "demo"] + (["--quiet"] if quiet else [])
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    check_output(result.stdout, verbose=not quiet)


@pytest.mark.timeout(30)
def test_run_demo_in_process() -> None:
    lines: list[str] = []
    assert run_demo(out=lines.append) == 0
    assert all(isinstance(line, str) for line in lines)
    check_output("\n".join(lines))
    assert lines[0].startswith("reactor demo: one Reactor (")


@pytest.mark.timeout(30)
def test_main_dispatches_the_demo_command(capsys: Any) -> None:
    from reactor.__main__ import main

    assert main(["demo", "--quiet"]) == 0
    check_output(capsys.readouterr().out, verbose=False)


def test_main_without_a_command_is_a_usage_error(capsys: Any) -> None:
    from reactor.__main__ import main

    with pytest.raises(SystemExit) as exit:
        main([])
    assert exit.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
