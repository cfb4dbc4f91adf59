"""Work per message, counted rather than timed: instructions and Python calls.

Seconds move with whatever else the machine runs; counts do not.  For a few
systems, bench/profile.py's in-process driver (50 blocking clients and the
server stepped in one thread, every round one message per client, or 16
pipelined) runs at two round counts, under valgrind's callgrind tool and
under cProfile, and the difference cancels start-up and tear-down::

    per message = (count at 60 rounds - count at 20 rounds) / (40 rounds * 50 clients * depth)

* instructions: callgrind's "Collected" total, user space only (the kernel's
  work in send() and recv() is not seen), the clients' included;
* calls: cProfile's count of Python function calls, builtins (socket.send,
  len...) included, the clients' too.

Both compare systems driven the same way; neither is the server's cost
alone.  Under callgrind a process runs about 50 times slower: the ten
callgrind runs take about 60 s of CPU in all (4-12 s each), spread over the machine's CPUs, and all of them together have a
deadline (BUDGET).  Where valgrind is not installed the instructions are
skipped, saying so; the calls are counted anyway.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .run import ROOT

ROUNDS = (20, 60)
CLIENTS = 50  # bench/profile.py's (not imported: that would load the library into the harness)
BUDGET = 180.0  # seconds for all of it; what is not done by then is skipped


@dataclass(frozen=True)
class Counted:
    name: str  # bench.profile's system
    label: str
    depth: int = 1
    versus: str = ""  # the key of the row its "x asyncio" column divides by

    @property
    def args(self) -> list[str]:
        return [self.name] + (["--depth", str(self.depth)] if self.depth > 1 else [])

    @property
    def key(self) -> str:
        return " ".join(self.args)


# The comparators are the targets' (bench/scenarios.py): asyncio's Protocol
# for ping-pong, asyncio streams' readline() loop for pipelined lines (a
# Protocol that echoes whatever one read returned does no framing at all).
# bench.profile has no asyncio datagram server: the UDP row has none.
SYSTEMS = [
    Counted("line", "reactor LineEcho, TCP, ping-pong", versus="asyncio-proto"),
    Counted("line", "reactor LineEcho, TCP, 16 pipelined", depth=16, versus="asyncio-streams --depth 16"),
    Counted("udp", "reactor DatagramEcho, UDP", versus="stdlib-udp"),
    Counted("stdlib-udp", "stdlib socketserver.UDPServer, DatagramEcho, UDP", versus="stdlib-udp"),
    # The floor (bench/floor.py): the stdlib's hooks and LineEcho with nothing
    # around them, what the handler API itself costs per message.
    Counted("floor", "floor: hooks + LineEcho alone, TCP, ping-pong", versus="asyncio-proto"),
    Counted("floor", "floor: hooks + LineEcho alone, TCP, 16 pipelined", depth=16, versus="asyncio-streams --depth 16"),
    Counted("asyncio-proto", "asyncio Protocol echo, TCP, ping-pong", versus="asyncio-proto"),
    Counted("asyncio-streams", "asyncio streams readline echo, TCP, 16 pipelined", depth=16, versus="asyncio-streams --depth 16"),
]


def collected(stderr: str) -> int:
    """Instructions from callgrind's summary line "==PID== Collected : N"."""
    found = re.search(r"Collected\s*:\s*(\d+)", stderr)
    if not found:
        raise ValueError("no 'Collected' line in callgrind's output")
    return int(found.group(1))


def calls(stdout: str) -> int:
    """Calls from bench.profile --cprofile's line "SYSTEM: N calls"."""
    found = re.search(r"^\S+: (\d+) calls$", stdout, re.MULTILINE)
    if not found:
        raise ValueError("no 'N calls' line in bench.profile's output")
    return int(found.group(1))


def per_message(low: int, high: int, depth: int = 1, rounds: tuple[int, int] = ROUNDS) -> float:
    """The difference of two counts over the difference in messages."""
    return (high - low) / ((rounds[1] - rounds[0]) * CLIENTS * depth)


def command(system: Counted, rounds: int, tool: str) -> list[str]:
    # -S: no site module, as for the servers (bench/run.py): the driver needs
    # only the standard library and this checkout, and the venv's .pth hooks
    # would only add start-up work.
    python = [sys.executable, "-S", "-m", "bench.profile", *system.args, "--rounds", str(rounds)]
    if tool == "callgrind":
        return ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *python]
    return python + ["--cprofile"]


def _one(system: Counted, rounds: int, tool: str, deadline: float) -> tuple[int | None, float, str]:
    """(count or None, seconds, why it is None)."""
    began = time.monotonic()
    left = deadline - began
    if left <= 1:
        return None, 0.0, "out of time"
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every time: repeatable counts
    try:
        done = subprocess.run(command(system, rounds, tool), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=left)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, round(time.monotonic() - began, 1), "timed out"
    spent = round(time.monotonic() - began, 1)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, spent, f"exited with status {done.returncode}: {tail}"
    try:
        return (collected(done.stderr) if tool == "callgrind" else calls(done.stdout)), spent, ""
    except ValueError as exc:
        return None, spent, str(exc)


def valgrind_version() -> str | None:
    if not shutil.which("valgrind"):
        return None
    try:
        done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def count(budget: float = BUDGET, log: Callable[[str], None] = lambda _: None,
          systems: list[Counted] = SYSTEMS, rounds: tuple[int, int] = ROUNDS, valgrind: bool = True) -> dict[str, Any]:  # fmt: skip
    """Instructions (if valgrind is installed and `valgrind`) and calls per message of every system in `systems`.

    Returns {"rounds", "valgrind", "skipped", "seconds", "systems": [{"system", "label",
    "depth", "versus", "instructions", "calls", "callgrind_s", "notes"}]}; a figure that could
    not be had is None, with a note saying why.  Never raises for a failed run."""
    began = time.monotonic()
    deadline = began + budget
    version = valgrind_version() if valgrind else None
    tools = ["cprofile"] + (["callgrind"] if version else [])
    jobs = [(s, r, t) for t in tools for s in systems for r in rounds]
    # Counts do not depend on what else runs, so the runs may share the CPUs.
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(os.sched_getaffinity(0))))) as pool:
        done = dict(zip(jobs, pool.map(lambda job: _one(*job, deadline), jobs)))
    out: dict[str, Any] = {"rounds": list(rounds), "valgrind": version, "systems": [],
                           "skipped": None if version else "valgrind is not installed" if valgrind else "not asked for"}  # fmt: skip
    for system in systems:
        row: dict[str, Any] = {"system": system.key, "label": system.label, "depth": system.depth, "versus": system.versus,
                               "notes": []}  # fmt: skip
        for tool, field in (("callgrind", "instructions"), ("cprofile", "calls")):
            if tool not in tools:
                row[field] = None
                continue
            (low, t_low, why_low), (high, t_high, why_high) = (done[(system, r, tool)] for r in rounds)
            if low is None or high is None:
                row[field] = None
                row["notes"].append(f"{tool}: {why_low or why_high}")
            else:
                row[field] = round(per_message(low, high, system.depth, rounds), 1)
            if tool == "callgrind":
                row["callgrind_s"] = [t_low, t_high]
        out["systems"].append(row)
    out["seconds"] = round(time.monotonic() - began, 1)
    log(f"counted in {out['seconds']:.0f} s" + (f" ({out['skipped']}: calls only)" if out["skipped"] else ""))
    return out
