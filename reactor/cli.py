"""``python -m reactor serve``: any handler class on any number of addresses, one reactor.

What the command does, in order:

1. parse and check everything it was given (addresses, the handler, the
   dispatch strategy, the bounds, the TLS files) before opening anything;
2. create ONE ``Reactor``, then one server per address, each with its own
   dispatch strategy instance and the bounds set as instance attributes;
3. print one ``serving <family> <address> (<Handler>, <strategy>)`` line per
   server on stdout (port 0 shows the port the kernel chose), then run the
   reactor until SIGINT or SIGTERM;
4. close every server (``server_close()``: running requests drain for at
   most ``--drain-timeout`` seconds, Unix socket files are removed) and
   the reactor, and exit 0.

Exit statuses: 0 after a signal, 2 for a usage error (a bad address, a
handler that cannot be imported, a TLS file that cannot be used, a bind
failure), each reported as one line on stderr after whatever was already
opened has been closed; 128 + the signal's number (130, 143) when a
second signal ended it at once.

The first signal only calls ``reactor.stop()``: it sets a flag and writes
one byte to the reactor's wakeup socketpair, which is safe in a handler;
everything else happens back in ``serve()`` once ``run()`` has returned.
The second raises KeyboardInterrupt, which ends even a handler blocked on
the loop's thread; every server is still closed (see ``Stopper``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import socket
import sys
import time
from typing import Any, Callable

from handlers import BaseRequestHandler

from .admission import DEFAULT_MAX_CONNECTIONS, descriptor_budget
from .datagram import UDPServer
from .dispatch import Inline, Strategy, ThreadPool
from .errors import ReactorError, UsageError
from .forking import Fork
from .loop import Reactor
from .proxy import add_serve_options, serve_settings
from .stopper import Stopper
from .tcp import TCPServer
from .tls import HANDSHAKE_TIMEOUT, server_context
from .unix import UnixDatagramServer, UnixStreamServer

__all__ = ["add_serve_parser", "serve", "parse_address", "parse_socket_mode", "load_handler", "close_servers", "UsageFailure"]

log = logging.getLogger("reactor")

#: Workers (threads or children) when ``--dispatch thread`` or ``fork`` gives no N.
DEFAULT_WORKERS = 8

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: Seconds running requests have, after the first signal, to finish (``--drain-timeout``).
DEFAULT_DRAIN_TIMEOUT = 10.0


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


def parse_socket_mode(text: str) -> int:
    """An octal mode, ``660``, ``0660`` or ``0o660``, from 0 to 7777 -> int; an argparse type."""
    digits = text[2:] if text[:2].lower() == "0o" else text
    if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o7777:
        raise argparse.ArgumentTypeError(f"expected an octal mode from 0 to 7777, like 660 or 0o660, not {text!r}")
    return int(digits, 8)


def make_strategy(spec: tuple[str, int]) -> Strategy:
    """A new strategy instance for one server."""
    name, count = spec
    if name == "thread":
        return ThreadPool(count)
    if name == "fork":
        return Fork(count)
    return Inline()


def _number(cast: Callable[[str], Any], what: str, zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite positive ``cast`` number (``zero``: or 0), or ``none`` for no limit."""
    least = "of 0 or more" if zero else "greater than 0"

    def convert(text: str) -> Any:
        if text.lower() == "none":
            return None
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'none', not {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):  # nan, inf: see reactor.bounds.check_seconds
            raise argparse.ArgumentTypeError(f"expected finite {what} {least} or 'none', not {text!r}")
        return value

    return convert


def _is_handler_class(cls: type) -> bool:
    """A subclass of reactor's ``BaseRequestHandler`` or of the stdlib's (the servers serve both:
    ``http.server.SimpleHTTPRequestHandler``, or a module that did ``import socketserver``)."""
    return issubclass(cls, BaseRequestHandler) or any(
        base.__name__ == "BaseRequestHandler" and base.__module__ == "socketserver" for base in cls.__mro__
    )


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
    if not (isinstance(handler, type) and _is_handler_class(handler)):
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
  python -m reactor serve handlers.echo:LineEcho --tcp 127.0.0.1:9443 --tls-cert cert.pem --tls-key key.pem

