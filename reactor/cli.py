"""``python -m reactor serve``: any handler class on any number of addresses, one reactor.

What the command does, in order:

1. parse and check everything it was given (addresses, the handler, the
   dispatch strategy, the bounds) before opening anything;
2. create ONE ``Reactor``, then one server per address, each with its own
   dispatch strategy instance and the bounds set as instance attributes;
3. print one ``serving <family> <address> (<Handler>, <strategy>)`` line per
   server on stdout (port 0 shows the port the kernel chose), then run the
   reactor until SIGINT or SIGTERM;
4. close every server (``server_close()``: running requests drain, Unix
   socket files are removed) and the reactor, and exit 0.

Exit statuses: 0 after a signal, 2 for a usage error (a bad address, a
handler that cannot be imported, a bind failure), each reported as one
line on stderr after whatever was already opened has been closed.

The signal handler only calls ``reactor.stop()``: it sets a flag and writes
one byte to the reactor's wakeup socketpair, which is safe in a handler;
everything else happens back in ``serve()`` once ``run()`` has returned.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import Any, Callable

from handlers import BaseRequestHandler

from .datagram import UDPServer
from .dispatch import Inline, Strategy, ThreadPool
from .errors import ReactorError
from .forking import Fork
from .loop import Reactor
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer

__all__ = ["add_serve_parser", "serve", "parse_address", "load_handler", "UsageFailure"]

log = logging.getLogger("reactor")

#: Workers (threads or children) when ``--dispatch thread`` or ``fork`` gives no N.
DEFAULT_WORKERS = 8

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ReusableTCPServer(TCPServer):
    """TCPServer with SO_REUSEADDR, so a restart does not wait out TIME_WAIT.

    On Linux this never lets two listeners share a port; it is what most
    servers do.  UDP keeps it off (see ``UDPServer``: it lets others steal datagrams).
    """

    allow_reuse_address = True


#: option name -> (server class, does the address have a port?)
FAMILIES: dict[str, tuple[type, bool]] = {
    "tcp": (ReusableTCPServer, True),
    "udp": (UDPServer, True),
    "unix": (UnixStreamServer, False),
    "unix-dgram": (UnixDatagramServer, False),
}

# Bounds: option dest -> server attribute.  Only the options given are set.
BOUNDS = {
    "max_connections": "max_connections",
    "max_message_size": "max_message_size",
    "idle_timeout": "idle_timeout",
    "request_timeout": "request_timeout",
    "write_timeout": "write_timeout",
}


class UsageFailure(Exception):
    """Something the user gave cannot work; ``str()`` is the one line to print."""


# ------------------------------------------------------------ parsing


def parse_address(kind: str, text: str) -> Any:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> ``(host, port)``; a path stays a path.

    Raises ``UsageFailure`` naming the option and the text.
    """
    if not FAMILIES[kind][1]:
        if not text:
            raise UsageFailure(f"bad --{kind} address {text!r}: expected a socket file PATH")
        return text
    expected = UsageFailure(f"bad --{kind} address {text!r}: expected HOST:PORT")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise expected
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise expected
    elif ":" in host or "[" in host or "]" in host:
        raise expected  # an IPv6 literal needs its brackets
    return (host, int(port))


def parse_dispatch(text: str) -> tuple[str, int]:
    """``inline`` | ``thread[:N]`` | ``fork[:N]`` -> (name, N); an argparse type."""
    name, sep, count = text.partition(":")
    if name not in ("inline", "thread", "fork") or (name == "inline" and sep):
        raise argparse.ArgumentTypeError(f"expected inline, thread[:N] or fork[:N], not {text!r}")
    if not sep:
        return name, DEFAULT_WORKERS
    if not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"N in {text!r} must be a whole number of at least 1")
    return name, int(count)


def make_strategy(spec: tuple[str, int]) -> Strategy:
    """A new strategy instance for one server."""
    name, count = spec
    if name == "thread":
        return ThreadPool(count)
    if name == "fork":
        return Fork(count)
    return Inline()


