"""What a supervisor's dashboard shows: its workers' reports, merged (``WorkersSource``).

Each worker reports its own reactor (report.py: one JSON UPDATE per
packet, when something changed, at least every few seconds) on a
socketpair the supervisor reads.  ``WorkersSource`` keeps the newest
report of each worker and builds one SNAPSHOT or UPDATE of them all, the
shapes of docs/api.md ("The dashboard") plus:

* every worker's SERVER objects, each with ``"worker"`` (its slot,
  1-based, as the logs say "worker 2"), ``"pid"``, ``"table"`` (the
  request table's name in the worker) and a ``"name"`` unique on the
  page, ``"worker K: " + table``; then the supervisor's own dashboard
  server (``"dashboard": true``, no ``worker``);
* ``loop``: all workers' loops together (rates and totals summed, the
  shares averaged over workers, ``ready_per_wakeup`` weighted by
  wake-ups), and ``workers``: ``[{"worker", "pid", "loop", "age",
  "uptime", "reports_dropped"}]``, each worker's own LOOP (metrics.py
  exports the loop metrics per worker from it);
* ``supervisor``: ``{"workers", "alive", "reporting", "started", "died",
  "replaced", "killed"}`` (``Workers.counters``).

A worker that exited leaves the view at once; its replacement appears
with its first report, its counts starting from zero.  During a reload a
slot shows its newest worker that reported (the old one, draining, no
longer).  Transitions are asked of the workers only while someone holds
an event stream open (``watch``: one byte, ``b"w"`` or ``b"q"``, to each
worker, and to each started later); their ``server`` is renamed as the
SERVER's, their ``t`` moved to the supervisor's clock.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import deque
from typing import Any

from .metrics import Exposition
from .report import BUFFER, QUIET, WATCH
from .source import MAX_TRANSITIONS, LocalSource

__all__ = ["WorkersSource", "merge_loops"]

log = logging.getLogger("reactor")

#: Packets read from one worker per readiness (the newest one counts; each one's transitions are kept).
READS = 16


class _Worker:
    """What the supervisor holds of one worker's reports."""

    __slots__ = ("slot", "pid", "started", "sock", "latest", "received", "pending", "dropped", "truncated")

    def __init__(self, slot: int, pid: int, started: float, sock: socket.socket) -> None:
        self.slot = slot  # 1-based
        self.pid = pid
        self.started = started
        self.sock = sock
        self.latest: dict[str, Any] | None = None  # its newest report
        self.received = 0.0  # when (time.monotonic())
        self.pending: deque[dict[str, Any]] = deque()  # its transitions not yet in an update
        self.dropped = 0
        self.truncated = False


def merge_loops(loops: list[dict[str, Any]]) -> dict[str, Any]:
    """One LOOP of several: rates and totals summed, shares averaged, ``ready_per_wakeup`` weighted."""
    why_names = ("ready", "wakeup", "timers", "timeout")
    merged: dict[str, Any] = {
        "wakeups_per_s": sum(loop["wakeups_per_s"] for loop in loops),
        "why_per_s": {name: sum(loop["why_per_s"].get(name, 0.0) for loop in loops) for name in why_names},
        "busy_share": sum(loop["busy_share"] for loop in loops) / len(loops) if loops else 0.0,
        "wait_share": sum(loop["wait_share"] for loop in loops) / len(loops) if loops else 0.0,
    }
    weighted = sum(loop["ready_per_wakeup"] * loop["wakeups_per_s"] for loop in loops)
    merged["ready_per_wakeup"] = weighted / merged["wakeups_per_s"] if merged["wakeups_per_s"] else 0.0
    totals = [loop["totals"] for loop in loops if "totals" in loop]
    merged["totals"] = {
        "wakeups": sum(t["wakeups"] for t in totals),
        "why": {name: sum(t["why"].get(name, 0) for t in totals) for name in why_names},
        "ready": sum(t["ready"] for t in totals),
        "busy": sum(t["busy"] for t in totals),
        "waiting": sum(t["waiting"] for t in totals),
    }
    return merged


