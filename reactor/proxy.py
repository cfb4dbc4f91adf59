"""The PROXY protocol on stream servers: the proxy's header, read by the loop.

Behind a proxy that speaks the PROXY protocol (HAProxy's ``send-proxy``
or ``send-proxy-v2``), every connection starts with a header naming the
real client.  A server with ``proxy_protocol`` set reads that header
first, before a TLS handshake (the header comes before the ClientHello)
and before ``verify_request()``; handlers then see the real client in
``client_address``, and so do the record (``peer``), the trace and
``snapshot()``.  The proxy's own address stays reachable: the socket's
``getpeername()``, and ``record.proxy_address``.

    ACCEPTED -proxy-> PROXYING -proxied-> ACCEPTED   (then TLS, if any, and the lifecycle)
    PROXYING -abort-> CLOSED   (untrusted peer, invalid or late header, the server closing)

The header is read in the loop, without blocking, within
``proxy_timeout``, and never a byte past it: the reader looks with
``recv(n, MSG_PEEK)``, and takes only bytes it knows are header (the
parser, ``reactor.proxyheader``, says so), so what follows the header (a
ClientHello, the first request) stays in the kernel for TLS or the
handler.  Only peers in ``proxy_from`` may send one (loopback by
default); a Unix stream socket's peer is on this machine and always
trusted.  A connection from anyone else, with an invalid header, or
without a whole header in time, is closed, counted (``proxy_untrusted``,
``proxy_invalid``, ``proxy_timeout``) and logged at DEBUG, rate-limited;
nobody else notices.

``handle_request()`` without a reactor reads the header blocking, for at
most ``proxy_timeout`` seconds.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import time
from typing import Any, Callable

from .errors import UsageError
from .proxyheader import V1_MAX, InvalidHeader, ProxyHeader, expected_length, parse
from .table import Event

__all__ = [
    "ProxyReader", "Intake", "PROXY_TIMEOUT", "PROXY_FROM", "check_mode", "check_networks", "check_setting", "trusted",
    "add_serve_options", "serve_settings",
]  # fmt: skip

#: Default ``proxy_timeout``: seconds a proxy has, from ``accept()``, to send its whole header.
PROXY_TIMEOUT = 10.0
#: Default ``proxy_from``: the peers a header is accepted from (a Unix socket's peer always is).
PROXY_FROM = ("127.0.0.0/8", "::1/128")

# proxy_protocol -> the header versions accepted
_MODES: dict[Any, tuple[int, ...]] = {True: (1, 2), "v1": (1,), "v2": (2,)}
_TAKE = 65536  # most bytes taken at once of a long v2 header (its extensions)


# ------------------------------------------------------------- settings


def check_mode(name: str, value: Any) -> tuple[int, ...]:
    """The header versions ``proxy_protocol`` = ``value`` accepts (``()``: off); else UsageError.

    False or None: off; True: v1 or v2, told apart by the first byte;
    ``"v1"`` or ``"v2"``: that one only.
    """
    if value is None or value is False:
        return ()
    if value is True or (isinstance(value, str) and value in _MODES):
        return _MODES[value]
    raise UsageError(f"{name} must be True (v1 or v2), 'v1', 'v2' or False, not {value!r}")


def check_networks(name: str, value: Any) -> tuple[Any, ...]:
    """``proxy_from`` = ``value`` as a tuple of ``ipaddress`` networks; else UsageError.

    ``value``: an iterable of CIDR strings (``"10.0.0.0/8"``, ``"::1/128"``;
    a lone address is a /32 or /128) or ``ipaddress`` network objects.
    """
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise UsageError(f"{name} must be a list of networks such as ['10.0.0.0/8', '::1/128'], not {value!r}")
    networks = []
    for item in value:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        try:
            if not isinstance(item, str):
                raise TypeError
            networks.append(ipaddress.ip_network(item.strip()))
        except (TypeError, ValueError) as exc:
            why = f": {exc}" if isinstance(exc, ValueError) else ""
            raise UsageError(f"{name}: {item!r} is not a network such as '10.0.0.0/8'{why}") from None
    return tuple(networks)


def check_setting(server: Any, name: str, value: Any) -> Any:
    """Check ``proxy_protocol`` or ``proxy_from`` as it is set on ``server`` (an instance, or a
    class: its body); return what to store: ``proxy_from`` on an instance as a tuple of networks.

    Raises UsageError for nonsense, and for ``proxy_protocol`` on a
    datagram server (a datagram has no connection to start with a header).
    """
    label = f"{server.__name__}.{name}" if isinstance(server, type) else name
    if name == "proxy_from":
        networks = check_networks(label, value)
        return value if isinstance(server, type) else networks
    check_mode(label, value)
    if value and getattr(server, "socket_type", socket.SOCK_STREAM) != socket.SOCK_STREAM:
        who = server.__name__ if isinstance(server, type) else type(server).__name__
        raise UsageError(f"{who} is a datagram server: the PROXY protocol needs a stream server")
    return value


def trusted(server: Any, client_address: Any) -> bool:
    """May this peer send a PROXY header?  On a Unix socket, always; else if it is in ``proxy_from``."""
    if server.address_family == getattr(socket, "AF_UNIX", None):
        return True
    value = server.proxy_from
    cached = server.__dict__.get("_proxy_networks")
    if cached is None or cached[0] is not value:  # worked out once per value set
        cached = (value, check_networks("proxy_from", value))
        server.__dict__["_proxy_networks"] = cached
    try:
        address = ipaddress.ip_address(str(client_address[0]).split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.1.2.3 on a dual-stack socket
    return any(address in network or (mapped is not None and mapped in network) for network in cached[1])


# ------------------------------------------------------------- reading


class Intake:
    """One connection's PROXY header, read off its socket, never a byte past it.

    ``read(sock)`` does one step: it peeks at what has come, and takes
    (``recv``) only bytes the parser says are header.  Returns the
    ``ProxyHeader`` once it is whole, or None (more is needed).  Raises
    ``InvalidHeader`` (including for a connection that ended first),
    ``BlockingIOError`` (a nonblocking socket with nothing yet),
    ``TimeoutError`` or another ``OSError``.
    """

    __slots__ = ("versions", "buffer", "expected")

    def __init__(self, versions: tuple[int, ...]) -> None:
        self.versions = versions
        self.buffer = b""  # the header's bytes taken so far
        self.expected: int | None = None  # a v2 header's whole length, once known

    def read(self, sock: socket.socket) -> ProxyHeader | None:
        if self.expected is not None:  # v2, length known: every byte up to it is header
            self.buffer += self._got(sock.recv(min(self.expected - len(self.buffer), _TAKE)))
            return parse(self.buffer, self.versions) if len(self.buffer) >= self.expected else None
        peeked = self._got(sock.recv(V1_MAX - len(self.buffer), socket.MSG_PEEK))
        header = parse(self.buffer + peeked, self.versions)
        # None: everything peeked is header (the parser's promise); else take the header's rest only.
        self.buffer += self._take(sock, len(peeked) if header is None else header.length - len(self.buffer))
        if header is None:
            self.expected = expected_length(self.buffer)
        return header

    def _got(self, data: bytes) -> bytes:
        if not data:
            raise InvalidHeader(f"the connection ended after {len(self.buffer)} bytes of its PROXY header")
        return data

    def _take(self, sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:  # peeked already: there, in the kernel
            data += self._got(sock.recv(n - len(data)))
        return data


class ProxyReader:
    """One accepted connection's PROXY header, read by the loop without blocking.

    ``start()`` moves the record to PROXYING and closes the connection at
    once if its peer is not trusted (``proxy_from``).  Otherwise the header
    is read as it comes; once whole, the record's peer becomes the real
    client (``RequestTable.readdress``), the record goes back to ACCEPTED,
    and ``then(client_address)`` carries on (TLS, then the lifecycle).
    Invalid, late (``proxy_timeout``) or aborted (the server stops
    serving): the connection is closed and its record aborted, counted
    (``proxy_invalid``, ``proxy_timeout``) and logged at DEBUG
    (rate-limited).  Loop thread only.
    """

    __slots__ = ("server", "record", "client_address", "_sock", "_reactor", "_then", "_intake", "_timer",
                 "_timeout", "_watching")  # fmt: skip

    def __init__(self, server: Any, sock: socket.socket, client_address: Any, record: Any, reactor: Any,
                 then: Callable[[Any], None]) -> None:  # fmt: skip
        self.server = server
        self.record = record
        self.client_address = client_address
        self._sock = sock
        self._reactor = reactor
        self._then = then
        self._intake = Intake(_MODES[server.proxy_protocol])
        self._timer: Any = None
        self._timeout: float | None = None
        self._watching = False

    def __repr__(self) -> str:
        return f"<ProxyReader #{self.record.id} {self.client_address!r} {self.record.state.name}>"

    def trace_label(self, fd: int) -> str:
        """What the trace calls the socket while its header is awaited: ``tcp4 127.0.0.1:9000 #3 PROXY header``."""
        return f"{self.server.request_table.name} #{self.record.id} PROXY header"

    def start(self) -> None:
        if not _expect(self.server, self._sock, self.client_address, self.record):
            return
        self._timeout = self._sock.gettimeout()
        self._sock.setblocking(False)
        if self._step():  # the header usually comes with the connection
            return
        self.server._proxy_readers.add(self)
        if self.server.proxy_timeout is not None:
            self._timer = self._reactor.call_later(self.server.proxy_timeout, self._timed_out)
        self._reactor.add_reader(self._sock, self._step)
        self._watching = True

    @staticmethod
    def blocking(server: Any, sock: socket.socket, client_address: Any, record: Any) -> Any:
        """The header without a loop (``handle_request()`` on its own), blocking for at
        most ``proxy_timeout``: the real client's address, or None (the connection
        was closed and its record aborted)."""
        if not _expect(server, sock, client_address, record):
            return None
        timeout, limit = sock.gettimeout(), server.proxy_timeout
        deadline = None if limit is None else time.monotonic() + limit
        intake = Intake(_MODES[server.proxy_protocol])
        try:
            header = None
            while header is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                header = intake.read(sock)
        except TimeoutError:
            server._drop_early(sock, client_address, "proxy_timeout", f"no whole PROXY header within {limit} s")
            return None
        except (InvalidHeader, OSError) as exc:
            server._drop_early(sock, client_address, "proxy_invalid", _why(exc))
            return None
        sock.settimeout(timeout)
        return _proxied(server, record, client_address, header)

    def _step(self) -> bool:
        """Read what has come; True once the reader is done (carried on, or closed)."""
        try:
            header = self._intake.read(self._sock)
        except (BlockingIOError, InterruptedError):
            return False
        except (InvalidHeader, OSError) as exc:
            self._fail("proxy_invalid", _why(exc))
            return True
        if header is None:
            return False
        self._end()
        self._sock.settimeout(self._timeout)  # as accept() made it: a classic handler's socket blocks
        self._then(_proxied(self.server, self.record, self.client_address, header))
        return True

    def _timed_out(self) -> None:
        self._timer = None
        self._fail("proxy_timeout", f"no whole PROXY header within proxy_timeout ({self.server.proxy_timeout} s)")

    def abort(self, reason: str) -> None:
        """Close now (the server stops serving)."""
        self._fail("", reason)

    def _fail(self, counter: str, reason: str) -> None:
        self._end()
        self.server._drop_early(self._sock, self.client_address, counter, reason)

    def _end(self) -> None:
        self.server._proxy_readers.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watching:
            self._watching = False
            self._reactor.remove_reader(self._sock)


