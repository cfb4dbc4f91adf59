"""``python -m reactor demo``: one reactor, four socket families, one slow client that blocks no one.

What it shows, in order:

1. ONE ``Reactor``, run by ONE thread, serving the framed ``LineEcho``
   (handlers/echo.py) on TCP, UDP, Unix stream and Unix datagram at once;
2. a slow TCP client sends half a line and pauses for a second; the
   request table shows its record READING, waiting for the rest;
3. meanwhile, three quick clients per family send two lines each: every
   echo is checked and timed, and the demo checks that all of them were
   answered while the slow client was still in the middle of its line;
4. the timeline of the tables' transitions, collected by an observer
   (``RequestTable.add_observer``), and a summary per family from the
   tables' ``statistics()`` and the same observer;
5. a clean shutdown: loop thread stopped, servers closed, socket files
   and the temporary directory gone.

Everything stays on loopback and in a temporary directory; it takes about
a second (the slow client's pause).  The exit status is 0 only if every
echo came back intact, the slow client held no one up, the numbers add up
and nothing was left behind; otherwise 1, with what went wrong.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

from handlers.echo import LineEcho

from .datagram import UDPServer
from .demo_clients import CLIENT_TIMEOUT, Exchange, SlowClient, describe_row, run_quick_clients, wait_for_partial_line
from .loop import Reactor
from .table import FINAL_STATES, Event, Record, State
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer

CLIENTS = 3  # quick clients per family
LINES = 2  # lines per quick client
SLOW_LINE = b"a slow line, sent in two halves\n"
SLOW_PAUSE = 1.0  # seconds the slow client waits in the middle of its line


@dataclasses.dataclass
class Step:
    """One line of the timeline: a table's transition (record > 0) or a client's move."""

    at: float
    family: str
    record: int
    text: str


class Timeline:
    """Observes every server's table: keeps each transition, and counts per family."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.steps: list[Step] = []
        self.lock = threading.Lock()  # observers run on the loop thread, notes on the clients'
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_in: collections.Counter[str] = collections.Counter()
        self.bytes_out: collections.Counter[str] = collections.Counter()
        self.finals: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def observer(self, family: str) -> Callable[[Record, State | None, Event | None, State, str], None]:
        def on_change(record: Record, old: State | None, event: Event | None, new: State, reason: str) -> None:
            if old is None or event is None:
                text = f"{'new':>10} -> {new.name:<10}  from {self.peer(record.peer)}"
            else:
                text = f"{old.name:>10} -> {new.name:<10}  {event.name.lower()}{': ' + reason if reason else ''}"
            with self.lock:
                self.steps.append(Step(time.monotonic(), family, record.id, text))
                if event is Event.DISPATCH:  # LineEcho is about to handle one line
                    self.requests[family] += 1
                if new in FINAL_STATES:  # the record leaves the table: its byte counts are final
                    self.finals[family][new.name] += 1
                    self.bytes_in[family] += record.bytes_in
                    self.bytes_out[family] += record.bytes_out

        return on_change

    def note(self, family: str, text: str, at: float) -> None:
        with self.lock:
            self.steps.append(Step(at, family, 0, "client: " + text))

    def peer(self, peer: Any) -> str:
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return os.path.relpath(peer, self.directory) if peer else "an unnamed Unix socket"

    def render(self, t0: float, shown: set[tuple[str, int]]) -> list[str]:
        """The steps in time order; runs of steps of records not in ``shown`` become one line."""
        lines: list[str] = []
        hidden: dict[str, list[int]] = {}
        count = 0

        def flush() -> None:
            nonlocal count
            if count:
                names = ", ".join(f"{fam} {_ids(ids)}" for fam, ids in hidden.items())
                lines.append(f"{'':>9}  ... {count} more transitions ({names})")
                hidden.clear()
                count = 0

        for step in sorted(self.steps, key=lambda s: s.at):
            if step.record and (step.family, step.record) not in shown:
                ids = hidden.setdefault(step.family, [])
                if step.record not in ids:
                    ids.append(step.record)
                count += 1
                continue
            flush()
            name = f"#{step.record}" if step.record else ""
            lines.append(f"{(step.at - t0) * 1000:9.1f}  {step.family:<10}  {name:<3} {step.text}")
        flush()
        return lines


def _ids(ids: list[int]) -> str:
    ids = sorted(ids)
    if len(ids) > 2 and ids[-1] - ids[0] == len(ids) - 1:
        return f"#{ids[0]}-#{ids[-1]}"
    return ", ".join(f"#{i}" for i in ids)


@contextlib.contextmanager
def tracing(on: bool) -> Iterator[None]:
    """With ``on``, log the ``reactor.trace`` logger (every transition, every wake-up) to stderr."""
    if not on:
        yield
        return
    logger = logging.getLogger("reactor.trace")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


