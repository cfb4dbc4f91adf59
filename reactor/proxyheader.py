"""The PROXY protocol's header, versions 1 and 2, parsed from bytes: no sockets here.

A proxy or load balancer that relays a TCP connection (HAProxy's
``send-proxy`` and ``send-proxy-v2``, many cloud load balancers) can
start it with one header saying who the real client is; the server then
reads that header before anything else.  This module only looks at bytes:
``parse(data)`` says, for the bytes received so far,

* ``None``: not enough yet; every byte given is part of the header (so a
  reader may consume them all and still never read past the header);
* a ``ProxyHeader``: the header is the first ``length`` bytes, naming the
  client (``source``) and the address it reached (``destination``), or
  none (``source`` None: a health check from the proxy itself, or a
  connection the proxy could not describe: keep the socket's own peer);
* ``InvalidHeader`` raised, with the reason: the connection must be closed.

Version 1 is one line of text, at most 107 bytes with its CRLF::

    PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\\r\\n
    PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\\r\\n
    PROXY UNKNOWN\\r\\n                      (anything may follow UNKNOWN up to the CRLF)

Version 2 is binary: a 12-byte signature, a version/command byte (LOCAL:
the proxy's own connection, such as a health check; PROXY: a relayed one),
a family/transport byte (IPv4, IPv6 or Unix; stream, datagram or
unspecified), a big-endian length, then the addresses (and ports), then
type-length-value extensions, which are checked for fit and skipped.

Strict, as the specification asks: exactly one space between v1 fields,
no leading zeros in ports or IPv4 numbers, ports 0-65535, addresses that
parse, no lone CR or LF, v2's version 2 only, known commands, families and
transports only, an address block as long as its family needs, and
extensions that fill the rest exactly.  A datagram's addresses (v2 DGRAM)
are refused: the connection they arrive on is a stream.

Addresses come out shaped as ``accept()`` shapes them: ``(host, port)``
for IPv4, ``(host, port, 0, 0)`` for IPv6, a path (str) for a Unix
socket, ``""`` for an unnamed one, bytes starting with NUL for an
abstract one.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, NamedTuple

__all__ = ["ProxyHeader", "InvalidHeader", "parse", "expected_length", "V1_MAX", "V2_SIGNATURE", "VERSIONS"]

#: The longest v1 header, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses and ports).
V1_MAX = 107
#: What every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Both versions, the default of ``parse``.
VERSIONS = (1, 2)

_V1_START = b"PROXY "
_V2_FIXED = 16  # signature, version/command, family/transport, length
_PORT_DIGITS = frozenset(b"0123456789")
_V4_CHARS = frozenset(b"0123456789.")
_V6_CHARS = frozenset(b"0123456789abcdefABCDEF:.")
# v2: family nibble -> (name, bytes of one address); 0 is AF_UNSPEC
_V2_FAMILIES = {0: ("UNKNOWN", 0), 1: ("TCP4", 4), 2: ("TCP6", 16), 3: ("UNIX", 108)}
_LOCAL, _PROXY = 0, 1
_UNSPEC, _STREAM, _DGRAM = 0, 1, 2


class InvalidHeader(ValueError):
    """The bytes are not a valid PROXY header; ``str()`` says why, in a few words."""


class ProxyHeader(NamedTuple):
    """A complete PROXY header, the first ``length`` bytes of the connection.

    ``version``: 1 or 2.  ``command``: ``"PROXY"`` (relayed for a client)
    or ``"LOCAL"`` (v2: the proxy's own connection, a health check).
    ``family``: ``"TCP4"``, ``"TCP6"``, ``"UNIX"`` or ``"UNKNOWN"``.
    ``source``/``destination``: the client's address and the address it
    connected to, or None when the header names none (LOCAL, UNKNOWN,
    v2's unspecified family or transport): keep the socket's own peer.
    """

    length: int
    version: int
    command: str
    family: str
    source: Any
    destination: Any


def parse(data: bytes | bytearray | memoryview, versions: tuple[int, ...] = VERSIONS) -> ProxyHeader | None:
    """The header at the start of ``data``; None if more bytes are needed.

    ``versions``: the versions accepted, ``(1, 2)``, ``(1,)`` or ``(2,)``.
    Raises ``InvalidHeader`` as soon as the bytes cannot be the start of
    an accepted header.  When it returns None, all of ``data`` belongs to
    the header: none of it is the client's own data.
    """
    data = bytes(data)
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        if 2 not in versions and V2_SIGNATURE.startswith(data[:12]):
            raise InvalidHeader("a v2 header, and only v1 is accepted")
        return _parse_v2(data)
    if data[0] == _V1_START[0]:
        if 1 not in versions and _V1_START.startswith(data[: len(_V1_START)]):
            raise InvalidHeader("a v1 header, and only v2 is accepted")
        return _parse_v1(data)
    raise InvalidHeader(f"not a PROXY header: it starts with {data[:8]!r}")


def expected_length(data: bytes | bytearray) -> int | None:
    """A v2 header's whole length once its first 16 bytes are in ``data``; else None
    (v1, whose end is its CRLF, or too few bytes yet)."""
    if len(data) < _V2_FIXED or bytes(data[:12]) != V2_SIGNATURE:
        return None
    return _V2_FIXED + int.from_bytes(data[14:16], "big")


# ------------------------------------------------------------------ v1


def _parse_v1(data: bytes) -> ProxyHeader | None:
    start = data[: len(_V1_START)]
    if not _V1_START.startswith(start):
        raise InvalidHeader(f"not a PROXY header: it starts with {data[:8]!r}")
    end = _line_end(data)
    if end < 0:
        if len(data) >= V1_MAX:
            raise InvalidHeader(f"a v1 header without its CRLF in the first {V1_MAX} bytes")
        return None
    fields = data[len(_V1_START) : end].split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":  # the rest of the line is ignored, as the specification says
        return ProxyHeader(end + 2, 1, "PROXY", "UNKNOWN", None, None)
    if protocol not in (b"TCP4", b"TCP6"):
        raise InvalidHeader(f"a v1 header for {_shown(protocol)}: TCP4, TCP6 or UNKNOWN expected")
    if len(fields) != 5 or not all(fields):
        raise InvalidHeader("a v1 header with other than one space between its six fields")
    six = protocol == b"TCP6"
    source = _v1_address(fields[1], six), _v1_port(fields[3])
    destination = _v1_address(fields[2], six), _v1_port(fields[4])
    if six:
        source, destination = source + (0, 0), destination + (0, 0)
    return ProxyHeader(end + 2, 1, "PROXY", protocol.decode(), source, destination)


def _line_end(data: bytes) -> int:
    """Where the CRLF ending a v1 line starts (-1: not yet); a lone CR or LF is invalid."""
    for i in range(len(_V1_START), min(len(data), V1_MAX)):
        byte = data[i]
        if byte == 0x0A:
            raise InvalidHeader("a v1 header with a lone LF (CRLF expected)")
        if byte == 0x0D:
            if i == V1_MAX - 1:
                break  # its LF would be byte 108: too long
            if i + 1 == len(data):
                return -1  # the LF may be on its way
            if data[i + 1] != 0x0A:
                raise InvalidHeader("a v1 header with a lone CR (CRLF expected)")
            return i
    return -1


def _v1_address(text: bytes, six: bool) -> str:
    allowed = _V6_CHARS if six else _V4_CHARS
    try:
        if not set(text) <= allowed:
            raise ValueError
        return str((ipaddress.IPv6Address if six else ipaddress.IPv4Address)(text.decode("ascii")))
    except ValueError:  # (leading zeros in an IPv4 number are refused by ipaddress itself)
        raise InvalidHeader(f"a v1 header with a bad {'IPv6' if six else 'IPv4'} address {_shown(text)}") from None


def _v1_port(text: bytes) -> int:
    if not text or not set(text) <= _PORT_DIGITS or (len(text) > 1 and text[0] == 0x30) or int(text) > 65535:
        raise InvalidHeader(f"a v1 header with a bad port {_shown(text)}: 0 to 65535, no leading zeros")
    return int(text)


def _shown(text: bytes) -> str:
    return repr(text[:48].decode("ascii", "replace"))


# ------------------------------------------------------------------ v2


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not V2_SIGNATURE.startswith(data[:12]):
        raise InvalidHeader(f"not a PROXY header: it starts with {data[:8]!r}")
    if len(data) < _V2_FIXED:
        if len(data) > 12:
            _check_v2_fixed(data)  # what is there already may be wrong
        return None
    family, transport, command, length = _check_v2_fixed(data)
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    body = data[_V2_FIXED:total]
    if command == _LOCAL:  # the proxy's own connection: the address block is ignored, whatever it says
        return ProxyHeader(total, 2, "LOCAL", "UNKNOWN", None, None)
    name, size = _V2_FAMILIES[family]
    if family == 0 or transport == _UNSPEC:  # relayed, but the proxy cannot say from where
        return ProxyHeader(total, 2, "PROXY", "UNKNOWN", None, None)
    block = 2 * size + (4 if family in (1, 2) else 0)
    if length < block:
        raise InvalidHeader(f"a v2 {name} header of {length} address bytes: {block} needed")
    _check_tlvs(body[block:])
    if family == 3:
        return ProxyHeader(total, 2, "PROXY", name, _unix_address(body[:108]), _unix_address(body[108:216]))
    cls = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
    source = str(cls(body[:size])), int.from_bytes(body[2 * size : 2 * size + 2], "big")
    destination = str(cls(body[size : 2 * size])), int.from_bytes(body[2 * size + 2 : 2 * size + 4], "big")
    if family == 2:
        source, destination = source + (0, 0), destination + (0, 0)
    return ProxyHeader(total, 2, "PROXY", name, source, destination)


def _check_v2_fixed(data: bytes) -> tuple[int, int, int, int]:
    """Check the version/command and family/transport bytes (as far as they came); return them and the length."""
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise InvalidHeader(f"a v2 signature with version {version}: only 2 is defined")
    if command not in (_LOCAL, _PROXY):
        raise InvalidHeader(f"a v2 header with the unknown command {command}: LOCAL (0) or PROXY (1) expected")
    if len(data) < 14:
        return 0, 0, command, 0
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family not in _V2_FAMILIES:
        raise InvalidHeader(f"a v2 header with the unknown address family {family}")
    if transport > _DGRAM:
        raise InvalidHeader(f"a v2 header with the unknown transport {transport}")
    if transport == _DGRAM and command == _PROXY:
        raise InvalidHeader("a v2 header for a datagram (DGRAM) on a stream connection")
    length = int.from_bytes(data[14:16], "big") if len(data) >= _V2_FIXED else 0
    return family, transport, command, length


def _check_tlvs(rest: bytes) -> None:
    """The extensions after the addresses must fill the header exactly: type, 2-byte length, value."""
    at = 0
    while at < len(rest):
        if len(rest) - at < 3:
            raise InvalidHeader(f"a v2 header with {len(rest) - at} stray bytes after its extensions")
        end = at + 3 + int.from_bytes(rest[at + 1 : at + 3], "big")
        if end > len(rest):
            raise InvalidHeader(f"a v2 extension (type 0x{rest[at]:02x}) longer than the header")
        at = end


def _unix_address(raw: bytes) -> Any:
    """A 108-byte ``sun_path``: a path up to its NUL, ``""`` if unnamed, bytes for an abstract name."""
    if raw[:1] == b"\0":
        name = raw.rstrip(b"\0")
        return name if name else ""
    return os.fsdecode(raw.split(b"\0", 1)[0])
