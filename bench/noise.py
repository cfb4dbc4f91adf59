"""Noise: the CPU time other processes used while a system was measured.

A measured window (the load generator's "measure" event to its "result"
event) is bracketed by two snapshots, each read by the harness at once:

* ``/proc/stat``, first line: the busy time of all CPUs together, in clock
  ticks (``USER_HZ``, 100 a second): user + nice + system + irq + softirq +
  steal.  Steal counts: on a virtual machine it is time another guest ran on
  our virtual CPUs.  guest and guest_nice are left out, being already in user
  and nice (proc(5));
* the server's session: for every process in it (zombies too, whose
  times stay readable until they are reaped), its own CPU time, all its
  threads', dead ones included, and the time of the children it has reaped
  (cutime + cstime from ``/proc/PID/stat``);
* the load generator's own CPU time (it is our child and not yet reaped);
* the harness's own: ``getrusage(RUSAGE_SELF)`` (it reads the server's
  memory halfway through the window).

A process's own time is read from its CPU-time clock
(``clock_gettime`` of ``clock_getcpuclockid(pid)``, in nanoseconds), not
from utime + stime in ``/proc/PID/stat``: those are whole ticks, and a
forking server's 50 children, each using a few milliseconds a window,
would all read 0 ticks before and after it.  ``/proc/PID/stat`` remains the
source for the session and for cutime + cstime (one process's reaped
children, whole ticks) and the fallback where the clock cannot be read.

Then, in CPU-seconds over the window::

    others = busy - server tree - load generator - harness      (at least 0)

and as a share of one core, ``others / window * 100``.  A run is contended
when that share is above a threshold (``python -m bench --max-noise``,
15 % by default).  The busy time is as fine as the kernel's: whole ticks
(10 ms) in each reading, sampled at each scheduler tick, so in a 0.3 s
window a few percent of a core either way are rounding.

The server tree: a process alive at both snapshots counts the difference
of its own and of its reaped children's time; one born in the window counts
its whole time; one that ended in the window and was reaped by its parent
(a forking server's child) is in the parent's cutime + cstime, from which
the part it had used before the window is taken off.

The re-run policy is here too (``Reruns``): a contended run is measured
again, at the end of its round, and the less noisy of the two is kept; a
cell has at most ``retries`` re-runs in the whole bench.  When they run out
the least noisy run is kept and marked contended, and the report flags it.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HZ = os.sysconf("SC_CLK_TCK")
DEFAULT_MAX_NOISE = 15.0  # % of one core
DEFAULT_RETRIES = 3  # re-runs per cell, in a full run (a quick run: 1)

# /proc/stat "cpu" line, after the label: user nice system idle iowait irq softirq steal guest guest_nice
_BUSY = (0, 1, 2, 5, 6, 7)
_STEAL = 7


def busy_ticks(proc_stat: str) -> tuple[int, int]:
    """(busy, steal) ticks of all CPUs, from the text of /proc/stat."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            values += [0] * (8 - len(values))  # old kernels have fewer columns
            return sum(values[i] for i in _BUSY), values[_STEAL]
    raise ValueError("no 'cpu ' line in /proc/stat")


def cpu_clock(pid: int) -> float:
    """CPU-seconds process `pid` has used, all its threads, to the nanosecond.

    The clock id is what glibc's clock_getcpuclockid() computes (the kernel's
    MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)); Linux lets any process read
    another's.  Raises OSError once the process has been reaped."""
    return time.clock_gettime_ns((~pid << 3) | 2) / 1e9


