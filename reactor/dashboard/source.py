"""What a dashboard shows of one reactor: its snapshots and its transitions (``LocalSource``).

A *source* is what a dashboard's feed (feed.py) and routes ask for the
data they show; it does not know how the data travels.  Its interface:

* ``snapshot()``: a SNAPSHOT now (docs/api.md, "The dashboard");
* ``update()``: a snapshot plus the transitions since the last update
  (at most ``MAX_TRANSITIONS``; the rest counted as ``dropped``, and
  ``truncated`` when the observers had to come off);
* ``changed()``: is there anything new since the last update (a move, a
  counter, a total, a record more or less)?
* ``watch(on)``: observe the transitions (on) or not (off): on only while
  someone watches the event streams;
* ``close()``: detach everything it attached.

``LocalSource`` is the source of the reactor it runs on: it times the
loop (reactor/loopstats.py) and every server's handlers
(reactor/handlertime.py) for as long as it exists, and while watching it
has an observer (``RequestTable.add_observer``) on every table.  An
observed table reports every move (the framed connections' quiet pump
and the quiet datagram records take their slow path:
``RequestTable.watched``), which is the cost of watching: a few
microseconds per transition.  It is bounded: once ``MAX_TRANSITIONS`` are
waiting for the next update, the observers come off until that update is
taken (it says ``"truncated": true``), so a busy server pays for at most
that many per update.  Under worker processes, each worker has one
(reactor/dashboard/report.py) and the supervisor merges their reports
(reactor/dashboard/workers.py).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..dispatch import Inline
from ..handlertime import HandlerTime
from ..loopstats import LoopStats
from ..states import Kind
from ..table import Record, family_name

__all__ = ["LocalSource", "describe_server", "counted", "peer_text", "strategy_text", "server_kind", "MAX_RECORDS",
           "MAX_TRANSITIONS"]  # fmt: skip

#: Records listed per server in a snapshot (the oldest first); the rest are counted as "more".
MAX_RECORDS = 200
#: Transitions carried by one update; the rest are counted as "dropped".
MAX_TRANSITIONS = 500


def peer_text(peer: Any) -> str:
    """A record's peer for people: ``127.0.0.1:5000``, ``[::1]:5000``, a path, ``pid 123``, or ``unnamed``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    if isinstance(peer, bytes):
        peer = peer.decode("utf-8", "replace")
    if peer in ("", None):
        return "unnamed"
    return f"pid {peer}" if isinstance(peer, int) else str(peer)


def strategy_text(dispatch: Any) -> str:
    """``inline``, ``threads:8`` or ``fork:4``."""
    if isinstance(dispatch, Inline) or getattr(dispatch, "inline", False):
        return "inline"
    name = {"thread": "threads"}.get(dispatch.name, dispatch.name)
    limit = getattr(dispatch, "limit", None)
    return f"{name}:{limit}" if limit is not None else name


def server_kind(server: Any) -> Kind:
    """The kind of the records a server opens for its requests."""
    kind = getattr(server, "_record_kind", Kind.STREAM)
    if kind is Kind.STREAM and server._handler_is_framed():
        return Kind.CONNECTION
    return kind


def _record(record: Record, now: float) -> dict[str, Any]:
    return {
        "id": record.id, "state": record.state.name, "peer": peer_text(record.peer),
        "age": round(now - record.created, 4), "since": round(now - record.changed, 4),
        "bytes_in": record.bytes_in, "bytes_out": record.bytes_out,
    }  # fmt: skip


def describe_server(server: Any, dashboard_server: Any = None) -> dict[str, Any]:
    """The SERVER object of a snapshot: what ``server`` is, and what its request table says now
    (``dashboard`` is true when it is ``dashboard_server``)."""
    table = server.request_table
    kind = server_kind(server)
    name = table.name
    records = table.snapshot()
    now = table.clock()
    states: dict[str, int] = {}
    for record in records:
        states[record.state.name] = states.get(record.state.name, 0) + 1
    handler = server.RequestHandlerClass
    sock = getattr(server, "socket", None)
    described = {
        "name": name,
        "kind": kind.value,
        "family": family_name(getattr(server, "address_family", 0), getattr(server, "_record_kind", Kind.STREAM)),
        "address": name.partition(" ")[2] or str(server.server_address),
        "handler": getattr(handler, "__name__", str(handler)),
        "strategy": strategy_text(server.dispatch),
        "tls": getattr(server, "ssl_context", None) is not None or hasattr(sock, "context"),
        "proxy": bool(getattr(server, "proxy_protocol", False)),
        "dashboard": dashboard_server is not None and server is dashboard_server,
        "states": states,
        "records": [_record(record, now) for record in records[:MAX_RECORDS]],
        "bytes_in": table.ended_bytes_in + sum(record.bytes_in for record in records),
        "bytes_out": table.ended_bytes_out + sum(record.bytes_out for record in records),
        "handlers": None if server.handler_time is None else server.handler_time.rates(),
        **counted(table),
    }
    if len(records) > MAX_RECORDS:
        described["more"] = len(records) - MAX_RECORDS
    return described


