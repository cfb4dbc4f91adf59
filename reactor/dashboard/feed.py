"""What a dashboard shows: snapshots of a reactor's servers, and the event streams that carry them.

A SNAPSHOT is one JSON object: the loop's statistics (reactor/loopstats.py)
and, for every server the reactor serves, what its request table says now
(live records by state, the oldest records, the counters and totals).  An
UPDATE is the same plus every transition since the previous update.  The
shapes are documented in docs/api.md ("The dashboard").

The event streams (``GET /events``: Server-Sent Events) are fed by one
timer, every ``interval`` seconds (0.25 by default), which sends an update
only when something changed (a transition, a counter, a total), and a
``: keep-alive`` comment after ``KEEPALIVE`` quiet seconds.  Nothing runs
while nobody watches:

* the timer exists only while at least one stream is open;
* the transitions come from an observer (``RequestTable.add_observer``) on
  every table, attached only while a stream is open.  An observed table
  reports every move (the framed connections' quiet pump, and the quiet
  datagram records, take their slow path: ``RequestTable.watched``), which
  is the cost of watching: a few microseconds per transition.  It is
  bounded: once ``MAX_TRANSITIONS`` are waiting for the next update, the
  observers come off until that update is sent (it says ``"truncated":
  true``), so a busy server pays for at most that many per interval.

A stream is the dashboard server's connection, whose request never ends:
the feed pushes events with ``connection.send``.  A reader that lets more
than the server's ``output_high_water`` pile up is dropped at once
(counted as ``slow_event_readers``), one that went away is found by a peek
at its socket on every tick, and at most ``max_streams`` are open at once
(the next one is answered 503).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import deque
from typing import Any

from ..dispatch import Inline
from ..errors import ClosedError
from ..states import FINAL_STATES, Kind
from ..table import Record, family_name

__all__ = ["Feed", "describe_server", "counted", "event", "peer_text", "strategy_text", "MAX_RECORDS", "MAX_TRANSITIONS", "KEEPALIVE"]

log = logging.getLogger("reactor")

#: Records listed per server in a snapshot (the oldest first); the rest are counted as "more".
MAX_RECORDS = 200
#: Transitions carried by one update; the rest are counted as "dropped".
MAX_TRANSITIONS = 500
#: Seconds without an update after which a stream gets a ``: keep-alive`` comment.
KEEPALIVE = 15.0
#: The send buffer of an event stream's socket: small, so that a stalled reader shows within seconds.
STREAM_SNDBUF = 65536

_EVENT_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    b"Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n"
)


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


def describe_server(server: Any, dashboard: Any = None) -> dict[str, Any]:
    """The SERVER object of a snapshot: what ``server`` is, and what its request table says now."""
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
        "dashboard": dashboard is not None and server is dashboard.server,
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


def event(name: str, data: Any) -> bytes:
    """One Server-Sent Event: ``event: NAME`` and ``data:`` one line of JSON, then an empty line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Feed:
    """The snapshots of one dashboard's reactor, and its open event streams.

    ``snapshot()`` builds a SNAPSHOT now (loop thread).  ``open_stream``
    takes a connection over as an event stream; the rest runs by itself
    on the loop's timer while streams are open, and ``close()`` ends them.
    """

    def __init__(self, dashboard: Any, interval: float = 0.25, max_streams: int = 32) -> None:
        self.dashboard = dashboard
        self.loop = dashboard.loop
        self.interval = interval
        self.max_streams = max_streams
        self.streams: list[Any] = []  # the connections streaming events
        self._pending: deque[dict[str, Any]] = deque()  # transitions not yet sent
        self._dropped = 0  # transitions not kept since the last update (over MAX_TRANSITIONS)
        self._observed: dict[Any, Any] = {}  # table -> its observer
        self._full = False  # the batch filled up: the observers are off until the next update
        self._timer: Any = None
        self._last_sent = 0.0
        self._fingerprint: Any = None

    # ------------------------------------------------------------ snapshots

    def now(self) -> float:
        """Seconds since the dashboard started."""
        return round(time.monotonic() - self.dashboard.started, 4)

    def snapshot(self) -> dict[str, Any]:
        """The SNAPSHOT object: the time, the loop's statistics, every server of the reactor."""
        dashboard = self.dashboard
        dashboard.time_handlers()  # of the servers added since the last look, too
        servers = [describe_server(server, dashboard) for server in self.loop.servers]
        return {"time": self.now(), "loop": {**dashboard.stats.rates(), "totals": dashboard.stats.totals()},
                "servers": servers}  # fmt: skip

    # -------------------------------------------------------------- streams

    def has_room(self) -> bool:
        """May another event stream open (fewer than ``max_streams`` are)?"""
        self._prune()
        return len(self.streams) < self.max_streams

    def open_stream(self, connection: Any) -> None:
        """Make ``connection`` an event stream: the response head and a snapshot now, updates from now on."""
        try:
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        except OSError:
            pass  # the kernel's default, then
        if not self.streams:
            self._watch(True)
        self.streams.append(connection)
        self._send(connection, _EVENT_HEAD + event("snapshot", self.snapshot()))
        if self._timer is None:
            self._last_sent = time.monotonic()
            self._timer = self.loop.call_later(self.interval, self._tick)

    def close(self) -> None:
        """End every stream and stop watching (the dashboard is closing)."""
        for connection in tuple(self.streams):
            connection.abort("the dashboard is closing")
        self.streams.clear()
        self._stop()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch(False)
        self._pending.clear()
        self._dropped = 0
        self._full = False

    def _send(self, connection: Any, data: bytes) -> None:
        """Queue ``data`` on a stream, or drop the stream if its reader fell too far behind."""
        if connection.queued + len(data) > connection.server.output_high_water:
            connection.server.request_table.count("slow_event_readers")
            log.info("dashboard: %r does not read its events; dropping it", connection)
            connection.abort("the event reader fell behind")
            return
        try:
            connection.send(data)
        except ClosedError:
            pass  # it closed meanwhile: pruned on the next tick

    def _prune(self) -> None:
        """Forget the streams that ended, and end those whose reader went away."""
        alive = []
        for connection in self.streams:
            if connection.record.state in FINAL_STATES:
                continue
            try:
                gone = connection.sock.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, InterruptedError):
                gone = False
            except OSError:
                gone = True
            if gone:
                connection.abort("the event reader went away")
                continue
            alive.append(connection)
        self.streams[:] = alive

    # ---------------------------------------------------------- the timer

    def _tick(self) -> None:
        """Every ``interval`` seconds while streams are open: send an update if anything changed."""
        self._timer = None
        self._prune()
        if not self.streams:
            self._stop()
            return
        tables = [server.request_table for server in self.loop.servers]
        fingerprint = [(t.name, len(t), *counted(t).values()) for t in tables]
        now = time.monotonic()
        if self._pending or fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._last_sent = now
            data = event("update", self.update())
            for connection in tuple(self.streams):
                self._send(connection, data)
        elif now - self._last_sent >= KEEPALIVE:
            self._last_sent = now
            for connection in tuple(self.streams):
                self._send(connection, b": keep-alive\n\n")
        self._watch(True)  # again after a full batch, and the servers added since
        self._timer = self.loop.call_later(self.interval, self._tick)

    def update(self) -> dict[str, Any]:
        """The UPDATE object: a snapshot and the transitions since the last update."""
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

    # ------------------------------------------------------- transitions

    def _pause(self) -> None:
        """The batch is full: stop observing until the next update (loop thread)."""
        if self._full:
            self._watch(False)

    def _watch(self, on: bool) -> None:
        """Observe every server's table (on), or none (off).  Loop thread."""
        tables = {server.request_table for server in self.loop.servers} if on else set()
        for table in [t for t in self._observed if t not in tables]:
            table.remove_observer(self._observed.pop(table))
        for table in tables - set(self._observed):
            observer = self._observer(table)
            table.add_observer(observer)
            self._observed[table] = observer

    def _observer(self, table: Any) -> Any:
        pending, started = self._pending, self.dashboard.started

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