then, from another terminal:  printf 'hello\\n' | nc -q1 127.0.0.1 9000
Port 0 lets the kernel choose: the "serving" lines on stdout show the real address.
SIGINT (Ctrl-C) or SIGTERM stops serving, lets running requests finish (for at most
--drain-timeout seconds), removes the Unix socket files and exits 0.  A second signal
ends running requests at once, still removes the socket files, and exits 128+N
(130 for SIGINT, 143 for SIGTERM).  Usage errors exit 2 with one line on stderr.
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
    tls = p.add_argument_group("TLS (on every --tcp and --unix server; --udp and --unix-dgram ones stay plain: "
                               "no DTLS)")
    tls.add_argument("--tls-cert", metavar="FILE",
                     help="serve TLS with this certificate (PEM; the chain may follow it); needs --tls-key")
    tls.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, not encrypted)")
    tls.add_argument("--tls-ca", metavar="FILE",
                     help="require client certificates, accepting only those this CA (PEM) signed")
    tls.add_argument("--handshake-timeout", type=seconds, metavar="S", default=argparse.SUPPRESS,
                     help="seconds a client has to finish its TLS handshake "
                     f"(default {HANDSHAKE_TIMEOUT:g}; 'none': no limit)")
    add_serve_options(p, seconds)  # --proxy-protocol, --proxy-from, --proxy-timeout (reactor/proxy.py)
    p.add_argument("--socket-mode", type=parse_socket_mode, default=None, metavar="MODE",
                   help="permission bits of every Unix socket file, in octal (660: owner and group may "
                   "connect), set before anyone can connect; default: as the umask makes them")
    p.add_argument("--drain-timeout", type=_number(float, "seconds", zero=True), default=DEFAULT_DRAIN_TIMEOUT,
                   metavar="S", help="after the first signal, seconds running requests have to finish before they "
                   f"are ended (0: at once; 'none': no limit; default {DEFAULT_DRAIN_TIMEOUT:g})")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="WARNING", metavar="LEVEL",
                   help="log to stderr from this level: " + ", ".join(LOG_LEVELS) + " (default WARNING)")
    p.add_argument("--trace", action="store_true",
                   help="print every request-table transition and loop wakeup to stderr (reactor.trace)")
    return p


# ------------------------------------------------------------ serving


def _name_the_thread(record: logging.LogRecord) -> bool:
    """A trace line from another thread than the loop's says which (``[reactor worker 1] ...``)."""
    record.where = "" if record.threadName == "MainThread" else f"[{record.threadName}] "
    return True


def _setup_logging(level: str, tracing: bool) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if tracing:
        trace = logging.getLogger("reactor.trace")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("trace: %(where)s%(message)s"))
        handler.addFilter(_name_the_thread)
        trace.addHandler(handler)
        trace.setLevel(logging.DEBUG)
        trace.propagate = False  # the root handler would print each line a second time


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit, as servers commonly do at start.

    Returns ``(before, now)``; -1 stands for "unlimited".  A limit that
    cannot be raised stays as it was (logged at DEBUG).
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.debug("cannot raise the descriptor limit from %d to %d: %s", soft, target, exc)
        return soft, soft
    return soft, target


