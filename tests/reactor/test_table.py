"""reactor.table: the state machine, the table's bookkeeping, observers, tracing, threads."""

from __future__ import annotations

import logging
import socket
import sys
import threading

import pytest
from conftest import CLIENT_TIMEOUT

import reactor
from reactor.table import FINAL_STATES, INITIAL_STATE, TRANSITIONS, Event, Kind, RequestTable, State, family_name

S, E = State, Event
PEER = ("127.0.0.1", 40000)

#: TLS's handshake, for a connection of either kind (reactor/tls.py).
TLS = {
    (S.ACCEPTED, E.HANDSHAKE): S.HANDSHAKING,
    (S.HANDSHAKING, E.SECURED): S.ACCEPTED,
    (S.HANDSHAKING, E.ABORT): S.CLOSED,
}

#: The PROXY protocol's header, for a connection of either kind (reactor/proxy.py).
PROXY = {
    (S.ACCEPTED, E.PROXY): S.PROXYING,
    (S.PROXYING, E.PROXIED): S.ACCEPTED,
    (S.PROXYING, E.ABORT): S.CLOSED,
}

#: The machine as the module docstring and the Event comments document it.
DOCUMENTED = {
    Kind.STREAM: {
        (S.ACCEPTED, E.WAIT): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.READY, E.ERROR): S.FAILED,
        (S.ACCEPTED, E.DISPATCH): S.PROCESSING,
        (S.ACCEPTED, E.REJECT): S.CLOSED,
        (S.ACCEPTED, E.ERROR): S.FAILED,
        (S.PROCESSING, E.FINISH): S.CLOSED,
        (S.PROCESSING, E.ERROR): S.FAILED,
        **TLS,
        **PROXY,
    },
    Kind.CONNECTION: {
        **PROXY,
        **TLS,
        (S.ACCEPTED, E.START): S.READING,
        (S.ACCEPTED, E.REJECT): S.CLOSED,
        (S.READING, E.MESSAGE): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.PROCESSING, E.REPLY): S.READING,
        (S.PROCESSING, E.BACKLOG): S.WRITING,
        (S.WRITING, E.DRAINED): S.READING,
        (S.READING, E.EOF): S.CLOSING,
        (S.READING, E.CLOSE): S.CLOSING,
        (S.READING, E.PROTOCOL): S.CLOSING,
        (S.WRITING, E.CLOSE): S.CLOSING,
        (S.CLOSING, E.FINISH): S.CLOSED,
        **{
            (state, E.ABORT): S.CLOSED
            for state in (S.ACCEPTED, S.PROXYING, S.READING, S.READY, S.PROCESSING, S.WRITING, S.CLOSING)
        },
        # A failure sends the replies made before it (CLOSING), then ends FAILED.
        **{(state, E.ERROR): S.CLOSING for state in (S.READING, S.READY, S.PROCESSING, S.WRITING)},
        (S.ACCEPTED, E.ERROR): S.FAILED,
        (S.CLOSING, E.ERROR): S.FAILED,
    },
    Kind.DATAGRAM: {
        (S.RECEIVED, E.WAIT): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.READY, E.ERROR): S.FAILED,
        (S.RECEIVED, E.DISPATCH): S.PROCESSING,
        (S.RECEIVED, E.REJECT): S.DONE,
        (S.RECEIVED, E.ERROR): S.FAILED,
        (S.PROCESSING, E.FINISH): S.DONE,
        (S.PROCESSING, E.ERROR): S.FAILED,
        (S.PROCESSING, E.QUEUE): S.SENDING,
        (S.SENDING, E.FINISH): S.SENDING,
        (S.SENDING, E.SENT): S.DONE,
        (S.SENDING, E.DROP): S.FAILED,
        (S.SENDING, E.ERROR): S.FAILED,
    },
    Kind.CHILD: {
        (S.PROCESSING, E.FINISH): S.DONE,
        (S.PROCESSING, E.ERROR): S.FAILED,
    },
}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Request:
    """Stands in for a socket or a (data, socket) pair: the table only needs its identity."""

    def __eq__(self, other: object) -> bool:  # every Request is equal: find() must not care
        return isinstance(other, Request)

    __hash__ = object.__hash__


