"""``GET /metrics``: a reactor's numbers in the Prometheus text exposition format (version 0.0.4).

Every metric is named ``reactor_...``; per-server ones carry a ``server``
label, the request table's name (``tcp4 127.0.0.1:9000``).  What each one
means is in docs/metrics.md.  The text is built from what the servers and
the loop already count: serving a scrape costs one pass over each table's
live records, and nothing between scrapes.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..states import FINAL_STATES, TRANSITIONS, Kind
from .feed import counted, server_kind, strategy_text

__all__ = ["render", "CONTENT_TYPE", "PER_SERVER"]

#: The content type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_OUTCOMES = ("finished", "rejected", "aborted", "failed")


def _escape(value: Any) -> str:
    """A label value, escaped as the text format asks (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class _Text:
    """The exposition being written: each metric's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help: str, samples: Iterable[tuple[dict[str, Any], float]]) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")


def _live_states(kind: Kind) -> list[str]:
    """Every state a record of ``kind`` can be in while live, in the order of the state machine."""
    seen: dict[str, None] = {}
    for (old, _), new in TRANSITIONS[kind].items():
        for state in (old, new):
            if state not in FINAL_STATES:
                seen[state.name] = None
    return list(seen)


#: The per-server metrics: name -> (type, help), in the order they are written.
PER_SERVER = {
    "reactor_server_info": ("gauge", "A server the reactor serves (always 1), described by its labels."),
    "reactor_requests_opened_total": (
        "counter", "Requests (connections, datagrams, forked children) that entered the request table."),
    "reactor_requests_total": ("counter", "Requests handled: records that left the request table, by outcome."),
    "reactor_received_bytes_total": ("counter", "Bytes the reactor read for the server's requests."),
    "reactor_sent_bytes_total": ("counter", "Bytes the reactor sent for the server's requests."),
    "reactor_records": ("gauge", "Live records in the request table, by state."),
    "reactor_table_counter_total": (
        "counter", "Every counter of the request table: each bound or trouble met, by name."),
}  # fmt: skip


def render(servers: Iterable[Any], stats: Any = None, dashboard_server: Any = None) -> bytes:
    """The exposition for ``servers`` (a reactor's) and its ``stats`` (a ``LoopStats``, or None)."""
    samples: dict[str, list[tuple[dict[str, Any], float]]] = {name: [] for name in PER_SERVER}
    for server in servers:
        table = server.request_table
        records = table.snapshot()
        numbers = counted(table)
        totals = numbers["totals"]
        labels = {"server": table.name}
        kind = server_kind(server)
        samples["reactor_server_info"].append(({
            **labels, "kind": kind.value, "handler": getattr(server.RequestHandlerClass, "__name__", "?"),
            "strategy": strategy_text(server.dispatch), "dashboard": str(server is dashboard_server).lower(),
        }, 1))  # fmt: skip
        samples["reactor_requests_opened_total"].append((labels, totals["opened"]))
        samples["reactor_requests_total"] += [({**labels, "outcome": o}, totals[o]) for o in _OUTCOMES]
        samples["reactor_received_bytes_total"].append((labels, table.ended_bytes_in + sum(r.bytes_in for r in records)))
        samples["reactor_sent_bytes_total"].append((labels, table.ended_bytes_out + sum(r.bytes_out for r in records)))
        states = dict.fromkeys(_live_states(kind), 0)
        for record in records:
            states[record.state.name] = states.get(record.state.name, 0) + 1
        samples["reactor_records"] += [({**labels, "state": state}, n) for state, n in states.items()]
        counters = sorted(numbers["counters"].items())
        samples["reactor_table_counter_total"] += [({**labels, "counter": name}, n) for name, n in counters]
    out = _Text()
    for name, (kind_of_metric, help) in PER_SERVER.items():
        out.metric(name, kind_of_metric, help, samples[name])
    if stats is not None:
        out.metric("reactor_loop_wakeups_total", "counter", "Times the loop woke from select(), by why.",
                   [({"reason": reason}, n) for reason, n in stats.why.items()])  # fmt: skip
        out.metric("reactor_loop_ready_descriptors_total", "counter", "Descriptors select() returned ready, summed.",
                   [({}, stats.ready)])  # fmt: skip
        out.metric("reactor_loop_busy_seconds_total", "counter",
                   "Seconds the loop spent running callbacks, inline handlers included (time in handlers).",
                   [({}, stats.busy)])  # fmt: skip
        out.metric("reactor_loop_wait_seconds_total", "counter", "Seconds the loop spent waiting in select().",
                   [({}, stats.waiting)])  # fmt: skip
    return ("\n".join(out.lines) + "\n").encode()
