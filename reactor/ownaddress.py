"""Would a reply to this address come back to us?  The self-echo guard.

A datagram server answers each datagram's source address, and a UDP
source address is whatever the sender wrote in the packet.  One datagram
forged to come "from" the server's own address makes an echo server
answer itself, read its answer as a new request, answer that, and so on
for ever: a whole core, from one packet.  So a datagram server never
sends a reply to its own address (``reactor.datagram.ReplyQueue`` asks
``address in OwnAddress(sock)`` before every send).

Which addresses are the server's own, that is, deliver to its socket:

* **Unix datagram**: the socket's own path or abstract name.  The kernel
  writes the sender's address, so only the server itself sends from it.
  (An unbound sender's address is empty, and nothing is sent to that.)
* **IP**: the socket's port, with one of these hosts:

  - the host it is bound to, compared as addresses, so ``::ffff:1.2.3.4``
    is ``1.2.3.4`` and spelling does not matter;
  - the unspecified address (``0.0.0.0``, ``::``): Linux delivers a
    datagram sent there to the sending host itself;
  - when bound to the wildcard (``0.0.0.0``, ``::``), any address of this
    host: any loopback address, and any address the kernel lets a socket
    bind to (asked once per address with a throwaway ``bind()``, the
    answer kept for a minute).  Where binding to any address is allowed
    (Linux's ``net.ipv4.ip_nonlocal_bind = 1``), that question tells
    nothing, and only loopback addresses count.

What it cannot see: two servers forged at each other (A's reply goes to
B, B's to A) each see a foreign address; no single server can tell.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

__all__ = ["OwnAddress"]

#: Seconds a "this host has that address" answer is kept.
LOCAL_TTL = 60.0
#: At most this many answers are kept (beyond, they are all forgotten).
LOCAL_CACHE = 256

_NONLOCAL_BIND = {
    socket.AF_INET: "/proc/sys/net/ipv4/ip_nonlocal_bind",
    socket.AF_INET6: "/proc/sys/net/ipv6/ip_nonlocal_bind",
}


class OwnAddress:
    """The address a datagram socket is bound to, and the test ``address in own``.

    Made from a bound socket (``sock.getsockname()`` is read once, here;
    a socket not bound yet, or closed, owns nothing: ``bound`` is False).
    ``address in own`` is True if a datagram sent to ``address`` would be
    delivered to that socket (see the module docstring).  It never raises:
    an address it cannot read is not ours.  Safe from any thread.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.family = sock.family
        try:
            self.address: Any = sock.getsockname()
        except OSError:  # closed: nothing is ours
            self.address = None
        #: False while the socket is not bound yet: nothing can be ours then.
        self.bound = bool(self.address) and not (isinstance(self.address, tuple) and self.address[1] == 0)
        self._inet = isinstance(self.address, tuple)
        self._port = self.address[1] if self._inet else None
        self._host = _ip(self.address[0]) if self._inet else None
        self._wildcard = self._host is not None and self._host.is_unspecified
        # (ip, scope) -> (local?, when asked).  No lock: each get, set and
        # clear is atomic, and two threads asking at once both get it right.
        self._local: dict[tuple[Any, Any], tuple[bool, float]] = {}

    def __contains__(self, address: Any) -> bool:
        if not self._inet:
            return self.bound and address == self.address
        # The port first: it rules out nearly every peer for the price of a compare.
        if type(address) is not tuple or len(address) < 2 or address[1] != self._port or not self.bound:
            return False
        ip = _ip(address[0])
        if ip is None:
            return False
        if ip == self._host or ip.is_unspecified:
            return True
        if not self._wildcard:
            return False
        if ip.is_loopback:
            return True
        return self._is_local(ip, address)

    def _is_local(self, ip: Any, address: tuple) -> bool:
        """Is ``ip`` an address of this host?  Asks the kernel with a bind()."""
        scope = address[3] if len(address) >= 4 else 0
        key, now = (ip, scope), time.monotonic()
        known = self._local.get(key)
        if known is not None and now - known[1] < LOCAL_TTL:
            return known[0]
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        local = _binds(family, str(ip), scope) and not _nonlocal_bind_allowed(family)
        if len(self._local) >= LOCAL_CACHE:
            self._local.clear()
        self._local[key] = (local, now)
        return local

    def __repr__(self) -> str:
        return f"<OwnAddress {self.address!r}{' (wildcard)' if self._wildcard else ''}>"


def _ip(host: Any) -> Any:
    """``host`` as an ip_address (an IPv4-mapped IPv6 address as IPv4), or None."""
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # the scope travels apart, in the 4-tuple
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def _binds(family: int, host: str, scope: int) -> bool:
    # Only an address of this host can be bound (EADDRNOTAVAIL otherwise).
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0) if family == socket.AF_INET else (host, 0, 0, scope))
    except OSError:
        return False  # not ours (or out of descriptors: then the reply is sent, as before)
    return True


def _nonlocal_bind_allowed(family: int) -> bool:
    try:
        with open(_NONLOCAL_BIND[family]) as f:
            return f.read().strip() != "0"
    except (OSError, KeyError):
        return False  # not Linux, or an older kernel: bind() means what it says
