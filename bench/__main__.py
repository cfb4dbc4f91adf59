"""python -m bench: measure every system in every scenario, print the tables.

    python -m bench                  the full run (5 runs each, under 15 minutes);
                                     updates docs/benchmarks.md and docs/images/bench.svg
    python -m bench --quick          one short run each, about a minute
    python -m bench --only pingpong-50,udp-50 --systems reactor-line,bare --seconds 1
    python -m bench --report bench/results/latest.json [--docs]   re-render saved results

Runs are interleaved (run 1 of every system in every scenario, then run 2
of every system in every scenario...) so that a burst of load from
elsewhere on the machine spreads over all of them instead of spoiling one
system, or one scenario.  Each run also measures the CPU time other
processes used in its window (bench/noise.py); a run in which they used
more than --max-noise percent of a core is contended, and is measured
again at the end of its round, at most --retries times per system and
scenario.  Then, unless told otherwise, the work per message is counted
(instructions under callgrind, Python calls under cProfile: bench/counts.py),
which no noise can move.
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

from . import build, chart, counts, noise, report, tls
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
    p.add_argument("--max-noise", type=float, default=noise.DEFAULT_MAX_NOISE, metavar="PCT",
                   help="a run is contended when other processes used more than PCT %% of one core in its window (15)")
    p.add_argument("--retries", type=int, metavar="N",
                   help=f"re-runs of contended runs per system and scenario (full: {noise.DEFAULT_RETRIES}, quick: 1)")
    p.add_argument("--counts", action=argparse.BooleanOptionalAction, default=None,
                   help="count instructions (callgrind) and Python calls (cProfile) per message "
                        "(default: unless --only or --systems is given)")
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


def tls_setup(scenarios: list[str]) -> tuple[tls.Setup | None, dict[str, str]]:
    """The TLS scenarios' setup if any is chosen, and the chosen ones skipped (name -> why) if it cannot be had."""
    wanted = [n for n in scenarios if BY_NAME[n].tls]
    if not wanted:
        return None, {}
    try:
        return tls.prepare(), {}
    except tls.Unavailable as exc:
        print(f"bench: TLS scenarios skipped ({', '.join(wanted)}): {exc}", file=sys.stderr, flush=True)
        return None, {n: str(exc) for n in wanted}


