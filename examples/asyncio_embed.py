"""A whole Reactor inside an asyncio program, through one descriptor.

What it shows: asyncio owns the thread.  A ``reactor.Reactor`` serving four
echo servers (TCP, UDP, Unix stream, Unix datagram) is driven from it by
three calls and nothing else:

* ``loop.add_reader(reactor.fileno(), step)``: asyncio watches the
  reactor's own descriptor (its epoll/kqueue selector), which is readable
  whenever any of the reactor's sockets is;
* ``step()`` calls ``reactor.run_once(0)``, one loop iteration that never
  blocks;
* after every step, ``reactor.next_timeout()`` says when the reactor next
  has work that no descriptor will announce (a timer, a queued callback),
  and ``loop.call_later()`` books a step for then.

A reactor timer prints the request totals every few seconds, to show that
timers fire although asyncio, not ``Reactor.run()``, is in charge.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/asyncio_embed.py              # until Ctrl-C
    .venv/bin/python examples/asyncio_embed.py --seconds 30 # or 30 seconds
    .venv/bin/python examples/asyncio_embed.py --self-test  # asyncio clients talk to each, exit

Ctrl-C, ``kill`` (SIGTERM) and the end of ``--seconds`` all stop it the
same way: the servers are closed and the temporary directory is removed.

Poke it with the lines it prints, for example:

    printf 'hello\\n' | nc -N 127.0.0.1 PORT       # TCP
    printf 'hello\\n' | nc -u -w1 127.0.0.1 PORT   # UDP
    printf 'hello\\n' | socat - TCP:127.0.0.1:PORT  # or socat (UDP:, UNIX-CONNECT:PATH)

Shortcuts taken on purpose:

* The stream servers are ``ThreadingTCPServer`` and
  ``ThreadingUnixStreamServer``.  ``StreamLineEcho`` is a classic handler
  that blocks on its socket; run inline, it would freeze the asyncio loop
  (and the self-test's own asyncio client with it) for as long as a client
  stays connected.  In a thread it only holds that thread.  The datagram
  handler never blocks, so the datagram servers stay plain.
* At exit, the reading side of connections still open (an idle ``nc``)
  is shut down through the request table, so their handlers see EOF and
  ``server_close()`` can join their threads.
* The driver asks ``next_timeout()`` after each ``step()``, which covers
  timers that reactor callbacks add.  A reactor timer added from asyncio
  code is only noticed after ``driver.schedule()``; this program calls it
  at the two places where it does that.
* Servers listen on 127.0.0.1 and in a fresh temporary directory, which is
  removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile

import reactor
from handlers.echo import DatagramEcho, StreamLineEcho

CLIENT_TIMEOUT = 5.0
REPORT_EVERY = 5.0  # seconds between two reports of the request totals


class ReactorDriver:
    """Lets an asyncio event loop run a Reactor: one reader, one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rx: reactor.Reactor) -> None:
        self.loop = loop
        self.reactor = rx
        self.fd = rx.fileno()  # UsageError if the selector has no descriptor
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.loop.add_reader(self.fd, self.step)
        self.schedule()

    def step(self) -> None:
        """One reactor iteration, then book the next timed one."""
        self.reactor.run_once(0)
        self.schedule()

    def schedule(self) -> None:
        """Make sure asyncio calls step() when the reactor's next timer is due."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        delay = self.reactor.next_timeout()  # None: only I/O can bring work
        if delay is not None:
            self.timer = self.loop.call_later(delay, self.step)

    def stop(self) -> None:
        self.loop.remove_reader(self.fd)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def server_specs(directory: str) -> list[tuple[str, type, object, type]]:
    """(label, server class, address, handler); port 0: the kernel picks one."""
    return [
        ("tcp", reactor.ThreadingTCPServer, ("127.0.0.1", 0), StreamLineEcho),
        ("udp", reactor.UDPServer, ("127.0.0.1", 0), DatagramEcho),
        ("unix", reactor.ThreadingUnixStreamServer, os.path.join(directory, "echo.sock"), StreamLineEcho),
        ("unix-dgram", reactor.UnixDatagramServer, os.path.join(directory, "echo.dsock"), DatagramEcho),
    ]


def poke_command(label: str, address: object) -> str:
    """A shell line that sends one line to the server (OpenBSD netcat)."""
    if label == "tcp":
        host, port = address  # type: ignore[misc]
        return f"printf 'hello\\n' | nc -N {host} {port}"
    if label == "udp":
        host, port = address  # type: ignore[misc]
        return f"printf 'hello\\n' | nc -u -w1 {host} {port}"
    if label == "unix":
        return f"printf 'hello\\n' | nc -N -U {address}"
    return f"printf 'hello\\n' | nc -u -w1 -U {address}"


def report(rx: reactor.Reactor, servers: dict[str, reactor.BaseServer]) -> None:
    """A reactor timer callback: print the totals, then book the next report."""
    totals = {label: server.request_table.statistics()["opened"] for label, server in servers.items()}
    print(f"reactor timer: requests so far {totals}", flush=True)
    rx.call_later(REPORT_EVERY, report, rx, servers)


def hang_up(server: reactor.BaseServer) -> None:
    """End the reading side of every connection still in the table.

    A handler blocked in ``readline()`` then sees EOF, answers what it has
    and returns, so ``server_close()`` can join its thread.
    """
    for record in server.request_table.snapshot():
        sock = record.request  # None once the record has finished
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # closed by its handler meanwhile


# ------------------------------------------------------------- self-test


class OneReply(asyncio.DatagramProtocol):
    """Resolves ``reply`` with the first datagram that comes back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reply: asyncio.Future[bytes] = loop.create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def stream_exchange(connecting: object, payload: bytes) -> bytes:
    reader, writer = await connecting  # type: ignore[misc]
    try:
        writer.write(payload)
        writer.write_eof()  # StreamLineEcho echoes until it sees EOF
        return await reader.read()  # everything, up to the server's close
    finally:
        writer.close()
        await writer.wait_closed()