def counted(table: Any) -> dict[str, dict[str, int]]:
    """``{"counters": ..., "totals": ...}`` of ``table``, copied under its lock (a worker may count meanwhile)."""
    statistics = table.statistics()
    return {"counters": statistics["counters"], "totals": {name: statistics[name] for name in table.totals}}


class LocalSource:
    """What a dashboard shows of the reactor ``loop``: every server it serves (``dashboard_server``,
    if given, is marked ``"dashboard": true``), the loop's statistics, and the transitions.

    Loop thread only, except the observers (any thread).  ``started`` is
    when it was made: a snapshot's ``time`` and a transition's ``t`` count
    from there.  ``stats`` is the loop's ``LoopStats``.
    """

    def __init__(self, loop: Any, dashboard_server: Any = None) -> None:
        self.loop = loop
        self.dashboard_server = dashboard_server
        self.started = time.monotonic()
        self._timed: dict[Any, HandlerTime] = {}  # server -> the timing of its handlers we attached
        self._pending: deque[dict[str, Any]] = deque()  # transitions not yet taken by an update
        self._dropped = 0  # transitions not kept since the last update (over MAX_TRANSITIONS)
        self._observed: dict[Any, Any] = {}  # table -> its observer
        self._full = False  # the batch filled up: the observers are off until the next update
        self._fingerprint: Any = None
        self.stats = LoopStats.attach(loop)
        try:
            self.time_handlers()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ snapshots

    def now(self) -> float:
        """Seconds since the source started."""
        return round(time.monotonic() - self.started, 4)

    def snapshot(self) -> dict[str, Any]:
        """The SNAPSHOT object: the time, the loop's statistics, every server of the reactor."""
        self.time_handlers()  # of the servers added since the last look, too
        servers = [describe_server(server, self.dashboard_server) for server in self.loop.servers]
        return {"time": self.now(), "loop": {**self.stats.rates(), "totals": self.stats.totals()},
                "servers": servers}  # fmt: skip

    def _fingerprint_now(self) -> list[Any]:
        return [(t.name, len(t), *counted(t).values()) for t in (server.request_table for server in self.loop.servers)]

    def changed(self) -> bool:
        """Anything new since the last ``update()``: a transition waiting, or another count, counter or total."""
        return bool(self._pending) or self._fingerprint_now() != self._fingerprint

    def update(self) -> dict[str, Any]:
        """The UPDATE object: a snapshot and the transitions since the last update."""
        self._fingerprint = self._fingerprint_now()
        update = self.snapshot()
        pending = self._pending
        transitions = [pending.popleft() for _ in range(min(len(pending), MAX_TRANSITIONS))]
        dropped, self._dropped = self._dropped + len(pending), 0
        pending.clear()
        update["transitions"] = transitions
        if dropped or self._full:
            update["dropped"] = dropped
        if self._full:
            update["truncated"] = True  # and more moves went unwatched since: the observers were off
            self._full = False
        return update

    # ------------------------------------------------------- timing handlers

    def time_handlers(self) -> None:
        """Time the handlers of every server the loop serves now (reactor/handlertime.py), and stop
        timing those it no longer serves.  Called on every snapshot, so a server added later is
        timed from the first snapshot after it came."""
        servers = self.loop.servers
        if len(servers) == len(self._timed) and all(server in self._timed for server in servers):
            return
        for server in [s for s in self._timed if s not in servers]:
            self._timed.pop(server).detach()
        for server in servers:
            if server not in self._timed:
                self._timed[server] = HandlerTime.attach(server)

    def close(self) -> None:
        """Stop observing, timing the handlers and the loop.  Idempotent."""
        self.watch(False)
        for timing in self._timed.values():
            timing.detach()
        self._timed.clear()
        if self.stats is not None:
            self.stats.detach()
            self.stats = None

    # ------------------------------------------------------- transitions

    def watch(self, on: bool) -> None:
        """Observe every server's table (on: again after a full batch, and the servers added since),
        or none (off: what was waiting is forgotten).  Loop thread."""
        self._observe(on)
        if not on:
            self._pending.clear()
            self._dropped = 0
            self._full = False

    def _pause(self) -> None:
        """The batch is full: stop observing until the next update (loop thread)."""
        if self._full:
            self._observe(False)

    def _observe(self, on: bool) -> None:
        tables = {server.request_table for server in self.loop.servers} if on else set()
        for table in [t for t in self._observed if t not in tables]:
            table.remove_observer(self._observed.pop(table))
        for table in tables - set(self._observed):
            observer = self._observer(table)
            table.add_observer(observer)
            self._observed[table] = observer

    def _observer(self, table: Any) -> Any:
        pending, started = self._pending, self.started

        def on_transition(record: Record, old: Any, event: Any, new: Any, reason: str) -> None:
            # Any thread (a worker ends its requests there): deque.append is atomic.
            if len(pending) >= MAX_TRANSITIONS:
                self._dropped += 1
                if not self._full:  # a busy server: stop watching it until the next update
                    self._full = True
                    self.loop.call_soon_threadsafe(self._pause)
                return
            pending.append({
                "t": round(time.monotonic() - started, 4), "server": table.name, "id": record.id,
                "old": None if old is None else old.name, "event": None if event is None else event.name.lower(),
                "new": new.name, "reason": reason,
            })  # fmt: skip

        return on_transition
