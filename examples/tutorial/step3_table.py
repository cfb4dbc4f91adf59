"""Step 3 of the tutorial: the selector loop plus an explicit table of connections.

What it shows: step 2's line echo, where each connection now has a
``State`` from an enum, and ONE dict, ``TRANSITIONS``, says which event
moves which state to which.  Every change goes through
``Table.transition()``, which looks the pair up and raises if it is not
there, and prints the move with its reason.  The state also decides what
the selector watches (``INTEREST``): a connection is watched for reading
while READING, for writing while WRITING, so no boolean flag can
disagree with another.  This is a tiny version of reactor's
``RequestTable`` (docs/request-table.md).

Run it and poke it with ``nc`` (each line comes back):

    .venv/bin/python examples/tutorial/step3_table.py --port 8003
    nc 127.0.0.1 8003

    .venv/bin/python examples/tutorial/step3_table.py --self-test

The self-test is step 2's, with the same clients making the same moves,
so the two traces can be read side by side.

Shortcuts taken on purpose: as in step 2 (no buffer limits, an error
closes the connection); a connection does not read while it is WRITING,
which keeps the table small.
"""

from __future__ import annotations

import enum
import itertools
import selectors
import signal
import socket
import sys

import step2_selectors  # this file's directory is on sys.path when it runs

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class State(enum.Enum):
    READING = "reading"  # waiting for a whole line
    WRITING = "writing"  # sending the echo; not reading meanwhile
    CLOSED = "closed"  # final: the socket is closed


class Event(enum.Enum):
    LINE = "line"  # whole line(s) arrived; their echo is queued
    DRAINED = "drained"  # the kernel took all the queued output
    EOF = "eof"  # the peer closed its side
    ERROR = "error"  # the socket failed


S, E = State, Event
#: The whole state machine: (state, event) -> next state.  Nothing else changes a state.
TRANSITIONS = {
    (S.READING, E.LINE): S.WRITING,
    (S.WRITING, E.DRAINED): S.READING,
    (S.READING, E.EOF): S.CLOSED,
    (S.READING, E.ERROR): S.CLOSED,
    (S.WRITING, E.ERROR): S.CLOSED,
}
INTEREST = {S.READING: READ, S.WRITING: WRITE}  # what the selector watches, by state


class Conn:
    def __init__(self, id: int, sock: socket.socket) -> None:
        self.id, self.sock, self.state = id, sock, State.READING
        self.inbuf = self.outbuf = b""

    def __repr__(self) -> str:
        return f"<Conn #{self.id} {self.state.name}>"


class Table:
    """The live connections by fd.  No I/O here: only states and their moves."""

    def __init__(self) -> None:
        self.conns: dict[int, Conn] = {}
        self.ids = itertools.count(1)

    def open(self, sock: socket.socket, reason: str) -> Conn:
        conn = self.conns[sock.fileno()] = Conn(next(self.ids), sock)
        print(f"  #{conn.id} {conn.state.name}: {reason}")
        return conn

    def transition(self, conn: Conn, event: Event, reason: str) -> State:
        new = TRANSITIONS.get((conn.state, event))
        if new is None:
            raise RuntimeError(f"{conn!r}: no transition for event {event.name} in state {conn.state.name}")
        print(f"  #{conn.id} {conn.state.name} -> {new.name}: {event.name.lower()} ({reason})")
        conn.state = new
        if new is State.CLOSED:
            del self.conns[conn.sock.fileno()]
        return new


class EchoLoop:
    def __init__(self, listener: socket.socket) -> None:
        self.listener, self.table = listener, Table()
        self.conns = self.table.conns  # fd -> Conn, the name step 2's self-test knows
        self.selector = selectors.DefaultSelector()
        listener.setblocking(False)
        self.selector.register(listener, READ)

    def run_once(self, timeout: float | None = None) -> None:
        """One turn of the event loop: wait, then handle what is ready."""
        events = self.selector.select(timeout)
        if events:
            print("woke:", ", ".join(f"fd {key.fd} {'read' if mask & READ else 'write'}" for key, mask in events))
        for key, mask in events:  # one interest per socket, so mask is READ or WRITE
            if key.fileobj is self.listener:
                sock, peer = self.listener.accept()
                sock.setblocking(False)
                self.selector.register(sock, READ)
                self.table.open(sock, f"new connection from {peer} as fd {sock.fileno()}")
            elif mask & READ:
                self.read(self.table.conns[key.fd])
            else:
                self.write(self.table.conns[key.fd])

    def move(self, conn: Conn, event: Event, reason: str) -> None:
        """Apply ``event``, then make the selector watch what the new state needs."""
        sock = conn.sock
        if self.table.transition(conn, event, reason) is State.CLOSED:
            self.selector.unregister(sock)  # unregister BEFORE close
            sock.close()
        else:
            self.selector.modify(sock, INTEREST[conn.state])

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except OSError as exc:
            return self.move(conn, Event.ERROR, str(exc))
        if not data:
            return self.move(conn, Event.EOF, "the peer closed")
        lines, sep, conn.inbuf = (conn.inbuf + data).rpartition(b"\n")  # keeps any unfinished line
        if not sep:
            print(f"  #{conn.id} still {conn.state.name}: {len(conn.inbuf)} bytes of a line so far")
            return
        conn.outbuf += lines + sep
        self.move(conn, Event.LINE, f"{len(conn.outbuf)} bytes queued")

    def write(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except OSError as exc:
            return self.move(conn, Event.ERROR, str(exc))
        conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf:  # else: still WRITING, until the kernel took it all
            self.move(conn, Event.DRAINED, f"{sent} bytes sent")

    def close_all(self) -> None:
        for conn in list(self.table.conns.values()):
            self.move(conn, Event.ERROR, "the server stops")
        self.selector.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    # The rest (the self-test's clients, --port, Ctrl-C) is step 2's, unchanged:
    # the same script drives this loop, so the two traces line up.
    sys.exit(step2_selectors.main(loop_class=EchoLoop))
