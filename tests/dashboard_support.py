"""A stand-in for the dashboard's HTTP side, and a reader of the page's rendered DOM.

``StandIn`` serves the real page (``render_page()``) with ``http.server``
on a thread, and feeds it made-up data in the shapes the dashboard's
contract gives (``/table.json``: a SNAPSHOT; ``/events``: ``event:
snapshot`` then ``event: update`` four times a second): records of a framed
TCP server and a UDP server walking ``reactor.states.TRANSITIONS`` at
random (a fixed seed).  The browser tests use it where the real dashboard
(``reactor.add_dashboard``) is not there; scripts/dashboard_screenshot.py
too, saying so.

``Dom`` reads what a test needs from chromium's ``--dump-dom`` output.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import pathlib
import random
import threading
import time
from html.parser import HTMLParser
from types import ModuleType
from typing import Any

from reactor.dashboard.page import render_page
from reactor.states import FINAL_STATES, INITIAL_STATE, TRANSITIONS, Event, Kind


def load_script() -> ModuleType:
    """scripts/dashboard_screenshot.py as a module: its ``Browser``, ``find_chromium`` and ``stale``."""
    path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "dashboard_screenshot.py"
    spec = importlib.util.spec_from_file_location("dashboard_screenshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

TICK = 0.25  # seconds between updates (the contract: at most 4 a second)
SOMETIMES = {Event.EOF: 0.5}  # a connection answers a few lines before its client closes
RARE = {Event.ERROR, Event.ABORT, Event.REJECT, Event.PROTOCOL, Event.DROP, Event.CLOSE}
NEVER = {Event.PROXY, Event.HANDSHAKE, Event.WAIT}  # the made-up servers have no PROXY, no TLS, free workers
COUNTED = {Event.BACKLOG: "backpressure", Event.PROTOCOL: "too_long", Event.QUEUE: "replies_queued",
           Event.DROP: "replies_dropped"}  # fmt: skip


class FakeServer:
    """One made-up server: its records (dicts in the contract's shape), counters and totals."""

    def __init__(self, name: str, kind: Kind, family: str, handler: str, strategy: str) -> None:
        self.name, self.kind, self.family, self.handler, self.strategy = name, kind, family, handler, strategy
        self.records: dict[int, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self.totals = {"opened": 0, "finished": 0, "rejected": 0, "aborted": 0, "failed": 0}

    def describe(self, now: float) -> dict[str, Any]:
        states: dict[str, int] = {}
        for record in self.records.values():
            states[record["state"]] = states.get(record["state"], 0) + 1
        records = [{**r, "age": round(now - r["opened"], 3), "since": round(now - r["entered"], 3)}
                   for r in self.records.values()]  # fmt: skip
        for r in records:
            del r["opened"], r["entered"]
        return {"name": self.name, "kind": self.kind.value, "family": self.family,
                "address": self.name.split()[1], "handler": self.handler, "strategy": self.strategy,
                "tls": False, "proxy": False, "dashboard": False, "states": states, "records": records,
                "counters": dict(self.counters), "totals": dict(self.totals),
                "bytes_in": sum(r["bytes_in"] for r in records), "bytes_out": sum(r["bytes_out"] for r in records),
                "handlers": {"busy": 0.05, "runs_per_s": 120.0, "per_run": 0.0004, "runs": 1200, "seconds": 0.5}}  # fmt: skip


class Simulation:
    """Made-up servers whose records walk the state machine, one ``step()`` at a time."""

    def __init__(self, seed: int = 15) -> None:
        self.random = random.Random(seed)
        self.start = time.monotonic()
        self.next_id = 1
        self.steps = 0
        self.servers = [
            FakeServer("tcp4 127.0.0.1:9000", Kind.CONNECTION, "tcp4", "LineEcho", "threads:4"),
            FakeServer("udp4 127.0.0.1:9001", Kind.DATAGRAM, "udp4", "LineEcho", "inline"),
        ]

    def now(self) -> float:
        return time.monotonic() - self.start

    def step(self) -> list[dict[str, Any]]:
        """Open a few records and move some; return the transitions made (the contract's shape)."""
        self.steps += 1
        now, moves = self.now(), []
        for server in self.servers:
            for _ in range(self.random.randint(1, 3)):
                record_id, self.next_id = self.next_id, self.next_id + 1
                state = INITIAL_STATE[server.kind].name
                peer = f"127.0.0.1:{40000 + record_id}"
                server.records[record_id] = {"id": record_id, "state": state, "peer": peer, "opened": now,
                                             "entered": now, "bytes_in": 0, "bytes_out": 0}  # fmt: skip
                server.totals["opened"] += 1
                moves.append({"t": round(now, 3), "server": server.name, "id": record_id, "old": None,
                              "event": None, "new": state, "reason": f"from {peer}"})  # fmt: skip
            for record in list(server.records.values()):
                if self.random.random() < 0.45:
                    moves.extend(self.move(server, record, now))
        return moves

    def move(self, server: FakeServer, record: dict[str, Any], now: float) -> list[dict[str, Any]]:
        table = TRANSITIONS[server.kind]
        choices = [(event, new) for (state, event), new in table.items()
                   if state.name == record["state"] and event not in NEVER]  # fmt: skip
        if not choices:
            return []
        weights = [0.03 if event in RARE else SOMETIMES.get(event, 1.0) for event, _ in choices]
        event, new = self.random.choices(choices, weights)[0]
        reason = ""
        if event is Event.MESSAGE:
            size = self.random.randint(8, 60)
            record["bytes_in"] += size
            reason = f"{size} B"
        elif event in (Event.REPLY, Event.SENT, Event.FINISH) and record["bytes_in"] > record["bytes_out"]:
            reason = f"{record['bytes_in'] - record['bytes_out']} B"
            record["bytes_out"] = record["bytes_in"]
        if event in COUNTED:
            server.counters[COUNTED[event]] = server.counters.get(COUNTED[event], 0) + 1
        old, record["state"], record["entered"] = record["state"], new.name, now
        if new in FINAL_STATES:
            del server.records[record["id"]]
            total = {Event.REJECT: "rejected", Event.ABORT: "aborted"}.get(event, "finished")
            server.totals["failed" if new.name == "FAILED" else total] += 1
        return [{"t": round(now, 3), "server": server.name, "id": record["id"], "old": old,
                 "event": event.name.lower(), "new": new.name, "reason": reason}]  # fmt: skip

    def loop(self) -> dict[str, Any]:
        wakeups = 40.0 + 20 * self.random.random()
        ready, timers = wakeups * 0.7, wakeups * 0.2
        return {"wakeups_per_s": round(wakeups, 1),
                "why_per_s": {"ready": round(ready, 1), "timers": round(timers, 1),
                              "wakeup": round(wakeups * 0.05, 1), "timeout": round(wakeups * 0.05, 1)},
                "busy_share": round(0.1 + 0.2 * self.random.random(), 3), "wait_share": 0.75,
                "ready_per_wakeup": 1.4}  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        now = self.now()
        return {"time": round(now, 3), "loop": self.loop(), "servers": [s.describe(now) for s in self.servers]}

    def update(self) -> dict[str, Any]:
        transitions = self.step()
        return {**self.snapshot(), "transitions": transitions}


class StandIn:
    """The page and a simulated feed on ``http://127.0.0.1:PORT/``, for at most ``duration`` seconds.

    One simulation, advanced every TICK by a thread of its own, as the real
    dashboard's tables change whether anyone watches or not: each
    ``/events`` stream gets a snapshot, then every update made after it.  A
    context manager: on exit the ticking stops, every stream ends, the
    server is closed and its threads joined.
    """

    def __init__(self, duration: float = 30.0, seed: int = 15) -> None:
        self.duration = duration
        self.simulation = Simulation(seed)
        self.changed = threading.Condition()  # guards the simulation and the updates
        self.updates: list[str] = []  # every update made, as JSON text
        self.stopping = threading.Event()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: the tests read what matters
                pass

            def do_GET(self) -> None:
                if self.path == "/":
                    self.reply(200, "text/html; charset=utf-8", render_page())
                elif self.path == "/table.json":
                    with stand_in.changed:
                        snapshot = json.dumps(stand_in.simulation.snapshot())
                    self.reply(200, "application/json", snapshot.encode())
                elif self.path == "/events":
                    stand_in.stream(self)
                else:
                    self.reply(404, "text/plain", b"not found\n")

            def reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close() joins the streams
        self.threads = [
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="stand-in"),
            threading.Thread(target=self.tick, name="stand-in ticks"),
        ]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def tick(self) -> None:
        """Advance the simulation every TICK until stopped or ``duration`` is over."""
        deadline = time.monotonic() + self.duration
        while not self.stopping.wait(TICK) and time.monotonic() < deadline:
            with self.changed:
                self.updates.append(json.dumps(self.simulation.update()))
                self.changed.notify_all()

    def stream(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        """``/events``: a snapshot, then each update, until the end, or the client leaves."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.close_connection = True
        with self.changed:
            snapshot, sent = json.dumps(self.simulation.snapshot()), len(self.updates)
        try:
            handler.wfile.write(f"event: snapshot\ndata: {snapshot}\n\n".encode())
            handler.wfile.flush()
            while not self.stopping.is_set():
                with self.changed:
                    self.changed.wait_for(lambda: len(self.updates) > sent or self.stopping.is_set(), timeout=1)
                    new, sent = self.updates[sent:], len(self.updates)
                for update in new:
                    handler.wfile.write(f"event: update\ndata: {update}\n\n".encode())
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away

    def __enter__(self) -> StandIn:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join()


class Dom(HTMLParser):
    """What the rendered page shows, read from chromium's ``--dump-dom`` output.

    ``servers``: name -> {"live": int, "counts": {STATE: badge text},
    "chips": [text], "records": [(id, STATE)]}; ``transitions``: one dict per
    row of the list (server, id, old, new, and the row's text); ``body``: the
    body's attributes (``data-updates``, ``data-time``); ``status``: the
    connection status text.
    """

    def __init__(self, html: str) -> None:
        super().__init__()
        self.servers: dict[str, dict[str, Any]] = {}
        self.transitions: list[dict[str, Any]] = []
        self.body: dict[str, str] = {}
        self.status = ""
        self._server: dict[str, Any] | None = None
        self._into: tuple[Any, ...] | None = None  # where the next text goes
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        elif tag in ("section", "aside", "template"):  # a server's panel starts; anything else ends one
            self._server = None
            if tag == "section" and "data-server" in a:
                self._server = {"live": int(a.get("data-live", "0")), "counts": {}, "chips": [], "records": []}
                self.servers[a["data-server"]] = self._server
        elif tag == "span" and a.get("id") == "status":
            self._into = ("status",)
        elif self._server is not None and tag == "text" and "data-count" in a:
            self._into = ("count", a["data-count"])
        elif self._server is not None and tag == "span" and "chip" in a.get("class", "").split():
            self._into = ("chip",)
        elif self._server is not None and tag == "tr" and "data-state" in a:
            self._server["records"].append((int(a["data-id"]), a["data-state"]))
        elif tag == "tr" and "data-new" in a:
            self.transitions.append({"server": a["data-server"], "id": int(a["data-id"]), "old": a["data-old"],
                                     "new": a["data-new"], "text": ""})  # fmt: skip
            self._into = ("transition",)

    def handle_endtag(self, tag: str) -> None:
        inside_a_row = self._into is not None and self._into[0] == "transition"
        if tag == "tr" or (tag in ("text", "span") and not inside_a_row):
            self._into = None

    def handle_data(self, data: str) -> None:
        if not self._into:
            return
        if self._into[0] == "status":
            self.status += data
        elif self._into[0] == "count" and self._server is not None:
            self._server["counts"][self._into[1]] = data.strip()
        elif self._into[0] == "chip" and self._server is not None:
            self._server["chips"].append(data.strip())
        elif self._into[0] == "transition":
            self.transitions[-1]["text"] += data + " "

    def chip(self, server: str, name: str) -> int | None:
        """The number on a server's chip ``name`` (a counter or a total), or None."""
        for text in self.servers[server]["chips"]:
            label, _, number = text.rpartition(" ")
            if label == name:
                return int(number)
        return None
