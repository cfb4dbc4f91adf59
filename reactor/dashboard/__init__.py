"""A live dashboard of a reactor, served by that same reactor: ``add_dashboard(loop)``.

    dashboard = reactor.add_dashboard(loop, ("127.0.0.1", 8090))
    print(dashboard.url)        # http://127.0.0.1:8090/
    ...
    dashboard.close()

The dashboard is one more server on the reactor it shows: a small
read-only HTTP/1.1 server written as a framed handler of this library
(reactor/dashboard/http.py), bounded like any other.  Its routes:

    GET /             the page (reactor/dashboard/page.py)
    GET /events       Server-Sent Events: a snapshot, then batched updates (feed.py)
    GET /table.json   a snapshot as JSON
    GET /states.json  the state machines of every kind of record (reactor.states)
    GET /metrics      the Prometheus text exposition (metrics.py)

It listens on loopback unless told otherwise (``allow_remote=True``): it
shows client addresses and the servers' configuration to whoever asks.
With no dashboard the reactor pays nothing; with one, each loop wake-up
is timed (reactor/loopstats.py), and so is each handler run
(reactor/handlertime.py); while someone watches the events, every
transition is reported to it (see feed.py for the cost).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from handlers.message import MessageRequest

from ..errors import UsageError
from ..states import FINAL_STATES, INITIAL_STATE, TRANSITIONS
from ..tcp import TCPServer
from . import metrics
from .feed import Feed
from .http import GetHandler, Request, error_response
from .source import LocalSource

__all__ = ["Dashboard", "add_dashboard", "DashboardServer", "DashboardHandler", "DEFAULT_ADDRESS", "is_loopback",
           "parse_address", "states_json"]

#: Where a dashboard listens unless told otherwise.
DEFAULT_ADDRESS = ("127.0.0.1", 8090)

_PLACEHOLDER = (b"<!doctype html><meta charset=utf-8><title>reactor dashboard</title>"
                b"<h1>reactor dashboard</h1><p>The page is not built yet. The data: "
                b"<a href=/table.json>/table.json</a>, <a href=/events>/events</a>, "
                b"<a href=/states.json>/states.json</a>, <a href=/metrics>/metrics</a>.</p>\n")  # fmt: skip


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (127.0.0.0/8, ::1) or ``localhost``?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) of ``--dashboard`` -> ``(host, port)``; UsageError if bad,
    or if the host is not loopback and ``allow_remote`` is false."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 literal needs its brackets
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"bad --dashboard address {text!r}: expected HOST:PORT")
    if not allow_remote and not is_loopback(host):
        raise UsageError(f"--dashboard {text}: {host} is not a loopback address; the dashboard shows client "
                         "addresses to whoever asks: add --dashboard-remote if you mean it")  # fmt: skip
    return host, int(port)


def states_json() -> dict[str, Any]:
    """The state machine of every kind of record, as ``GET /states.json`` serves it."""
    machines = {}
    for kind, moves in TRANSITIONS.items():
        states: dict[str, None] = {INITIAL_STATE[kind].name: None}
        for (old, _), new in moves.items():
            states[old.name] = None
            states[new.name] = None
        machines[kind.value] = {
            "states": list(states),
            "initial": INITIAL_STATE[kind].name,
            "final": [name for name in states if any(s.name == name for s in FINAL_STATES)],
            "transitions": [[old.name, event.name.lower(), new.name] for (old, event), new in moves.items()],
        }
    return machines


def _page() -> bytes:
    try:
        from .page import render_page
    except ImportError:
        return _PLACEHOLDER
    return render_page()


class DashboardHandler(GetHandler):
    """The dashboard's routes (``self.server.dashboard`` is the ``Dashboard``)."""

    routes = {"/": "page", "/index.html": "page", "/events": "events", "/table.json": "table",
              "/states.json": "states", "/metrics": "metrics"}  # fmt: skip

    def page(self, request: Request) -> tuple[int, str, bytes]:
        return 200, "text/html; charset=utf-8", self.server.dashboard.page()

    def table(self, request: Request) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self.server.dashboard.feed.snapshot()).encode()

    def states(self, request: Request) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(states_json()).encode()

    def metrics(self, request: Request) -> tuple[int, str, bytes]:
        return 200, metrics.CONTENT_TYPE, self.server.dashboard.metrics()

    def events(self, request: Request) -> None:
        feed = self.server.dashboard.feed
        if request.method == "HEAD":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n")
            return
        if not feed.has_room():
            self.server.request_table.count("http_503")
            self.wfile.write(error_response(503, f"{feed.max_streams} event streams are open already",
                                            (("Retry-After", "5"),)))  # fmt: skip
            self.connection.close()
            return
        # This request never ends: its connection now carries events (see DashboardServer.shutdown_request).
        self.connection.data["event_stream"] = True
        feed.open_stream(self.connection)


