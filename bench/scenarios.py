"""The scenarios, the systems, and which system can serve which scenario.

A scenario is one load generator setting (socket kind, active connections,
messages in flight per connection, connections held open idle or
trickling bytes, TLS, a new connection per request); a system is one
server of bench/servers.py.  A system
that cannot serve a scenario in any useful sense is not measured there:
the tables say why instead ("n/a: ...").
"""

from __future__ import annotations

from dataclasses import dataclass

#: name -> what it is.  Order: the order of the tables' rows.
SYSTEMS = {
    "reactor-line": "reactor: framed LineEcho (Line() framing), Inline; on datagram sockets one datagram is one message",
    "reactor-chunk": "reactor: framed ChunkEcho (Chunk() framing: echoes what one read returned), Inline",
    "reactor-pool": "reactor: classic StreamRequestHandler line echo under ThreadPool(POOL)",
    "reactor-fork": "reactor: classic StreamRequestHandler line echo under Fork(POOL)",
    "reactor-dgram": "reactor: classic DatagramEcho (DatagramRequestHandler), Inline",
    "stdlib-sync": "socketserver TCPServer / UnixStreamServer / UDPServer / UnixDatagramServer, the same classic handlers",
    "stdlib-threading": "socketserver ThreadingTCPServer / ThreadingUnixStreamServer (a thread per connection)",
    "stdlib-forking": "socketserver ForkingTCPServer (a process per connection, max_children = POOL)",
    "asyncio-proto": "asyncio: a Protocol that writes back what data_received() got (no framing); DatagramProtocol for datagrams",
    "asyncio-streams": "asyncio streams: readline(), write(), drain() in a loop",
    "reactor-workers": "reactor: reactor-line's server under reactor.Workers(count=2): two worker processes accepting "
    "from the one socket the supervisor bound (serve --workers 2)",
    "reactor-line-dash": "reactor-line with a dashboard on the same reactor (reactor.add_dashboard), a reader "
    "streaming its events (GET /events) all along: what watching costs",
    "reactor-workers-dash": "reactor-workers with the supervisor's dashboard of both workers (Workers(dashboard=...)), a "
    "reader streaming its events all along: what watching workers costs",
    "bare": "a hand-written selectors loop, the pure-Python reference: one recv(), every complete line back in one send(); "
    "recvfrom()/sendto() for datagrams",
}

STREAM_SYSTEMS = [
    "reactor-line", "reactor-chunk", "reactor-pool", "reactor-fork",
    "stdlib-sync", "stdlib-threading", "stdlib-forking",
    "asyncio-proto", "asyncio-streams", "bare",
]  # fmt: skip
DATAGRAM_SYSTEMS = ["reactor-line", "reactor-dgram", "stdlib-sync", "asyncio-proto", "bare"]

#: The systems measured with TLS: the reactor's framed LineEcho and asyncio's two servers.
TLS_SYSTEMS = ["reactor-line", "asyncio-proto", "asyncio-streams"]

#: Why the other stream systems are not measured with TLS.
NO_TLS = {
    "bare": "plain sockets only: no TLS",
    "stdlib-sync": "the stdlib's servers do TLS only by wrapping the listener (a blocking handshake in accept()): not measured",
    "stdlib-threading": "the stdlib's servers do TLS only by wrapping the listener (a blocking handshake in accept()): not measured",
    "stdlib-forking": "the stdlib's servers do TLS only by wrapping the listener (a blocking handshake in accept()): not measured",
}
NOT_MEASURED_TLS = "not measured with TLS: reactor-line stands for the reactor there"

#: The systems of the worker scenarios: one process, and two workers under a supervisor.
WORKERS_SYSTEMS = ("reactor-line", "reactor-workers")

#: The systems of the dashboard scenario: reactor-line without and with a streaming dashboard.
DASHBOARD_SYSTEMS = ("reactor-line", "reactor-line-dash")

#: The systems of the workers' dashboard scenario: two workers without and with the supervisor's dashboard streaming.
WORKERS_DASHBOARD_SYSTEMS = ("reactor-workers", "reactor-workers-dash")

