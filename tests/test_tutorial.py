"""The tutorial's steps run, and docs/tutorial.md shows what they really print.

Each ``examples/tutorial/step*.py`` runs with ``--self-test`` in a
subprocess under ``-X dev`` (an unclosed socket shows up as a
ResourceWarning on stderr) and must exit 0 with a clean stderr.

The page marks each output it shows with ``<!-- output: FILE [SECTION] -->``
and each code excerpt with ``<!-- excerpt: FILE -->``.  Outputs are compared
with a real run after every number is replaced by ``N`` (ports, fds, pids,
timings and record ids change from run to run):

* steps 1 to 5 are deterministic: the page shows the whole output, line
  for line;
* step 6's traces vary in line order (threads and child processes write
  concurrently) and in how often the loop wakes, so each section is
  compared as a set of lines, both ways, counting a "loop woke" line's
  ready descriptors by kind only (``fd N read``, ``wakeup read``); and
  what each strategy must show is checked on the real run: the handler
  on the loop's thread, on worker threads, in children that have CHILD
  records.

Every excerpt's lines must appear, in order, in the file it names.  And
each step also serves as its docstring says: started without
``--self-test``, it answers a client, and SIGTERM (``kill``) or Ctrl-C (SIGINT)
ends it cleanly.
"""

from __future__ import annotations

import functools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from examples_support import untraced_environment

ROOT = Path(__file__).resolve().parent.parent
STEPS = ROOT / "examples" / "tutorial"
DOC = ROOT / "docs" / "tutorial.md"
EXACT_STEPS = ["step1_blocking.py", "step2_selectors.py", "step3_table.py", "step4_reactor.py", "step5_timers.py"]
STEP6 = "step6_strategies.py"
SECTIONS = ["Inline", "ThreadPool", "Fork"]

_MARK = re.compile(r"^<!-- (output|excerpt): (\S+)(?: (\w+))? -->$")
# A step 6 trace line: "+0.051s reactor worker 1 handler done".
_STEP6_LINE = re.compile(r"^\+\d+\.\d{3}s (MainThread|reactor worker \d+|child (\d+)) +(.*)$")


