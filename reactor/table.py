"""The request table: every request in flight is a record with an explicit state.

socketserver's documentation advises servers that must not block to
"maintain an explicit table of partially finished requests".  This is that
table.  Each accepted connection or received datagram becomes a ``Record``
with an id, and moves through the states of its kind:

    classic stream  ACCEPTED [-> READY] -> PROCESSING -> CLOSED   (READY: waiting for a worker)
    framed stream   ACCEPTED -> READING -> READY -> PROCESSING -> READING ... -> CLOSING -> CLOSED
                    (PROCESSING -> WRITING -> READING while the peer is slow to read)
    datagram        RECEIVED [-> READY] -> PROCESSING [-> SENDING] -> DONE
    forked child    PROCESSING -> DONE                             (its peer is the pid)

(over TLS a connection of either kind first goes ACCEPTED -> HANDSHAKING ->
ACCEPTED, or -> CLOSED if the handshake fails: reactor/tls.py; with the PROXY
protocol, before that, ACCEPTED -> PROXYING -> ACCEPTED, or -> CLOSED:
reactor/proxy.py).  The
kinds, states, events and every allowed move are in ``reactor.states``.

Rules (every one of them enforced here, nowhere else):

1. Every state change goes through ``RequestTable.transition()``, which
   looks the (state, event) pair up in ``TRANSITIONS``.  A pair that is not
   there raises ``TransitionError`` naming the record, state and event.
   (One exception, for speed when nobody watches: a framed connection's
   quiet pump, ``Connection._pump``, makes the moves READING -> PROCESSING
   -> READING of a message handled within one read by assignment; each is
   MESSAGE+DISPATCH, or REPLY, of this table.  Likewise a datagram's
   record opened quiet moves RECEIVED -> PROCESSING, its DISPATCH, by
   assignment in ``BaseServer._lifecycle``.)
2. A record that reaches a final state (CLOSED, DONE, FAILED) leaves the
   table at once, so the table only ever holds live requests, and a long
   running server cannot accumulate finished ones (python/cpython#81374).
3. Each transition can be observed: it is logged on the ``reactor.trace``
   logger at DEBUG and passed to every callback given to ``add_observer``
   (unless nobody watched when it was decided: see ``open``'s ``quiet``
   and ``watched``).

The docs' tables of transitions are checked against ``TRANSITIONS`` by a
test, so they cannot drift from the code.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator

from .errors import TransitionError
from .states import FINAL_STATES, INITIAL_STATE, TRANSITIONS, E, Event, Kind, S, State

__all__ = ["State", "Event", "Kind", "Record", "RequestTable", "TRANSITIONS", "FINAL_STATES"]

log = logging.getLogger("reactor")
trace = logging.getLogger("reactor.trace")
_DEBUG = logging.DEBUG


# Members the hot paths test, as plain globals: looking a member up on its
# enum class goes through the enum metaclass, which costs about as much as
# a function call.
_FAILED, _REJECT, _ABORT = S.FAILED, E.REJECT, E.ABORT

_FAMILY_NAMES = {
    socket.AF_INET: "tcp4",
    socket.AF_INET6: "tcp6",
    getattr(socket, "AF_UNIX", -1): "unix",
}


def family_name(family: int, kind: Kind) -> str:
    """A short label for a socket family and record kind: tcp4, udp6, unix, unix-dgram."""
    label = _LABELS.get((family, kind))
    if label is None:  # worked out once per (family, kind): every record asks
        if kind is Kind.CHILD:
            label = "child"
        else:
            label = _FAMILY_NAMES.get(family, str(family))
            if kind is Kind.DATAGRAM:
                label = "udp" + label[3:] if label.startswith("tcp") else label + "-dgram"
        _LABELS[(family, kind)] = label
    return label


_LABELS: dict[tuple[int, Kind], str] = {}


def describe_peer(peer: Any) -> str:
    """A client address for people: ``('127.0.0.1', 5000)``, a path, or "an unnamed Unix socket"."""
    return "an unnamed Unix socket" if peer in ("", b"", None) else repr(peer)


class Size:
    """A transition's reason, "41 B" (the length of ``data`` now), formatted only if someone reads it."""

    __slots__ = ("data", "suffix")

    def __init__(self, data: Any, suffix: str = "") -> None:
        self.data = data
        self.suffix = suffix

    def __str__(self) -> str:
        return f"{len(self.data)} B{self.suffix}"