#: The references every ratio is taken against.
ASYNCIO, STREAMS, BARE = "asyncio-proto", "asyncio-streams", "bare"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # tcp, unix, udp, unixdgram
    conns: int  # active connections (datagram: client sockets)
    depth: int = 1  # messages in flight per active connection
    idle: int = 0  # connections held open, silent
    slow: int = 0  # slowloris connections: a byte every 100 ms, never a whole line
    tls: bool = False  # TCP with TLS: the servers get a certificate, the load generator verifies it
    once: bool = False  # each request on a new connection (connect, handshake, one message, its echo, close)
    only: tuple[str, ...] = ()  # these systems only (the worker scenarios)
    pinned: bool = True  # False: neither the server nor the load generator is pinned to a CPU

    @property
    def rate(self) -> str:
        """What its requests per second are called in the tables."""
        return "handshakes/s" if self.tls and self.once else "conns/s" if self.once else "req/s"

    @property
    def stream(self) -> bool:
        return self.kind in ("tcp", "unix")

    @property
    def systems(self) -> list[str]:
        if self.only:
            return list(self.only)
        return STREAM_SYSTEMS if self.stream else DATAGRAM_SYSTEMS

    def describe(self, host: str = "127.0.0.1") -> str:
        where = {"tcp": f"TCP {host}", "unix": "Unix stream", "udp": f"UDP {host}", "unixdgram": "Unix datagram"}[self.kind]
        if self.tls:
            where = f"TLS over {where}"
        what = f"{self.conns} connection{'s' if self.conns > 1 else ''}" if self.stream else f"{self.conns} client sockets"
        if self.once:
            handshake = ", TLS handshake" if self.tls else ""
            return (f"{where}, {self.conns} clients in parallel, each request a new connection (connect{handshake}, "
                    f"one line, its echo, close): {self.rate}")  # fmt: skip
        if self.depth > 1:
            what += f", {self.depth} messages pipelined on each"
        else:
            what += ", ping-pong (one message in flight each)"
        if self.idle:
            what += f", while {self.idle:,} idle connections are held open"
        if self.slow:
            what += f", while {self.slow} slowloris connections send a byte every 100 ms"
        if not self.pinned:
            what += "; nothing pinned: the server's processes and the load generator share both CPUs"
        return f"{where}, {what}"

    def short(self) -> str:
        """A few words for the chart: "TCP, 50 conns + 5,000 idle"."""
        where = {"tcp": "TCP", "unix": "Unix stream", "udp": "UDP", "unixdgram": "Unix datagram"}[self.kind]
        if self.tls:
            where = "TLS"
        if self.once:
            return f"{where}, {self.conns} clients, a new connection per request ({self.rate})"
        what = f"{self.conns} conn{'s' if self.conns > 1 else ''}" if self.stream else f"{self.conns} clients"
        if self.depth > 1:
            what += f" x {self.depth} pipelined"
        if self.idle:
            what += f" + {self.idle:,} idle"
        if self.slow:
            what += f" + {self.slow} slowloris"
        if self.only == WORKERS_SYSTEMS:
            what += ", 1 vs 2 workers" + ("" if self.pinned else ", unpinned")
        if self.only == DASHBOARD_SYSTEMS:
            what += ", without and with a streaming dashboard"
        if self.only == WORKERS_DASHBOARD_SYSTEMS:
            what += ", 2 workers without and with the supervisor's dashboard streaming"
        return f"{where}, {what}"

    def not_applicable(self, system: str, pool: int) -> str | None:
        """Why `system` cannot serve this scenario, or None if it can."""
        held = self.idle or self.slow
        if self.tls and system not in TLS_SYSTEMS:
            return NO_TLS.get(system, NOT_MEASURED_TLS)
        if system == "stdlib-sync" and self.stream and self.conns + held > 1:
            return "serves one connection at a time"
        if system in ("stdlib-forking", "reactor-fork") and held:
            return f"a child process per connection, at most {pool}: the held-open connections take them all"
        if system == "reactor-pool" and held:
            return f"a classic handler holds a worker per connection: the held-open connections take all {pool}"
        return None


SCENARIOS = [
    Scenario("pingpong-1", "tcp", 1),
    Scenario("pingpong-50", "tcp", 50),
    Scenario("pingpong-500", "tcp", 500),
    Scenario("pipeline-50x16", "tcp", 50, depth=16),
    Scenario("idle-5000", "tcp", 50, idle=5000),
    Scenario("slowloris-200", "tcp", 10, slow=200),
    Scenario("udp-50", "udp", 50),
    Scenario("unix-50", "unix", 50),
    Scenario("unixdgram-50", "unixdgram", 50),
    Scenario("tls-50", "tcp", 50, tls=True),
    Scenario("tls-handshakes", "tcp", 16, tls=True, once=True),
    Scenario("workers-50", "tcp", 50, only=WORKERS_SYSTEMS),
    Scenario("workers-50-free", "tcp", 50, only=WORKERS_SYSTEMS, pinned=False),
    Scenario("workers-50x16-free", "tcp", 50, depth=16, only=WORKERS_SYSTEMS, pinned=False),
    Scenario("dash-50", "tcp", 50, only=DASHBOARD_SYSTEMS),
    Scenario("workers-dash-50", "tcp", 50, only=WORKERS_DASHBOARD_SYSTEMS),
]
BY_NAME = {s.name: s for s in SCENARIOS}