@functools.cache
def self_test(name: str) -> subprocess.CompletedProcess[str]:
    """Run one step's self-test (once per test session)."""
    return subprocess.run(
        [sys.executable, "-X", "dev", str(STEPS / name), "--self-test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # step 3 imports step 2
    )


def output_of(name: str) -> list[str]:
    """The step's stdout lines, after checking that its self-test passed cleanly."""
    result = self_test(name)
    report = f"{name}: exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stdout.endswith("\nself-test: ok\n"), report
    for bad in ("Traceback", "ResourceWarning", "Warning"):  # the last catches any other warning
        assert bad not in result.stderr, report
    return result.stdout.splitlines()


def marked_blocks(kind: str) -> dict[tuple[str, str | None], list[list[str]]]:
    """``{(file, section): [block lines, ...]}`` for the page's blocks marked ``kind``."""
    lines = DOC.read_text().splitlines()
    found: dict[tuple[str, str | None], list[list[str]]] = {}
    for i, line in enumerate(lines):
        match = _MARK.match(line)
        if not match or match[1] != kind:
            continue
        assert lines[i + 1].startswith("```"), f"line {i + 2}: a marked block must follow its marker"
        end = lines.index("```", i + 2)
        found.setdefault((match[2], match[3]), []).append(lines[i + 2 : end])
    return found


def normalise(line: str) -> str:
    """Numbers become N, runs of spaces one space (column widths follow the numbers)."""
    return re.sub(r" +", " ", re.sub(r"\d+", "N", line)).rstrip()


def step5_sections() -> dict[str, list[str]]:
    """The real step 6 output, split at its ``=== Strategy(...)`` headers."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output_of(STEP6):
        if line.startswith("=== "):
            current = sections.setdefault(line[4:].split("(")[0], [])
        if line != "self-test: ok":
            current.append(line)
    assert sorted(sections) == sorted(SECTIONS)
    return sections


def loose(line: str) -> str:
    """Step 6's comparison key: normalised, and a wake-up's list of what was
    ready reduced to its distinct kinds (``fd N read, fd N read`` -> ``fd N read``).
    A child's output pipe and its pidfd are one kind: whether its output and
    its exit wake the loop together or one after the other is the kernel's timing."""
    line = normalise(line)
    if "loop woke" not in line:
        return line
    head, ready = line.split("): ", 1)
    kinds = {re.sub(r"^child N (output|exit) ", "child N ", item) for item in ready.split(", ")}
    return f"{head}): {', '.join(sorted(kinds))}"


# ------------------------------------------------------------- the steps run


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", EXACT_STEPS + [STEP6])
def test_self_test_passes(name: str) -> None:
    output_of(name)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args",
    [[name] for name in EXACT_STEPS] + [[STEP6, "--strategy", kind] for kind in ("inline", "pool", "fork")],
    ids=lambda args: "-".join(args).replace(".py", ""),
)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serves_until_stopped(args: list[str], stop: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-X", "dev", str(STEPS / args[0]), *args[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**untraced_environment(), "PYTHONDONTWRITEBYTECODE": "1"},  # stopped by a signal: see examples_support
    )
    try:
        assert process.stdout is not None
        printed, deadline = b"", time.monotonic() + 10
        while not (match := re.search(rb"try: nc 127\.0\.0\.1 (\d+)", printed)):
            assert time.monotonic() < deadline, printed
            if select.select([process.stdout], [], [], 0.5)[0]:
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, f"exited before serving: {printed!r}"
                printed += chunk
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=5) as client:
            client.sendall(b"poke\n")
            reply = b""
            while not reply.endswith(b"\n") and (chunk := client.recv(100)):
                reply += chunk
            # Ctrl-C while the client is still connected and the server waits
            # for its next line: -X dev reports any socket it fails to close.
            process.send_signal(stop)
            out, err = process.communicate(timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate(timeout=10)
    report = f"exit {process.returncode}\n--- stdout\n{(printed + out).decode()}--- stderr\n{err.decode()}"
    assert reply == b"poke\n", report
    assert process.returncode == 0, report
    for bad in ("Traceback", "Warning"):
        assert bad not in err.decode(), report


# ------------------------------------------- the page shows the real output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", EXACT_STEPS)
def test_page_shows_what_the_step_prints(name: str) -> None:
    blocks = marked_blocks("output").get((name, None))
    assert blocks and len(blocks) == 1, f"docs/tutorial.md should show {name}'s output once"
    shown = [normalise(line) for line in blocks[0]]
    printed = [normalise(line) for line in output_of(name)]
    assert shown == printed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("section", SECTIONS)
def test_page_shows_step5_traces(section: str) -> None:
    blocks = marked_blocks("output").get((STEP6, section))
    assert blocks and len(blocks) == 1, f"docs/tutorial.md should show step 6's {section} trace once"
    shown = {loose(line) for line in blocks[0]}
    printed = {loose(line) for line in step5_sections()[section]}
    assert sorted(shown - printed) == [], "lines on the page that the step does not print"
    assert sorted(printed - shown) == [], "lines the step prints that the page does not show"


def test_excerpts_are_in_their_files() -> None:
    excerpts = marked_blocks("excerpt")
    assert {name for name, _ in excerpts} == set(EXACT_STEPS + [STEP6])
    for (name, _), blocks in excerpts.items():
        source = [line.strip() for line in (STEPS / name).read_text().splitlines()]
        for block in blocks:
            at = 0
            for line in (line.strip() for line in block):
                if line in ("", "..."):
                    continue
                assert line in source[at:], f"{name}: not in the file (after line {at}): {line!r}"
                at = source.index(line, at) + 1


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes for a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_page_links_resolve() -> None:
    text = DOC.read_text()
    for name in EXACT_STEPS + [STEP6]:
        assert f"](../examples/tutorial/{name})" in text, name
    for target, anchor in re.findall(r"\]\(([\w-]+\.md)?(?:#([\w-]+))?\)", text):
        page = DOC.parent / (target or DOC.name)
        assert page.exists(), target
        assert not anchor or anchor in anchors(page), f"{target}#{anchor}"


# ------------------------------------------- what step 6 must make visible


def parsed(section: str) -> list[tuple[str, str | None, str]]:
    """(where, child pid or None, message) for each trace line of a step 6 section."""
    rows = []
    for line in step5_sections()[section][1:]:
        if line.startswith("replies: "):
            assert line == r"replies: [b'line 1\n', b'line 2\n']"
            continue
        match = _STEP6_LINE.match(line)
        assert match, f"not a trace line: {line!r}"
        rows.append((match[1], match[2], match[3]))
    return rows


def handler_rows(rows: list[tuple[str, str | None, str]]) -> list[tuple[str, str | None, str]]:
    return [row for row in rows if row[2].startswith("handler ")]


@pytest.mark.timeout(60)
def test_inline_runs_the_handler_on_the_loop_thread_and_blocks_the_loop() -> None:
    rows = parsed("Inline")
    assert {where for where, _, _ in rows} == {"MainThread"}
    messages = [message for _, _, message in rows]
    assert sum(m.startswith("handler starts") for m in messages) == 2
    fired = [i for i, m in enumerate(messages) if m.startswith("timer fired: heartbeat")]
    done = [i for i, m in enumerate(messages) if m == "handler done"]
    # The timer was due 20 ms in, but the loop was inside the handlers.
    assert len(fired) == 1 and len(done) == 2 and fired[0] > done[-1]


@pytest.mark.timeout(60)
def test_thread_pool_runs_the_handler_on_worker_threads() -> None:
    rows = parsed("ThreadPool")
    handlers = handler_rows(rows)
    assert len(handlers) == 4
    assert all(re.fullmatch(r"reactor worker \d+", where) for where, _, _ in handlers)
    assert all(row[0] == "MainThread" for row in rows if row not in handlers)  # the loop's own lines
    assert any(message.endswith(": wakeup read") for _, _, message in rows)


@pytest.mark.timeout(60)
def test_fork_runs_the_handler_in_children_with_child_records() -> None:
    rows = parsed("Fork")
    handlers = handler_rows(rows)
    assert len(handlers) == 4 and all(where.startswith("child ") for where, _, _ in handlers)
    pids = {pid for _, pid, _ in handlers}
    child_records = re.compile(r"#\d+ PROCESSING: new child, pid (\d+), running #\d+$")
    recorded = {m[1] for _, _, message in rows if (m := child_records.search(message))}
    assert len(pids) == 2 and pids == recorded
    exits = [message for _, _, message in rows if message.endswith("PROCESSING -> DONE: finish (exit status 0x0)")]
    assert len(exits) == 2