class WorkersSource:
    """The source (source.py) of a supervisor's dashboard: its workers' newest reports, merged.

    ``loop`` is the supervisor's reactor, which serves the dashboard and
    reads the reports; ``dashboard_server`` its server; ``supervisor`` the
    ``Workers`` (its ``count`` and ``counters`` are shown).  ``add`` a
    worker's socket when it is forked, ``remove`` it when it has exited.
    """

    def __init__(self, loop: Any, dashboard_server: Any, supervisor: Any) -> None:
        self.loop = loop
        self.supervisor = supervisor
        self.local = LocalSource(loop, dashboard_server)  # the supervisor's own: its dashboard server
        self.stats = self.local.stats
        self.started = self.local.started
        self.workers: dict[int, _Worker] = {}  # pid -> its reports
        self.watching = False
        self._dirty = True  # something arrived or left since the last update
        self._buffer = bytearray(BUFFER + 1)

    # ------------------------------------------------------------ the workers

    def add(self, slot: int, pid: int, sock: socket.socket, started: float | None = None) -> None:
        """Read worker ``pid``'s (of ``slot``, 1-based) reports from ``sock``, the supervisor's end."""
        sock.setblocking(False)
        worker = _Worker(slot, pid, time.monotonic() if started is None else started, sock)
        self.workers[pid] = worker
        self.loop.add_reader(sock, self._receive, worker)
        if self.watching:
            self._tell(worker, WATCH)

    def remove(self, pid: int) -> None:
        """Worker ``pid`` has exited (or closed its end): it leaves the view now.  Idempotent."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return
        if not self.loop.closed:
            self.loop.remove_reader(worker.sock)
        worker.sock.close()
        self._dirty = True

    def _receive(self, worker: _Worker) -> None:
        """The worker's socket is readable: take its reports (up to ``READS``), or its end of file."""
        for _ in range(READS):
            try:
                size = worker.sock.recv_into(self._buffer, len(self._buffer))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if size == 0:
                self.remove(worker.pid)
                return
            try:
                report = json.loads(bytes(self._buffer[:size]))
                then = float(report["time"])
                if not isinstance(report["servers"], list) or not isinstance(report["loop"], dict):
                    raise TypeError("not a report")
            except (ValueError, KeyError, TypeError):
                log.warning("worker %d (pid %d): a dashboard report that cannot be read (%d bytes)", worker.slot,
                            worker.pid, size)  # fmt: skip
                continue
            self._take(worker, report, then)

    def _take(self, worker: _Worker, report: dict[str, Any], then: float) -> None:
        worker.latest = report
        worker.received = time.monotonic()
        self._dirty = True
        if not self.watching:
            report.pop("transitions", None)
            return
        offset = self.local.now() - then  # the worker's clock to ours
        prefix = f"worker {worker.slot}: "
        for transition in report.pop("transitions", ()):
            if len(worker.pending) >= MAX_TRANSITIONS:
                worker.dropped += 1
                continue
            transition["t"] = round(transition["t"] + offset, 4)
            transition["server"] = prefix + str(transition["server"])
            transition["worker"] = worker.slot
            worker.pending.append(transition)
        worker.dropped += int(report.get("dropped", 0))
        worker.truncated = worker.truncated or bool(report.get("truncated"))

    def _tell(self, worker: _Worker, command: bytes) -> None:
        try:
            worker.sock.send(command)
        except OSError:
            pass  # full (it will hear the next one) or gone (its end of file comes)

    def _shown(self) -> list[_Worker]:
        """The workers shown: per slot, the newest that reported."""
        newest: dict[int, _Worker] = {}
        for worker in self.workers.values():
            if worker.latest is not None and (worker.slot not in newest or worker.started > newest[worker.slot].started):
                newest[worker.slot] = worker
        return [newest[slot] for slot in sorted(newest)]

    # ------------------------------------------------------------ the source

    def snapshot(self) -> dict[str, Any]:
        """The merged SNAPSHOT (see the module docstring)."""
        return self._merged(self.local.snapshot())

    def _merged(self, own: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        servers: list[dict[str, Any]] = []
        workers = []
        shown = self._shown()
        for worker in shown:
            report = worker.latest
            assert report is not None
            for server in report["servers"]:
                servers.append({**server, "name": f"worker {worker.slot}: {server['name']}", "table": server["name"],
                                "worker": worker.slot, "pid": worker.pid})  # fmt: skip
            workers.append({"worker": worker.slot, "pid": worker.pid, "loop": report["loop"],
                            "age": round(now - worker.received, 3), "uptime": round(now - worker.started, 3),
                            "reports_dropped": report.get("reports_dropped", 0)})  # fmt: skip
        supervisor = self.supervisor
        return {
            "time": own["time"],
            "loop": merge_loops([w["loop"] for w in workers]),
            "servers": servers + own["servers"],
            "workers": workers,
            "supervisor": {"workers": supervisor.count, "alive": len(supervisor.pids), "reporting": len(shown),
                           **supervisor.counters},  # fmt: skip
        }

    def changed(self) -> bool:
        """A report came or a worker left since the last update, or the dashboard's own server changed."""
        return self._dirty or self.local.changed()

    def update(self) -> dict[str, Any]:
        """The merged UPDATE: the snapshot, and every worker's transitions since the last (the oldest first)."""
        own = self.local.update()
        self._dirty = False
        update = self._merged(own)
        transitions = list(own["transitions"])
        dropped, truncated = own.get("dropped", 0), bool(own.get("truncated"))
        for worker in self.workers.values():
            transitions += worker.pending
            dropped += worker.dropped
            truncated = truncated or worker.truncated
            worker.pending.clear()
            worker.dropped, worker.truncated = 0, False
        transitions.sort(key=lambda t: t["t"])
        dropped += max(0, len(transitions) - MAX_TRANSITIONS)
        update["transitions"] = transitions[:MAX_TRANSITIONS]
        if dropped or truncated:
            update["dropped"] = dropped
        if truncated:
            update["truncated"] = True
        return update

    def watch(self, on: bool) -> None:
        """Ask every worker for its transitions (on) or not (off); the same of the supervisor's own server."""
        self.local.watch(on)
        if on == self.watching:
            return
        self.watching = on
        for worker in self.workers.values():
            self._tell(worker, WATCH if on else QUIET)
            if not on:
                worker.pending.clear()
                worker.dropped, worker.truncated = 0, False

    def more_metrics(self, snapshot: dict[str, Any]) -> bytes:
        """The supervisor's own metrics, after metrics.py's: ``reactor_workers`` and ``reactor_worker_events_total``."""
        shown = snapshot["supervisor"]
        out = Exposition()
        out.metric("reactor_workers", "gauge",
                   "Worker processes: wanted (the count asked for), alive, and reporting to this dashboard.",
                   [({"state": state}, shown[key]) for state, key in
                    (("wanted", "workers"), ("alive", "alive"), ("reporting", "reporting"))])
        out.metric("reactor_worker_events_total", "counter",
                   "Worker processes started, died (exited unasked), replaced (by a reload) and killed (SIGKILL "
                   "after the grace period) since the supervisor started.",
                   [({"event": event}, shown[event]) for event in ("started", "died", "replaced", "killed")])
        out.metric("reactor_worker_report_age_seconds", "gauge",
                   "Seconds since the worker's last report reached the supervisor.",
                   [({"worker": w["worker"]}, float(w["age"])) for w in snapshot["workers"]])  # fmt: skip
        return out.text()

    def close(self) -> None:
        """Stop reading every worker, and the supervisor's own source.  Idempotent."""
        for pid in list(self.workers):
            self.remove(pid)
        self.local.close()
