"""Turn the measurements into tables: per scenario, the targets, the headroom, the counts.

Every figure in a table is the median of the runs that succeeded, next to
the spread of requests/s (min-max over the runs).  Ratios divide medians.
Each cell also shows its noise (the median share of a core that other
processes used in its runs' windows, bench/noise.py) and how many of its
runs were re-run for being contended; a cell that had to keep a contended
run is marked with CONTENDED_MARK and is never used to judge a target.
The same cells are printed as text (for the terminal) and as Markdown
(for docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
from typing import Any

from .scenarios import ASYNCIO, BARE, BY_NAME, PLAIN, STREAMS, TARGETS, Scenario

CONTENDED_MARK = "!"


def summarise(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(scenario, system) -> the medians, spread and notes of its runs."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["scenario"], run["system"]), []).append(run)
    out = {}
    for key, group in grouped.items():
        good = [r for r in group if "error" not in r]
        notes = sorted({n for r in group for n in r.get("notes", [])} | {f"run failed: {r['error']}" for r in group if "error" in r})
        summary: dict[str, Any] = {"runs": len(good), "failed": len(group) - len(good), "notes": notes,
                                   "reruns": sum(r.get("reruns", 0) for r in group),
                                   "contended": sum(1 for r in good if r.get("contended"))}  # fmt: skip
        noise = [r["noise"]["others_pct"] for r in good if r.get("noise")]
        summary["noise"] = statistics.median(noise) if noise else None
        if summary["contended"]:
            summary["notes"].append(f"{summary['contended']} of {len(good)} runs contended, kept: retries ran out")
        if good and len(noise) < len(good):
            summary["notes"].append(f"noise not measured in {len(good) - len(noise)} runs")
        if good:
            def med(field: str) -> Any:
                values = [r[field] for r in good if r.get(field) is not None]
                return statistics.median(values) if values else None

            rps = [r["rps"] for r in good]
            summary.update(
                rps=statistics.median(rps), min=min(rps), max=max(rps), p50_us=med("p50_us"), p99_us=med("p99_us"),
                rss_kb=med("rss_kb"), mem=good[0].get("mem", "rss"), idle_bytes=med("idle_bytes"),
                threads=max(r.get("threads", 0) for r in good), procs=max(r.get("procs", 0) for r in good),
                served=min(r["served"] for r in good), conns=good[0]["conns"], cpu=max(r["cpu"] for r in good),
                errors=sum(r["errors"] for r in good), lost=sum(r["lost"] for r in good),
                slow_closed=sum(r.get("slow_closed", 0) for r in good), idle_closed=sum(r.get("idle_closed", 0) for r in good),
                cpu_us=med("cpu_us"), min_share=med("min_share"),
                spread=[r["spread"] for r in good if r.get("spread")],
            )  # fmt: skip
            if summary["errors"]:
                summary["notes"].append(f"{summary['errors']} connection errors")
            if summary["lost"]:
                summary["notes"].append(f"{summary['lost']} datagrams lost (resent)")
            for what in ("idle", "slow"):
                if summary[f"{what}_closed"]:
                    summary["notes"].append(f"{summary[f'{what}_closed']} {what} connections closed by the server")
        out[key] = summary
    return out


def cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, system), for the JSON results: runs, median noise, re-runs, contended runs kept."""
    return [{"scenario": scenario, "system": system, "runs": s["runs"], "failed": s["failed"],
             "noise_pct": s["noise"], "reruns": s["reruns"], "contended_kept": s["contended"]}
            for (scenario, system), s in summarise(runs).items()]  # fmt: skip


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, field: str = "rps") -> float | None:
    if not a or not b or not a.get(field) or not b.get(field):
        return None
    return a[field] / b[field]