def _expect(server: Any, sock: Any, client_address: Any, record: Any) -> bool:
    """The record enters PROXYING; False (and the connection closed) if its peer may not send a header."""
    versions = "v1 or v2" if server.proxy_protocol is True else server.proxy_protocol
    server.request_table.transition(record, Event.PROXY, f"a PROXY header ({versions}) is expected")
    if trusted(server, client_address):
        return True
    server._drop_early(sock, client_address, "proxy_untrusted", "not in proxy_from: a PROXY header is not accepted from it")
    return False


def _proxied(server: Any, record: Any, client_address: Any, header: ProxyHeader) -> Any:
    """The header is read: the record's peer becomes the real client (PROXIED); returns its address."""
    table = server.request_table
    table.readdress(record, header.source)
    if header.source is None:
        said = f"v{header.version} {header.command} {header.family}: the peer {client_address!r} is the client"
    else:
        said = f"v{header.version} {header.family}: client {header.source!r} via {client_address!r}"
    table.transition(record, Event.PROXIED, said)
    return client_address if header.source is None else header.source


def _why(exc: BaseException) -> str:
    if isinstance(exc, InvalidHeader):
        return f"invalid PROXY header: {exc}"
    return f"the connection failed before its PROXY header was whole: {exc.strerror or exc}"  # type: ignore[attr-defined]


