"""Every Python block in docs/ whose output the page shows is run, and its output compared.

A page shows a program and, in the next code block, what it prints.  Such
pairs drift (a library change alters what the program prints, and nobody
re-runs it), so this file runs each one and compares, numbers, temporary
paths and column widths masked.  What a pair compares is said by a marker
on the line before the Python block, or is the default:

* no marker: the program's stdout is the shown block;
* ``<!-- shows: stderr -->`` or ``<!-- shows: stdout+stderr -->`` (the two
  interleaved as written: the program runs unbuffered);
* ``<!-- not run: REASON -->``: the next block is not its output, or the
  program runs until it is stopped; the reason is required.

A shown line ``...`` stands for any number of lines (a traceback cut short).

The tutorial's blocks have tests of their own (tests/test_tutorial.py).
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.glob("*.md") if path.name != "tutorial.md")
_MARK = re.compile(r"^<!-- (shows: (stderr|stdout\+stderr)|not run: .+) -->$")


def pairs(page: pathlib.Path) -> list[tuple[int, str, str, list[str]]]:
    """(line, mode, code, shown lines) for each Python block followed by a text block."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            mark = _MARK.match(lines[i - 1]) if i else None
            mode = "stdout" if mark is None else mark[2] or "not run"
            blocks.append((i + 1, lines[i][3:].strip(), mode, lines[i + 1 : j]))
            i = j + 1
        else:
            i += 1
    found = []
    for (line, lang, mode, body), (_, next_lang, _, shown) in zip(blocks, blocks[1:]):
        if lang == "python" and next_lang in ("text", ""):
            found.append((line, mode, "\n".join(body), shown))
    return found


def masked(text: str) -> str:
    text = re.sub(r"/tmp/[^/\s'\"]+", "/tmp/TMP", text)  # tempfile's random names
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)  # numbers, 0.001 and 1.2e-05 alike
    return re.sub(r" +", " ", text).strip()


def matches(shown: list[str], printed: list[str]) -> bool:
    """Line by line, masked; a shown line ``...`` stands for any number of printed lines."""
    if not shown:
        return not printed
    if shown[0] == "...":
        return any(matches(shown[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and shown[0] == printed[0] and matches(shown[1:], printed[1:])


ALL = [(page, line, mode, code, shown) for page in PAGES for line, mode, code, shown in pairs(page)]
PAIRS = [pytest.param(*pair, id=f"{pair[0].name}:{pair[1]}") for pair in ALL if pair[2] != "not run"]


@pytest.mark.timeout(10)
def test_there_are_pages_to_check_and_few_left_out() -> None:
    """A marker typo or a moved block must not make this file check nothing."""
    assert len(PAIRS) >= 40
    left_out = [f"{page.name}:{line}" for page, line, mode, _, _ in ALL if mode == "not run"]
    assert len(left_out) <= 3, left_out  # each says why on its page (``not run: REASON``)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page, line, mode, code, shown", PAIRS)
def test_the_page_shows_what_the_program_prints(page, line, mode, code, shown) -> None:
    result = subprocess.run(
        [sys.executable, "-u", "-c", code], cwd=ROOT, text=True, timeout=45,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if mode == "stdout+stderr" else subprocess.PIPE,
    )  # fmt: skip
    printed = result.stderr if mode == "stderr" else result.stdout
    where = f"{page.name} line {line}: exit {result.returncode}\n{result.stdout}{result.stderr or ''}"
    expected, got = [masked(l) for l in shown], [masked(l) for l in printed.splitlines()]
    assert matches(expected, got), f"{where}\n--- shown\n" + "\n".join(expected) + "\n--- printed\n" + "\n".join(got)


# ------------------------------------------------- the quick start's demo excerpt


_TIMELINE_ROW = re.compile(r"^ *N\.N +(tcp|udp|unix|unix-dgram) ")  # after masking: times and ids vary


@pytest.mark.timeout(60)
def test_the_quick_start_shows_what_the_demo_prints() -> None:
    """quickstart.md shows a real ``make demo`` run.  Its timeline rows come and go with the
    timing (which request is first, how many rows are folded); every other line must be
    one the demo prints now."""
    page = (DOCS / "quickstart.md").read_text().splitlines()
    start = page.index("```text", next(i for i, line in enumerate(page) if line.startswith("family, and shuts")))
    end = page.index("```", start + 1)
    shown = [masked(line) for line in page[start + 1 : end]]
    result = subprocess.run([sys.executable, "-m", "reactor", "demo"], cwd=ROOT, text=True, capture_output=True,
                            timeout=45)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    printed = {masked(line) for line in result.stdout.splitlines()}
    fixed = [line for line in shown if not _TIMELINE_ROW.match(line) and not line.startswith("... N more")]
    assert len(fixed) >= 25
    missing = [line for line in fixed if line not in printed]
    assert missing == [], f"the page shows lines the demo no longer prints: {missing}"
