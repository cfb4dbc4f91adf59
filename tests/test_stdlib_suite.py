"""CPython's own test_socketserver.py, run against reactor.

The test module comes from the installed Python (never copied here).  It
runs in a subprocess with ``sys.modules["socketserver"] = reactor`` set
before it is imported, so every ``socketserver.X`` it uses is ours.

One test cannot pass honestly: ``MiscTestCase.test_all`` collects the
names whose ``__module__`` is the string "socketserver", and ours live in
``reactor.*`` modules.  Every other test must pass.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from typing import Any

import pytest

RUNNER = (
    "import sys, reactor; sys.modules['socketserver'] = reactor; "
    "import unittest; unittest.main(module='test.test_socketserver', argv=['x', '-v'])"
)

EXPECTED_FAILURE = ("test_all", "MiscTestCase")
MIN_TESTS = 27

# "test_name (test.test_socketserver.Class.test_name) ... " (3.11+) or "test_name (test.test_socketserver.Class) ... "
# (a test with a docstring has it on the next line, before the " ... ")
HEADER = re.compile(r"^(test\w*) \(([\w.]+)\)(?: \.\.\. |\n)", re.MULTILINE)
OUTCOME = re.compile(r"(?:^|\.\.\. )(ok|FAIL|ERROR|skipped .*|expected failure|unexpected success)$", re.MULTILINE)


def parse_verbose(output: str) -> dict[tuple[str, str], str]:
    """Map (test, class) to its outcome from unittest's -v output.

    A test's own prints may sit between its header and its outcome, so the
    outcome is the last outcome-looking line before the next header.
    """
    headers = list(HEADER.finditer(output))
    end_of_results = output.find("\n" + "=" * 70)
    if end_of_results == -1:
        end_of_results = output.find("\n" + "-" * 70)
    outcomes: dict[tuple[str, str], str] = {}
    for i, header in enumerate(headers):
        stop = headers[i + 1].start() if i + 1 < len(headers) else end_of_results
        segment = output[header.start() : stop if stop != -1 else len(output)]
        found = OUTCOME.findall(segment)
        test, dotted = header.group(1), header.group(2).split(".")
        cls = dotted[-2] if dotted[-1] == test else dotted[-1]
        outcomes[(test, cls)] = found[-1] if found else "?"
    return outcomes


def stdlib_test_module_available() -> bool:
    try:
        return importlib.util.find_spec("test.test_socketserver") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.timeout(300)
def test_cpython_socketserver_suite_passes_on_reactor(tmp_path: Any) -> None:
    if not stdlib_test_module_available():
        pytest.skip(
            "CPython's test package (test.test_socketserver) is not installed with this Python; "
            "some distributions ship it separately (e.g. Debian's libpython3-testsuite)"
        )
    result = subprocess.run(
        [sys.executable, "-u", "-c", RUNNER],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = result.stderr  # unittest writes its results to stderr; the tests' own prints go to stdout
    ran = re.search(r"^Ran (\d+) tests? in ", report, re.MULTILINE)
    assert ran, f"no 'Ran N tests' line; exit status {result.returncode}\n{report[-4000:]}"
    ran_count = int(ran.group(1))
    outcomes = parse_verbose(report)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        key = outcome.split()[0]
        counts[key] = counts.get(key, 0) + 1
    print(f"CPython test_socketserver on reactor: ran {ran_count}, outcomes {counts}")
    for (test, cls), outcome in sorted(outcomes.items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"  {cls}.{test}: {outcome}")

    assert len(outcomes) == ran_count, f"parsed {len(outcomes)} results for {ran_count} tests run\n{report[-4000:]}"
    assert ran_count >= MIN_TESTS
    not_ok = {key: outcome for key, outcome in outcomes.items() if outcome != "ok"}
    assert not_ok == {EXPECTED_FAILURE: "FAIL"}, report[-6000:]
    # The failure section agrees: exactly one FAIL, no ERROR.
    assert re.findall(r"^(FAIL|ERROR): (\w+) \(", report, re.MULTILINE) == [("FAIL", "test_all")]
    assert re.search(r"^FAILED \(failures=1\)$", report, re.MULTILINE), report[-2000:]
