"""The serve command's servers: from its parsed options to servers, each configured alike.

``python -m reactor serve`` makes its servers in one of three places: in
its own process (the default), once in the supervisor before the workers
start (``--workers N``, the sockets shared), or in every worker
(``--workers N --reuse-port``, a socket each); and either on an address it
binds or on a socket it was given (socket activation).  ``ServerMaker``
does it the same way everywhere: the server class for the address, a
dispatch strategy instance of its own, the bounds as instance attributes,
TLS on stream servers, and a bind failure as a one-line ``UsageFailure``.
Before any server is made, ``fit_max_connections`` raises the descriptor
limit and shares it out, and ``tls_context`` loads the certificate.
"""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

from .activation import server_on
from .admission import DEFAULT_MAX_CONNECTIONS, descriptor_budget
from .datagram import UDPServer
from .dispatch import Inline, Strategy, ThreadPool
from .errors import ReactorError, UsageError
from .forking import Fork
from .tcp import TCPServer
from .tls import server_context
from .unix import UnixDatagramServer, UnixStreamServer

__all__ = ["ServerMaker", "UsageFailure", "FAMILIES", "BOUNDS", "make_strategy", "fit_max_connections",
           "raise_descriptor_limit", "tls_context", "kinds_of"]

log = logging.getLogger("reactor")

#: The families whose servers are stream servers (TLS applies to them).
STREAM_NAMES = ("tcp4", "tcp6", "unix")


class UsageFailure(UsageError):
    """Something the user gave cannot work; ``str()`` is the one line to print."""


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


def make_strategy(spec: tuple[str, int]) -> Strategy:
    """A new strategy instance for one server."""
    name, count = spec
    if name == "thread":
        return ThreadPool(count)
    if name == "fork":
        return Fork(count)
    return Inline()


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


def strategy_label(spec: tuple[str, int]) -> str:
    return spec[0] if spec[0] == "inline" else f"{spec[0]}:{spec[1]}"


def kinds_of(sockets: list[socket.socket]) -> list[str]:
    """The address option each given socket stands for (``tcp``, ``udp``, ``unix``, ``unix-dgram``)."""
    unix = getattr(socket, "AF_UNIX", None)
    names = {(True, True): "unix", (True, False): "unix-dgram", (False, True): "tcp", (False, False): "udp"}
    return [names[(sock.family == unix, sock.type == socket.SOCK_STREAM)] for sock in sockets]


class ServerMaker:
    """Makes the servers the serve command's options ask for, each configured alike.

    ``args``: the parsed options; ``handler``: the handler class;
    ``context``: the ``ssl.SSLContext`` (None: no TLS); ``max_connections``:
    what ``fit_max_connections`` chose (None: keep what was given).  Every
    server gets its own dispatch strategy, ``drain_timeout``, the bounds
    given, and TLS and the PROXY protocol if it is a stream server.  Safe
    to use in a forked worker.
    """

    def __init__(self, args: argparse.Namespace, handler: type, context: Any, max_connections: int | None,
                 proxy: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.args = args
        self.handler = handler
        self.context = context
        self.max_connections = max_connections
        self.proxy = proxy or {}  # the PROXY protocol's attributes for stream servers (reactor.proxy.serve_settings)

    def bind(self, kind: str, text: str, address: Any, *, reuse_port: bool = False) -> Any:
        """A new server of ``kind`` bound to ``address`` (``text`` as given, for errors).

        ``reuse_port``: set SO_REUSEPORT before binding (each worker's own
        socket on a shared port).  Raises ``UsageFailure`` if it cannot bind.
        """
        server_class, has_port = FAMILIES[kind]
        attributes: dict[str, Any] = {}
        if self.args.socket_mode is not None and not has_port:  # class attributes: the constructor binds
            attributes["socket_mode"] = self.args.socket_mode
        if reuse_port:
            attributes["allow_reuse_port"] = True
        if attributes:
            server_class = type(server_class.__name__, (server_class,), attributes)
        try:
            server = server_class(address, self.handler, dispatch=make_strategy(self.args.dispatch),
                                  **self._secure(kind))  # fmt: skip
        except (OSError, ReactorError) as exc:  # the constructor has closed its own socket
            raise UsageFailure(f"cannot bind {kind} {text}: {exc}") from exc
        return self._configure(server, kind)

    def adopt(self, sock: socket.socket) -> Any:
        """A server on ``sock``, a socket this process was given (no bind, no listen; see ``server_on``)."""
        kind = kinds_of([sock])[0]
        try:
            server = server_on(sock, self.handler, dispatch=make_strategy(self.args.dispatch), **self._secure(kind))
        except ReactorError as exc:
            raise UsageFailure(f"cannot serve the socket passed as descriptor {sock.fileno()}: {exc}") from exc
        return self._configure(server, kind)

    def line(self, name: str, workers: int = 0) -> str:
        """The ``serving ...`` line for the server called ``name`` (its request table's name)."""
        stream = name.split()[0] in STREAM_NAMES
        tls = ", TLS" if self.context is not None and stream else ""
        tls += ", PROXY" if self.proxy and stream else ""
        count = f", {workers} workers" if workers else ""
        return f"serving {name} ({self.handler.__name__}, {strategy_label(self.args.dispatch)}{tls}{count})"

    def _secure(self, kind: str) -> dict[str, Any]:
        return {"ssl_context": self.context} if self.context is not None and kind in ("tcp", "unix") else {}

    def _configure(self, server: Any, kind: str) -> Any:
        try:
            self._set_bounds(server, kind)
        except BaseException:
            server.server_close()
            raise
        return server

    def _set_bounds(self, server: Any, kind: str) -> None:
        args = self.args
        server.drain_timeout = args.drain_timeout
        if self.max_connections is not None and kind in ("tcp", "unix"):
            server.max_connections = self.max_connections
        for option, attribute in BOUNDS.items():
            if hasattr(args, option):  # given (None for 'none'); absent: the class default stays
                setattr(server, attribute, getattr(args, option))
        if self._secure(kind) and "handshake_timeout" in args:
            server.handshake_timeout = args.handshake_timeout
        for attribute, value in (self.proxy if kind in ("tcp", "unix") else {}).items():
            setattr(server, attribute, value)
