"""python -m bench: measure every system in every scenario, print the tables.

    python -m bench                  the full run (5 runs each, under 15 minutes);
                                     updates docs/benchmarks.md and docs/images/bench.svg
    python -m bench --quick          one short run each, about a minute
    python -m bench --only pingpong-50,udp-50 --systems reactor-line,bare --seconds 1
    python -m bench --report bench/results/latest.json [--docs]   re-render saved results

Runs are interleaved (run 1 of every system in every scenario, then run 2
of every system in every scenario...) so that a burst of load from
elsewhere on the machine spreads over all of them instead of spoiling one
system, or one scenario.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import sys
import time
from typing import Any

from . import build, chart, report
from .run import ROOT, Settings, measure
from .scenarios import BY_NAME, SCENARIOS, SYSTEMS

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "images" / "bench.svg"
SAVED = ROOT / "bench" / "results" / "latest.json"
SCRATCH = ROOT / "build" / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run of 0.3 s per system and scenario (about a minute)")
    p.add_argument("--only", help="comma-separated scenarios: " + ", ".join(s.name for s in SCENARIOS))
    p.add_argument("--systems", help="comma-separated systems: " + ", ".join(SYSTEMS))
    p.add_argument("--runs", type=int, help="runs per system and scenario (full: 5, quick: 1)")
    p.add_argument("--seconds", type=float, help="measured window per run (full: 1.2, quick: 0.3)")
    p.add_argument("--warmup", type=float, help="warm-up before each window (full: 0.3, quick: 0.1)")
    p.add_argument("--pool", type=int, default=64, help="workers of ThreadPool, children of Fork and of the stdlib's forking server")
    p.add_argument("--host", default="127.0.0.1", help="TCP and UDP host: 127.0.0.1 or ::1")
    p.add_argument("--out", type=pathlib.Path, help="write results.json, report.md and bench.svg here (and not to docs/)")
    p.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                   help="update docs/benchmarks.md and docs/images/bench.svg (default: only after a complete full run)")
    p.add_argument("--report", type=pathlib.Path, metavar="JSON", help="do not measure: render saved results")
    return p.parse_args(argv)


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "kernel": platform.release()}


def pick(listed: str | None, known: list[str], what: str) -> list[str]:
    if not listed:
        return known
    chosen = [x.strip() for x in listed.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise SystemExit(f"python -m bench: unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def measure_all(options: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    quick = options.quick
    scenarios = pick(options.only, [s.name for s in SCENARIOS], "scenario")
    systems = pick(options.systems, list(SYSTEMS), "system")
    cpus = os.sched_getaffinity(0)
    pinned = {0, 1} <= cpus
    settings = Settings(
        loadgen=build.loadgen(), runs=options.runs or (1 if quick else 5),
        seconds=options.seconds or (0.3 if quick else 1.2), warmup=options.warmup if options.warmup is not None else (0.1 if quick else 0.3),
        settle=0.3 if quick else 1.0,
        pool=options.pool, host=options.host, server_cpu=0 if pinned else None, client_cpu=1 if pinned else None,
    )  # fmt: skip
    if pinned:
        os.sched_setaffinity(0, {1})  # the harness mostly sleeps; keep it off the server's CPU anyway
    data: dict[str, Any] = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                 "command": " ".join(["python -m bench", *argv]), "pinned": pinned,
                 "settings": {k: v for k, v in vars(settings).items() if k != "loadgen"}},
        "scenarios": scenarios, "runs": [], "na": {},
    }  # fmt: skip
    todo = [(BY_NAME[n], [s for s in BY_NAME[n].systems if s in systems]) for n in scenarios]
    count = sum(1 for scenario, chosen in todo for s in chosen if not scenario.not_applicable(s, settings.pool)) * settings.runs
    print(f"bench: {len(scenarios)} scenarios, {count} measurements ({settings.runs} run(s) of {settings.warmup:g} s warm-up "
          f"+ {settings.seconds:g} s each); server on CPU {settings.server_cpu}, load generator on CPU {settings.client_cpu}",
          file=sys.stderr, flush=True)  # fmt: skip
    started = time.monotonic()
    plan = []
    for scenario, chosen in todo:
        runnable = []
        for system in chosen:
            reason = scenario.not_applicable(system, settings.pool)
            if reason:
                data["na"].setdefault(scenario.name, {})[system] = reason
            else:
                runnable.append(system)
        plan.append((scenario, runnable))
    # Round by round: run 1 of every scenario, then run 2 of every scenario...
    # A scenario's runs are then spread over the whole bench, so ratios
    # between scenarios (a server with idle connections over the same server
    # without) compare figures taken under the same conditions.
    for run in range(settings.runs):
        for scenario, runnable in plan:
            sys.stderr.write(f"{scenario.name:<15} run {run + 1}/{settings.runs}:")
            for system in runnable:
                result = measure(scenario, system, settings)
                result["run"] = run + 1
                data["runs"].append(result)
                shown = "FAILED" if "error" in result else report._k(result["rps"])
                sys.stderr.write(f" {system} {shown}")
                sys.stderr.flush()
            sys.stderr.write("\n")
    data["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"bench: measured in {data['meta']['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
    return data


def dump(data: dict[str, Any]) -> str:
    """The results as JSON, one run per line: small enough to commit, easy to diff."""
    head = json.dumps({k: v for k, v in data.items() if k != "runs"}, indent=1)[:-2]
    runs = ",\n  ".join(json.dumps(run, sort_keys=True) for run in data["runs"])
    return f'{head},\n "runs": [\n  {runs}\n ]\n}}\n'


def markdown_block(data: dict[str, Any], image: str) -> str:
    meta = data["meta"]
    m, s = meta["machine"], meta["settings"]
    pinning = "server pinned to CPU 0, load generator to CPU 1" if meta.get("pinned") else "no pinning (fewer than two CPUs)"
    return (
        f"{START}\n"
        f"Measured {meta['date']} with `{meta['command'].strip()}` in {meta.get('elapsed_s', 0):.0f} s: "
        f"{s['runs']} run(s) of {s['warmup']:g} s warm-up + {s['seconds']:g} s per system and scenario; "
        f"{m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; {pinning}.\n\n"
        f"![requests per second per scenario and system]({image})\n\n"
        + report.render(data, markdown=True) + f"{END}"
    )


def write_docs(data: dict[str, Any]) -> None:
    text = DOC.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"python -m bench: {DOC} has no {START} ... {END} markers to write between")
    block = markdown_block(data, "images/bench.svg")
    DOC.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    CHART.parent.mkdir(parents=True, exist_ok=True)
    CHART.write_text(chart.svg(data))
    print(f"bench: wrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse(argv)
    if options.report:
        data = json.loads(options.report.read_text())
    else:
        try:
            data = measure_all(options, argv)
        except build.NoCompiler as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 3
    print(report.render(data))
    complete = not (options.quick or options.only or options.systems or options.out or options.report)
    if not options.report:
        target = options.out or (SAVED.parent if complete else SCRATCH)
        target.mkdir(parents=True, exist_ok=True)
        name = "latest.json" if target != options.out else "results.json"
        (target / name).write_text(dump(data))
        if options.out:
            (target / "bench.svg").write_text(chart.svg(data))
            (target / "report.md").write_text(markdown_block(data, "bench.svg") + "\n")
        print(f"bench: results in {target / name}", file=sys.stderr)
    if options.docs or (options.docs is None and complete):
        write_docs(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
