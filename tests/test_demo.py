"""``python -m reactor demo``: four families in one reactor, a slow client that blocks no one.

The demo checks its own claims and exits 1 when one fails; these tests run
it as a user does (a subprocess, ``-X dev``) and check its output against
what its clients sent, then run it in-process, including against servers
that are made to fail (a blocking handler, a wrong echo), to show that its
checks can fail.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from typing import Any

import pytest

import reactor.demo as demo
import reactor.demo_clients as demo_clients
from handlers.echo import StreamLineEcho, Upper
from reactor.demo_clients import lines_for
from reactor.tcp import TCPServer

FAMILIES = ["tcp", "udp", "unix", "unix-dgram"]
STREAMS = {"tcp", "unix"}
ROW = re.compile(
    r"^  (tcp|udp|unix|unix-dgram|total)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*?)\s*(\d+)\s+(\d+)$", re.MULTILINE
)
TIMELINE_STEP = re.compile(r"^\s+(\d+\.\d)  (tcp|udp|unix|unix-dgram)\s+#(\d+)\s+(\w+) -> (\w+)\s+(.*)$", re.MULTILINE)
ELIDED = re.compile(r"^\s+\.\.\. (\d+) more transitions \(.+\)$", re.MULTILINE)


def sent_by_clients(family: str) -> list[bytes]:
    """Every line the demo's clients send to ``family``'s server."""
    lines = [line for client in range(1, demo.CLIENTS + 1) for line in lines_for(family, client, demo.LINES)]
    return lines + ([demo.SLOW_LINE] if family == "tcp" else [])


def expected_transitions(family: str) -> int:
    """How many transitions the family's records go through, all told.

    A framed connection: new, start, then message/dispatch/reply per line,
    then eof and finish.  A datagram: new, dispatch, finish.
    """
    if family in STREAMS:
        connections = demo.CLIENTS + (family == "tcp")
        return connections * 4 + 3 * len(sent_by_clients(family))
    return 3 * len(sent_by_clients(family))


def check_summary(text: str) -> None:
    rows = {m[1]: m.groups()[1:] for m in ROW.finditer(text)}
    assert sorted(rows) == sorted(FAMILIES + ["total"]), text
    totals = [0, 0, 0, 0]
    for family in FAMILIES:
        records, requests, bytes_in, bytes_out, finals, failed, aborted = rows[family]
        sent = sent_by_clients(family)
        n_records = demo.CLIENTS + (family == "tcp") if family in STREAMS else len(sent)
        numbers = [int(records), int(requests), int(bytes_in), int(bytes_out)]
        assert numbers == [n_records, len(sent), sum(map(len, sent)), sum(map(len, sent))], (family, rows[family])
        assert finals == f"{'CLOSED' if family in STREAMS else 'DONE'} {n_records}", (family, finals)
        assert (failed, aborted) == ("0", "0"), family
        totals = [a + b for a, b in zip(totals, numbers)]
    assert [int(n) for n in rows["total"][:4]] == totals
    assert "bounds hit (the tables' counters): none" in text


def check_slow_client(text: str) -> None:
    m = re.search(
        r"^slow client: line finished after (\d+\.\d+) s; meanwhile (\d+) other requests answered in "
        r"(\d+\.\d+) ms max,\n  all within (\d+\.\d+) ms of its first half, while it was still mid-line: "
        r"it blocked no one$",
        text,
        re.MULTILINE,
    )
    assert m, text
    finished, others, worst, within = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert finished >= demo.SLOW_PAUSE * 0.95
    assert others == sum(len(sent_by_clients(f)) for f in FAMILIES) - 1  # all but the slow line
    assert worst < within < demo.SLOW_PAUSE * 1000
    # Its record, seen through describe() before and after the quick clients: still mid-line.
    half = len(demo.SLOW_LINE) // 2
    assert re.search(rf"^  tcp4 #1 READING, {half} B in, 0 B out, age \d+ ms$", text, re.MULTILINE), text
    assert re.search(rf"^then describe\(\) again:  tcp4 #1 READING, {half} B in, 0 B out", text, re.MULTILINE)


def check_timeline(text: str) -> None:
    steps = TIMELINE_STEP.findall(text)
    assert {family for _, family, *_ in steps} == set(FAMILIES), text
    slow = [(float(at), old, new, why) for at, fam, record, old, new, why in steps if (fam, record) == ("tcp", "1")]
    assert [(old, new) for _, old, new, _ in slow] == [
        ("new", "ACCEPTED"), ("ACCEPTED", "READING"), ("READING", "READY"), ("READY", "PROCESSING"),
        ("PROCESSING", "READING"), ("READING", "CLOSING"), ("CLOSING", "CLOSED"),
    ]  # fmt: skip
    assert slow[2][3] == f"message: {len(demo.SLOW_LINE)} B"
    assert slow[2][0] >= demo.SLOW_PAUSE * 1000 * 0.95  # its line was complete only after the pause
    assert all(float(at) < slow[2][0] for at, family, *_ in steps if family != "tcp")  # the others, meanwhile
    assert re.search(r"client: the slow client connects, sends b'.+' \(half a line\) and pauses", text)
    # Every transition is either shown or counted in a "... N more" line.
    shown = len(steps) + sum(int(n) for n in ELIDED.findall(text))
    assert shown == sum(expected_transitions(f) for f in FAMILIES), text


def check_output(text: str, verbose: bool = True) -> None:
    assert text.startswith("reactor demo: ONE Reactor ("), text
    for family in FAMILIES:
        n = len(sent_by_clients(family)) - (family == "tcp")
        assert re.search(rf"^  {family}\s+{n} of {n} echoes correct, slowest in \d+\.\d\d ms$", text, re.MULTILINE)
    check_slow_client(text)
    check_summary(text)
    if verbose:
        check_timeline(text)
    else:
        assert "timeline:" not in text and not TIMELINE_STEP.search(text)
    assert re.search(
        r"^shutdown: loop thread stopped, 4 servers closed, socket files left: none, temp dir removed$", text, re.M
    )
    assert text.rstrip().endswith("nothing left behind")
    assert "FAILED" not in text
    # The temporary directory the Unix servers lived in is gone.
    directory = os.path.dirname(re.search(r"^  unix\s+(\S+)$", text, re.MULTILINE)[1])
    assert os.path.basename(directory).startswith("reactor-demo-")
    assert not os.path.exists(directory)


@pytest.mark.timeout(60)
def test_demo_command(tmp_path: Any) -> None:
    args = [sys.executable, "-X", "dev", "-m", "reactor", "demo"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=45)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # no Traceback, no ResourceWarning, no log line
    check_output(result.stdout)


@pytest.mark.timeout(30)
def test_run_demo_in_process() -> None:
    lines: list[str] = []
    assert demo.run_demo(out=lines.append) == 0
    assert all(isinstance(line, str) for line in lines)
    check_output("\n".join(lines))


@pytest.mark.timeout(30)
def test_main_dispatches_the_demo_command(capsys: Any) -> None:
    from reactor.__main__ import main

    assert main(["demo", "--quiet"]) == 0
    check_output(capsys.readouterr().out, verbose=False)


@pytest.mark.timeout(30)
def test_trace_logs_every_transition_and_leaves_logging_as_it_was(capsys: Any) -> None:
    logger = logging.getLogger("reactor.trace")
    handlers, level = list(logger.handlers), logger.level
    from reactor.__main__ import main

    assert main(["demo", "--quiet", "--trace"]) == 0
    out, err = capsys.readouterr()
    check_output(out, verbose=False)
    moves = re.findall(r"^reactor\.trace: \S+ \S+ #\d+ (?:\w+: new|\w+ -> \w+:)", err, re.MULTILINE)
    assert len(moves) == sum(expected_transitions(f) for f in FAMILIES), err
    assert (logger.handlers, logger.level) == (handlers, level)


@pytest.mark.timeout(30)
def test_a_blocking_server_fails_the_demo(monkeypatch: Any) -> None:
    """A classic handler on the tcp server blocks the loop while the slow client pauses: exit 1."""
    monkeypatch.setattr(demo, "TCPServer", lambda address, handler: TCPServer(address, StreamLineEcho))
    monkeypatch.setattr(demo_clients, "CLIENT_TIMEOUT", 2.0)  # a classic record never shows bytes_in
    lines: list[str] = []
    assert demo.run_demo(verbose=False, out=lines.append) == 1
    text = "\n".join(lines)
    assert "demo FAILED:" in text
    assert re.search(r"^  the slow client blocked the others: their last echo came \d+\.\d ms", text, re.M), text
    assert "it blocked no one" not in text


@pytest.mark.timeout(30)
def test_a_wrong_echo_fails_the_demo(monkeypatch: Any) -> None:
    monkeypatch.setattr(demo, "LineEcho", Upper)
    lines: list[str] = []
    assert demo.run_demo(out=lines.append) == 1
    text = "\n".join(lines)
    assert "demo FAILED:" in text
    assert "  udp client 1 sent b'hello 1 from udp client 1\\n', got b'HELLO 1 FROM UDP CLIENT 1\\n'" in lines
    assert f"  tcp slow client sent {demo.SLOW_LINE!r}, got {demo.SLOW_LINE.upper()!r}" in lines


def test_main_without_a_command_is_a_usage_error(capsys: Any) -> None:
    from reactor.__main__ import main

    with pytest.raises(SystemExit) as exit:
        main([])
    assert exit.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