# ------------------------------------------------------- the command line


def add_serve_options(parser: Any, seconds: Callable[[str], Any]) -> None:
    """``--proxy-protocol [v1|v2]``, ``--proxy-from CIDR,...`` and ``--proxy-timeout S``
    for ``python -m reactor serve`` (``seconds``: its argparse type for seconds)."""
    group = parser.add_argument_group("PROXY protocol (on every --tcp and --unix server; datagram servers take none)")
    group.add_argument("--proxy-protocol", nargs="?", const=True, default=False, type=_version_option,
                       metavar="v1|v2", help="read a PROXY header (v1 or v2; given one, only that one) first on "
                       "every connection: handlers see the client the proxy names")  # fmt: skip
    group.add_argument("--proxy-from", metavar="CIDR,...", default=None,
                       help="the proxies a header is accepted from (default " + ",".join(PROXY_FROM) + "; a Unix "
                       "socket's peer always is); any other peer is closed")  # fmt: skip
    group.add_argument("--proxy-timeout", type=seconds, metavar="S", default=argparse.SUPPRESS,
                       help=f"seconds a proxy has to send its whole header (default {PROXY_TIMEOUT:g}; 'none': no limit)")


def serve_settings(args: Any, kinds: list[str]) -> dict[str, Any]:
    """The PROXY attributes ``serve`` sets on each stream server ({} without ``--proxy-protocol``).

    Raises UsageError for a bad ``--proxy-from``, for ``--proxy-from`` or
    ``--proxy-timeout`` without ``--proxy-protocol``, and for
    ``--proxy-protocol`` without a stream address.
    """
    if not args.proxy_protocol:
        for option, given in (("--proxy-from", args.proxy_from is not None), ("--proxy-timeout", "proxy_timeout" in args)):
            if given:
                raise UsageError(f"{option} needs --proxy-protocol")
        return {}
    if not any(kind in ("tcp", "unix") for kind in kinds):
        raise UsageError("--proxy-protocol needs a --tcp or --unix address (a datagram server takes no PROXY header)")
    settings: dict[str, Any] = {"proxy_protocol": args.proxy_protocol}
    if args.proxy_from is not None:
        settings["proxy_from"] = check_networks("--proxy-from", args.proxy_from.split(","))
    if "proxy_timeout" in args:
        settings["proxy_timeout"] = args.proxy_timeout
    return settings


def _version_option(text: str) -> str:
    if text not in ("v1", "v2"):
        raise argparse.ArgumentTypeError(f"expected v1 or v2 (or no value: both), not {text!r}")
    return text
