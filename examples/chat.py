"""A line-based chat room: framed handlers that write to *other* connections.

What it shows: one ``MessageHandler`` class (inline dispatch: it runs on
the loop) serving a chat room over TCP and a Unix stream socket at once,
in one ``reactor.Reactor``.  Each line a member sends is a message; the
handler keeps the member's name in ``self.connection.data`` and sends
``NAME: text`` to every other member, whichever server they came in on.
A member that stops reading holds up nobody: what is sent to it waits in
its connection's output queue, which the reactor drains as the member
reads, and the queue is bounded (below).

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/chat.py                     # until Ctrl-C
    .venv/bin/python examples/chat.py --port 7000 --unix /tmp/chat.sock
    .venv/bin/python examples/chat.py --seconds 60        # or 60 seconds
    .venv/bin/python examples/chat.py --self-test         # two members talk, exit

Join from two or more terminals, with the address it prints:

    nc 127.0.0.1 PORT                   # or: socat - TCP:127.0.0.1:PORT
    nc -U /tmp/chat-.../chat.sock       # or: socat - UNIX-CONNECT:/tmp/chat-.../chat.sock

then type lines.  Commands: ``/nick NAME`` (a member starts as
``guest-N``), ``/who`` (who is here, and how far behind each one is),
``/quit``.  Everyone else sees ``* NAME joined``, ``* NAME left``,
``* OLD is now NEW``.

A member that falls behind.  The library bounds a connection's *own*
replies (over ``output_high_water`` it stops reading that connection;
after ``write_timeout`` seconds without progress it drops it), but lines
pushed to a member from another member's handler do not pass through
those bounds, so the room sets its own: when a member's queue would grow
past ``--max-behind`` bytes (default 256 KiB; the kernel's socket
buffers hold more before the queue even starts to grow), the member is
dropped.  It gets a last line, ``* you are too far behind; bye``, after
what was already queued for it, the connection is closed once that has
been sent, and the others see ``* NAME was dropped: too far behind``.
If it never reads again, the library's ``write_timeout`` (60 s) ends the
connection and frees its queue.  So one member costs at most
``--max-behind`` bytes (and a line), and each server admits at most
``MAX_MEMBERS`` members.

Shortcuts taken on purpose:

* Other members are written to with ``Connection.send()``, which queues
  bytes for a connection other than the one a handler is answering, and
  their backlog is read from ``Connection.queued``.  Inline dispatch:
  the room is plain Python state shared by every handler, so it stays on
  the loop's thread (under ``Fork`` a child could not reach the other
  connections at all).
* Joining and leaving are seen through the request table's observer (a
  framed connection's record moves ACCEPTED -> READING when the reactor
  takes it over, and to CLOSING, CLOSED or FAILED when it ends): a
  handler only runs when a line arrives.
* Lines are bytes, passed on as they came (at most ``MAX_LINE`` bytes;
  a longer one ends the connection with a notice).  Names are ASCII.
* One room, in memory, on 127.0.0.1 and a Unix socket only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import reactor
from reactor import State

MAX_LINE = 1024  # one chat line, newline included
MAX_BEHIND = 256 * 1024  # bytes that may wait for one member before it is dropped
MAX_MEMBERS = 100  # per server; with MAX_BEHIND, bounds the room's memory
NICK = re.compile(r"[A-Za-z0-9_-]{1,20}")
CLIENT_TIMEOUT = 5.0


# ----------------------------------------------------------------- the room


class Room:
    """Who is here, across every server of the room (TCP and Unix alike).

    ``members`` holds the live connections in order of arrival; each one's
    name is ``connection.data["name"]``.  Everything here runs on the loop.
    """

    def __init__(self, max_behind: int = MAX_BEHIND) -> None:
        self.max_behind = max_behind
        self.members: list[reactor.Connection] = []
        self.guests = itertools.count(1)
        self.open = True  # False while shutting down: no more notices

    def watch(self, server: Any) -> None:
        """Make ``server`` a door of this room."""
        server.room = self

        def changed(record: Any, old: Any, event: Any, new: State, reason: str) -> None:
            if not self.open:
                return
            if old is State.ACCEPTED and new is State.READING:
                connection = next((c for c in server.connections if c.record is record), None)
                if connection is not None:
                    self.join(connection)
            elif new in (State.CLOSING, State.CLOSED, State.FAILED):
                member = next((c for c in self.members if c.record is record), None)
                if member is not None:
                    self.leave(member)

        server.request_table.add_observer(changed)

    def join(self, connection: reactor.Connection) -> None:
        name = f"guest-{next(self.guests)}"
        connection.data["name"] = name
        self.members.append(connection)
        self.send(connection, f"* welcome, {name}; /nick NAME to rename, /who, /quit\n".encode())
        self.broadcast(f"* {name} joined\n".encode(), but=connection)

    def leave(self, connection: reactor.Connection) -> None:
        self.members.remove(connection)
        name = connection.data["name"]
        why = "was dropped: too far behind" if connection.data.get("dropped") else "left"
        self.broadcast(f"* {name} {why}\n".encode())

    def named(self, name: str) -> reactor.Connection | None:
        return next((c for c in self.members if c.data["name"].lower() == name.lower()), None)

    def broadcast(self, line: bytes, but: reactor.Connection | None = None) -> None:
        for member in tuple(self.members):  # a drop below changes the list
            if member is not but:
                self.send(member, line)

    def send(self, connection: reactor.Connection, line: bytes) -> None:
        """Queue ``line`` for one member, or drop the member if it is too far behind."""
        if connection.closing:
            return
        if connection.queued + len(line) > self.max_behind:
            connection.data["dropped"] = True
            connection.send(b"* you are too far behind; bye\n")
            connection.close()  # after the queue is sent; the observer announces it
            return
        connection.send(line)

    def who(self) -> bytes:
        names = []
        for member in self.members:
            behind = member.queued
            names.append(member.data["name"] + (f" ({behind} bytes waiting)" if behind else ""))
        return f"* here: {', '.join(names)}\n".encode()


# ------------------------------------------------------------- the handler


class ChatHandler(reactor.MessageHandler):
    """One line from one member: a command, or text for everyone else."""

    framing = reactor.Line(max_length=MAX_LINE)

    def handle(self) -> None:
        room: Room = self.server.room
        me = self.connection
        text = self.message.rstrip(b"\r\n")
        if not text.startswith(b"/"):
            if text.strip():
                room.broadcast(me.data["name"].encode() + b": " + text + b"\n", but=me)
            return
        command, _, argument = text.decode("ascii", "replace").partition(" ")
        if command == "/nick":
            self.nick(room, argument.strip())
        elif command == "/who":
            self.wfile.write(room.who())
        elif command == "/quit":
            self.wfile.write(b"* bye\n")
            me.close()  # after this reply; the observer tells the others
        else:
            self.wfile.write(f"* unknown command {command}; try /nick NAME, /who, /quit\n".encode())

    def nick(self, room: Room, name: str) -> None:
        old = self.connection.data["name"]
        if not NICK.fullmatch(name):
            self.wfile.write(b"* a name is 1 to 20 letters, digits, _ or -\n")
        elif room.named(name) not in (None, self.connection):
            self.wfile.write(f"* {name} is taken\n".encode())
        else:
            self.connection.data["name"] = name
            self.wfile.write(f"* you are now {name}\n".encode())
            room.broadcast(f"* {old} is now {name}\n".encode(), but=self.connection)


def too_long(error: Any) -> bytes:
    return f"* a line is at most {error.limit} bytes; bye\n".encode()


class TCPChat(reactor.TCPServer):
    allow_reuse_address = True  # a restart on a fixed --port does not wait out TIME_WAIT
    max_connections = MAX_MEMBERS

    def protocol_error_reply(self, error: Exception, connection: Any) -> bytes:
        return too_long(error)


class UnixChat(reactor.UnixStreamServer):
    max_connections = MAX_MEMBERS

    def protocol_error_reply(self, error: Exception, connection: Any) -> bytes:
        return too_long(error)


# ---------------------------------------------------------------- self-test


class Member:
    """A test client: a socket and the lines it has received."""

    def __init__(self, family: int, address: Any) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(CLIENT_TIMEOUT)
        self.sock.connect(address)
        self.pending = b""

    def say(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def expect(self, start: str) -> str:
        """Read lines until one starts with ``start``; return it (AssertionError after the timeout)."""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while time.monotonic() < deadline:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                if line.decode(errors="replace").startswith(start):
                    return line.decode()
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.pending += chunk
        raise AssertionError(f"no line starting with {start!r}")

    def close(self) -> None:
        self.sock.close()


def talk(servers: dict[str, Any], results: list[tuple[str, str, str]]) -> None:
    """Two members, one per server: names, a line each way, /who, a leave."""
    ada = bob = None
    try:
        ada = Member(socket.AF_INET, servers["tcp"].server_address)
        ada.expect("* welcome, guest-")
        bob = Member(socket.AF_UNIX, servers["unix"].server_address)
        bob.expect("* welcome, guest-")
        ada.say("/nick ada")
        results.append(("tcp", "* you are now ada", ada.expect("* you are now")))
        bob.say("/nick bob")
        results.append(("unix", "* you are now bob", bob.expect("* you are now")))
        ada.say("hello over tcp")
        results.append(("unix", "ada: hello over tcp", bob.expect("ada:")))
        bob.say("hello over unix")
        results.append(("tcp", "bob: hello over unix", ada.expect("bob:")))
        ada.say("/who")
        results.append(("tcp", "* here: ada, bob", ada.expect("* here:")))
        bob.say("/quit")
        results.append(("tcp", "* bob left", ada.expect("* bob")))
    except (OSError, AssertionError) as exc:
        results.append(("?", "", f"<{type(exc).__name__}: {exc}>"))
    finally:
        for member in (ada, bob):
            if member is not None:
                member.close()


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free port)")
    parser.add_argument("--unix", metavar="PATH", help="Unix socket path (default: in a new temporary directory)")
    parser.add_argument("--max-behind", type=int, default=MAX_BEHIND, metavar="BYTES",
                        help=f"queued bytes at which a member that does not read is dropped (default {MAX_BEHIND})")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="two members talk once, then exit")
    args = parser.parse_args(argv)

    directory = None if args.unix else tempfile.mkdtemp(prefix="chat-")
    unix_path = args.unix or os.path.join(directory, "chat.sock")  # type: ignore[arg-type]
    loop = reactor.Reactor()
    room = Room(args.max_behind)
    servers: dict[str, Any] = {}
    ok = True
    # The handlers only ask the loop to stop (a flag and a wakeup byte):
    # the servers are closed below, once run() has returned.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: loop.stop())
    try:
        try:
            servers["tcp"] = TCPChat(("127.0.0.1", args.port), ChatHandler)
            servers["unix"] = UnixChat(unix_path, ChatHandler)
        except OSError as exc:
            print(f"chat.py: cannot listen: {exc}", file=sys.stderr)
            ok = False
            return 2
        for server in servers.values():
            room.watch(server)
            loop.add_server(server)

        print("a chat room on one Reactor, at:")
        host, port = servers["tcp"].server_address
        print(f"  tcp   {servers['tcp'].server_address}")
        print(f"        join: nc {host} {port}   or: socat - TCP:{host}:{port}")
        print(f"  unix  {unix_path}")
        print(f"        join: nc -U {unix_path}   or: socat - UNIX-CONNECT:{unix_path}")
        sys.stdout.flush()
        if args.seconds is not None:
            loop.call_later(args.seconds, loop.stop)

        if args.self_test:
            results: list[tuple[str, str, str]] = []

            def client() -> None:
                try:
                    talk(servers, results)
                finally:
                    loop.call_soon_threadsafe(loop.stop)

            if args.seconds is None:
                loop.call_later(30, loop.stop)  # a deadline, in case a line never comes
            thread = threading.Thread(target=client, name="self-test client")
            thread.start()
            try:
                loop.run()
            finally:
                thread.join(CLIENT_TIMEOUT * 2)
            ok = len(results) == 6
            for label, expected, got in results:
                right = got == expected
                ok = ok and right
                print(f"  {label:<4}  got {got!r}  {'ok' if right else 'WRONG'}")
        else:
            print("serving; Ctrl-C to stop")
            sys.stdout.flush()
            loop.run()
    finally:
        room.open = False  # the members are cut off below: nobody to tell
        loop.close()  # aborts the open connections
        for server in servers.values():
            server.server_close()  # the Unix server removes its socket file
        leftovers = [unix_path] if os.path.exists(unix_path) else []
        if directory is not None:
            leftovers += [name for name in os.listdir(directory) if name != "chat.sock"]
            shutil.rmtree(directory, ignore_errors=True)
    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