ROW = "  {:<10}  {:>7}  {:>8}  {:>8}  {:>9}  {:<13}  {:>6}  {:>7}"


def summary(stats: dict[str, dict[str, Any]], timeline: Timeline) -> list[str]:
    """One row per family, from ``statistics()`` (records, failed, aborted, counters) and the observer."""
    lines = [ROW.format("family", "records", "requests", "bytes in", "bytes out", "final states", "failed", "aborted")]
    totals = [0] * 6
    for family, st in stats.items():
        finals = " ".join(f"{name} {n}" for name, n in sorted(timeline.finals[family].items())) or "-"
        numbers = [st["opened"], timeline.requests[family], timeline.bytes_in[family], timeline.bytes_out[family]]
        numbers += [st["failed"], st["aborted"]]
        totals = [a + b for a, b in zip(totals, numbers)]
        lines.append(ROW.format(family, *numbers[:4], finals, *numbers[4:]))
    lines.append(ROW.format("total", *totals[:4], "", *totals[4:]))
    counters = {name: n for st in stats.values() for name, n in st["counters"].items()}
    lines.append("  (records: one per connection or datagram; requests: lines LineEcho answered)")
    lines.append(f"  bounds hit (the tables' counters): {counters or 'none'}")
    return lines


def check_numbers(stats: dict[str, dict[str, Any]], timeline: Timeline, exchanges: list[Exchange]) -> list[str]:
    """What the tables counted must match what the clients sent."""
    problems = []
    for family, st in stats.items():
        sent = [e.sent for e in exchanges if e.family == family]
        records = CLIENTS + (family == "tcp") if family in ("tcp", "unix") else len(sent)
        size = sum(map(len, sent))
        counted = (st["opened"], timeline.requests[family], timeline.bytes_in[family], timeline.bytes_out[family])
        if counted != (records, len(sent), size, size):
            problems.append(f"{family}: the table counted (records, requests, bytes in, bytes out) = {counted}, "
                            f"the clients sent {(records, len(sent), size, size)}")  # fmt: skip
        if st["failed"] or st["aborted"] or st["rejected"] or st["live"]:
            problems.append(f"{family}: failed, aborted, rejected or still live requests: {st}")
    return problems