def fit_max_connections(args: argparse.Namespace, kinds: list[str]) -> int | None:
    """Raise the descriptor limit; the ``max_connections`` for each stream server, logged at INFO.

    Unless ``--max-connections`` was given, the library's default is
    shared out between the stream servers so that together they stay
    within the descriptor limit (less a reserve, and two descriptors per
    possible child with ``--dispatch fork``); returns None to keep what
    was given (a WARNING says if it is more than the limit allows).
    """
    before, now = raise_descriptor_limit()
    budget = descriptor_budget(now) if now != -1 else None
    streams = sum(1 for kind in kinds if kind in ("tcp", "unix"))
    if budget is not None and args.dispatch[0] == "fork":
        budget = max(1, budget - 2 * args.dispatch[1] * len(kinds))  # a pidfd and a pipe per child
    chosen = None
    if hasattr(args, "max_connections"):
        told = args.max_connections
        if budget is not None and streams and (told is None or told * streams > budget):
            log.warning("--max-connections %s on %d stream server(s) is more than the descriptor limit allows "
                        "(about %d connections): past that, accept() fails and backs off", told or "none", streams,
                        budget)  # fmt: skip
        figure = "none" if told is None else str(told)
    elif budget is not None and streams:
        chosen = max(1, min(DEFAULT_MAX_CONNECTIONS, budget // streams))
        figure = str(chosen) + (f" per stream server ({streams})" if streams > 1 else "")
    else:
        figure = str(DEFAULT_MAX_CONNECTIONS)
    raised = f" (raised from {before})" if now != before else ""
    log.info("descriptor limit %s%s; max_connections %s", "unlimited" if now == -1 else now, raised, figure)
    return chosen


def tls_context(args: argparse.Namespace, kinds: list[str]) -> Any:
    """The ``ssl.SSLContext`` the TLS options ask for (reactor.tls.server_context), or None without them."""
    cert, key, ca = args.tls_cert, args.tls_key, args.tls_ca
    if cert is None and key is None:
        for option, given in (("--tls-ca", ca is not None), ("--handshake-timeout", "handshake_timeout" in args)):
            if given:
                raise UsageFailure(f"{option} needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise UsageFailure(f"--tls-cert and --tls-key go together: --tls-{'key' if key is None else 'cert'} is missing")
    if not any(kind in ("tcp", "unix") for kind in kinds):
        raise UsageFailure("TLS needs a --tcp or --unix address (datagram servers have no TLS: no DTLS)")
    try:
        return server_context(cert, key, ca)
    except UsageError as exc:
        raise UsageFailure(str(exc)) from None


def _strategy_label(spec: tuple[str, int]) -> str:
    return spec[0] if spec[0] == "inline" else f"{spec[0]}:{spec[1]}"


def close_servers(servers: list[Any], reactor: Reactor | None = None, *, deadline: float | None = None,
                  hurry: bool = False) -> None:  # fmt: skip
    """``server_close()`` every server, in order, whatever one raises; then close ``reactor``.

    ``deadline``: a ``time.monotonic()`` time by which running requests
    must end; each server's ``drain_timeout`` becomes the time left (None:
    each keeps its own).  With ``hurry``, and for every server still to
    close once a ``server_close()`` raised KeyboardInterrupt or
    SystemExit, ``drain_timeout`` is 0: what still runs is ended at once.
    The first exception is re-raised when everything is closed; any later
    one is logged.
    """
    error: BaseException | None = None
    for server in servers:
        try:
            if hurry or (error is not None and not isinstance(error, Exception)):
                server.drain_timeout = 0
            elif deadline is not None:
                server.drain_timeout = max(0.0, deadline - time.monotonic())
            server.server_close()
        except BaseException as exc:
            if error is None:
                error = exc
            else:
                log.error("%r: server_close() failed as well", server, exc_info=exc)
    if reactor is not None:
        try:
            reactor.close()
        except BaseException as exc:
            if error is None:
                error = exc
            else:
                log.error("%r: close() failed as well", reactor, exc_info=exc)
    if error is not None:
        raise error


def serve(args: argparse.Namespace) -> int:
    """Run the serve command with parsed ``args``; returns the exit status."""
    try:
        if not args.addresses:
            raise UsageFailure("no address: give at least one --tcp, --udp, --unix or --unix-dgram")
        addresses = [(kind, text, parse_address(kind, text)) for kind, text in args.addresses]
        if args.socket_mode is not None and all(FAMILIES[kind][1] for kind, _, _ in addresses):
            raise UsageFailure("--socket-mode needs a --unix or --unix-dgram address")
        handler = load_handler(args.handler)
        context = tls_context(args, [kind for kind, _, _ in addresses])
        proxy = serve_settings(args, [kind for kind, _, _ in addresses])
    except (UsageFailure, UsageError) as exc:
        print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.trace)
    max_connections = fit_max_connections(args, [kind for kind, _, _ in addresses])

    reactor = Reactor()
    servers: list[Any] = []
    stopper = Stopper(reactor, servers, args.drain_timeout)
    stopper.install()
    status = 0
    try:
        try:
            for kind, text, address in addresses:
                server_class, has_port = FAMILIES[kind]
                if args.socket_mode is not None and not has_port:  # a class attribute: the constructor binds
                    server_class = type(server_class.__name__, (server_class,), {"socket_mode": args.socket_mode})
                secure = {"ssl_context": context} if context is not None and kind in ("tcp", "unix") else {}
                try:
                    server = server_class(address, handler, dispatch=make_strategy(args.dispatch), **secure)
                except (OSError, ReactorError) as exc:  # the constructor has closed its own socket
                    raise UsageFailure(f"cannot bind {kind} {text}: {exc}") from exc
                servers.append(server)
                server.drain_timeout = args.drain_timeout
                if max_connections is not None and FAMILIES[kind][0].socket_type == socket.SOCK_STREAM:
                    server.max_connections = max_connections
                for option, attribute in BOUNDS.items():
                    if hasattr(args, option):  # given (None for 'none'); absent: the class default stays
                        setattr(server, attribute, getattr(args, option))
                if secure and "handshake_timeout" in args:
                    server.handshake_timeout = args.handshake_timeout
                for attribute, value in (proxy if kind in ("tcp", "unix") else {}).items():
                    setattr(server, attribute, value)
                reactor.add_server(server)
            for server in servers:
                tls = ", TLS" if getattr(server, "ssl_context", None) is not None else ""
                tls += ", PROXY" if getattr(server, "proxy_protocol", False) else ""
                label = f"{handler.__name__}, {_strategy_label(args.dispatch)}{tls}"
                print(f"serving {server.request_table.name} ({label})")
            sys.stdout.flush()
            stopper.run()
        except UsageFailure as exc:
            print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
            status = 2
        finally:
            # Our handlers stay in place while requests drain: a second
            # signal ends them at once, and every server is still closed.
            close_servers(servers, reactor, deadline=stopper.deadline, hurry=stopper.second is not None)
    except KeyboardInterrupt:  # a second signal, or the grace period ran out while the loop was busy
        status = stopper.exit_status()
    finally:
        stopper.restore()
    return status