def _num(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _k(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _x(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}"


def scenario_table(scenario: Scenario, data: dict[str, Any], stats: dict[tuple[str, str], dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (as strings) of one scenario's table."""
    name = scenario.name
    held = bool(scenario.idle or scenario.slow)
    header = ["system", scenario.rate, "min-max", "x asyncio"]
    if scenario.stream:
        header.append("x streams")
    header.append("x bare")
    if held:
        header.append(f"x own {PLAIN}")
    header += ["p50 us", "p99 us", "server MB"]
    if scenario.idle:
        header.append("per idle conn")
    header += ["thr/proc", "served", "client CPU", "noise", "re-runs", "notes"]
    rows = []
    ref = {k: stats.get((name, k)) for k in (ASYNCIO, STREAMS, BARE)}
    for system in scenario.systems:
        reason = data.get("na", {}).get(name, {}).get(system)
        s = stats.get((name, system))
        if s is None and not reason:
            continue  # not chosen in this run (--systems)
        if reason or not s["runs"]:
            why = f"n/a: {reason}" if reason else "failed: " + "; ".join(s["notes"])
            rows.append([system, why] + [""] * (len(header) - 2))
            continue
        mark = CONTENDED_MARK if s["contended"] else ""
        row = [system, _num(s["rps"]) + mark, f"{_k(s['min'])}-{_k(s['max'])}", _x(ratio(s, ref[ASYNCIO]))]
        if scenario.stream:
            row.append(_x(ratio(s, ref[STREAMS])))
        row.append(_x(ratio(s, ref[BARE])))
        if held:
            row.append(_x(ratio(s, stats.get((PLAIN, system)))))
        mb = "" if s["rss_kb"] is None else f"{s['rss_kb'] / 1024:.1f}" + ("*" if s["mem"] == "pss" else "")
        row += [_num(s["p50_us"]), _num(s["p99_us"]), mb]
        if scenario.idle:
            row.append("" if s["idle_bytes"] is None else f"{s['idle_bytes'] / 1024:.1f} KiB")
        row += [f"{s['threads']}/{s['procs']}", f"{s['served']}/{s['conns']}", f"{s['cpu'] * 100:.0f}%",
                "?" if s["noise"] is None else f"{s['noise']:.0f}%", str(s["reruns"]), "; ".join(s["notes"])]  # fmt: skip
        rows.append(row)
    return header, rows


def paired_ratio(runs: list[dict[str, Any]], mine: tuple[str, str], ref: tuple[str, str], field: str) -> float | None:
    """The median of the ratios of runs measured back to back (run k of one cell over
    run k of the other: the runs are interleaved), or None with fewer than 3 pairs.

    This machine drifts between speeds over minutes (a whole round of runs
    faster or slower than the next, every system alike): a ratio of two
    medians can take one cell's fast runs over the other's slow ones,
    while each pair of runs shares its moment."""
    def by_run(cell: tuple[str, str]) -> dict[int, dict[str, Any]]:
        return {r["run"]: r for r in runs if (r["scenario"], r["system"]) == cell and "error" not in r
                and not r.get("contended") and r.get(field) and "run" in r}  # fmt: skip

    a, b = by_run(mine), by_run(ref)
    pairs = [a[k][field] / b[k][field] for k in a.keys() & b.keys()]
    return statistics.median(pairs) if len(pairs) >= 3 else None


def target_rows(stats: dict[tuple[str, str], dict[str, Any]], runs: list[dict[str, Any]] | None = None) -> list[list[str]]:
    """One row per target: the measured ratio (paired by run where it can be: ``paired_ratio``), the goal, the verdict."""
    rows = []
    for t in TARGETS:
        mine = stats.get((t.scenario, t.system))
        ref = stats.get((t.ref_scenario or t.scenario, t.ref_system))
        higher = t.metric in ("rps", "min_share")
        goal = f"{'>=' if higher else '<='} {t.goal:g}x"
        if not t.ref_system:  # a figure of its own, no reference: a share
            r = mine.get(t.metric) if mine else None
            goal = f">= {t.goal:.0%}"
            ref = mine
        else:
            r = ratio(mine, ref, t.metric)
            paired = paired_ratio(runs or [], (t.scenario, t.system), (t.ref_scenario or t.scenario, t.ref_system), t.metric)
            if paired is not None and r is not None:
                r = paired
        if r is None:
            rows.append([t.label, "not measured", goal, "-"])
            continue
        margin = (r / t.goal - 1) if higher else (t.goal / r - 1)
        verdict = f"met (+{margin:.0%})" if margin >= 0 else f"MISSED by {-margin:.0%}"
        if mine["contended"] or ref["contended"]:  # type: ignore[index]
            verdict = f"not judged: contended runs kept ({CONTENDED_MARK})"
        measured = f"{r:.0%} ({', '.join('/'.join(map(str, s)) for s in mine['spread'])})" if not t.ref_system else f"{r:.2f}x"  # type: ignore[index]
        if t.metric == "cpu_us":
            measured += f" ({mine['cpu_us']:.1f} vs {ref['cpu_us']:.1f} us)"  # type: ignore[index]
        if t.metric == "idle_bytes":
            measured += f" ({mine['idle_bytes']:,.0f} B vs {ref['idle_bytes']:,.0f} B)"  # type: ignore[index]
        rows.append([t.label, measured, goal, verdict])
    return rows


def headroom_rows(scenarios: list[str], stats: dict[tuple[str, str], dict[str, Any]]) -> list[list[str]]:
    """Per scenario: the bare loop against the fastest other system, and what the client could drive.

    The client's capacity is estimated from the bare loop's run: its req/s
    over the client's CPU use (a share of one core), i.e. what it would
    drive with its core fully busy.  Conservative: the busier the client,
    the more replies each of its wake-ups handles.  Where the bare loop
    cannot take part (TLS), from the fastest system's run instead."""
    rows = []
    for name in scenarios:
        bare = stats.get((name, BARE))
        others = [(s["rps"], system) for (n, system), s in stats.items() if n == name and system != BARE and s.get("rps")]
        if not others:
            continue
        best, who = max(others)
        if not bare or not bare.get("rps"):
            fastest = stats[(name, who)]
            capacity = best / max(fastest["cpu"], 0.01)
            rows.append([name, "n/a", f"{who} {best:,.0f}", "", f"{fastest['cpu'] * 100:.0f}% ({who})", f"{capacity:,.0f}",
                         f"{capacity / best:.1f}x"])  # fmt: skip
            continue
        capacity = bare["rps"] / max(bare["cpu"], 0.01)
        rows.append([name, f"{bare['rps']:,.0f}", f"{who} {best:,.0f}", f"{bare['rps'] / best:.2f}x",
                     f"{bare['cpu'] * 100:.0f}%", f"{capacity:,.0f}", f"{capacity / best:.1f}x"])  # fmt: skip
    return rows


HEADROOM_HEADER = ["scenario", "bare loop req/s", "fastest other system", "bare / fastest", "client CPU (bare)",
                   "client capacity, req/s", "capacity / fastest"]  # fmt: skip
TARGET_HEADER = ["target", "measured", "goal", "verdict"]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width columns; an n/a row's reason runs across the empty cells."""
    widths = [len(h) for h in header]
    for row in rows:
        if all(c == "" for c in row[2:]):
            continue
        for i, cell in enumerate(row[:-1] if header[-1] == "notes" else row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [header] + rows:
        if row is not header and all(c == "" for c in row[2:]):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        if header[-1] == "notes":
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    align = ["---"] + ["---:" if h not in ("notes", "verdict", "goal", "fastest other system") else "---" for h in header[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(data: dict[str, Any], markdown: bool = False) -> str:
    """The whole report: a table per scenario, the targets, the headroom."""
    stats = summarise(data["runs"])
    table = markdown_table if markdown else text_table
    host = data["meta"]["settings"].get("host", "127.0.0.1")
    parts = []
    for name in data["scenarios"]:
        scenario = BY_NAME[name]
        title = f"{name}: {scenario.describe(host)}"
        skipped = data.get("skipped", {}).get(name)
        if skipped:
            parts.append((f"#### {title}\n\n" if markdown else f"{title}\n") + f"skipped: {skipped}")
            continue
        header, rows = scenario_table(scenario, data, stats)
        parts.append((f"#### {title}\n\n" if markdown else f"{title}\n") + table(header, rows))
    footnote = ("server MB: VmRSS of the server process under load; * marks a server of several processes, "
                "the sum of their PSS.  x asyncio, x streams, x bare: this system's req/s over asyncio-proto's, "
                "asyncio-streams', the bare loop's, in the same scenario.  served: connections that got at least one "
                "reply in the measured window.  client CPU: the load generator's CPU use, of one core.  "
                "noise: the median share of one core that other processes used in the runs' windows "
                "(all CPUs' busy time less the server's, the load generator's and the harness's).  "
                "re-runs: runs measured again for being contended (others above ")  # fmt: skip
    settings = data["meta"]["settings"]
    footnote += (f"{settings['max_noise']:g} % of a core; at most {settings['retries']} per cell).  "
                 if "max_noise" in settings else "the threshold).  ")  # fmt: skip
    footnote += (f"{CONTENDED_MARK} after req/s: contended runs had to be kept when the re-runs ran out; "
                 "such a cell is never used to judge a target.")  # fmt: skip
    if not any(r.get("noise") for r in data["runs"]):
        footnote += "  These results predate the noise check (or could not read /proc): noise unknown."
    if data["meta"].get("tls"):
        footnote += f"  {data['meta']['tls']}."
    parts.append(footnote)
    parts.append(("#### Targets\n\n" if markdown else "TARGETS\n") + table(TARGET_HEADER, target_rows(stats, data["runs"])))
    head = headroom_rows(data["scenarios"], stats)
    if head:
        title = ("HEADROOM: the bare loop against the fastest other system; the load generator's capacity "
                 "(bare req/s / its CPU share; where the bare loop cannot go, as with TLS, the fastest system's) "
                 "against the fastest system")
        parts.append(("#### Load generator headroom\n\n" if markdown else title + "\n") + table(HEADROOM_HEADER, head))
    if data.get("counts"):
        parts.append(counts_section(data["counts"], markdown))
    return "\n\n".join(parts) + "\n"


COUNTS_HEADER = ["system (bench.profile)", "instructions/msg", "x comparator", "calls/msg", "x comparator", "notes"]


def counts_section(counted: dict[str, Any], markdown: bool = False) -> str:
    """Instructions and Python calls per message (bench/counts.py): what noise cannot move."""
    rows = []
    for c in counted["systems"]:
        ref = next((r for r in counted["systems"] if c.get("versus") and r["system"] == c["versus"]), {})
        cells = [f"{c['label']} ({c['system']})"]
        for field, digits in (("instructions", 0), ("calls", 1)):
            value, base = c.get(field), ref.get(field)
            cells += ["" if value is None else f"{value:,.{digits}f}", "" if value is None or not base else f"{value / base:.2f}"]
        rows.append(cells + ["; ".join(c.get("notes", []))])
    low, high = counted["rounds"]
    about = (f"work per message, from bench.profile's in-process driver at {high} rounds less {low} rounds "
             f"of 50 clients (the difference cancels start-up; the clients' work is included)")  # fmt: skip
    lines = []
    if counted.get("skipped"):
        lines.append(f"instructions per message: skipped, {counted['skipped']} (make bench installs it when it can)")
    lines.append("instructions: user-space instructions under valgrind --tool=callgrind; calls: Python function calls "
                 "under cProfile, builtins included.  x comparator: over the target's comparator, asyncio's Protocol echo "
                 "(ping-pong), asyncio streams' readline echo (16 pipelined) or the stdlib's UDPServer (UDP).  The floor "
                 "rows (bench/floor.py) are the stdlib's hooks and LineEcho with nothing around them: what the handler "
                 "API itself costs.  Neither count moves with the machine's load."
                 + (f"  Counted in {counted['seconds']:.0f} s." if counted.get("seconds") is not None else ""))  # fmt: skip
    table = markdown_table if markdown else text_table
    head = f"#### Counted, not timed\n\nThe {about}.\n\n" if markdown else f"COUNTED, NOT TIMED: the {about}\n"
    return head + table(COUNTS_HEADER, rows) + "\n\n" + "\n".join(lines)