def measure_all(options: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    scenarios = pick(options.only, [s.name for s in SCENARIOS], "scenario")
    systems = pick(options.systems, list(SYSTEMS), "system")
    loadgen = build.loadgen()
    secure, skipped = tls_setup(scenarios)
    try:
        return _measure_all(options, argv, scenarios, systems, loadgen, secure, skipped)
    finally:
        tls.cleanup(secure)


def _measure_all(options: argparse.Namespace, argv: list[str], scenarios: list[str], systems: list[str], loadgen: Any,
                 secure: tls.Setup | None, skipped: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    quick = options.quick
    cpus = os.sched_getaffinity(0)
    pinned = {0, 1} <= cpus
    settings = Settings(
        loadgen=loadgen, tls=secure, runs=options.runs or (1 if quick else 5),
        seconds=options.seconds or (0.3 if quick else 1.2), warmup=options.warmup if options.warmup is not None else (0.1 if quick else 0.3),
        settle=0.3 if quick else 1.0,
        pool=options.pool, host=options.host, server_cpu=0 if pinned else None, client_cpu=1 if pinned else None,
        max_noise=options.max_noise, retries=options.retries if options.retries is not None else (1 if quick else noise.DEFAULT_RETRIES),
        cpus=tuple(sorted(cpus)),
    )  # fmt: skip
    data: dict[str, Any] = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                 "command": " ".join(["python -m bench", *argv]), "pinned": pinned,
                 "settings": {k: v for k, v in vars(settings).items() if k not in ("loadgen", "tls")}},
        "scenarios": scenarios, "runs": [], "na": {}, "skipped": skipped,
    }  # fmt: skip
    if secure is not None:
        data["meta"]["tls"] = tls.DESCRIPTION
    todo = [(BY_NAME[n], [s for s in BY_NAME[n].systems if s in systems]) for n in scenarios if n not in skipped]
    count = sum(1 for scenario, chosen in todo for s in chosen if not scenario.not_applicable(s, settings.pool)) * settings.runs
    print(f"bench: {len(scenarios)} scenarios, {count} measurements ({settings.runs} run(s) of {settings.warmup:g} s warm-up "
          f"+ {settings.seconds:g} s each); server on CPU {settings.server_cpu}, load generator on CPU {settings.client_cpu}; "
          f"a contended run (others over {settings.max_noise:g} % of a core) is re-run, {settings.retries} re-run(s) at most per cell",
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
    # A contended run is measured again at the end of its round, not at once:
    # a burst of load elsewhere tends to outlast one run.
    reruns = noise.Reruns(settings.max_noise, settings.retries)

    def again(old: dict[str, Any]) -> dict[str, Any]:
        result = measure(BY_NAME[old["scenario"]], old["system"], settings)
        result["run"] = old["run"]
        return result

    def log(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    if pinned:
        os.sched_setaffinity(0, {1})  # the harness mostly sleeps; keep it off the server's CPU anyway
    try:
        for run in range(settings.runs):
            measured = []
            for scenario, runnable in plan:
                sys.stderr.write(f"{scenario.name:<15} run {run + 1}/{settings.runs}:")
                for system in runnable:
                    result = measure(scenario, system, settings)
                    result["run"] = run + 1
                    measured.append(result)
                    sys.stderr.write(f" {system} {shown(result)}")
                    sys.stderr.flush()
                sys.stderr.write("\n")
            reruns.settle(measured, again, log)
            data["runs"] += measured
    finally:
        os.sched_setaffinity(0, cpus)
    data["discarded"] = reruns.discarded
    data["cells"] = report.cells(data["runs"])
    data["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"bench: measured in {data['meta']['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
    return data


def shown(result: dict[str, Any]) -> str:
    """A run in a few characters for the progress lines: "13.1k (others 4%)"."""
    if "error" in result:
        return "FAILED"
    pct = noise.noise_of(result)
    return report._k(result["rps"]) + ("" if pct is None else f" (others {pct:.0f}%)")


def dump(data: dict[str, Any]) -> str:
    """The results as JSON, one run per line: small enough to commit, easy to diff."""
    lists = ("cells", "runs", "discarded")
    head = json.dumps({k: v for k, v in data.items() if k not in lists}, indent=1)[:-2]
    body = "".join(f',\n "{k}": [' + ("\n  " + ",\n  ".join(json.dumps(x, sort_keys=True) for x in data[k]) + "\n " if data[k] else "")
                   + "]" for k in lists if k in data)  # fmt: skip
    return f"{head}{body}\n}}\n"


def markdown_block(data: dict[str, Any], image: str) -> str:
    meta = data["meta"]
    m, s = meta["machine"], meta["settings"]
    pinning = "server pinned to CPU 0, load generator to CPU 1" if meta.get("pinned") else "no pinning (fewer than two CPUs)"
    noise = ""
    measured = [r["noise"]["others_pct"] for r in data["runs"] if r.get("noise")]
    if measured and "max_noise" in s:
        kept = sum(1 for r in data["runs"] if r.get("contended"))
        noise = (f" Other processes used at most {max(measured):.0f} % of a core in any run's window "
                 f"(contended above {s['max_noise']:g} %: {sum(r.get('reruns', 0) for r in data['runs'])} runs were re-run"
                 + (f", {kept} contended runs kept, marked {report.CONTENDED_MARK}" if kept else "") + ").")  # fmt: skip
    return (
        f"{START}\n"
        f"Measured {meta['date']} with `{meta['command'].strip()}` in {meta.get('elapsed_s', 0):.0f} s: "
        f"{s['runs']} run(s) of {s['warmup']:g} s warm-up + {s['seconds']:g} s per system and scenario; "
        f"{m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; {pinning}.{noise}\n\n"
        f"![requests per second per scenario and system]({image})\n\n"
        + report.render(data, markdown=True) + f"{END}"
    )


def unpublishable(data: dict[str, Any]) -> str | None:
    """Why these results must not go into docs/benchmarks.md (published figures are uncontended only), or None."""
    good = [r for r in data["runs"] if "error" not in r]
    unknown = sum(1 for r in good if not r.get("noise"))
    if unknown:
        return f"{unknown} runs have no noise figure (results from before the noise check, or /proc unreadable)"
    kept = sum(1 for r in good if r.get("contended"))
    if kept:
        return f"{kept} contended runs had to be kept (others above {data['meta']['settings']['max_noise']:g} % of a core)"
    return None


def write_docs(data: dict[str, Any]) -> None:
    why = unpublishable(data)
    if why:
        print(f"bench: not updating {DOC.relative_to(ROOT)}: {why}; published figures are uncontended only", file=sys.stderr)
        return
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
        if options.counts or (options.counts is None and not (options.only or options.systems)):
            print("bench: counting instructions (callgrind) and Python calls (cProfile) per message", file=sys.stderr, flush=True)
            data["counts"] = counts.count(log=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True))
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