async def datagram_exchange(payload: bytes, **endpoint: object) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: OneReply(loop), **endpoint)
    try:
        transport.sendto(payload)
        return await protocol.reply
    finally:
        transport.close()


async def talk_to(label: str, server: reactor.BaseServer, directory: str) -> bytes:
    payload = f"hello over {label}\n".encode()
    address = server.server_address
    if label == "tcp":
        return await stream_exchange(asyncio.open_connection(*address), payload)
    if label == "unix":
        return await stream_exchange(asyncio.open_unix_connection(address), payload)
    if label == "udp":
        return await datagram_exchange(payload, remote_addr=address)
    client_path = os.path.join(directory, "client.dsock")  # so the server can answer
    try:
        return await datagram_exchange(payload, family=socket.AF_UNIX, local_addr=client_path, remote_addr=address)
    finally:
        os.unlink(client_path)


async def self_test(driver: ReactorDriver, servers: dict[str, reactor.BaseServer], directory: str) -> bool:
    # First a reactor timer, with no I/O at all: only next_timeout() can make it fire.
    fired = asyncio.Event()
    driver.reactor.call_later(0.05, fired.set)  # runs inside step(), on asyncio's thread
    driver.schedule()  # added from outside step(): tell asyncio about it
    await asyncio.wait_for(fired.wait(), CLIENT_TIMEOUT)
    print("  reactor timer fired under asyncio")

    ok = True
    for label, server in servers.items():
        expected = f"hello over {label}\n".encode()
        try:
            reply = await asyncio.wait_for(talk_to(label, server, directory), CLIENT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            reply = f"<{type(exc).__name__}: {exc}>".encode()
        ok = ok and reply == expected
        print(f"  {label:<10}  reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
    return ok


# ------------------------------------------------------------------ main


async def amain(args: argparse.Namespace, directory: str) -> bool:
    loop = asyncio.get_running_loop()
    servers: dict[str, reactor.BaseServer] = {}
    rx = reactor.Reactor()
    driver: ReactorDriver | None = None
    try:
        for label, server_class, address, handler in server_specs(directory):
            servers[label] = server_class(address, handler)
            rx.add_server(servers[label])
        driver = ReactorDriver(loop, rx)
        driver.start()

        print(f"asyncio watches fd {driver.fd}, the reactor's {type(rx.selector).__name__}, which serves:")
        for label, server in servers.items():
            print(f"  {label:<10}  {server.server_address}")
            if not args.self_test:
                print(f"  {'':<10}  {poke_command(label, server.server_address)}")
        sys.stdout.flush()

        if args.self_test:
            return await self_test(driver, servers, directory)
        rx.call_later(REPORT_EVERY, report, rx, servers)
        driver.schedule()  # a timer added from outside step(): tell asyncio about it
        print("serving; Ctrl-C to stop", flush=True)
        if args.seconds is None:
            await asyncio.Event().wait()  # forever, until Ctrl-C cancels us
        else:
            await asyncio.sleep(args.seconds)
        return True
    finally:
        if driver is not None:
            driver.stop()
        rx.close()  # stops watching every server's socket
        for server in servers.values():
            hang_up(server)
            server.server_close()  # closes the socket, joins request threads, unlinks files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="talk to each server once, then exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does

    directory = tempfile.mkdtemp(prefix="reactor-")
    ok = True
    try:
        ok = asyncio.run(amain(args, directory))
    except KeyboardInterrupt:
        print()
    finally:
        leftovers = os.listdir(directory)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