def process_ticks(stat: str) -> tuple[int, int]:
    """(utime + stime, cutime + cstime) ticks from the text of /proc/PID/stat.

    The command name, in parentheses, may hold spaces or parentheses itself:
    the fields are counted from the last ')'.  After it, field 3 (state) is
    index 0, so utime, stime, cutime, cstime (fields 14-17) are 11-14."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def session_times(sid: int, passes: int = 10) -> dict[int, tuple[float, float]]:
    """pid -> (own, reaped children) CPU-seconds of every process of session `sid`, zombies included.

    Read until two passes over /proc agree on which processes there are and
    what each has reaped (at most `passes`): a child reaped after its
    parent was read but before it was would otherwise be counted nowhere."""
    last = _session_pass(sid)
    for _ in range(passes):
        now = _session_pass(sid)
        if now.keys() == last.keys() and all(now[pid][1] == last[pid][1] for pid in now):
            break
        last = now
    return now


def _session_pass(sid: int) -> dict[int, tuple[float, float]]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = _read(f"/proc/{entry}/stat")
        except OSError:
            continue  # gone meanwhile
        if int(stat.rpartition(")")[2].split()[3]) == sid:
            out[int(entry)] = _times(int(entry), stat)
    return out


def _times(pid: int, stat: str) -> tuple[float, float]:
    own, reaped = process_ticks(stat)
    try:
        return cpu_clock(pid), reaped / HZ
    except OSError:
        return own / HZ, reaped / HZ  # reaped meanwhile: the ticks, then


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    busy: int  # ticks, all CPUs
    steal: int  # ticks, all CPUs
    server: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (own, reaped children) seconds
    loadgen: float = 0.0  # seconds
    harness: float = 0.0  # seconds


def snapshot(sid: int, loadgen_pid: int) -> Snapshot:
    """Read everything at once (a few milliseconds).  Raises OSError if /proc cannot be read."""
    busy, steal = busy_ticks(_read("/proc/stat"))
    server = session_times(sid)
    loadgen = _times(loadgen_pid, _read(f"/proc/{loadgen_pid}/stat"))[0]
    me = resource.getrusage(resource.RUSAGE_SELF)
    return Snapshot(time.monotonic(), busy, steal, server, loadgen, me.ru_utime + me.ru_stime)


def tree_time(start: dict[int, tuple[float, float]], end: dict[int, tuple[float, float]]) -> float:
    """CPU-seconds a process tree used between two readings of `session_times` (see the module's docstring)."""
    total = 0.0
    for pid, (own, reaped) in end.items():
        own0, reaped0 = start.get(pid, (0, 0))
        total += own - own0 + reaped - reaped0
    for pid, (own0, reaped0) in start.items():
        if pid not in end:
            total -= own0 + reaped0  # now in its parent's reaped count, with what it used before the window
    return total


def others(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """The CPU-seconds of the window, by whom; `others_pct` is others as a share of one core."""
    window = end.at - start.at
    busy = (end.busy - start.busy) / HZ
    server = tree_time(start.server, end.server)
    loadgen = end.loadgen - start.loadgen
    harness = end.harness - start.harness
    rest = max(0.0, busy - server - loadgen - harness)
    return {
        "window_s": round(window, 4), "busy_s": round(busy, 3), "server_s": round(server, 3),
        "loadgen_s": round(loadgen, 3), "harness_s": round(harness, 3), "steal_s": round((end.steal - start.steal) / HZ, 3),
        "others_s": round(rest, 3), "others_pct": round(100 * rest / window, 1) if window > 0 else 0.0,
    }  # fmt: skip


# -------------------------------------------------------------- re-runs


def noise_of(result: dict[str, Any]) -> float | None:
    """Others' share of a core in a run's window, in %; None if it failed or was not measured."""
    if "error" in result or not result.get("noise"):
        return None
    return result["noise"]["others_pct"]


class Reruns:
    """The re-run policy: a contended run is measured again, within a budget per cell.

    `max_noise`: the threshold, in % of one core; `retries`: re-runs per
    cell (scenario, system) over the whole bench.  `discarded` collects
    every run that was replaced, for the record."""

    def __init__(self, max_noise: float, retries: int) -> None:
        self.max_noise = max_noise
        self.retries = retries
        self.used: dict[tuple[str, str], int] = {}
        self.discarded: list[dict[str, Any]] = []

    def contended(self, result: dict[str, Any]) -> bool:
        noise = noise_of(result)
        return noise is not None and noise > self.max_noise

    def left(self, result: dict[str, Any]) -> int:
        return self.retries - self.used.get((result["scenario"], result["system"]), 0)

    def settle(self, results: list[dict[str, Any]], again: Callable[[dict[str, Any]], dict[str, Any]],
               log: Callable[[str], None] = lambda _: None) -> None:  # fmt: skip
        """Re-run the contended runs of `results` (one round's) in place, then mark what is left.

        In passes: each pass measures every still-contended run once more
        (with `again(run)`), so that the re-runs of a cell are spread out
        rather than all falling into the same burst of load.  A re-run
        replaces the run if it did not fail and was less noisy.  Afterwards
        every run has "reruns" (how many times its slot was measured again)
        and "contended" (true if it is still above the threshold)."""
        for run in results:
            run.setdefault("reruns", 0)
        while todo := [i for i, run in enumerate(results) if self.contended(run) and self.left(run) > 0]:
            for i in todo:
                old = results[i]
                cell = (old["scenario"], old["system"])
                self.used[cell] = self.used.get(cell, 0) + 1
                new = again(old)
                new["reruns"] = old["reruns"] + 1
                noise = noise_of(new)
                keep_new = noise is not None and noise < noise_of(old)  # type: ignore[operator]
                kept, dropped = (new, old) if keep_new else (old, new)
                kept["reruns"] = new["reruns"]
                results[i] = kept
                self.discarded.append(dropped)
                shown = "failed" if noise is None else f"{noise:.0f}%"
                log(f"re-run {cell[0]} {cell[1]}: others {noise_of(old):.0f}% -> {shown}; kept the {'re-run' if keep_new else 'first'}")
        for run in results:
            run["contended"] = self.contended(run)