def drive_clients(
    servers: dict[str, Any], timeline: Timeline, directory: str, out: Callable[[str], None]
) -> tuple[list[Exchange], int, float, list[str]]:
    """The slow client, the quick ones while it pauses, and the checks on them.

    Returns (every exchange, the slow client's record id, the start time, problems found).
    """
    problems: list[str] = []
    t0 = time.monotonic()
    slow = SlowClient(servers["tcp"].server_address, SLOW_LINE, SLOW_PAUSE, functools.partial(timeline.note, "tcp"))
    slow.start()
    try:
        slow.half_sent.wait(CLIENT_TIMEOUT)
        half = wait_for_partial_line(servers["tcp"], len(SLOW_LINE) // 2)
        slow_id = half["id"] if half else 0
        out(f"a slow tcp client sends half a line and pauses {SLOW_PAUSE:.1f} s; the tcp table's describe() says:")
        out(f"  {describe_row(half) if half else '(nothing: the server never read the half line)'}")
        out(f"meanwhile, {CLIENTS} quick clients per family send {LINES} lines each; every echo is checked:")
        quick = run_quick_clients(servers, directory, CLIENTS, LINES)
        after = next((r for r in servers["tcp"].request_table.describe() if r["id"] == slow_id), None)
        for family in servers:
            mine = [e for e in quick if e.family == family]
            worst = max((e.latency for e in mine if e.ok), default=0.0) * 1000
            out(f"  {family:<10}  {sum(e.ok for e in mine)} of {len(mine)} echoes correct, slowest in {worst:.2f} ms")
        out(f"then describe() again:  {describe_row(after) if after else '(the slow record is gone)'}")
    finally:
        slow.join(SLOW_PAUSE + 3 * CLIENT_TIMEOUT)

    exchanges = quick + [slow.exchange]
    problems += [f"{e.family} {e.client} sent {e.sent!r}, got {e.reply!r}" for e in exchanges if not e.ok]
    # The claim, checked: every quick echo arrived before the slow client
    # sent its second half, and the table still held its record READING.
    last = max((e.answered for e in quick), default=0.0)
    since_half = (last - slow.half_sent_at) * 1000
    if not slow.rest_sent_at or any(not e.answered for e in quick):
        problems.append("the slow client, or some quick client, never got to the end of its exchange")
    elif last >= slow.rest_sent_at:
        problems.append(f"the slow client blocked the others: their last echo came {since_half:.1f} ms "
                        "after the slow client's first half, "
                        f"but it sent its second half {(slow.rest_sent_at - slow.half_sent_at) * 1000:.1f} ms "
                        "after its first")  # fmt: skip
    elif after is None or after["state"] != "READING":
        problems.append(f"the slow client's record was not READING after the others: {after}")
    else:
        out("")
        out(f"slow client: line finished after {slow.exchange.latency:.2f} s; meanwhile {len(quick)} other requests "
            f"answered in {max(e.latency for e in quick) * 1000:.2f} ms max,")  # fmt: skip
        out(f"  all within {since_half:.1f} ms of its first half, while it was still mid-line: it blocked no one")
    return exchanges, slow_id, t0, problems


def shown_records(timeline: Timeline, slow_id: int) -> set[tuple[str, int]]:
    """The slow client's record and the first other record of each family."""
    shown = {("tcp", slow_id)}
    for family in {step.family for step in timeline.steps}:
        ids = [s.record for s in timeline.steps if s.family == family and s.record and (family, s.record) not in shown]
        if ids:
            shown.add((family, min(ids)))
    return shown


def run_demo(verbose: bool = True, out: Callable[[str], None] = print, trace: bool = False,
             dashboard: Any = None, remote: bool = False) -> int:  # fmt: skip
    """Run the demo, printing through ``out`` (``verbose``: with the timeline); return the exit status.

    ``trace`` also logs the ``reactor.trace`` logger to stderr.  ``dashboard``
    (a ``(host, port)``): also serve a dashboard there (``remote``: even off
    loopback), and keep the servers running after the clients, until
    SIGINT or SIGTERM, for someone to look at it.
    """
    with tracing(trace), tempfile.TemporaryDirectory(prefix="reactor-demo-") as tmp:
        timeline = Timeline(tmp)
        servers: dict[str, Any] = {}
        reactor = Reactor()
        loop = threading.Thread(target=reactor.run, name="reactor loop")
        shown = None
        try:
            servers["tcp"] = TCPServer(("127.0.0.1", 0), LineEcho)
            servers["udp"] = UDPServer(("127.0.0.1", 0), LineEcho)
            servers["unix"] = UnixStreamServer(os.path.join(tmp, "echo.sock"), LineEcho)
            servers["unix-dgram"] = UnixDatagramServer(os.path.join(tmp, "echo.dsock"), LineEcho)
            for family, server in servers.items():
                server.request_table.add_observer(timeline.observer(family))
                reactor.add_server(server)
            if dashboard is not None:
                from .dashboard import add_dashboard

                shown = add_dashboard(reactor, dashboard, allow_remote=remote)
            loop.start()
            out(f"reactor demo: ONE Reactor ({type(reactor.selector).__name__}) on ONE thread "
                f"({loop.name!r}) serving the framed LineEcho on:")  # fmt: skip
            for family, server in servers.items():
                address = server.server_address
                out(f"  {family:<10}  {timeline.peer(address) if isinstance(address, tuple) else address}")
            out("")
            exchanges, slow_id, t0, problems = drive_clients(servers, timeline, tmp, out)
            if shown is not None:
                linger(shown, out)
        finally:
            reactor.stop()  # safe from any thread
            if loop.ident is not None:
                loop.join(CLIENT_TIMEOUT)
            if shown is not None:
                shown.close()
            stats = {family: server.request_table.statistics() for family, server in servers.items()}
            reactor.close()
            for server in servers.values():
                server.server_close()  # the Unix servers remove their socket files
            files_left = sorted(os.listdir(tmp))

    if verbose:
        out("")
        out("timeline of the tables' transitions (--trace logs every one, and every loop wake-up): the slow client's")
        out(f"record, tcp #{slow_id}, and the first request of each family; in ms since the first client started:")
        out(f"{'ms':>9}  {'family':<10}  {'id':<3} {'state':>10} -> {'new state':<10}  event: reason")
        for line in timeline.render(t0, shown_records(timeline, slow_id)):
            out(line)
    out("")
    out("summary, from each server's request_table:")
    for line in summary(stats, timeline):
        out(line)
    problems += check_numbers(stats, timeline, exchanges)
    out("")
    gone = not os.path.exists(tmp)
    out(f"shutdown: loop thread {'STILL RUNNING' if loop.is_alive() else 'stopped'}, {len(servers)} servers closed, "
        f"socket files left: {files_left or 'none'}, temp dir {'removed' if gone else 'LEFT BEHIND'}")  # fmt: skip
    if loop.is_alive() or files_left or not gone:
        problems.append("the shutdown was not clean")
    if problems:
        out("demo FAILED:")
        for problem in problems:
            out(f"  {problem}")
        return 1
    out(f"demo ok: {len(exchanges)} echoes correct, the slow client blocked no one, nothing left behind")
    return 0


def linger(dashboard: Any, out: Callable[[str], None]) -> None:
    """With a dashboard: print its address and keep serving until SIGINT (Ctrl-C) or SIGTERM."""
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    out(f"dashboard {dashboard.url}")
    out("the servers keep serving for the dashboard: Ctrl-C (or SIGTERM) ends the demo")
    sys.stdout.flush()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