class DashboardServer(TCPServer):
    """The dashboard's HTTP server: a ``TCPServer`` of ``DashboardHandler``, with tight bounds of its own."""

    allow_reuse_address = True  # a dashboard restarted at once gets its port back
    max_connections = 128
    max_message_size = 8192
    idle_timeout = 30.0  # a keep-alive connection with no request (event streams have no deadline)
    request_timeout = 10.0
    write_timeout = 10.0
    output_high_water = 1 << 20  # also what an event stream may have queued before it is dropped
    output_low_water = 1 << 18

    def __init__(self, address: Any, dashboard: "Dashboard") -> None:
        self.dashboard = dashboard
        super().__init__(address, DashboardHandler)

    def shutdown_request(self, request: Any) -> None:
        """End a request, unless it is an event stream's, which lasts as long as its connection."""
        if isinstance(request, MessageRequest) and request.connection.data.get("event_stream"):
            return
        super().shutdown_request(request)

    def close_request(self, request: Any) -> None:
        if isinstance(request, MessageRequest) and request.connection.data.get("event_stream"):
            return
        super().close_request(request)


class Dashboard:
    """A dashboard server on ``loop``, showing what its source shows.  See ``add_dashboard``.

    ``server_address`` is where it listens (the real port if 0 was
    asked), ``url`` the page's address, ``server`` its ``DashboardServer``,
    ``source`` what it shows (source.py), ``feed`` its ``Feed`` (the event
    streams), ``stats`` the loop's ``LoopStats`` (None if the source has none).

    ``source``: a callable ``source(loop, dashboard_server)`` returning the
    source; by default ``LocalSource``, every server of ``loop``.  Under
    worker processes the supervisor passes one that merges its workers'
    reports (reactor/dashboard/workers.py).
    """

    def __init__(self, loop: Any, address: Any = DEFAULT_ADDRESS, *, allow_remote: bool = False,
                 interval: float = 0.25, max_streams: int = 32, source: Any = None) -> None:  # fmt: skip
        if not (isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str)):
            raise UsageError(f"a dashboard address is (HOST, PORT), not {address!r}")
        if not allow_remote and not is_loopback(address[0]):
            raise UsageError(f"the dashboard would listen on {address[0]}, which is not loopback: it shows client "
                             "addresses to anyone who asks; pass allow_remote=True (--dashboard-remote) if you mean it")  # fmt: skip
        if not interval > 0 or max_streams < 1:
            raise UsageError(f"interval must be > 0 and max_streams >= 1, not {interval!r}, {max_streams!r}")
        self.loop = loop
        self.started = time.monotonic()
        self._page: bytes | None = None
        self.source: Any = None
        self.server = DashboardServer(address, self)
        try:
            loop.add_server(self.server)
            self.source = (source or LocalSource)(loop, self.server)
            self.feed = Feed(loop, self.source, interval, max_streams)
        except BaseException:
            if self.server in loop.servers:
                loop.remove_server(self.server)
            self.server.server_close()
            if self.source is not None:
                self.source.close()
            raise
        self.stats = getattr(self.source, "stats", None)
        self._closed = False

    @property
    def server_address(self) -> Any:
        return self.server.server_address

    @property
    def url(self) -> str:
        """The page's address: ``http://127.0.0.1:8090/``."""
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def page(self) -> bytes:
        """The page's bytes (built once)."""
        if self._page is None:
            self._page = _page()
        return self._page

    def metrics(self) -> bytes:
        """``GET /metrics``: the Prometheus text of a snapshot (metrics.py), and what the source adds."""
        snapshot = self.source.snapshot()
        more = getattr(self.source, "more_metrics", None)
        return metrics.render(snapshot) + (more(snapshot) if more is not None else b"")

    def close(self) -> None:
        """Stop the dashboard: its streams end, its server closes, the loop stops being timed.  Idempotent.

        Call it on the loop's thread, or once the loop has stopped.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.feed.close()
            if not self.loop.closed:
                self.loop.remove_server(self.server)
        finally:
            self.server.server_close()
            self.source.close()

    def __enter__(self) -> "Dashboard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Dashboard {self.url} streams={len(self.feed.streams)}>"


def add_dashboard(loop: Any, address: Any = DEFAULT_ADDRESS, *, allow_remote: bool = False, **options: Any) -> Dashboard:
    """Add a dashboard to the reactor ``loop``, served by it, listening on ``address``; return it.

    ``address`` is ``(HOST, PORT)`` (port 0: the kernel chooses; see
    ``dashboard.server_address``).  A host that is not loopback is refused
    (UsageError) unless ``allow_remote=True``.  ``options``: ``interval``
    (seconds between updates, 0.25) and ``max_streams`` (open event
    streams, 32).  Call it on the loop's thread, or before the loop runs.
    """
    return Dashboard(loop, address, allow_remote=allow_remote, **options)
