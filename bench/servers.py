"""The systems under test: each one an echo server in a process of its own.

    python -m bench.servers SYSTEM KIND ADDRESS [--cpu N] [--pool N] [--tls-cert PEM --tls-key PEM]

KIND is ``tcp``, ``unix``, ``udp`` or ``unixdgram``; ADDRESS is a host
literal (the kernel picks the port) or a socket path.  The process pins
itself to CPU N, raises its descriptor limit, binds, prints one JSON line
``{"ready": ADDRESS}`` and serves until SIGTERM; then it closes its
server, removes its socket file and exits 0.

Every server echoes bytes unchanged, so one load generator measures all
of them.  The stream servers frame by lines where the system has a
framer (the reactor's ``LineEcho``, asyncio's ``readline()``, the bare
loop, the classic ``readline()`` handlers); ``reactor-chunk`` and
``asyncio-proto`` echo whatever one read returned.

With ``--tls-cert`` and ``--tls-key`` (TCP only), the servers that can
serve TLS without blocking their loop (``reactor-line``, with
``ssl_context=``; ``asyncio-proto`` and ``asyncio-streams``, with
``ssl=``) serve it, all with the same context: the stdlib's defaults for
a server (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``) and
that certificate.  The others refuse.

Settings that differ from a library's defaults, all for the sake of the
scenarios, none for speed:

* every listener has a backlog of ``SOMAXCONN`` (the stdlib's is 5,
  asyncio's 100): connection set-up is not what is measured, and 5,000
  idle connections must get in;
* the reactor's ``max_connections`` is 10,000 (default 4,096), so that
  5,000 idle connections plus the active ones are all accepted;
* classic stream handlers set ``TCP_NODELAY`` (``disable_nagle_algorithm``),
  as asyncio and the bare loop do, so Nagle's algorithm does not hold
  pipelined replies back; the reactor's framed connections keep the
  library's own behaviour;
* bounded pools: ``ThreadPool(POOL)`` and ``Fork(POOL)`` for the reactor,
  ``max_children = POOL`` for the stdlib's forking server (POOL is 64 unless
  ``--pool`` says otherwise); the stdlib's threading server starts a thread
  per connection, which is what it does.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import selectors
import signal
import socket
import sys
from typing import Any, Callable

STREAM_KINDS = ("tcp", "unix")
SERVERS: dict[str, Callable[[str, Any, argparse.Namespace], None]] = {}
TLS_SERVERS = ("reactor-line", "asyncio-proto", "asyncio-streams")


class Stop(BaseException):
    """Raised by the SIGTERM handler where a server has no other way to stop.

    A BaseException, so that no ``except Exception`` of a server (the
    stdlib's request loop has one) swallows it."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise Stop


def system(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(function: Callable[..., None]) -> Callable[..., None]:
        SERVERS[name] = function
        return function

    return register


def ready(address: Any, **more: Any) -> None:
    print(json.dumps({"ready": address, **more}), flush=True)


def family_of(kind: str, host: str) -> int:
    if kind in ("unix", "unixdgram"):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_address(kind: str, address: str) -> Any:
    return address if kind in ("unix", "unixdgram") else (address, 0)


def shown(address: Any) -> Any:
    return address if isinstance(address, str) else list(address[:2])


# ---------------------------------------------------------------- reactor


def server_context(options: argparse.Namespace) -> Any:
    """The TLS context every TLS server here uses, or None without --tls-cert."""
    if not options.tls_cert:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


def _reactor_server(kind: str, address: str, handler: type, dispatch: Any, ssl_context: Any = None,
                    dashboard: bool = False) -> None:  # fmt: skip
    import reactor

    classes = {"tcp": reactor.TCPServer, "unix": reactor.UnixStreamServer,
               "udp": reactor.UDPServer, "unixdgram": reactor.UnixDatagramServer}  # fmt: skip

    class Server(classes[kind]):  # type: ignore[misc, valid-type]
        address_family = family_of(kind, address)
        max_connections = 10_000
        drain_timeout = 2.0

    tls = {"ssl_context": ssl_context} if ssl_context is not None else {}
    with Server(bind_address(kind, address), handler, dispatch=dispatch, **tls) as server:
        if dashboard:
            _with_dashboard(server)
            return
        signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
        ready(shown(server.server_address))
        server.serve_forever()


def _with_dashboard(server: Any) -> None:
    """Serve ``server`` on a reactor that also serves a dashboard (loopback, a port the kernel
    picks); the ready line names it (``"dashboard": [host, port]``) for the harness's event reader."""
    import reactor

    with reactor.Reactor() as loop:
        loop.add_server(server)
        board = reactor.add_dashboard(loop, ("127.0.0.1", 0))
        try:
            signal.signal(signal.SIGTERM, lambda signum, frame: loop.stop())
            ready(shown(server.server_address), dashboard=list(board.server_address[:2]))
            loop.run()
        finally:
            board.close()


def _classic_reactor_handler(kind: str) -> type:
    from handlers.echo import StreamLineEcho

    class Echo(StreamLineEcho):
        disable_nagle_algorithm = kind == "tcp"

    return Echo


@system("reactor-line")
def reactor_line(kind: str, address: str, options: argparse.Namespace) -> None:
    import reactor
    from handlers.echo import LineEcho

    _reactor_server(kind, address, LineEcho, reactor.Inline(), server_context(options))


@system("reactor-line-dash")
def reactor_line_dash(kind: str, address: str, options: argparse.Namespace) -> None:
    """reactor-line with a dashboard on its reactor; the harness streams its events (bench/dashreader.py)."""
    import reactor
    from handlers.echo import LineEcho

    _reactor_server(kind, address, LineEcho, reactor.Inline(), server_context(options), dashboard=True)


#: Worker processes of the reactor-workers system (reactor.Workers), as ``serve --workers 2`` runs them.
WORKERS = 2


@system("reactor-workers")
def reactor_workers(kind: str, address: str, options: argparse.Namespace, dashboard: bool = False) -> None:
    """reactor-line's server, served by ``reactor.Workers(count=WORKERS)``: the
    supervisor binds the socket, every worker accepts from it.  Pinned with
    ``--cpu``, all of them share that CPU (the figure then is the cost of
    the workers, not their scaling).  With ``dashboard``, the supervisor
    serves one of them all (loopback, a port the kernel picks), named in
    the ready line for the harness's event reader."""
    import reactor
    from handlers.echo import LineEcho

    classes = {"tcp": reactor.TCPServer, "unix": reactor.UnixStreamServer,
               "udp": reactor.UDPServer, "unixdgram": reactor.UnixDatagramServer}  # fmt: skip

    class Server(classes[kind]):  # type: ignore[misc, valid-type]
        address_family = family_of(kind, address)
        max_connections = 10_000

    servers: list[Any] = []

    def make() -> list[Any]:
        servers.append(Server(bind_address(kind, address), LineEcho, dispatch=reactor.Inline()))
        return servers[-1:]

    def serving(names: list[str]) -> None:
        board = workers.dashboard
        more = {"dashboard": list(board.server_address[:2])} if board is not None else {}
        ready(shown(servers[0].server_address), **more)

    workers = reactor.Workers(make, count=WORKERS, drain_timeout=2.0, on_serving=serving,
                              dashboard=("127.0.0.1", 0) if dashboard else None)  # fmt: skip
    sys.exit(workers.run())


@system("reactor-workers-dash")
def reactor_workers_dash(kind: str, address: str, options: argparse.Namespace) -> None:
    """reactor-workers with the supervisor's dashboard; the harness streams its events (bench/dashreader.py)."""
    reactor_workers(kind, address, options, dashboard=True)


@system("reactor-chunk")
def reactor_chunk(kind: str, address: str, options: argparse.Namespace) -> None:
    import reactor
    from handlers.echo import ChunkEcho

    _reactor_server(kind, address, ChunkEcho, reactor.Inline())


@system("reactor-dgram")
def reactor_dgram(kind: str, address: str, options: argparse.Namespace) -> None:
    import reactor
    from handlers.echo import DatagramEcho

    _reactor_server(kind, address, DatagramEcho, reactor.Inline())


@system("reactor-pool")
def reactor_pool(kind: str, address: str, options: argparse.Namespace) -> None:
    import reactor

    _reactor_server(kind, address, _classic_reactor_handler(kind), reactor.ThreadPool(options.pool))


@system("reactor-fork")
def reactor_fork(kind: str, address: str, options: argparse.Namespace) -> None:
    import reactor

    _reactor_server(kind, address, _classic_reactor_handler(kind), reactor.Fork(options.pool))


# ----------------------------------------------------------------- stdlib


def _stdlib_server(kind: str, address: str, flavour: str, options: argparse.Namespace) -> None:
    import socketserver

    class LineEcho(socketserver.StreamRequestHandler):
        """The same classic handler as handlers.echo.StreamLineEcho, on the stdlib's base class."""

        disable_nagle_algorithm = kind == "tcp"

        def handle(self) -> None:
            while True:
                line = self.rfile.readline(65536)
                if not line:
                    return
                self.wfile.write(line)

    class DatagramEcho(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.packet)

    base = {"tcp": socketserver.TCPServer, "unix": socketserver.UnixStreamServer,
            "udp": socketserver.UDPServer, "unixdgram": socketserver.UnixDatagramServer}[kind]  # fmt: skip
    mixin = {"sync": (), "threading": (socketserver.ThreadingMixIn,), "forking": (socketserver.ForkingMixIn,)}[flavour]

    class Server(*mixin, base):  # type: ignore[misc]
        address_family = family_of(kind, address)
        request_queue_size = socket.SOMAXCONN
        daemon_threads = True
        max_children = options.pool

    handler = LineEcho if kind in STREAM_KINDS else DatagramEcho
    server = Server(bind_address(kind, address), handler)
    try:
        signal.signal(signal.SIGTERM, _raise_stop)
        ready(shown(server.server_address))
        server.serve_forever()
    except Stop:
        pass
    finally:
        server.server_close()
        if kind in ("unix", "unixdgram"):
            os.unlink(address)  # the stdlib leaves its socket file behind


for _flavour in ("sync", "threading", "forking"):
    SERVERS[f"stdlib-{_flavour}"] = lambda kind, address, options, f=_flavour: _stdlib_server(kind, address, f, options)


# ---------------------------------------------------------------- asyncio


def _asyncio_server(kind: str, address: str, flavour: str, options: argparse.Namespace) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    class DatagramEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)

    async def echo_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        backlog = socket.SOMAXCONN
        tls = server_context(options)
        if kind in ("udp", "unixdgram"):
            family = family_of(kind, address)
            transport, _ = await loop.create_datagram_endpoint(DatagramEcho, local_addr=bind_address(kind, address), family=family)
            ready(shown(transport.get_extra_info("sockname")))
            await stop.wait()
            transport.close()
            if kind == "unixdgram":
                os.unlink(address)
            return
        if flavour == "proto" and kind == "tcp":
            server = await loop.create_server(Echo, address, 0, backlog=backlog, ssl=tls)
        elif flavour == "proto":
            server = await loop.create_unix_server(Echo, address, backlog=backlog)
        elif kind == "tcp":
            server = await asyncio.start_server(echo_lines, address, 0, backlog=backlog, ssl=tls)
        else:
            server = await asyncio.start_unix_server(echo_lines, address, backlog=backlog)
        ready(shown(server.sockets[0].getsockname()))
        await stop.wait()
        server.close()
        if kind == "unix":
            os.unlink(address)

    asyncio.run(main())


SERVERS["asyncio-proto"] = lambda kind, address, options: _asyncio_server(kind, address, "proto", options)
SERVERS["asyncio-streams"] = lambda kind, address, options: _asyncio_server(kind, address, "streams", options)


# ------------------------------------------------------- the bare loop


def _bare_stream(listener: socket.socket) -> None:
    """Echo complete lines: one recv(), every complete line in it back in one send()."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    unfinished: dict[socket.socket, bytearray] = {}  # a line still being received
    unsent: dict[socket.socket, bytearray] = {}  # replies the kernel would not take yet
    tcp = listener.family != socket.AF_UNIX

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        unfinished.pop(sock, None)
        unsent.pop(sock, None)
        sock.close()

    try:
        while True:  # the event loop
            for key, events in sel.select():
                sock = key.fileobj
                if sock is listener:
                    for _ in range(64):  # accept what is waiting, a bounded batch
                        try:
                            conn, _ = listener.accept()
                        except (BlockingIOError, ConnectionAbortedError):
                            break
                        conn.setblocking(False)
                        if tcp:
                            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        unfinished[conn] = bytearray()
                        sel.register(conn, selectors.EVENT_READ)
                    continue
                if events & selectors.EVENT_WRITE:
                    backlog = unsent[sock]
                    try:
                        del backlog[: sock.send(backlog)]
                    except BlockingIOError:
                        pass
                    except OSError:
                        close(sock)
                        continue
                    if not backlog:
                        del unsent[sock]
                        sel.modify(sock, selectors.EVENT_READ)
                if not events & selectors.EVENT_READ:
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(sock)
                    continue
                buffer = unfinished[sock]
                buffer += data
                end = buffer.rfind(b"\n") + 1
                if not end:
                    continue
                reply = bytes(buffer[:end])
                del buffer[:end]
                if sock in unsent:
                    unsent[sock] += reply
                    continue
                try:
                    sent = sock.send(reply)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    close(sock)
                    continue
                if sent < len(reply):
                    unsent[sock] = bytearray(reply[sent:])
                    sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    finally:  # SIGTERM may land anywhere, even inside close(): close the sockets, then the selector
        for conn in unfinished:
            conn.close()
        sel.close()


def _bare_datagram(sock: socket.socket) -> None:
    """Echo each datagram to its sender; read until the socket is empty, then wait."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        while True:  # the event loop
            sel.select()
            for _ in range(256):  # a bounded batch per wake-up
                try:
                    data, peer = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                try:
                    sock.sendto(data, peer)
                except (BlockingIOError, OSError):
                    pass  # a full buffer or a vanished peer: the datagram is lost, as UDP allows
    finally:
        sel.close()


@system("bare")
def bare(kind: str, address: str, options: argparse.Namespace) -> None:
    stream = kind in STREAM_KINDS
    sock = socket.socket(family_of(kind, address), socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
    try:
        sock.bind(bind_address(kind, address))
        if stream:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        signal.signal(signal.SIGTERM, _raise_stop)
        ready(shown(sock.getsockname()))
        try:
            (_bare_stream if stream else _bare_datagram)(sock)
        except Stop:
            pass
    finally:
        sock.close()
        if kind in ("unix", "unixdgram"):
            os.unlink(address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description="Run one echo server until SIGTERM.")
    parser.add_argument("system", choices=sorted(SERVERS))
    parser.add_argument("kind", choices=("tcp", "unix", "udp", "unixdgram"))
    parser.add_argument("address")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server (and its threads and children) to this CPU")
    parser.add_argument("--pool", type=int, default=64, help="workers of a bounded pool, children of a forking server")
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM; TCP, and only " + ", ".join(TLS_SERVERS) + ")")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    options = parser.parse_args(argv)
    if options.tls_cert and (options.system not in TLS_SERVERS or options.kind != "tcp" or not options.tls_key):
        parser.error(f"--tls-cert needs --tls-key, TCP and one of {', '.join(TLS_SERVERS)}")
    faulthandler.register(signal.SIGUSR1, all_threads=False)  # the harness asks where a server that will not stop is stuck
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    SERVERS[options.system](options.kind, options.address, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