def path_to(kind: Kind, target: State) -> list[Event]:
    """The shortest list of legal events that takes a new record of ``kind`` to ``target``."""
    paths = {INITIAL_STATE[kind]: []}
    frontier = [INITIAL_STATE[kind]]
    while frontier:
        state = frontier.pop(0)
        for (old, event), new in TRANSITIONS[kind].items():
            if old is state and new not in paths:
                paths[new] = paths[state] + [event]
                frontier.append(new)
    return paths[target]


def states_of(kind: Kind) -> list[State]:
    return [INITIAL_STATE[kind], *dict.fromkeys(new for new in TRANSITIONS[kind].values())]


def open_record(table: RequestTable, kind: Kind, request: object | None = None, family: int = socket.AF_INET,
                peer: object = PEER):  # fmt: skip
    return table.open(kind, request if request is not None else Request(), peer, family)


LEGAL = [
    pytest.param(kind, old, event, new, id=f"{kind.name}-{old.name}-{event.name}")
    for kind, machine in TRANSITIONS.items()
    for (old, event), new in machine.items()
]
ILLEGAL = [
    pytest.param(kind, state, event, id=f"{kind.name}-{state.name}-{event.name}")
    for kind in Kind
    for state in states_of(kind)
    for event in Event
    if (state, event) not in TRANSITIONS[kind]
]


def test_transitions_are_the_documented_ones() -> None:
    assert TRANSITIONS == DOCUMENTED
    assert FINAL_STATES == {S.CLOSED, S.DONE, S.FAILED}
    for kind, machine in TRANSITIONS.items():
        assert not {old for old, _ in machine} & FINAL_STATES, f"{kind}: a final state has a way out"


@pytest.mark.parametrize(("kind", "old", "event", "new"), LEGAL)
def test_legal_transition(kind: Kind, old: State, event: Event, new: State) -> None:
    clock = FakeClock()
    table = RequestTable(clock=clock)
    record = open_record(table, kind)
    for step in path_to(kind, old):
        table.transition(record, step)
    assert record.state is old
    clock.now += 2.5
    assert table.transition(record, event, "because") is new
    assert record.state is new and record.changed == clock.now
    assert (record in table.snapshot()) == (new not in FINAL_STATES)


@pytest.mark.parametrize(("kind", "state", "event"), ILLEGAL)
def test_illegal_transition_raises_and_changes_nothing(kind: Kind, state: State, event: Event) -> None:
    table = RequestTable()
    open_record(table, kind)  # another record, so the error must name the right one
    record = open_record(table, kind)
    for step in path_to(kind, state):
        table.transition(record, step)
    live, totals, changed = len(table), dict(table.totals), record.changed
    with pytest.raises(reactor.TransitionError) as info:
        table.transition(record, event)
    assert isinstance(info.value, reactor.UsageError)
    message = str(info.value)
    assert f"#{record.id} " in message
    assert f"event {event.name}" in message and f"state {state.name}" in message
    assert (info.value.record, info.value.state, info.value.event) == (record, state, event)
    assert record.state is state and record.changed == changed
    assert (len(table), table.totals) == (live, totals)


FINALS = [
    pytest.param(kind, path, final, total, id=f"{kind.name}-{'-'.join(e.name for e in path)}")
    for kind, done in ((Kind.STREAM, S.CLOSED), (Kind.DATAGRAM, S.DONE))
    for path, final, total in (
        ([E.DISPATCH, E.FINISH], done, "finished"),
        ([E.REJECT], done, "rejected"),
        ([E.ERROR], S.FAILED, "failed"),
        ([E.DISPATCH, E.ERROR], S.FAILED, "failed"),
    )
]


