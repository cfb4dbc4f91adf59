"""``python -m reactor serve``: any handler class on any number of addresses, one reactor.

What the command does, in order:

1. parse and check everything it was given (addresses, the handler, the
   dispatch strategy, the bounds, the TLS files) before opening anything;
2. create ONE ``Reactor``, then one server per address, each with its own
   dispatch strategy instance and the bounds set as instance attributes
   (``reactor.build.ServerMaker``);
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
second signal ended it at once; 1 for an unexpected error, or when
``--workers`` kept dying at start.

With no address option, it serves the sockets passed by socket activation
(``LISTEN_FDS``, reactor/activation.py).  With ``--workers N`` the servers
are made once, before N worker processes are forked to serve them
(``--reuse-port``: each worker makes its own), and this process becomes
their supervisor (reactor/workers.py); the ``serving`` lines come once
every worker serves.

The first signal only calls ``reactor.stop()``: it sets a flag and writes
one byte to the reactor's wakeup socketpair, which is safe in a handler;
everything else happens back in ``serve()`` once ``run()`` has returned.
The second raises KeyboardInterrupt, which ends even a handler blocked on
the loop's thread; every server is still closed (see ``Stopper``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import math
import sys
from typing import Any, Callable

from handlers import BaseRequestHandler

from .activation import listen_fds
from .build import FAMILIES, ServerMaker, UsageFailure, fit_max_connections, kinds_of, tls_context
from .errors import UsageError
from .loop import Reactor
from .proxy import add_serve_options, serve_settings
from .stopper import Stopper, close_servers
from .tls import HANDSHAKE_TIMEOUT
from .workers import Workers

__all__ = ["add_serve_parser", "serve", "parse_address", "parse_socket_mode", "load_handler", "close_servers", "UsageFailure"]

log = logging.getLogger("reactor")

#: Workers (threads or children) when ``--dispatch thread`` or ``fork`` gives no N.
DEFAULT_WORKERS = 8

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: Seconds running requests have, after the first signal, to finish (``--drain-timeout``).
DEFAULT_DRAIN_TIMEOUT = 10.0


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


def _worker_count(text: str) -> int:
    """``--workers``: a whole number of at least 1; an argparse type."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


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
  python -m reactor serve handlers.echo:LineEcho --tcp 0.0.0.0:9000 --workers 4 --dispatch thread:8
  systemd-socket-activate -l 9000 python -m reactor serve handlers.echo:LineEcho

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
    where = p.add_argument_group("addresses (each may repeat; at least one is required, unless the command is started "
                                 "by socket activation: it then serves the sockets passed to it)")
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
    procs = p.add_argument_group("worker processes (docs/workers.md)")
    procs.add_argument("--workers", type=_worker_count, default=None, metavar="N",
                       help="N worker processes, each with its own reactor, serving the same sockets; the supervisor "
                       "restarts one that dies, SIGHUP replaces them one at a time")
    procs.add_argument("--reuse-port", action="store_true",
                       help="with --workers: a socket of its own per worker (SO_REUSEPORT; --tcp and --udp with a "
                       "fixed port), the kernel spreading clients between them")
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
    add_dashboard_options(p)
    return p


def add_dashboard_options(p: argparse.ArgumentParser) -> None:
    """``--dashboard HOST:PORT`` and ``--dashboard-remote`` (serve and demo)."""
    p.add_argument("--dashboard", metavar="HOST:PORT", default=None,
                   help="also serve a live dashboard of the reactor there (the page, /events, /metrics, "
                   "/table.json; docs/dashboard.md); loopback only unless --dashboard-remote")
    p.add_argument("--dashboard-remote", action="store_true",
                   help="let --dashboard listen on an address that is not loopback (it shows client addresses)")


def dashboard_address(args: argparse.Namespace) -> Any:
    """The ``--dashboard`` address, checked (None without one); raises UsageFailure."""
    if args.dashboard is None:
        if args.dashboard_remote:
            raise UsageFailure("--dashboard-remote needs --dashboard HOST:PORT")
        return None
    from .dashboard import parse_address as parse_dashboard

    try:
        return parse_dashboard(args.dashboard, args.dashboard_remote)
    except UsageError as exc:
        raise UsageFailure(str(exc)) from None


def start_dashboard(reactor: Reactor, address: Any, allow_remote: bool) -> Any:
    """A dashboard on ``reactor`` at ``address`` (None: none); a bind failure is a UsageFailure."""
    if address is None:
        return None
    from .dashboard import add_dashboard

    try:
        return add_dashboard(reactor, address, allow_remote=allow_remote)
    except OSError as exc:
        raise UsageFailure(f"cannot serve the dashboard on {address[0]}:{address[1]}: {exc.strerror or exc}") from None


# ------------------------------------------------------------ serving


def _name_the_thread(record: logging.LogRecord) -> bool:
    """A trace line from another thread than the loop's says which (``[reactor worker 1] ...``)."""
    record.where = "" if record.threadName == "MainThread" else f"[{record.threadName}] "
    return True