def _number(cast: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type: a positive ``cast`` number, or ``none`` for no limit."""

    def convert(text: str) -> Any:
        if text.lower() == "none":
            return None
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'none', not {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected {what} greater than 0 or 'none', not {text!r}")
        return value

    return convert


def load_handler(spec: str) -> type:
    """Import ``MODULE:CLASS`` and check it is a request handler class."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageFailure(f"cannot import handler {spec!r}: expected MODULE:CLASS")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise UsageFailure(f"cannot import handler {spec!r}: {exc}") from exc
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:  # the module called sys.exit(): a usage error too, not a silent exit
        raise UsageFailure(f"cannot import handler {spec!r}: module called sys.exit({exc.code!r})") from exc
    except BaseException as exc:  # GeneratorExit or a BaseException of its own
        raise UsageFailure(f"cannot import handler {spec!r}: {type(exc).__name__}: {exc}") from exc
    try:
        handler = getattr(module, class_name)
    except AttributeError:
        raise UsageFailure(f"cannot import handler {spec!r}: module {module_name!r} has no {class_name!r}") from None
    if not (isinstance(handler, type) and issubclass(handler, BaseRequestHandler)):
        raise UsageFailure(f"cannot import handler {spec!r}: not a request handler class (BaseRequestHandler)")
    return handler


class _AddAddress(argparse.Action):
    """Collect every address option into one list of (kind, text), in command-line order."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        found = list(getattr(namespace, self.dest, None) or [])  # never the shared default list
        found.append((self.kind, values))
        setattr(namespace, self.dest, found)


EPILOG = """\
examples:
  python -m reactor serve handlers.echo:LineEcho --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000
  python -m reactor serve handlers.echo:Upper --tcp [::1]:9000 --unix /tmp/upper.sock --dispatch thread:4
  python -m reactor serve mymodule:MyHandler --tcp 0.0.0.0:0 --trace

then, from another terminal:  printf 'hello\\n' | nc -q1 127.0.0.1 9000
Port 0 lets the kernel choose: the "serving" lines on stdout show the real address.
SIGINT (Ctrl-C) or SIGTERM stops serving, lets running requests finish, removes the
Unix socket files and exits 0.  Usage errors exit 2 with one line on stderr.
"""


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``commands`` (an argparse subparsers object)."""
    p = commands.add_parser(
        "serve",
        help="serve a handler class on TCP, UDP and Unix addresses in one reactor",
        description="Serve the request handler class MODULE:CLASS on every address given,\n"
        "all in ONE reactor, until SIGINT or SIGTERM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("handler", metavar="MODULE:CLASS",
                   help="the handler class to serve, e.g. handlers.echo:LineEcho (imported with importlib)")
    where = p.add_argument_group("addresses (each may repeat; at least one is required)")
    for kind, metavar, text in [
        ("tcp", "HOST:PORT", "a TCP server; IPv6 as [::1]:PORT; port 0 picks a free port"),
        ("udp", "HOST:PORT", "a UDP server (each datagram is one request)"),
        ("unix", "PATH", "a Unix stream server; the socket file is removed on exit"),
        ("unix-dgram", "PATH", "a Unix datagram server; the socket file is removed on exit"),
    ]:
        where.add_argument(f"--{kind}", dest="addresses", metavar=metavar, action=_AddAddress, kind=kind,
                           default=[], help=text)
    p.add_argument("--dispatch", type=parse_dispatch, default=("inline", DEFAULT_WORKERS),
                   metavar="inline|thread[:N]|fork[:N]",
                   help="where handlers run: in the loop (default), on a pool of N threads, or in up to "
                   f"N child processes (N defaults to {DEFAULT_WORKERS}); each server gets its own pool")
    bounds = p.add_argument_group(
        "bounds (set on every server; 'none' lifts one; default: the library's, see docs/handlers.md)"
    )
    count, seconds = _number(int, "a whole number"), _number(float, "seconds")
    bounds.add_argument("--max-connections", type=count, metavar="N", default=argparse.SUPPRESS,
                        help="open connections at which accepting pauses")
    bounds.add_argument("--max-message-size", type=count, metavar="N", default=argparse.SUPPRESS,
                        help="largest message, in bytes, a framed handler is given")
    bounds.add_argument("--idle-timeout", type=seconds, metavar="S", default=argparse.SUPPRESS,
                        help="seconds a framed connection may wait between messages")
    bounds.add_argument("--request-timeout", type=seconds, metavar="S", default=argparse.SUPPRESS,
                        help="seconds a started message has to arrive completely")
    bounds.add_argument("--write-timeout", type=seconds, metavar="S", default=argparse.SUPPRESS,
                        help="seconds queued output may wait without progress")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="WARNING", metavar="LEVEL",
                   help="log to stderr from this level: " + ", ".join(LOG_LEVELS) + " (default WARNING)")
    p.add_argument("--trace", action="store_true",
                   help="print every request-table transition and loop wakeup to stderr (reactor.trace)")
    return p


# ------------------------------------------------------------ serving


def _setup_logging(level: str, tracing: bool) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if tracing:
        trace = logging.getLogger("reactor.trace")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("trace: %(message)s"))
        trace.addHandler(handler)
        trace.setLevel(logging.DEBUG)
        trace.propagate = False  # the root handler would print each line a second time


def _strategy_label(spec: tuple[str, int]) -> str:
    return spec[0] if spec[0] == "inline" else f"{spec[0]}:{spec[1]}"


def serve(args: argparse.Namespace) -> int:
    """Run the serve command with parsed ``args``; returns the exit status."""
    try:
        if not args.addresses:
            raise UsageFailure("no address: give at least one --tcp, --udp, --unix or --unix-dgram")
        addresses = [(kind, text, parse_address(kind, text)) for kind, text in args.addresses]
        handler = load_handler(args.handler)
    except UsageFailure as exc:
        print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.trace)

    reactor = Reactor()
    servers: list[Any] = []
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        reactor.stop()  # a flag and one byte on the wakeup socketpair: safe here

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    status = 0
    try:
        for kind, text, address in addresses:
            server_class = FAMILIES[kind][0]
            try:
                server = server_class(address, handler, dispatch=make_strategy(args.dispatch))
            except (OSError, ReactorError) as exc:  # the constructor has closed its own socket
                raise UsageFailure(f"cannot bind {kind} {text}: {exc}") from exc
            servers.append(server)
            for option, attribute in BOUNDS.items():
                if hasattr(args, option):  # given (None for 'none'); absent: the class default stays
                    setattr(server, attribute, getattr(args, option))
            reactor.add_server(server)
        for server in servers:
            print(f"serving {server.request_table.name} ({handler.__name__}, {_strategy_label(args.dispatch)})")
        sys.stdout.flush()
        reactor.run()
    except UsageFailure as exc:
        print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
        status = 2
    finally:
        # A second signal while requests drain acts as usual (SIGTERM kills,
        # SIGINT raises KeyboardInterrupt): a stuck handler cannot hold us forever.
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        try:
            for server in servers:
                server.server_close()
        finally:
            reactor.close()
    return status