class Record:
    """One request in flight.  Read its fields; only the table changes them.

    ``id`` is unique within its table and never reused.  ``bytes_in`` and
    ``bytes_out`` count the bytes the reactor itself moved for this request
    (a classic stream handler does its own I/O on its socket, so those stay
    0 for it; a datagram's payload counts as ``bytes_in``).  ``proxy_address``
    is the address a connection came from when a PROXY header named its real
    client, who is then ``peer`` (None without one; see ``RequestTable.readdress``).
    """

    __slots__ = (
        "id", "kind", "family", "peer", "state", "request",
        "bytes_in", "bytes_out", "created", "changed", "quiet", "proxy_address",
    )  # fmt: skip

    def __init__(self, id: int, kind: Kind, family: str, peer: Any, request: Any, now: float) -> None:
        self.id = id
        self.kind = kind
        self.family = family
        self.peer = peer
        self.state = INITIAL_STATE[kind]
        self.request = request
        self.bytes_in = 0
        self.bytes_out = 0
        self.created = now
        self.changed = now
        self.quiet = False  # opened quiet with nobody watching: its moves are not reported
        self.proxy_address: Any = None  # the proxy it came through (PROXY protocol), if any

    def __repr__(self) -> str:
        return f"<Record #{self.id} {self.family} {self.peer!r} {self.state.name}>"


