"""``GET /metrics``: a reactor's numbers in the Prometheus text exposition format (version 0.0.4).

Every metric is named ``reactor_...``; per-server ones carry a ``server``
label, the request table's name (``tcp4 127.0.0.1:9000``), and under
worker processes a ``worker`` label too.  What each one means is in
docs/metrics.md.  The text is written from a SNAPSHOT (feed.py: the same
object ``/table.json`` serves), so that whatever a snapshot says, the
page and the metrics say alike: serving a scrape costs one snapshot, and
nothing between scrapes.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..states import FINAL_STATES, TRANSITIONS, Kind

__all__ = ["render", "Exposition", "CONTENT_TYPE", "PER_SERVER", "PER_LOOP"]

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


class Exposition:
    """Text being written in the exposition format: each metric's HELP and TYPE once, then its samples;
    ``text()`` the bytes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help: str, samples: Iterable[tuple[dict[str, Any], float]]) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


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
    "reactor_handler_runs_total": (
        "counter", "Handler runs that ended (finish_request calls; forked children), counted since the dashboard "
        "started timing the server."),
    "reactor_handler_seconds_total": (
        "counter", "Seconds handlers ran, on the loop, on worker threads or in forked children (a child: from "
        "fork to exit), counted since the dashboard started timing the server."),
}  # fmt: skip

#: The loop's metrics: name -> (type, help, what of LOOP's ``totals`` it is).
PER_LOOP = {
    "reactor_loop_wakeups_total": ("counter", "Times the loop woke from select(), by why.", "why"),
    "reactor_loop_ready_descriptors_total": ("counter", "Descriptors select() returned ready, summed.", "ready"),
    "reactor_loop_busy_seconds_total": (
        "counter", "Seconds the loop spent running callbacks, inline handlers included.", "busy"),
    "reactor_loop_wait_seconds_total": ("counter", "Seconds the loop spent waiting in select().", "waiting"),
}  # fmt: skip


def _server_samples(server: dict[str, Any], samples: dict[str, list[tuple[dict[str, Any], float]]]) -> None:
    """Add the samples of one SERVER object of a snapshot."""
    labels = {"server": server.get("table", server["name"])}
    if "worker" in server:
        labels["worker"] = server["worker"]
    totals = server["totals"]
    samples["reactor_server_info"].append(({
        **labels, "kind": server["kind"], "handler": server["handler"], "strategy": server["strategy"],
        "dashboard": str(server["dashboard"]).lower(),
    }, 1))  # fmt: skip
    samples["reactor_requests_opened_total"].append((labels, totals["opened"]))
    samples["reactor_requests_total"] += [({**labels, "outcome": o}, totals[o]) for o in _OUTCOMES]
    samples["reactor_received_bytes_total"].append((labels, server["bytes_in"]))
    samples["reactor_sent_bytes_total"].append((labels, server["bytes_out"]))
    states = dict.fromkeys(_live_states(Kind(server["kind"])), 0)
    states.update(server["states"])
    samples["reactor_records"] += [({**labels, "state": state}, n) for state, n in states.items()]
    counters = sorted(server["counters"].items())
    samples["reactor_table_counter_total"] += [({**labels, "counter": name}, n) for name, n in counters]
    handlers = server.get("handlers")
    if handlers is not None:
        samples["reactor_handler_runs_total"].append((labels, handlers["runs"]))
        samples["reactor_handler_seconds_total"].append((labels, handlers["seconds"]))


def render(snapshot: dict[str, Any]) -> bytes:
    """The exposition of a SNAPSHOT (``Feed.snapshot()``; under workers, the supervisor's merged one).

    The loop's metrics come from the snapshot's ``loop["totals"]``, or, when
    it has ``workers`` (each ``{"worker": N, "loop": LOOP, ...}``), from each
    worker's loop with a ``worker`` label.
    """
    samples: dict[str, list[tuple[dict[str, Any], float]]] = {name: [] for name in PER_SERVER}
    for server in snapshot["servers"]:
        _server_samples(server, samples)
    out = Exposition()
    for name, (kind_of_metric, help) in PER_SERVER.items():
        out.metric(name, kind_of_metric, help, samples[name])
    if "workers" in snapshot:
        loops = [({"worker": w["worker"]}, w["loop"]) for w in snapshot["workers"] if w.get("loop")]
    else:
        loops = [({}, snapshot["loop"])] if snapshot.get("loop") else []
    for name, (kind_of_metric, help, field) in PER_LOOP.items():
        loop_samples: list[tuple[dict[str, Any], float]] = []
        for labels, loop in loops:
            value = loop["totals"][field]
            if isinstance(value, dict):
                loop_samples += [({**labels, "reason": reason}, n) for reason, n in value.items()]
            else:
                loop_samples.append((labels, value))
        out.metric(name, kind_of_metric, help, loop_samples)
    return out.text()