#: The scenario whose figure the held-open scenarios are compared with ("x plain").
PLAIN = "pingpong-50"


@dataclass(frozen=True)
class Target:
    """A goal the lead optimises for: `system` in `scenario` against a reference."""

    label: str
    scenario: str
    system: str
    goal: float
    ref_system: str  # the reference system ...
    ref_scenario: str = ""  # ... in this scenario ('' = the same one)
    metric: str = "rps"  # rps, min_share (higher is better) or idle_bytes, cpu_us (lower is better)


TARGETS = [
    Target("line echo, 50 conns: x asyncio streams", "pingpong-50", "reactor-line", 1.5, STREAMS),
    Target("line echo, 50 conns: x asyncio Protocol", "pingpong-50", "reactor-line", 0.8, ASYNCIO),
    Target("line echo, 50 conns x 16 pipelined: x asyncio streams", "pipeline-50x16", "reactor-line", 3.0, STREAMS),
    Target("chunk echo, 50 conns: x asyncio Protocol", "pingpong-50", "reactor-chunk", 1.0, ASYNCIO),
    Target("line echo + 5,000 idle: x its plain 50-conn figure", "idle-5000", "reactor-line", 0.9, "reactor-line", PLAIN),
    Target("chunk echo + 5,000 idle: x its plain 50-conn figure", "idle-5000", "reactor-chunk", 0.9, "reactor-chunk", PLAIN),
    Target("line echo + 200 slowloris: x its plain 50-conn figure", "slowloris-200", "reactor-line", 0.9, "reactor-line", PLAIN),
    Target("chunk echo + 200 slowloris: x its plain 50-conn figure", "slowloris-200", "reactor-chunk", 0.9, "reactor-chunk", PLAIN),
    Target("classic under ThreadPool, 50 conns: x ThreadingTCPServer", "pingpong-50", "reactor-pool", 1.0, "stdlib-threading"),
    Target("classic under ThreadPool, 500 conns: x ThreadingTCPServer", "pingpong-500", "reactor-pool", 1.0, "stdlib-threading"),
    Target("UDP DatagramEcho, 50 clients: x stdlib UDPServer", "udp-50", "reactor-dgram", 1.3, "stdlib-sync"),
    Target("UDP LineEcho, 50 clients: x stdlib UDPServer", "udp-50", "reactor-line", 1.3, "stdlib-sync"),
    Target("RSS per idle conn, line echo: x asyncio Protocol's", "idle-5000", "reactor-line", 1.0, ASYNCIO, metric="idle_bytes"),
    Target("RSS per idle conn, line echo: x asyncio streams'", "idle-5000", "reactor-line", 1.0, STREAMS, metric="idle_bytes"),
    Target("RSS per idle conn, chunk echo: x asyncio Protocol's", "idle-5000", "reactor-chunk", 1.0, ASYNCIO, metric="idle_bytes"),
    Target("TLS line echo, 50 conns: x asyncio Protocol over TLS", "tls-50", "reactor-line", 1.0, ASYNCIO),
    Target("TLS handshakes/s, 16 clients: x asyncio Protocol", "tls-handshakes", "reactor-line", 1.0, ASYNCIO),
    Target("2 workers, 50 conns: the least busy worker's share of them", "workers-50", "reactor-workers", 0.3, "",
           metric="min_share"),
    Target("2 workers, 50 conns: server CPU per request x one process's", "workers-50", "reactor-workers", 1.1,
           "reactor-line", metric="cpu_us"),
    Target("2 workers, 50 conns, nothing pinned: x one process", "workers-50-free", "reactor-workers", 1.0,
           "reactor-line"),
    Target("2 workers, 50 conns x 16 pipelined, nothing pinned: x one process", "workers-50x16-free",
           "reactor-workers", 1.0, "reactor-line"),
    Target("line echo, 50 conns, a dashboard streaming: x without one", "dash-50", "reactor-line-dash", 0.9,
           "reactor-line"),
    Target("2 workers, 50 conns, the supervisor's dashboard streaming: x without one", "workers-dash-50",
           "reactor-workers-dash", 0.9, "reactor-workers"),
]