@pytest.mark.parametrize(("kind", "path", "final", "total"), FINALS)
def test_final_state_leaves_the_table(kind: Kind, path: list[Event], final: State, total: str) -> None:
    table = RequestTable()
    other_request, request = Request(), Request()
    other = open_record(table, kind, other_request)
    record = open_record(table, kind, request)
    assert len(table) == 2 and table.find(request) is record
    for event in path:
        table.transition(record, event)
    assert record.state is final
    assert len(table) == 1 and table.snapshot() == [other] and list(table) == [other]
    assert table.find(request) is None and table.find(other_request) is other
    expected = {"opened": 2, "finished": 0, "rejected": 0, "aborted": 0, "failed": 0}
    expected[total] += 1
    assert table.totals == expected


def test_find_is_by_identity() -> None:
    table = RequestTable()
    request, lookalike = Request(), Request()
    assert request == lookalike
    record = open_record(table, Kind.STREAM, request)
    assert table.find(request) is record
    assert table.find(lookalike) is None
    assert table.finish(lookalike) is None and record.state is S.ACCEPTED


def test_finish() -> None:
    table = RequestTable()
    request = Request()
    record = open_record(table, Kind.STREAM, request)
    table.transition(record, E.DISPATCH)
    assert table.finish(request) is record and record.state is S.CLOSED
    totals = dict(table.totals)
    assert table.finish(request) is None  # shutdown_request then close_request: the second is a no-op
    assert table.finish(request, E.ERROR) is None
    assert table.finish(Request()) is None
    assert table.totals == totals and record.state is S.CLOSED and len(table) == 0


@pytest.mark.parametrize("kind", list(Kind))
def test_finish_with_error_fails_the_record(kind: Kind) -> None:
    table = RequestTable()
    request = Request()
    record = open_record(table, kind, request)
    assert table.finish(request, E.ERROR, "handler raised") is record
    assert record.state is S.FAILED and len(table) == 0
    assert table.totals == {"opened": 1, "finished": 0, "rejected": 0, "aborted": 0, "failed": 1}


def test_counts_statistics_and_describe() -> None:
    clock = FakeClock(50.0)
    table = RequestTable(clock=clock)
    first = table.open(Kind.STREAM, Request(), PEER, socket.AF_INET)
    clock.now = 52.0
    second = table.open(Kind.STREAM, Request(), ("::1", 9, 0, 0), socket.AF_INET6)
    third = table.open(Kind.DATAGRAM, Request(), "/tmp/peer", socket.AF_UNIX, size=12)
    gone = open_record(table, Kind.DATAGRAM)
    table.transition(first, E.DISPATCH)  # age counts from arrival, not from the last change
    table.transition(gone, E.REJECT)
    clock.now = 53.5
    table.count("too_long")
    assert table.count("too_long") == 2
    assert table.counts() == {"ACCEPTED": 1, "PROCESSING": 1, "RECEIVED": 1}
    assert table.statistics() == {
        "live": 3,
        "states": {"ACCEPTED": 1, "PROCESSING": 1, "RECEIVED": 1},
        "opened": 4, "finished": 0, "rejected": 1, "aborted": 0, "failed": 0,
        "counters": {"too_long": 2},
    }  # fmt: skip
    rows = table.describe()
    assert [row["id"] for row in rows] == [first.id, second.id, third.id]
    assert rows[0] == {
        "id": first.id, "family": "tcp4", "peer": PEER, "state": "PROCESSING",
        "bytes_in": 0, "bytes_out": 0, "age": pytest.approx(3.5),
    }  # fmt: skip
    assert (rows[1]["family"], rows[1]["state"], rows[1]["age"]) == ("tcp6", "ACCEPTED", pytest.approx(1.5))
    assert (rows[2]["family"], rows[2]["peer"], rows[2]["bytes_in"]) == ("unix-dgram", "/tmp/peer", 12)


