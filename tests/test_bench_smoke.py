"""The benchmark harness runs: a one-second pass over two systems.

Not a benchmark: nothing here is timed, and no figure is compared with
another.  It checks that ``python -m bench`` builds its load generator,
starts and stops the servers, measures something, prints its tables and
writes its results, chart and report where it is told to; that the noise
accounting (bench/noise.py) computes others' CPU time from fake /proc
readings and re-runs what it should; that the counts per message
(bench/counts.py) parse and divide as they should; and that the TLS
scenarios run the TLS systems (and say why not the others), or are
skipped in one line when the load generator cannot be built with OpenSSL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from bench import build, counts, noise, report
from bench.__main__ import unpublishable
from bench.run import ROOT

needs_cc = pytest.mark.skipif(build.compiler() is None and not build.BINARY.exists(),
                              reason="no C compiler (cc, gcc, clang or $CC) to build the load generator bench/loadgen.c")  # fmt: skip


def run_bench(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    # --retries 0: on a busy machine every run may be contended, and this test is not the place to wait for quiet.
    command = [sys.executable, "-m", "bench", "--runs", "1", "--seconds", "0.3", "--warmup", "0.1", "--retries", "0",
               "--out", str(tmp_path), *args]  # fmt: skip
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
            assert float(cells[1].replace(",", "").rstrip(report.CONTENDED_MARK)) > 0, cells  # req/s
            assert re.search(r" \d+% \d+% 0( |$)", " ".join(cells)), cells  # client CPU, noise, no re-runs
    assert "TARGETS" in done.stdout and "HEADROOM" in done.stdout
    assert "COUNTED, NOT TIMED" not in done.stdout  # not with --only / --systems

    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["scenario"], r["system"]) for r in results["runs"]} == {
        ("pingpong-1", "reactor-line"), ("pingpong-1", "bare"), ("udp-50", "reactor-line"), ("udp-50", "bare"),
    }  # fmt: skip
    for run in results["runs"]:
        assert "error" not in run, run
        assert run["requests"] > 0 and run["served"] == run["conns"], run
        assert not any("SIGTERM" in note or "killed" in note for note in run["notes"]), run
        n = run["noise"]
        assert n["window_s"] > 0.2 and n["busy_s"] > 0 and n["server_s"] > 0 and n["loadgen_s"] > 0, n
        assert n["others_s"] >= 0 and n["others_pct"] == pytest.approx(100 * n["others_s"] / n["window_s"], abs=0.5), n
        assert run["reruns"] == 0 and run["contended"] == (n["others_pct"] > 15), run
    assert {(c["scenario"], c["system"]) for c in results["cells"]} == {(r["scenario"], r["system"]) for r in results["runs"]}
    assert all(c["noise_pct"] is not None and c["reruns"] == 0 for c in results["cells"]), results["cells"]
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


def tls_or_skip() -> None:
    """Skip unless the TLS scenarios can run here: the openssl command, and the load generator built with OpenSSL."""
    from bench import tls

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the bench's certificate (make bench-tools installs it)")
    try:
        build.loadgen_tls()
    except (build.NoCompiler, RuntimeError) as exc:
        pytest.skip(f"the load generator cannot be built with OpenSSL here: {str(exc).splitlines()[0]}")
    assert tls.DESCRIPTION


def tls_dirs() -> set[str]:
    return {p.name for p in build.BUILD.glob("tls-*")} if build.BUILD.exists() else set()


@needs_cc
@pytest.mark.timeout(120)
def test_the_tls_scenarios_measure_the_tls_systems_and_say_why_the_others_are_not(tmp_path):
    tls_or_skip()
    before = tls_dirs()
    done = run_bench(tmp_path, "--only", "tls-50,tls-handshakes", "--systems", "reactor-line,asyncio-proto,bare,stdlib-threading")
    assert done.returncode == 0, done.stderr
    assert "skipped" not in done.stderr + done.stdout
    assert re.search(r"^system +handshakes/s +min-max", done.stdout, re.MULTILINE), done.stdout
    for scenario in ("tls-50", "tls-handshakes"):
        rows = table_rows(done.stdout, scenario)
        assert set(rows) == {"reactor-line", "asyncio-proto", "bare", "stdlib-threading"}, done.stdout
        for system in ("reactor-line", "asyncio-proto"):
            assert float(rows[system][1].replace(",", "").rstrip(report.CONTENDED_MARK)) > 0, rows[system]
        assert " ".join(rows["bare"][1:]) == "n/a: plain sockets only: no TLS"
        assert " ".join(rows["stdlib-threading"][1:]).startswith("n/a: the stdlib's servers do TLS only by wrapping")
    assert "self-signed RSA-2048 certificate made for the run" in done.stdout
    for label in ("TLS line echo, 50 conns: x asyncio Protocol over TLS", "TLS handshakes/s, 16 clients: x asyncio Protocol"):
        line = next(x for x in done.stdout.splitlines() if x.startswith(label))
        assert re.search(r" \d+\.\d\dx +>= 1x ", line), line
    headroom = done.stdout.split("HEADROOM", 1)[1]
    for scenario in ("tls-50", "tls-handshakes"):
        assert re.search(rf"^{scenario} +n/a +\S+ [\d,]+ +\d+% \(", headroom, re.MULTILINE), headroom

    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["scenario"], r["system"]) for r in results["runs"]} == {
        (s, system) for s in ("tls-50", "tls-handshakes") for system in ("reactor-line", "asyncio-proto")}
    for run in results["runs"]:
        assert "error" not in run, run
        assert run["requests"] > 0 and run["served"] == run["conns"] and run["errors"] == 0, run
        assert run["connect_failed"] == 0, run  # every handshake succeeded, the certificate verified
        assert not any("SIGTERM" in note or "killed" in note or "status" in note for note in run["notes"]), run
    assert results["meta"]["tls"] and results["skipped"] == {}
    assert tls_dirs() == before  # the run's certificate is gone with it


@needs_cc
@pytest.mark.timeout(60)
def test_without_openssl_headers_the_tls_scenarios_are_skipped_in_one_line(tmp_path, monkeypatch, capsys):
    from bench import __main__ as bench_main

    real = build.compiler()
    fake = tmp_path / "cc-without-openssl"
    fake.write_text("#!/bin/sh\n"
                    "for a in \"$@\"; do [ \"$a\" = -DLOADGEN_TLS ] && { "
                    "echo 'loadgen_tls.c:23:10: fatal error: openssl/ssl.h: No such file or directory' >&2; exit 1; }; done\n"
                    f"exec {real} \"$@\"\n")  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setattr(build, "TLS_BINARY", tmp_path / "loadgen-tls")
    out = tmp_path / "out"
    assert bench_main.main(["--only", "pingpong-1,tls-50,tls-handshakes", "--systems", "bare", "--runs", "1",
                            "--seconds", "0.2", "--warmup", "0.1", "--retries", "0", "--out", str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 1, captured.err
    assert skipped[0].startswith("bench: TLS scenarios skipped (tls-50, tls-handshakes): compiling ")
    assert "openssl/ssl.h: No such file or directory" in skipped[0] and "libssl-dev" in skipped[0]
    for scenario in ("tls-50", "tls-handshakes"):
        assert re.search(rf"^{scenario}: TLS over TCP 127\.0\.0\.1, .*\nskipped: compiling ", captured.out, re.MULTILINE)
    assert float(table_rows(captured.out, "pingpong-1")["bare"][1].replace(",", "").rstrip(report.CONTENDED_MARK)) > 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["scenario"], r["system"]) for r in results["runs"]] == [("pingpong-1", "bare")]
    assert set(results["skipped"]) == {"tls-50", "tls-handshakes"} and "tls" not in results["meta"]
    assert "skipped" in (out / "bench.svg").read_text()


@pytest.mark.timeout(60)
def test_an_unknown_scenario_is_refused_with_the_known_ones(tmp_path):
    done = run_bench(tmp_path, "--only", "no-such-scenario")
    assert done.returncode != 0
    assert "unknown scenario: no-such-scenario" in done.stderr and "pingpong-50" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", ["line", "chunk", "udp", "floor"])
def test_the_profiling_driver_runs_each_system(system, capsys):
    from bench import profile

    assert profile.main([system, "--rounds", "3"]) == 0
    assert re.search(rf"^{system}: [\d.]+ us CPU per request", capsys.readouterr().out, re.MULTILINE)


# -------------------------------------------------------------- noise


def stat(user: int, system: int, idle: int, steal: int = 0, softirq: int = 0) -> str:
    """A /proc/stat with its "cpu" line (user nice system idle iowait irq softirq steal guest guest_nice)."""
    return (f"cpu  {user} 0 {system} {idle} 7 0 {softirq} {steal} 50 0\n"
            f"cpu0 {user} 0 {system} {idle} 7 0 {softirq} {steal} 50 0\nintr 1 2 3\nctxt 99\n")  # fmt: skip


def proc_pid_stat(pid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0, comm: str = "python") -> str:
    """A /proc/PID/stat: utime, stime, cutime, cstime are fields 14-17."""
    return f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 5 1000 50"


@pytest.mark.timeout(10)
def test_busy_time_is_every_column_but_idle_iowait_and_the_guest_ones():
    busy, steal = noise.busy_ticks(stat(user=1000, system=200, idle=5000, steal=30, softirq=4))
    assert (busy, steal) == (1000 + 200 + 4 + 30, 30)  # guest (50) is already in user
    with pytest.raises(ValueError):
        noise.busy_ticks("intr 1 2 3\n")


@pytest.mark.timeout(10)
def test_process_ticks_are_counted_from_the_last_parenthesis():
    assert noise.process_ticks(proc_pid_stat(42, 11, 22, 3, 4, comm="a) (b c")) == (33, 7)


@pytest.mark.timeout(10)
def test_others_are_the_busy_time_less_the_server_the_load_generator_and_the_harness():
    hz = noise.HZ
    start = noise.Snapshot(at=10.0, busy=1000, steal=5, server={7: (1.0, 0.0)}, loadgen=0.5, harness=2.0)
    # One second later: 150 ticks busy in all; the server used 0.6 s, the load generator 0.4 s, the harness 0.05 s.
    end = noise.Snapshot(at=11.0, busy=1000 + 150 * hz // 100, steal=5 + 8 * hz // 100, server={7: (1.6, 0.0)}, loadgen=0.9,
                         harness=2.05)  # fmt: skip
    n = noise.others(start, end)
    assert n["window_s"] == 1.0 and n["busy_s"] == 1.5 and n["server_s"] == 0.6 and n["loadgen_s"] == 0.4
    assert n["steal_s"] == 0.08 and n["harness_s"] == pytest.approx(0.05)
    assert n["others_s"] == pytest.approx(0.45) and n["others_pct"] == pytest.approx(45.0)
    # The readings' rounding may make it slightly negative: it is never shown below 0.
    assert noise.others(start, noise.Snapshot(11.0, 1000 + hz, 5, {7: (1.6, 0.0)}, 0.9, 2.0))["others_s"] == 0


@pytest.mark.timeout(10)
def test_a_server_tree_counts_its_children_born_and_reaped_in_the_window():
    start = {1: (1.00, 0.0), 2: (0.30, 0.0), 3: (0.05, 0.0)}
    # 1 ran 0.1 s and reaped 2 (0.3 + 0.12 in all); 3 ran 0.01 s; 4 was born and ran 0.06 s.
    end = {1: (1.10, 0.42), 3: (0.06, 0.0), 4: (0.06, 0.0)}
    assert noise.tree_time(start, end) == pytest.approx(0.1 + 0.12 + 0.01 + 0.06)


@pytest.mark.timeout(10)
def test_cpu_clocks_are_read_to_the_nanosecond_for_other_processes_and_this_one():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.05: pass"])
    try:
        deadline = time.monotonic() + 5
        with open(f"/proc/{child.pid}/stat") as f:  # open while it lives; each read is fresh
            while f.read().rpartition(")")[2].split()[0] != "Z":  # a zombie: exited, not yet reaped
                assert time.monotonic() < deadline, "the child did not exit in time"
                f.seek(0)
        assert noise.cpu_clock(child.pid) >= 0.05  # a zombie's clock is readable until it is reaped
    finally:
        assert child.wait(5) == 0
    with pytest.raises(OSError):
        noise.cpu_clock(child.pid)
    me = os.getpid()
    snap = noise.snapshot(os.getsid(me), me)
    assert snap.busy > 0 and me in snap.server and 0 < snap.server[me][0] <= snap.loadgen <= noise.cpu_clock(me)


def run_with(noise_pct: float | None, system: str = "reactor-line", scenario: str = "pingpong-50", **more) -> dict:
    run = {"scenario": scenario, "system": system, "run": 1, "rps": 1000.0, "notes": [], **more}
    if noise_pct is None:
        run["error"] = "it failed"
    else:
        run["noise"] = {"others_pct": noise_pct, "others_s": noise_pct / 100, "window_s": 1.0}
    return run


@pytest.mark.timeout(10)
def test_a_contended_run_is_measured_again_and_the_quieter_one_kept():
    later = iter([40.0, 3.0])  # the first re-run is contended still, the second is not
    reruns = noise.Reruns(max_noise=10, retries=3)
    round_ = [run_with(50.0), run_with(2.0, system="bare")]
    reruns.settle(round_, lambda old: run_with(next(later)))
    assert [r["noise"]["others_pct"] for r in round_] == [3.0, 2.0]
    assert [r["reruns"] for r in round_] == [2, 0] and [r["contended"] for r in round_] == [False, False]
    assert [r["noise"]["others_pct"] for r in reruns.discarded] == [50.0, 40.0]


@pytest.mark.timeout(10)
def test_when_the_retries_run_out_the_least_noisy_contended_run_is_kept_and_marked():
    later = iter([30.0, 60.0, 45.0])
    reruns = noise.Reruns(max_noise=10, retries=2)
    round_ = [run_with(50.0)]
    reruns.settle(round_, lambda old: run_with(next(later)))
    assert round_[0]["noise"]["others_pct"] == 30.0 and round_[0]["reruns"] == 2 and round_[0]["contended"]
    # The budget is per cell over the whole bench: round 2 gets no re-run.
    round2 = [run_with(45.0)]
    reruns.settle(round2, lambda old: pytest.fail("no retries left for this cell"))
    assert round2[0]["reruns"] == 0 and round2[0]["contended"]
    # Another cell has its own budget; a failed re-run never replaces a run.
    other = [run_with(20.0, system="bare")]
    reruns.settle(other, lambda old: run_with(None, system="bare"))
    assert other[0]["noise"]["others_pct"] == 20.0 and other[0]["reruns"] == 2 and other[0]["contended"]


@pytest.mark.timeout(10)
def test_a_run_without_a_noise_figure_is_not_called_contended():
    reruns = noise.Reruns(max_noise=10, retries=3)
    round_ = [run_with(None), {**run_with(1.0), "noise": None}]
    reruns.settle(round_, lambda old: pytest.fail("nothing to re-run"))
    assert [r["contended"] for r in round_] == [False, False]


def fake_results(contended: bool) -> dict:
    def measured(system: str, pct: float, **more) -> dict:
        return {**run_with(pct, system=system, **more), "p50_us": 10.0, "p99_us": 20.0, "rss_kb": 1024, "served": 50,
                "conns": 50, "cpu": 0.5, "errors": 0, "lost": 0, "threads": 1, "procs": 1}  # fmt: skip

    runs = [measured("reactor-line", 40.0 if contended else 4.0, rps=900.0, reruns=3, contended=contended),
            measured("asyncio-proto", 5.0, rps=1000.0, reruns=1, contended=False)]  # fmt: skip
    return {"meta": {"settings": {"max_noise": 15.0, "retries": 3, "host": "127.0.0.1"}}, "scenarios": ["pingpong-50"],
            "runs": runs, "na": {}}  # fmt: skip


@pytest.mark.timeout(10)
def test_the_report_shows_noise_and_re_runs_and_judges_no_target_on_a_contended_cell():
    text = report.render(fake_results(contended=True))
    line = next(x for x in text.splitlines() if x.startswith("reactor-line "))
    assert "900!" in line and re.search(r" 40% +3 +1 of 1 runs contended, kept", line), line
    assert re.search(r"^asyncio-proto +1,000 .* 5% +1$", text, re.MULTILINE), text
    target = next(x for x in text.splitlines() if x.startswith("line echo, 50 conns: x asyncio Protocol"))
    assert "0.90x" in target and "not judged: contended" in target and "met" not in target
    assert unpublishable(fake_results(contended=True)) == "1 contended runs had to be kept (others above 15 % of a core)"

    clean = report.render(fake_results(contended=False))
    assert "met (+12%)" in clean and "!" not in clean.split("server MB: ")[0]
    assert unpublishable(fake_results(contended=False)) is None
    assert report.cells(fake_results(contended=True)["runs"])[0] == {
        "scenario": "pingpong-50", "system": "reactor-line", "runs": 1, "failed": 0, "noise_pct": 40.0, "reruns": 3,
        "contended_kept": 1}  # fmt: skip


@needs_cc
@pytest.mark.timeout(60)
def test_a_run_above_the_threshold_is_re_run_and_marked_when_retries_run_out(tmp_path):
    # A negative threshold makes every run contended.
    done = run_bench(tmp_path, "--only", "pingpong-1", "--systems", "bare", "--retries", "1", "--max-noise=-1")
    assert done.returncode == 0, done.stderr
    assert "re-run pingpong-1 bare: others" in done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["reruns"], r["contended"]) for r in results["runs"]] == [(1, True)]
    assert len(results["discarded"]) == 1 and results["cells"][0]["reruns"] == 1 and results["cells"][0]["contended_kept"] == 1
    line = next(x for x in done.stdout.splitlines() if x.startswith("bare "))
    assert re.match(r"bare +[\d,]+! ", line) and "1 of 1 runs contended, kept: retries ran out" in line, line


# -------------------------------------------------------------- counts


@pytest.mark.timeout(10)
def test_counts_parse_callgrind_and_cprofile_and_divide_by_the_messages():
    from bench import profile

    assert counts.CLIENTS == profile.CLIENTS
    assert counts.collected("==9302== Events    : Ir\n==9302== Collected : 536244133\n") == 536244133
    assert counts.calls("   79729 function calls in 0.04 seconds\nline: 79729 calls\n") == 79729
    assert counts.per_message(536_244_133, 655_400_547) == pytest.approx(59_578.2, abs=0.1)  # 40 rounds x 50
    assert counts.per_message(1000, 33_000, depth=16, rounds=(2, 4)) == 32_000 / (2 * 50 * 16)
    with pytest.raises(ValueError):
        counts.collected("valgrind: no such file")


@pytest.mark.timeout(60)
def test_calls_per_message_are_counted_and_reported_without_valgrind():
    systems = [counts.Counted("line", "LineEcho", versus="asyncio-proto"), counts.Counted("asyncio-proto", "Protocol")]
    done = counts.count(systems=systems, rounds=(2, 4), valgrind=False)
    assert done["skipped"] and [row["instructions"] for row in done["systems"]] == [None, None]
    assert all(row["calls"] > 1 for row in done["systems"]), done
    text = report.counts_section(done)
    assert text.startswith("COUNTED, NOT TIMED") and "instructions per message: skipped" in text
    assert re.search(r"LineEcho \(line\) +[\d.]+ +[\d.]+", text), text