def _setup_logging(level: str, tracing: bool, processes: bool = False) -> None:
    pid = "[%(process)d]" if processes else ""  # with --workers: which process says it
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")
    if tracing:
        trace = logging.getLogger("reactor.trace")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"trace{pid}: %(where)s%(message)s"))
        handler.addFilter(_name_the_thread)
        trace.addHandler(handler)
        trace.setLevel(logging.DEBUG)
        trace.propagate = False  # the root handler would print each line a second time


def serve(args: argparse.Namespace) -> int:
    """Run the serve command with parsed ``args``; returns the exit status."""
    passed: list[Any] = []
    try:
        addresses = [(kind, text, parse_address(kind, text)) for kind, text in args.addresses]
        passed = _activated(args)
        if not addresses and not passed:
            raise UsageFailure("no address: give at least one --tcp, --udp, --unix or --unix-dgram "
                               "(or start the command by socket activation)")  # fmt: skip
        if args.socket_mode is not None and all(FAMILIES[kind][1] for kind, _, _ in addresses):
            raise UsageFailure("--socket-mode needs a --unix or --unix-dgram address")
        _check_workers(args, addresses, passed)
        handler = load_handler(args.handler)
        kinds = [kind for kind, _, _ in addresses] or kinds_of(passed)
        context = tls_context(args, kinds)
        proxy = serve_settings(args, kinds)
        dashboard_at = dashboard_address(args)
    except UsageError as exc:  # UsageFailure included
        for sock in passed:
            sock.close()
        print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.trace, args.workers is not None)
    maker = ServerMaker(args, handler, context, fit_max_connections(args, kinds), proxy)
    makers = [functools.partial(maker.adopt, sock) for sock in passed] or [
        functools.partial(maker.bind, kind, text, address, reuse_port=args.reuse_port) for kind, text, address in addresses
    ]
    if args.workers is not None:
        return _serve_workers(args, maker, makers, dashboard_at)

    reactor = Reactor()
    servers: list[Any] = []
    stopper = Stopper(reactor, servers, args.drain_timeout)
    stopper.install()
    status = 0
    dashboard = None
    try:
        try:
            for make in makers:
                servers.append(make())
                reactor.add_server(servers[-1])
            dashboard = start_dashboard(reactor, dashboard_at, args.dashboard_remote)
            for server in servers:
                print(maker.line(server.request_table.name))
            if dashboard is not None:
                print(f"dashboard {dashboard.url}")
            sys.stdout.flush()
            stopper.run()
        except UsageFailure as exc:
            print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
            status = 2
        finally:
            # Our handlers stay in place while requests drain: a second
            # signal ends them at once, and every server is still closed.
            if dashboard is not None:
                dashboard.close()
            close_servers(servers, reactor, deadline=stopper.deadline, hurry=stopper.second is not None)
    except KeyboardInterrupt:  # a second signal, or the grace period ran out while the loop was busy
        status = stopper.exit_status()
    finally:
        stopper.restore()
    return status


def _activated(args: argparse.Namespace) -> list[Any]:
    """With no address option: the sockets passed by socket activation (reactor.activation), if any."""
    if args.addresses:
        return []
    try:
        return [passed.socket for passed in listen_fds()]
    except UsageError as exc:
        raise UsageFailure(f"socket activation: {exc}") from None


def _check_workers(args: argparse.Namespace, addresses: list[tuple[str, str, Any]], passed: list[Any]) -> None:
    """``--reuse-port`` needs ``--workers``, fixed TCP or UDP ports, and addresses to bind."""
    if not args.reuse_port:
        return
    if args.workers is None:
        raise UsageFailure("--reuse-port needs --workers N")
    if passed:
        raise UsageFailure("--reuse-port binds a socket per worker: the sockets passed by socket activation are shared")
    for kind, text, address in addresses:
        if not FAMILIES[kind][1]:
            raise UsageFailure(f"--reuse-port is for --tcp and --udp addresses, not --{kind} {text}: "
                               "a socket file cannot be bound once per worker")  # fmt: skip
        if address[1] == 0:
            raise UsageFailure(f"--reuse-port needs a fixed port, not --{kind} {text}: "
                               "with port 0 each worker would get a port of its own")  # fmt: skip


def _serve_workers(args: argparse.Namespace, maker: ServerMaker, makers: list[Callable[[], Any]],
                   dashboard_at: Any = None) -> int:  # fmt: skip
    """``--workers N``: a supervisor (reactor.workers) forks N workers serving the servers ``makers`` make;
    with ``--dashboard``, the supervisor serves one of them all (reactor/dashboard/supervisor.py)."""

    def make_servers() -> list[Any]:
        servers: list[Any] = []
        try:
            for make in makers:
                servers.append(make())
        except BaseException:
            close_servers(servers)
            raise
        return servers

    def announce(names: list[str]) -> None:
        for name in names:
            print(maker.line(name, args.workers))
        if workers.dashboard is not None:
            print(f"dashboard {workers.dashboard.url}")
        sys.stdout.flush()

    workers = Workers(make_servers, args.workers, reuse_port=args.reuse_port, drain_timeout=args.drain_timeout,
                      on_serving=announce, dashboard=dashboard_at, dashboard_remote=args.dashboard_remote)  # fmt: skip
    try:
        return workers.run()
    except UsageError as exc:  # a bind failure (UsageFailure), here or in a worker
        print(f"python -m reactor serve: error: {exc}", file=sys.stderr)
        return 2
