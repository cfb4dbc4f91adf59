"""The benchmark harness runs: a one-second pass over two systems.

Not a benchmark: nothing here is timed, and no figure is compared with
another.  It checks that ``python -m bench`` builds its load generator,
starts and stops the servers, measures something, prints its tables and
writes its results, chart and report where it is told to.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bench import build
from bench.run import ROOT

needs_cc = pytest.mark.skipif(build.compiler() is None and not build.BINARY.exists(),
                              reason="no C compiler (cc, gcc, clang or $CC) to build the load generator bench/loadgen.c")  # fmt: skip


def run_bench(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench", "--runs", "1", "--seconds", "0.3", "--warmup", "0.1", "--out", str(tmp_path), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def table_rows(output: str, scenario: str) -> dict[str, list[str]]:
    """system -> the cells of its row in the scenario's text table."""
    block = output.split(f"{scenario}: ", 1)[1].split("\n\n", 1)[0].splitlines()
    return {line.split()[0]: line.split() for line in block[2:]}


@needs_cc
@pytest.mark.timeout(150)
def test_a_short_run_measures_both_systems_and_writes_its_results(tmp_path):
    done = run_bench(tmp_path, "--only", "pingpong-1,udp-50", "--systems", "reactor-line,bare")
    assert done.returncode == 0, done.stderr
    for scenario in ("pingpong-1", "udp-50"):
        rows = table_rows(done.stdout, scenario)
        assert set(rows) == {"reactor-line", "bare"}, done.stdout
        for cells in rows.values():
            assert float(cells[1].replace(",", "")) > 0, cells  # req/s
    assert "TARGETS" in done.stdout and "HEADROOM" in done.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["scenario"], r["system"]) for r in results["runs"]} == {
        ("pingpong-1", "reactor-line"), ("pingpong-1", "bare"), ("udp-50", "reactor-line"), ("udp-50", "bare"),
    }  # fmt: skip
    for run in results["runs"]:
        assert "error" not in run, run
        assert run["requests"] > 0 and run["served"] == run["conns"], run
        assert not any("SIGTERM" in note or "killed" in note for note in run["notes"]), run
    svg = (tmp_path / "bench.svg").read_text()
    assert svg.startswith("<svg") and "reactor-line" in svg
    assert "| reactor-line |" in (tmp_path / "report.md").read_text()


@needs_cc
@pytest.mark.timeout(60)
def test_a_system_that_cannot_serve_a_scenario_is_shown_as_not_applicable(tmp_path):
    done = run_bench(tmp_path, "--only", "idle-5000", "--systems", "stdlib-sync,reactor-pool")
    assert done.returncode == 0, done.stderr
    assert re.search(r"stdlib-sync\s+n/a: serves one connection at a time", done.stdout)
    assert re.search(r"reactor-pool\s+n/a: a classic handler holds a worker per connection", done.stdout)
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == []


def test_an_unknown_scenario_is_refused_with_the_known_ones(tmp_path):
    done = run_bench(tmp_path, "--only", "no-such-scenario")
    assert done.returncode != 0
    assert "unknown scenario: no-such-scenario" in done.stderr and "pingpong-50" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", ["line", "chunk", "udp"])
def test_the_profiling_driver_runs_each_system(system, capsys):
    from bench import profile

    assert profile.main([system, "--rounds", "3"]) == 0
    assert re.search(rf"^{system}: [\d.]+ us CPU per request", capsys.readouterr().out, re.MULTILINE)