def test_ids_are_unique_and_never_reused() -> None:
    table = RequestTable()
    ids = []
    for _ in range(5):
        record = open_record(table, Kind.DATAGRAM)
        ids.append(record.id)
        table.transition(record, E.REJECT)
    assert len(set(ids)) == 5 and ids == sorted(ids)


def test_record_repr_shows_id_and_state_name() -> None:
    table = RequestTable()
    record = open_record(table, Kind.STREAM)
    assert f"#{record.id}" in repr(record) and "ACCEPTED" in repr(record)
    table.transition(record, E.DISPATCH)
    assert "PROCESSING" in repr(record) and "ACCEPTED" not in repr(record)


@pytest.mark.parametrize(
    ("family", "kind", "label"),
    [
        (socket.AF_INET, Kind.STREAM, "tcp4"),
        (socket.AF_INET6, Kind.STREAM, "tcp6"),
        (socket.AF_INET, Kind.DATAGRAM, "udp4"),
        (socket.AF_INET6, Kind.DATAGRAM, "udp6"),
        (socket.AF_UNIX, Kind.STREAM, "unix"),
        (socket.AF_UNIX, Kind.DATAGRAM, "unix-dgram"),
    ],
)
def test_family_names(family: int, kind: Kind, label: str) -> None:
    assert family_name(family, kind) == label
    assert RequestTable().open(kind, Request(), PEER, family).family == label


# --------------------------------------------------------- observers, trace


def test_observers_see_every_change_until_removed() -> None:
    table = RequestTable()
    seen: list[tuple] = []
    also: list[tuple] = []

    def observer(*args: object) -> None:
        seen.append(args)

    table.add_observer(observer)
    table.add_observer(lambda *args: also.append(args))
    record = open_record(table, Kind.STREAM)
    table.transition(record, E.DISPATCH, "dispatched")
    assert [args[:4] for args in seen] == [(record, None, None, S.ACCEPTED), (record, S.ACCEPTED, E.DISPATCH, S.PROCESSING)]
    assert isinstance(seen[0][4], str) and seen[1][4] == "dispatched"
    table.remove_observer(observer)
    table.transition(record, E.FINISH)
    open_record(table, Kind.DATAGRAM)
    assert len(seen) == 2
    assert len(also) == 4 and also[2][1:] == (S.PROCESSING, E.FINISH, S.CLOSED, "")


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO], ids=["DEBUG", "INFO"])
def test_transitions_are_traced_only_at_debug(caplog: pytest.LogCaptureFixture, level: int) -> None:
    caplog.set_level(level, logger="reactor.trace")
    table = RequestTable("tcp4 127.0.0.1:1")
    record = open_record(table, Kind.STREAM)
    table.transition(record, E.DISPATCH)
    table.transition(record, E.FINISH, "client left")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "reactor.trace"]
    if level > logging.DEBUG:
        assert lines == []
        return
    assert any(f"#{record.id} ACCEPTED" in line and "->" not in line for line in lines)  # its arrival
    assert any(f"#{record.id} ACCEPTED -> PROCESSING" in line for line in lines)
    closed = [line for line in lines if f"#{record.id} PROCESSING -> CLOSED" in line]
    assert len(closed) == 1 and "client left" in closed[0] and "tcp4 127.0.0.1:1" in closed[0]


# ----------------------------------------------------------------- threads