class RequestTable:
    """The live records of one server, with counters and a trace of every move.

    ``name`` labels trace lines (usually the server's family and address).
    Transitions may happen on worker threads (a threading server finishes
    its requests there).  A live record is only ever moved by the one
    thread that holds its request at the time; what all threads share
    (adding and removing records, totals, counters) changes under a lock,
    and reading ``counts()`` or ``snapshot()`` is safe from any thread.
    """

    def __init__(self, name: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock  # of created, changed and ages: time.monotonic unless given
        self._records: dict[int, Record] = {}  # id -> record
        self._live_kinds: dict[Kind, int] = {}  # kind -> live records of that kind
        self._by_request: dict[int, Record] = {}  # id(request object) -> record
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._observers: list[Callable[[Record, State, Event, State, str], None]] = []
        self.totals = {"opened": 0, "finished": 0, "rejected": 0, "aborted": 0, "failed": 0}
        #: How often each bound or trouble was met, by name (see ``count``).
        self.counters: dict[str, int] = {}
        #: Bytes in and out of the records that have left the table (live ones count their own).
        self.ended_bytes_in = self.ended_bytes_out = 0

    # ------------------------------------------------------------ changing

    def open(
        self, kind: Kind, request: Any, peer: Any, family: int, size: int = 0, quiet: bool = False, what: str = ""
    ) -> Record:
        """Add a record for a request that just arrived and return it.

        ``request`` is the object the server hands its methods (a socket, or
        a ``(data, socket)`` pair); ``find(request)`` returns the record
        while it is live.  ``size`` is the number of bytes already received.
        ``what`` says what it is, for the trace (default: "new tcp4 request
        from PEER").  ``quiet`` (for short-lived records, a datagram's): if nobody watches
        now, nobody will be told of this record's moves, and its
        ``changed`` stays its ``created`` (``record.quiet`` says so); it is
        in the table, and in every snapshot, all the same.
        """
        with self._lock:
            label = _LABELS.get((family, kind)) or family_name(family, kind)  # one call less per datagram
            record = Record(next(self._ids), kind, label, peer, request, self.clock())
            record.bytes_in = size
            self._records[record.id] = record
            self._live_kinds[kind] = self._live_kinds.get(kind, 0) + 1
            self._by_request[id(request)] = record
            self.totals["opened"] += 1
        if self._observers or trace.isEnabledFor(_DEBUG):
            self._report(record, None, None, record.state, what or f"new {record.family} request from {describe_peer(peer)}")
        else:
            record.quiet = quiet
        return record

    def transition(self, record: Record, event: Event, reason: Any = "") -> State:
        """Apply ``event`` to ``record`` and return its new state.

        ``reason`` says why, for the trace and observers: a string, a byte
        count (an int, reported as ``"41 B"``), or any object whose ``str()``
        is one (formatted only when someone looks).

        Raises ``TransitionError`` (and changes nothing) if the record's
        kind does not allow ``event`` in its current state.  A final state
        removes the record from the table.
        """
        # This runs three times per message of a framed connection, so it
        # is kept lean.  A live record belongs to one thread at a time (the
        # loop's, or the worker's running it), so changing its state needs
        # no lock; only removing it touches what all threads share.
        old = record.state
        new = TRANSITIONS[record.kind].get((old, event))
        if new is None:
            raise TransitionError(record, old, event)
        if new in FINAL_STATES:
            # Out of the table first, then the final state: a KeyboardInterrupt
            # landing in between leaves a record that is simply gone, never a
            # final one still in the table.
            with self._lock:
                self._forget(record, event, new)
        record.state = new
        if record.quiet:  # opened with nobody watching: no clock, no report (see open)
            return new
        record.changed = self.clock()
        if self._observers or trace.isEnabledFor(_DEBUG):
            self._report(record, old, event, new, reason)
        return new

    def finish(self, request: Any, event: Event = Event.FINISH, reason: str = "") -> Record | None:
        """Apply ``event`` to the live record of ``request``, if there is one.

        The server's ``shutdown_request``/``close_request`` call this, and
        both may run for one request, so a request that is no longer in the
        table is not an error: the call returns None and does nothing.
        """
        record = self._by_request.get(id(request))
        if record is None or record.request is not request:
            return None
        if record.state in FINAL_STATES:  # its removal was cut short (KeyboardInterrupt): finish it
            with self._lock:
                self._forget(record, event, record.state)
            return None
        self.transition(record, event, reason)
        return record

    def rebind(self, record: Record, request: Any) -> None:
        """``record``'s request is now ``request`` (TLS wraps an accepted socket in a new object)."""
        with self._lock:
            self._by_request.pop(id(record.request), None)
            self._by_request[id(request)] = record
            record.request = request

    def readdress(self, record: Record, peer: Any) -> None:
        """``record``'s client is ``peer``, as its proxy's PROXY header says; the address the
        connection came from (the proxy's) is kept as ``record.proxy_address``.

        ``peer`` None keeps the peer (a health check from the proxy itself):
        the proxy's address is then both.
        """
        with self._lock:
            record.proxy_address = record.peer
            if peer is not None:
                record.peer = peer

    def count(self, name: str, n: int = 1) -> int:
        """Add ``n`` to the counter ``name`` (created at 0); return its new value.

        Servers count the bounds they hit here (``too_long``,
        ``backpressure``, ``accept_paused``, ``idle_timeout`` ...), so they
        are visible in ``statistics()`` next to the states.
        """
        with self._lock:
            value = self.counters.get(name, 0) + n
            self.counters[name] = value
        return value

    def _forget(self, record: Record, event: Event, final: State) -> None:
        self._by_request.pop(id(record.request), None)
        if self._records.pop(record.id, None) is None:
            return  # already removed (by a removal that an exception cut short)
        self._live_kinds[record.kind] -= 1
        self.ended_bytes_in += record.bytes_in
        self.ended_bytes_out += record.bytes_out
        record.request = None  # do not keep a closed socket alive through the record
        if final is _FAILED:
            self.totals["failed"] += 1
        elif event is _REJECT:
            self.totals["rejected"] += 1
        elif event is _ABORT:
            self.totals["aborted"] += 1
        else:
            self.totals["finished"] += 1

    def watched(self) -> bool:
        """Is anyone watching the moves: an observer, or the trace at DEBUG?

        A framed connection asks once per read; if nobody watches, it makes
        the moves of a message handled within that read by assignment (see
        ``Connection._pump``): rule 1's lookups and rule 3's reports would
        have nobody to tell.
        """
        return bool(self._observers) or trace.isEnabledFor(_DEBUG)

    # ------------------------------------------------------------- reading

    def find(self, request: Any) -> Record | None:
        """The live record whose request is ``request`` (by identity), or None."""
        record = self._by_request.get(id(request))
        return record if record is not None and record.request is request else None

    def __len__(self) -> int:
        return len(self._records)

    def live(self, *kinds: Kind) -> int:
        """How many live records there are of the given kinds (all kinds if none given)."""
        if not kinds:
            return len(self._records)
        return sum(self._live_kinds.get(kind, 0) for kind in kinds)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.snapshot())

    def snapshot(self) -> list[Record]:
        """The live records, oldest first (a copy: safe to keep and iterate)."""
        with self._lock:
            return list(self._records.values())

    def counts(self) -> dict[str, int]:
        """How many live records are in each state, by state name."""
        counts: dict[str, int] = {}
        for record in self.snapshot():
            counts[record.state.name] = counts.get(record.state.name, 0) + 1
        return counts

    def statistics(self) -> dict[str, Any]:
        """Live counts by state, lifetime totals and bound counters, for logs and dashboards."""
        with self._lock:
            totals = dict(self.totals)
            counters = dict(self.counters)
        return {"live": len(self._records), "states": self.counts(), **totals, "counters": counters}

    def describe(self) -> list[dict[str, Any]]:
        """One dict per live record: id, family, peer, state, bytes in/out, age in seconds."""
        now = self.clock()
        return [
            {
                "id": r.id,
                "family": r.family,
                "peer": r.peer,
                "state": r.state.name,
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
                "age": now - r.created,
            }
            for r in self.snapshot()
        ]

    # ------------------------------------------------------------- tracing

    def add_observer(self, callback: Callable[[Record, State | None, Event | None, State, str], None]) -> None:
        """Call ``callback(record, old_state, event, new_state, reason)`` on every change.

        For a new record ``old_state`` and ``event`` are None.  Observers run
        on whichever thread made the change; an exception from one is logged
        on the ``reactor`` logger and does not stop the request or the others.
        """
        self._observers.append(callback)

    def remove_observer(self, callback: Callable[..., None]) -> None:
        self._observers.remove(callback)

    def _report(self, record: Record, old: State | None, event: Event | None, new: State, reason: Any) -> None:
        # Callers may pass a byte count (an int, shown as "41 B") or an object
        # that formats itself only now, so nothing is formatted unless read.
        reason = f"{reason} B" if type(reason) is int else str(reason)
        if trace.isEnabledFor(logging.DEBUG):
            where = f"{self.name} " if self.name else ""
            if old is None:
                trace.debug("%s#%d %s: %s", where, record.id, new.name, reason)
            else:
                trace.debug(
                    "%s#%d %s -> %s: %s%s",
                    where, record.id, old.name, new.name, event.name.lower(), f" ({reason})" if reason else "",
                )  # fmt: skip
        for callback in tuple(self._observers):
            try:
                callback(record, old, event, new, reason)
            except Exception:
                # An observer watches; it must not be able to strand the
                # request it watches (the transition has already happened).
                log.exception("observer %r failed on %r", callback, record)

    def __repr__(self) -> str:
        return f"<RequestTable {self.name!r} live={len(self._records)} {self.counts()}>"
