"""``python -m reactor demo``: four echo servers, one reactor, one of each client.

What it shows, in order:

1. one ``Reactor`` serving a TCP, a UDP, a Unix stream and a Unix datagram
   server at once (the addresses are printed: poke them with ``nc`` while
   it runs, if you are quick);
2. one plain-socket client per family: what it sent and what came back;
3. the request table's story: every record's transitions, as they happened;
4. a clean shutdown: the loop stopped, servers closed, socket files gone.

Everything stays on loopback and in a temporary directory.  The exit
status is 0 only if every echo came back intact and nothing was left over.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Any, Callable

from handlers.echo import DatagramEcho, StreamLineEcho

from .loop import Reactor
from .datagram import UDPServer
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer
from .table import Event, Record, State

CLIENT_TIMEOUT = 5.0


def _stream_client(family: int, address: Any, payload: bytes) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # "that was all": the handler sees EOF after the line
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


def _datagram_client(family: int, address: Any, payload: bytes, bind_to: Any = None) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        if bind_to is not None:
            sock.bind(bind_to)  # a Unix datagram client needs an address to be answered at
        try:
            sock.sendto(payload, address)
            return sock.recv(65536)
        finally:
            if bind_to is not None:
                os.unlink(bind_to)


def run_demo(verbose: bool = True, out: Callable[[str], None] = print) -> int:
    """Run the demo, printing through ``out``; return the exit status."""
    story: list[str] = []
    lock = threading.Lock()

    def observe(server_label: str) -> Callable[..., None]:
        def on_change(record: Record, old: State | None, event: Event | None, new: State, reason: str) -> None:
            move = f"{new.name} from {record.peer!r}" if old is None else f"{old.name} -> {new.name} ({event.name.lower()})"
            with lock:
                story.append(f"  {server_label:<11} #{record.id}  {move}")

        return on_change

    with tempfile.TemporaryDirectory(prefix="reactor-demo-") as tmp:
        servers = [
            ("tcp", TCPServer(("127.0.0.1", 0), StreamLineEcho)),
            ("udp", UDPServer(("127.0.0.1", 0), DatagramEcho)),
            ("unix", UnixStreamServer(os.path.join(tmp, "echo.sock"), StreamLineEcho)),
            ("unix-dgram", UnixDatagramServer(os.path.join(tmp, "echo.dsock"), DatagramEcho)),
        ]
        reactor = Reactor()
        for label, server in servers:
            server.request_table.add_observer(observe(label))
            reactor.add_server(server)
        loop = threading.Thread(target=reactor.run, name="reactor demo loop")
        loop.start()

        out(f"reactor demo: one Reactor ({type(reactor.selector).__name__}, fd {reactor.fileno()}) serving:")
        for label, server in servers:
            out(f"  {label:<11} {server.server_address}")
        out("")

        clients = {
            "tcp": lambda s, p: _stream_client(socket.AF_INET, s.server_address, p),
            "udp": lambda s, p: _datagram_client(socket.AF_INET, s.server_address, p),
            "unix": lambda s, p: _stream_client(socket.AF_UNIX, s.server_address, p),
            "unix-dgram": lambda s, p: _datagram_client(
                socket.AF_UNIX, s.server_address, p, bind_to=os.path.join(tmp, "client.dsock")
            ),
        }
        failures = 0
        try:
            for label, server in servers:
                payload = f"hello over {label}\n".encode()
                started = time.perf_counter()
                try:
                    reply = clients[label](server, payload)
                except OSError as exc:
                    reply = f"<{type(exc).__name__}: {exc}>".encode()
                elapsed = (time.perf_counter() - started) * 1000
                ok = reply == payload
                failures += not ok
                out(f"  {label:<11} sent {payload!r:<28} got {reply!r:<28} {elapsed:6.2f} ms  {'ok' if ok else 'MISMATCH'}")
        finally:
            reactor.call_soon_threadsafe(reactor.stop)
            loop.join(CLIENT_TIMEOUT)
            leftovers = sum(len(server.request_table) for _, server in servers)
            totals = [server.request_table.statistics() for _, server in servers]
            reactor.close()
            for _, server in servers:
                server.server_close()
        files_left = sorted(os.listdir(tmp))

    if verbose:
        out("")
        out("the request table's story (each record's transitions, in order):")
        for line in story:
            out(line)
    finished = sum(t["finished"] for t in totals)
    failed = sum(t["failed"] for t in totals)
    out("")
    out(f"summary: {sum(t['opened'] for t in totals)} requests, {finished} finished, {failed} failed, "
        f"{leftovers} still in the tables, loop thread {'stopped' if not loop.is_alive() else 'STILL RUNNING'}, "
        f"socket files left: {files_left or 'none'}")  # fmt: skip
    clean = not loop.is_alive() and leftovers == 0 and not files_left and failed == 0
    return 0 if failures == 0 and clean else 1