@pytest.mark.timeout(10)
def test_concurrent_open_and_finish() -> None:
    threads, per_thread = 4, 500
    table = RequestTable()
    observed: list[object] = []
    table.add_observer(lambda record, *rest: observed.append(record.id))
    ids: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    endings = [[E.DISPATCH, E.FINISH], [E.REJECT], [E.DISPATCH, E.ERROR]]

    def work(n: int) -> None:
        try:
            start.wait(CLIENT_TIMEOUT)
            for i in range(per_thread):
                request = Request()
                record = open_record(table, Kind.STREAM if i % 2 else Kind.DATAGRAM, request)
                ids[n].append(record.id)
                *steps, last = endings[i % 3]
                for event in steps:
                    table.transition(record, event)
                assert table.finish(request, last) is record
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,), name=f"table worker {n}") for n in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so that races show
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(CLIENT_TIMEOUT)
    finally:
        sys.setswitchinterval(interval)
    assert not any(worker.is_alive() for worker in workers) and errors == []
    total = threads * per_thread
    per_ending = [sum(1 for i in range(per_thread) if i % 3 == k) * threads for k in range(3)]
    assert len(table) == 0 and table.snapshot() == [] and table.counts() == {}
    assert table.totals == {
        "opened": total, "finished": per_ending[0], "rejected": per_ending[1], "aborted": 0, "failed": per_ending[2],
    }  # fmt: skip
    assert sorted(i for chunk in ids for i in chunk) == list(range(1, total + 1))
    assert len(observed) == total + sum(len(e) * c for e, c in zip(endings, per_ending))


def test_finish_after_a_removal_cut_short_removes_quietly():
    # A KeyboardInterrupt can land anywhere; the lifecycle's clean-up then
    # calls finish(request, ERROR).  A record caught between its final
    # state and its removal must be removed, not raise TransitionError.
    table = RequestTable()
    request = object()
    record = table.open(Kind.DATAGRAM, request, "peer", socket.AF_INET)
    record.state = State.DONE  # as if interrupted right after the state change
    assert table.finish(request, Event.ERROR, "KeyboardInterrupt/SystemExit") is None
    assert len(table) == 0 and table.find(request) is None
    assert table.totals["finished"] == 1 and table.live() == 0


def test_a_final_transition_leaves_the_table_before_the_state_changes():
    seen: list[tuple[int, State]] = []
    table = RequestTable(clock=lambda: 0.0)
    request = object()
    record = table.open(Kind.DATAGRAM, request, "peer", socket.AF_INET)
    table.transition(record, Event.DISPATCH)

    class Watch(dict):  # the table's record map, watched as the record leaves it
        def pop(self, key, default=None):
            seen.append((key, record.state))
            return super().pop(key, default)

    table._records = Watch(table._records)
    table.transition(record, Event.FINISH)
    assert seen == [(record.id, State.PROCESSING)] and record.state is State.DONE


def test_the_quiet_pumps_moves_are_the_tables_own() -> None:
    """Connection._pump moves a record by assignment when nobody watches; each move must be the table's."""
    machine = TRANSITIONS[Kind.CONNECTION]
    assert machine[(machine[(S.READING, E.MESSAGE)], E.DISPATCH)] is S.PROCESSING  # READING -> PROCESSING
    assert machine[(S.PROCESSING, E.REPLY)] is S.READING  # PROCESSING -> READING


def test_peers_are_described_for_people() -> None:
    from reactor.table import describe_peer

    assert describe_peer("") == describe_peer(b"") == describe_peer(None) == "an unnamed Unix socket"
    assert describe_peer(("127.0.0.1", 5000)) == "('127.0.0.1', 5000)"
    assert describe_peer("/run/app.sock") == "'/run/app.sock'"


def test_the_trace_says_an_unnamed_unix_socket_and_what_a_child_runs(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    table = RequestTable("unix /tmp/s.sock")
    conn = open_record(table, Kind.STREAM, family=socket.AF_UNIX, peer="")
    table.open(Kind.CHILD, 4242, 4242, socket.AF_UNIX, what=f"new child, pid 4242, running #{conn.id}")
    lines = [r.getMessage() for r in caplog.records if r.name == "reactor.trace"]
    assert lines == ["unix /tmp/s.sock #1 ACCEPTED: new unix request from an unnamed Unix socket",
                     "unix /tmp/s.sock #2 PROCESSING: new child, pid 4242, running #1"]
