"""The clients of ``python -m reactor demo``: plain blocking sockets, timed.

Nothing here knows about the reactor: these are the clients any program
would write with the ``socket`` module, each with a timeout.  They record
what they sent, what came back and when (``time.monotonic()``, the clock
the request tables use too), so the demo can check every echo, time it,
and put the clients' moves on the same timeline as the table's.
``wait_for_partial_line`` and ``describe_row`` read a server's table
the way a monitoring thread would, with ``describe()``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from typing import Any

__all__ = [
    "CLIENT_TIMEOUT", "Exchange", "SlowClient", "datagram_client", "describe_row", "lines_for", "run_quick_clients",
    "stream_client", "wait_for_partial_line",
]  # fmt: skip

#: Every client socket gives up after this many seconds without an answer.
CLIENT_TIMEOUT = 5.0
#: A reply longer than this without a newline is not an echo of our line.
MAX_LINE = 65536
STREAMS = {"tcp": socket.AF_INET, "unix": socket.AF_UNIX}
DATAGRAMS = {"udp": socket.AF_INET, "unix-dgram": socket.AF_UNIX}


@dataclasses.dataclass
class Exchange:
    """One line sent, and what came back for it."""

    family: str
    client: str
    sent: bytes
    reply: bytes = b""
    started: float = 0.0  # when the line was sent (the first half, for the slow client)
    answered: float = 0.0  # when its echo had fully arrived; 0.0: it never did

    @property
    def ok(self) -> bool:
        return self.answered > 0 and self.reply == self.sent

    @property
    def latency(self) -> float:
        return self.answered - self.started


def lines_for(family: str, client: int, count: int) -> list[bytes]:
    return [f"hello {n} from {family} client {client}\n".encode() for n in range(1, count + 1)]


def _read_line(sock: socket.socket, pending: bytes) -> tuple[bytes, bytes]:
    """Read until a newline: returns (the line, whatever came after it)."""
    while b"\n" not in pending and len(pending) < MAX_LINE:
        chunk = sock.recv(4096)
        if not chunk:
            break  # the server closed: return what we have, the check will say it is wrong
        pending += chunk
    line, newline, rest = pending.partition(b"\n")
    return line + newline, rest


def _read_to_eof(sock: socket.socket) -> bytes:
    extra = b""
    while len(extra) < MAX_LINE and (chunk := sock.recv(4096)):
        extra += chunk
    return extra


def _spoil(exchange: Exchange | None, exc: OSError) -> None:
    if exchange is not None:
        exchange.reply += f" <{type(exc).__name__}: {exc}>".encode()
        exchange.answered = 0.0


def stream_client(family: str, sock_family: int, address: Any, client: int, lines: list[bytes]) -> list[Exchange]:
    """Connect, send each line and wait for its echo, then close our side and read to EOF."""
    exchanges = [Exchange(family, f"client {client}", line) for line in lines]
    current = None
    try:
        with socket.socket(sock_family, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(address)
            pending = b""
            for current in exchanges:
                current.started = time.monotonic()
                sock.sendall(current.sent)
                current.reply, pending = _read_line(sock, pending)
                current.answered = time.monotonic()
            sock.shutdown(socket.SHUT_WR)  # "no more lines": the server sees EOF and closes too
            extra = pending + _read_to_eof(sock)
            if extra and current is not None:
                current.reply += extra  # anything after the last echo is wrong: let it show
    except OSError as exc:
        _spoil(current, exc)
    return exchanges


def datagram_client(
    family: str, sock_family: int, address: Any, client: int, lines: list[bytes], bind_to: str | None = None
) -> list[Exchange]:
    """Send each line as one datagram and wait for the echo.

    A Unix datagram client must bind its socket to a path (``bind_to``),
    or the server has no address to send the echo to.  The path is
    removed before returning.
    """
    exchanges = [Exchange(family, f"client {client}", line) for line in lines]
    current = None
    with socket.socket(sock_family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            if bind_to is not None:
                sock.bind(bind_to)
            for current in exchanges:
                current.started = time.monotonic()
                sock.sendto(current.sent, address)
                current.reply = sock.recv(MAX_LINE)
                current.answered = time.monotonic()
        except OSError as exc:
            _spoil(current, exc)
        finally:
            if bind_to is not None and os.path.exists(bind_to):
                os.unlink(bind_to)
    return exchanges


class SlowClient(threading.Thread):
    """A TCP client that sends half a line, pauses ``pause`` seconds, then the rest.

    ``half_sent`` is set once the first half is out (or the client failed),
    ``half_sent_at`` and ``rest_sent_at`` say when each half left, and
    ``exchange`` holds the line and its echo.  ``note(text, when)`` is
    called for both moves, for the timeline.
    """

    def __init__(self, address: Any, line: bytes, pause: float, note: Any) -> None:
        super().__init__(name="demo slow client")
        self.address = address
        self.pause = pause
        self.note = note
        self.exchange = Exchange("tcp", "slow client", line)
        self.half_sent = threading.Event()
        self.half_sent_at = 0.0
        self.rest_sent_at = 0.0

    def run(self) -> None:
        line = self.exchange.sent
        first, rest = line[: len(line) // 2], line[len(line) // 2 :]
        try:
            self.exchange.started = time.monotonic()
            with socket.create_connection(self.address, timeout=CLIENT_TIMEOUT) as sock:
                sock.sendall(first)
                self.half_sent_at = time.monotonic()
                text = f"the slow client connects, sends {first!r} (half a line) and pauses {self.pause:.1f} s"
                self.note(text, self.exchange.started)
                self.half_sent.set()
                time.sleep(self.pause)  # on purpose: this is the client stuck in the middle of a line
                self.rest_sent_at = time.monotonic()  # taken before the send: the echo can beat the note
                sock.sendall(rest)
                self.note(f"the slow client sends the rest, {rest!r}", self.rest_sent_at)
                self.exchange.reply, pending = _read_line(sock, b"")
                self.exchange.answered = time.monotonic()
                sock.shutdown(socket.SHUT_WR)
                self.exchange.reply += pending + _read_to_eof(sock)
        except OSError as exc:
            _spoil(self.exchange, exc)
        finally:
            self.half_sent.set()  # never leave the demo waiting for a client that failed


def wait_for_partial_line(server: Any, size: int) -> dict[str, Any] | None:
    """Poll the table (``describe()``, safe from any thread) until a record holds ``size`` bytes."""
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while time.monotonic() < deadline:
        for row in server.request_table.describe():
            if row["bytes_in"] >= size:
                return row
        time.sleep(0.002)
    return None


def describe_row(row: dict[str, Any]) -> str:
    """One entry of ``RequestTable.describe()``, in words."""
    age, bytes_in, bytes_out = row["age"] * 1000, row["bytes_in"], row["bytes_out"]
    return f"{row['family']} #{row['id']} {row['state']}, {bytes_in} B in, {bytes_out} B out, age {age:.0f} ms"


def run_quick_clients(servers: dict[str, Any], directory: str, clients: int, lines: int) -> list[Exchange]:
    """``clients`` clients per family (``servers``: family -> server), one after the other."""
    exchanges: list[Exchange] = []
    for family, server in servers.items():
        for client in range(1, clients + 1):
            sent = lines_for(family, client, lines)
            if family in STREAMS:
                exchanges += stream_client(family, STREAMS[family], server.server_address, client, sent)
            else:
                bind_to = os.path.join(directory, f"client{client}.dsock") if family == "unix-dgram" else None
                exchanges += datagram_client(family, DATAGRAMS[family], server.server_address, client, sent, bind_to)
    return exchanges
