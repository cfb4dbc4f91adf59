"""The PROXY protocol (reactor/proxyheader.py, reactor/proxy.py).

The parser on its own, exhaustively: every field of both versions, a
truncation at every byte, garbage.  The settings, refused where they are
set.  Then real sockets: a client that plays the proxy (it writes a v1 or
v2 header, then talks) to TCP on 127.0.0.1 and ::1 and to a Unix socket,
classic handlers under every strategy and framed ones, TLS after the
header, ``handle_request()`` without a reactor, and the bad inputs, each
closing its own connection only, counted, while a good client is served.
"""

from __future__ import annotations

import ast
import logging
import random
import socket
import struct
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, STREAM_FAMILIES, ServingThread, connect, family_params, read_all, wait_for
from tls_support import read_lines

import handlers
from handlers.echo import LineEcho
import reactor
from reactor import Event, State
from reactor.errors import UsageError
from reactor.proxy import check_mode, check_networks, serve_settings, trusted
from reactor.proxyheader import V1_MAX, InvalidHeader, ProxyHeader, expected_length, parse

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT4 = ("203.0.113.7", 41000)
CLIENT6 = ("2001:db8::7", 41001, 0, 0)
SERVER4 = ("192.0.2.1", 443)
SERVER6 = ("2001:db8::1", 443, 0, 0)


# --------------------------------------------------------- building headers


def v1(protocol: str = "TCP4", src: Any = CLIENT4, dst: Any = SERVER4) -> bytes:
    return f"PROXY {protocol} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def v2(command: int = 1, family: int = 1, transport: int = 1, body: bytes = b"", length: int | None = None) -> bytes:
    """A v2 header built by hand (not by the code under test)."""
    size = len(body) if length is None else length
    return SIG + bytes([0x20 | command, family << 4 | transport]) + struct.pack("!H", size) + body


def inet(src: Any = CLIENT4, dst: Any = SERVER4) -> bytes:
    family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    return socket.inet_pton(family, src[0]) + socket.inet_pton(family, dst[0]) + struct.pack("!HH", src[1], dst[1])


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


V2_TCP4 = v2(body=inet())
V2_TCP6 = v2(family=2, body=inet(CLIENT6, SERVER6))
LONGEST_V1 = v1("UNKNOWN", ("ffff:" * 7 + "ffff", 65535), ("ffff:" * 7 + "ffff", 65535))

#: Valid headers and what they say: (bytes, version, command, family, source, destination).
VALID = {
    "v1-tcp4": (v1(), 1, "PROXY", "TCP4", CLIENT4, SERVER4),
    "v1-tcp6": (v1("TCP6", CLIENT6, SERVER6), 1, "PROXY", "TCP6", CLIENT6, SERVER6),
    "v1-tcp6-full": (v1("TCP6", ("2001:db8:0:0:0:0:0:7", 1), ("::", 0)), 1, "PROXY", "TCP6",
                     ("2001:db8::7", 1, 0, 0), ("::", 0, 0, 0)),  # fmt: skip
    "v1-ports-0-65535": (v1(src=("0.0.0.0", 0), dst=("255.255.255.255", 65535)), 1, "PROXY", "TCP4",
                         ("0.0.0.0", 0), ("255.255.255.255", 65535)),  # fmt: skip
    "v1-unknown": (b"PROXY UNKNOWN\r\n", 1, "PROXY", "UNKNOWN", None, None),
    "v1-unknown-longest": (LONGEST_V1, 1, "PROXY", "UNKNOWN", None, None),
    "v1-unknown-junk": (b"PROXY UNKNOWN whatever  it\tsays\r\n", 1, "PROXY", "UNKNOWN", None, None),
    "v2-tcp4": (V2_TCP4, 2, "PROXY", "TCP4", CLIENT4, SERVER4),
    "v2-tcp6": (V2_TCP6, 2, "PROXY", "TCP6", CLIENT6, SERVER6),
    "v2-unix": (v2(family=3, body=unix(b"/run/client.sock", b"/run/haproxy.sock")), 2, "PROXY", "UNIX",
                "/run/client.sock", "/run/haproxy.sock"),  # fmt: skip
    "v2-unix-unnamed-abstract": (v2(family=3, body=unix(b"", b"\0hidden")), 2, "PROXY", "UNIX", "", b"\0hidden"),
    "v2-local": (v2(command=0, family=0, transport=0), 2, "LOCAL", "UNKNOWN", None, None),
    "v2-local-with-addresses": (v2(command=0, body=inet()), 2, "LOCAL", "UNKNOWN", None, None),
    "v2-local-junk-block": (v2(command=0, family=2, transport=2, body=b"\xff" * 5), 2, "LOCAL", "UNKNOWN", None, None),
    "v2-unspec-family": (v2(family=0, transport=1, body=b"ignored"), 2, "PROXY", "UNKNOWN", None, None),
    "v2-unspec-transport": (v2(family=1, transport=0, body=b"x"), 2, "PROXY", "UNKNOWN", None, None),
    "v2-tlvs": (v2(body=inet() + tlv(0x04, b"") + tlv(0x05, b"id-123") + tlv(0x20, b"\x01" + b"\0" * 4)), 2,
                "PROXY", "TCP4", CLIENT4, SERVER4),  # fmt: skip
    "v2-long-tlv": (v2(body=inet() + tlv(0xE0, b"z" * 5000)), 2, "PROXY", "TCP4", CLIENT4, SERVER4),
}


# ------------------------------------------------------------ the parser


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", list(VALID))
def test_a_valid_header_is_parsed_and_nothing_after_it_is_taken(name):
    header, version, command, family, source, destination = VALID[name]
    for after in (b"", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", SIG, b"PROXY TCP4 junk\r\n"):
        assert parse(header + after) == ProxyHeader(len(header), version, command, family, source, destination)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", list(VALID))
def test_every_truncation_needs_more_and_every_byte_given_is_header(name):
    header = VALID[name][0]
    for cut in range(len(header)):
        assert parse(header[:cut]) is None, cut
    known = expected_length(header)
    assert known == (len(header) if header.startswith(SIG) else None)


@pytest.mark.timeout(10)
def test_the_longest_v1_header_is_107_bytes_and_one_more_is_refused():
    assert len(LONGEST_V1) == V1_MAX == 107
    assert parse(LONGEST_V1).length == 107
    too_long = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n"
    assert len(too_long) == 108
    for data in (too_long, too_long[:107], b"PROXY TCP4 " + b"1" * 200):
        with pytest.raises(InvalidHeader, match="CRLF in the first 107"):
            parse(data)
    assert parse(too_long[:106]) is None


BAD_V1 = {
    b"PROXY\r\n": "not a PROXY header",
    b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n": "not a PROXY header",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n": "not a PROXY header",
    b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n": "TCP4, TCP6 or UNKNOWN",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n": "TCP4, TCP6 or UNKNOWN",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n": "TCP4, TCP6 or UNKNOWN",
    b"PROXY UNKNOWNX\r\n": "TCP4, TCP6 or UNKNOWN",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n": "TCP4, TCP6 or UNKNOWN",
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n": "one space",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n": "one space",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n": "one space",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n": "one space",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n": "one space",
    b"PROXY TCP4\r\n": "one space",
    b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n": "one space",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP4 \xc2\xb9.2.3.4 5.6.7.8 1 2\r\n": "bad IPv4 address",
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n": "bad IPv6 address",
    b"PROXY TCP6 ::1 ::1::2 1 2\r\n": "bad IPv6 address",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n": "bad IPv6 address",
    b"PROXY TCP6 ::g ::1 1 2\r\n": "bad IPv6 address",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n": "bad port",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n": "bad port",  # an Arabic-Indic digit one
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n": "lone LF",
    b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n": "lone LF",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n": "lone CR",
    b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n": "lone CR",
    b"PROXY UNKNOWN\n": "lone LF",
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("data, why", [pytest.param(k, v, id=repr(k)[2:40]) for k, v in BAD_V1.items()])
def test_a_bad_v1_header_is_refused_saying_why(data, why):
    with pytest.raises(InvalidHeader, match=why):
        parse(data)


def _v2_raw(byte13: int, byte14: int, length: int = 0, body: bytes = b"") -> bytes:
    return SIG + bytes([byte13, byte14]) + struct.pack("!H", length) + body


BAD_V2 = {
    "version 1": (_v2_raw(0x11, 0x11, 12, inet()), "version 1"),
    "version 3": (_v2_raw(0x31, 0x11, 12, inet()), "version 3"),
    "version 0": (_v2_raw(0x01, 0x11, 12, inet()), "version 0"),
    **{f"command {c}": (_v2_raw(0x20 | c, 0x11, 12, inet()), "unknown command") for c in range(2, 16)},
    **{f"family {f}": (_v2_raw(0x21, f << 4 | 1, 12, inet()), "unknown address family") for f in range(4, 16)},
    **{f"transport {t}": (_v2_raw(0x21, 0x10 | t, 12, inet()), "unknown transport") for t in range(3, 16)},
    "udp4 on a stream": (v2(transport=2, body=inet()), "datagram"),
    "udp6 on a stream": (v2(family=2, transport=2, body=inet(CLIENT6, SERVER6)), "datagram"),
    "unix dgram on a stream": (v2(family=3, transport=2, body=unix(b"/a", b"/b")), "datagram"),
    "tcp4 block short": (v2(body=inet()[:11]), "11 address bytes: 12 needed"),
    "tcp6 block short": (v2(family=2, body=inet(CLIENT6, SERVER6)[:35]), "36 needed"),
    "tcp6 block of a tcp4": (v2(family=2, body=inet()), "36 needed"),
    "unix block short": (v2(family=3, body=unix(b"/a", b"/b")[:215]), "216 needed"),
    "tlv too long": (v2(body=inet() + bytes([0x04]) + struct.pack("!H", 5) + b"abcd"), "longer than the header"),
    "one stray byte": (v2(body=inet() + b"\x04"), "1 stray bytes"),
    "two stray bytes": (v2(body=inet() + tlv(0x04, b"ok") + b"\x04\x00"), "2 stray bytes"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", list(BAD_V2))
def test_a_bad_v2_header_is_refused_saying_why(name):
    data, why = BAD_V2[name]
    with pytest.raises(InvalidHeader, match=why):
        parse(data)


@pytest.mark.timeout(10)
def test_a_bad_v2_fixed_part_is_refused_as_soon_as_it_arrives_not_after_its_length():
    for data in (_v2_raw(0x31, 0x11, 60000), _v2_raw(0x25, 0x11, 60000), _v2_raw(0x21, 0x51, 60000),
                 _v2_raw(0x21, 0x12, 60000)):  # fmt: skip
        with pytest.raises(InvalidHeader):
            parse(data)  # 16 bytes of the 60016 announced
    with pytest.raises(InvalidHeader, match="version 1"):
        parse(SIG + b"\x11")  # the 13th byte alone is enough


@pytest.mark.timeout(10)
def test_every_byte_of_the_v2_signature_matters():
    for at in range(12):
        broken = bytearray(V2_TCP4)
        broken[at] ^= 0x40
        with pytest.raises(InvalidHeader, match="not a PROXY header"):
            parse(bytes(broken)[: max(at + 1, 2)])


@pytest.mark.timeout(10)
@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01", b"SSH-2.0-OpenSSH\r\n",
                                  b"\r\n\r\nhello", b"\x00", b"P\x00", b" PROXY TCP4", b"\xff" * 20])  # fmt: skip
def test_other_protocols_are_refused_at_once(data):
    with pytest.raises(InvalidHeader, match="not a PROXY header"):
        parse(data)


@pytest.mark.timeout(10)
def test_a_version_not_accepted_is_refused():
    assert parse(v1(), (1,)).version == 1 and parse(V2_TCP4, (2,)).version == 2
    with pytest.raises(InvalidHeader, match="only v1"):
        parse(V2_TCP4[:1], (1,))
    with pytest.raises(InvalidHeader, match="only v2"):
        parse(b"P", (2,))
    for data, versions in ((b"\r\n\r\nhello", (1,)), (b"PRAXIS", (2,))):  # not a header of either version
        with pytest.raises(InvalidHeader, match="not a PROXY header"):
            parse(data, versions)


@pytest.mark.timeout(30)
def test_garbage_never_raises_anything_but_invalid_header_and_keeps_the_promises():
    """Mutated valid headers and random bytes: a result, None or InvalidHeader, and
    None only while every byte given may still be header (no valid header is shorter)."""
    rng = random.Random(14)
    samples = [entry[0] for entry in VALID.values()]
    seen = {"header": 0, "none": 0, "invalid": 0}
    for _ in range(4000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            data[at] = rng.choice([rng.randrange(256), 0x0D, 0x0A, 0x20, 0x30, 0x3A])
        data = bytes(data[: rng.randint(0, len(data))]) if rng.random() < 0.5 else bytes(data)
        if rng.random() < 0.05:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
        try:
            header = parse(data)
        except InvalidHeader as exc:
            assert str(exc)
            seen["invalid"] += 1
            continue
        if header is None:
            seen["none"] += 1
            assert len(data) < V1_MAX or data.startswith(SIG)
            continue
        seen["header"] += 1
        assert 15 <= header.length <= len(data) and parse(data[: header.length]) == header
        assert all(parse(data[:cut]) is None for cut in range(header.length))
    assert min(seen.values()) > 100, seen


# ---------------------------------------------------------- the settings


@pytest.mark.timeout(10)
def test_the_settings_are_checked_where_they_are_set(places):
    assert check_mode("m", True) == (1, 2) and check_mode("m", "v1") == (1,) and check_mode("m", None) == ()
    for bad in (1, 2, "v3", "yes", "V1", 0.5, ["v1"]):
        with pytest.raises(UsageError, match="True .v1 or v2., 'v1', 'v2' or False"):
            check_mode("proxy_protocol", bad)
    assert [str(n) for n in check_networks("f", ["10.0.0.0/8", " ::1 ", reactor.proxy.ipaddress.ip_network("::/0")])] == [
        "10.0.0.0/8", "::1/128", "::/0"]  # fmt: skip
    for bad, why in (("10.0.0.0/8", "a list of networks"), (None, "a list of networks"), (["10.0.0.1/8"], "host bits"),
                     (["nonsense"], "not a network"), ([5], "not a network")):  # fmt: skip
        with pytest.raises(UsageError, match=why):
            check_networks("proxy_from", bad)

    server = places.make_server("tcp4", LineEcho)
    with server:
        for name, value in (("proxy_protocol", "v3"), ("proxy_from", ["x"]), ("proxy_timeout", float("nan")),
                            ("proxy_timeout", 0), ("proxy_timeout", -1), ("proxy_timeout", float("inf"))):  # fmt: skip
            with pytest.raises(UsageError, match=name):
                setattr(server, name, value)
        server.proxy_from = ["10.0.0.0/8"]
        assert server.proxy_from == (reactor.proxy.ipaddress.ip_network("10.0.0.0/8"),)  # stored parsed
        server.proxy_timeout = None

    with pytest.raises(UsageError, match="Bad.proxy_protocol"):
        type("Bad", (reactor.TCPServer,), {"proxy_protocol": "v9"})
    with pytest.raises(UsageError, match="Worse.proxy_from"):
        type("Worse", (reactor.TCPServer,), {"proxy_from": "127.0.0.1"})

    class Later(reactor.TCPServer):
        pass

    Later.proxy_protocol = "sure"  # set on the class after its body: the constructor says so
    with pytest.raises(UsageError, match="proxy_protocol"):
        Later(("127.0.0.1", 0), LineEcho)


@pytest.mark.timeout(10)
def test_a_datagram_server_refuses_the_proxy_protocol(places):
    with pytest.raises(UsageError, match="datagram server"):
        type("ProxiedUDP", (reactor.UDPServer,), {"proxy_protocol": True})
    with places.make_server("udp4", reactor.DatagramRequestHandler) as server:
        with pytest.raises(UsageError, match="UDPServer is a datagram server"):
            server.proxy_protocol = "v2"
        server.proxy_protocol = False  # off is fine

    class Late(reactor.UnixDatagramServer):
        pass

    Late.proxy_protocol = True
    with pytest.raises(UsageError, match="Late is a datagram server"):
        Late(places.path(), reactor.DatagramRequestHandler)


class _Server:
    def __init__(self, family: int, proxy_from: Any) -> None:
        self.address_family = family
        self.proxy_from = proxy_from


@pytest.mark.timeout(10)
def test_who_is_trusted():
    loopback = _Server(socket.AF_INET, reactor.proxy.PROXY_FROM)
    assert trusted(loopback, ("127.0.0.1", 1)) and trusted(loopback, ("127.9.9.9", 1))
    assert trusted(loopback, ("::1", 1, 0, 0)) and trusted(loopback, ("::ffff:127.0.0.1", 1, 0, 0))
    assert not trusted(loopback, ("10.0.0.1", 1)) and not trusted(loopback, ("::2", 1, 0, 0))
    assert not trusted(loopback, ("fe80::1%lo", 1, 0, 1)) and not trusted(loopback, ("not an address", 1))
    lan = _Server(socket.AF_INET6, ["10.0.0.0/8", "fe80::/10"])
    assert trusted(lan, ("::ffff:10.1.2.3", 1, 0, 0)) and trusted(lan, ("fe80::1%lo", 1, 0, 1))
    assert not trusted(lan, ("127.0.0.1", 1))
    assert trusted(_Server(socket.AF_UNIX, []), "")  # a Unix socket's peer is on this machine


# ------------------------------------------------------- over real sockets


def reply_for(client_address: Any, proxy: Any, record: Any, line: bytes) -> bytes:
    """What the handlers below send back: everything they see of who is talking."""
    return repr((client_address, proxy, record.peer, record.proxy_address, line.strip())).encode() + b"\n"


class WhoFramed(reactor.MessageHandler):
    """Framed: per line, the client the handler sees, the socket's peer (the proxy) and its record's."""

    def handle(self) -> None:
        self.wfile.write(reply_for(self.client_address, self.connection.sock.getpeername(), self.connection.record,
                                   self.message))  # fmt: skip


class WhoClassic(handlers.StreamRequestHandler):
    """Classic: the same, for each line until EOF, from its own socket and its record in the table."""

    def handle(self) -> None:
        record = self.server.request_table.find(self.request)
        for line in self.rfile:
            self.wfile.write(reply_for(self.client_address, self.request.getpeername(), record, line))


STRATEGIES = {"inline": reactor.Inline, "pool": lambda: reactor.ThreadPool(2), "fork": lambda: reactor.Fork(2)}
HEADERS = {"v1": (v1(), CLIENT4), "v2": (V2_TCP6, CLIENT6)}


def talk(server: Any, payload: bytes) -> list[Any]:
    """Connect, send ``payload``, half-close, read to EOF: the replies, parsed; and the client's own address."""
    with connect(server) as client:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)  # a forked child holds a copy of this socket: EOF, not close
        replies = [ast.literal_eval(line) for line in read_all(client).decode().splitlines()]
        return replies + [client.getsockname()]


def closed(sock: socket.socket) -> bool:
    """The server closed ``sock``: EOF, or a reset (closed with our bytes unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def proxied(server: Any) -> Any:
    server.proxy_protocol = True
    return server


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", list(HEADERS))
@pytest.mark.parametrize("dispatch", list(STRATEGIES))
@pytest.mark.parametrize("handler", [WhoFramed, WhoClassic], ids=["framed", "classic"])
@pytest.mark.parametrize("name", family_params(STREAM_FAMILIES))
def test_handlers_see_the_real_client_on_every_family_and_strategy(places, name, handler, dispatch, version):
    server = proxied(places.make_server(name, handler, dispatch=STRATEGIES[dispatch]()))
    header, client = HEADERS[version]
    with ServingThread(server):
        first, second, own = talk(server, header + b"hello\nagain\n")
        wait_for(lambda: len(server.request_table) == 0, what="the connection ended (and its children)")
    assert first == (client, own, client, own, b"hello") and second[-1] == b"again"
    assert server.request_table.counters == {}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [WhoFramed, WhoClassic], ids=["framed", "classic"])
def test_the_trace_observers_and_snapshot_show_the_real_client(places, handler, caplog):
    server = proxied(places.make_server("tcp4", handler))
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    seen: list[Any] = []
    server.request_table.add_observer(lambda record, old, event, new, why: seen.append((event, new, record.peer, why)))
    with ServingThread(server), connect(server) as client:
        own = client.getsockname()
        client.sendall(v1()[:20])
        wait_for(lambda: server.request_table.counts() == {"PROXYING": 1}, what="PROXYING")
        [record] = server.request_table.snapshot()
        assert record.peer == client.getsockname() and record.proxy_address is None
        client.sendall(v1()[20:] + b"hi\n")
        assert ast.literal_eval(read_lines(client, 1).decode())[0] == CLIENT4
        snapshot = server.request_table.snapshot()
        assert [(r.peer, r.proxy_address) for r in snapshot] == [(CLIENT4, client.getsockname())]
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b""
    assert [(event, new) for event, new, _, _ in seen[:3]] == [(None, State.ACCEPTED), (Event.PROXY, State.PROXYING),
                                                               (Event.PROXIED, State.ACCEPTED)]  # fmt: skip
    assert seen[2][2] == CLIENT4 and seen[2][3] == f"v1 TCP4: client {CLIENT4!r} via {own!r}"
    lines = [r.getMessage() for r in caplog.records if r.name == "reactor.trace"]
    assert any(f"PROXYING -> ACCEPTED: proxied (v1 TCP4: client {CLIENT4!r} via" in line for line in lines), lines
    assert any(line.endswith("tcp4 127.0.0.1:%d #1 PROXY header read" % server.server_address[1]) for line in lines)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("header", [v2(command=0), b"PROXY UNKNOWN\r\n", v2(family=0, transport=0)],
                         ids=["v2-local", "v1-unknown", "v2-unspec"])  # fmt: skip
def test_a_health_check_or_an_unknown_client_keeps_the_peer(places, header):
    server = proxied(places.make_server("tcp4", WhoFramed))
    with ServingThread(server):
        (seen_as, proxy, peer, proxy_address, line), own = talk(server, header + b"ping\n")
    assert seen_as == proxy == peer == proxy_address == own and line == b"ping"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", ["v1", "v2-long"])
def test_a_header_in_pieces_is_read_as_it_comes_and_never_past_its_end(places, version):
    header = v1("TCP6", CLIENT6, SERVER6) if version == "v1" else v2(body=inet() + tlv(0xE0, b"t" * 20000))
    server = proxied(places.make_server("tcp4", WhoClassic))
    with ServingThread(server), connect(server) as client:
        for piece in (header[:3], header[3:15], header[15:40], header[40:-1]):
            client.sendall(piece)
            wait_for(lambda: server.request_table.counts() == {"PROXYING": 1}, what="still PROXYING")
        client.sendall(header[-1:] + b"first line\n")  # the header's last byte and the client's data, at once
        reply = ast.literal_eval(read_lines(client, 1).decode())
        assert reply[0] == (CLIENT6 if version == "v1" else CLIENT4) and reply[-1] == b"first line"
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [WhoFramed, WhoClassic], ids=["framed", "classic"])
@pytest.mark.parametrize("name", family_params(["tcp4", "tcp6", "unix"]))
def test_the_header_comes_before_tls(places, certs, name, handler):
    server = proxied(places.make_server(name, handler, ssl_context=certs.server_context()))
    seen: list[Any] = []
    server.request_table.add_observer(lambda record, old, event, new, why: seen.append(event))
    with ServingThread(server):
        sock = connect(server)
        own = sock.getsockname()
        sock.sendall(V2_TCP4)  # then the ClientHello, which must still be there for the handshake
        with certs.client_context().wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"secret\n")
            client, proxy, peer, proxy_address, line = ast.literal_eval(read_lines(tls, 1).decode())
            assert (client, peer, line) == (CLIENT4, CLIENT4, b"secret") and proxy == proxy_address == own
            tls.unwrap().close()
        wait_for(lambda: server.request_table.totals["finished"] == 1, what="the connection ended")
    assert seen[1:5] == [Event.PROXY, Event.PROXIED, Event.HANDSHAKE, Event.SECURED]


@pytest.mark.timeout(30)
def test_a_unix_socket_peer_is_always_trusted(places):
    server = proxied(places.make_server("unix", WhoFramed))
    server.proxy_from = []  # nobody over IP
    with ServingThread(server):
        (client, _, _, proxy_address, _), own = talk(server, v1() + b"x\n")
    assert client == CLIENT4 and proxy_address == own


def good_exchange(server: Any) -> None:
    (client, *_, line), _ = talk(server, v1() + b"fine\n")
    assert (client, line) == (CLIENT4, b"fine")


BAD = {
    "garbled": b"PROXY TCP4 203.0.113.7 192.0.2.1 41000 99999\r\nhello\n",
    "not a header": b"GET / HTTP/1.0\r\n\r\n",
    "tls instead": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "v2 datagram": v2(transport=2, body=inet()) + b"hello\n",
    "v2 unknown family": _v2_raw(0x21, 0x41, 12, inet()) + b"hello\n",
    "v2 bad tlvs": v2(body=inet() + b"\x01\x00") + b"hello\n",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [WhoFramed, WhoClassic], ids=["framed", "classic"])
def test_bad_input_closes_that_connection_only_counted_while_everyone_else_is_served(places, handler, caplog):
    server = proxied(places.make_server("tcp4", handler))
    server.proxy_from = ["127.0.0.1/32"]  # 127.0.0.2 is loopback too, and not trusted
    server.proxy_timeout = 0.5
    caplog.set_level(logging.DEBUG, logger="reactor")
    with ServingThread(server), connect(server) as silent, connect(server) as unfinished:
        unfinished.sendall(v1()[:30])  # and never the rest
        good_exchange(server)  # while those two wait
        for payload in BAD.values():
            with connect(server) as bad:
                bad.sendall(payload)
                assert closed(bad)
        with connect(server) as cut:
            cut.sendall(V2_TCP4[:20])
            cut.shutdown(socket.SHUT_WR)  # a truncated header: EOF before its end
            assert closed(cut)
        with connect(server) as reset:
            reset.sendall(v1()[:25])
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
        with socket.socket() as stranger:
            stranger.settimeout(CLIENT_TIMEOUT)
            stranger.bind(("127.0.0.2", 0))
            stranger.connect(server.server_address)
            assert closed(stranger)  # at once, before it says anything
        wait_for(lambda: server.request_table.counters.get("proxy_invalid") == len(BAD) + 2, what="the reset counted")
        good_exchange(server)
        wait_for(lambda: server.request_table.counters.get("proxy_timeout") == 2, what="both waiting clients timed out")
        assert closed(silent) and closed(unfinished)
        good_exchange(server)
    table = server.request_table
    assert table.counters == {"proxy_invalid": len(BAD) + 2, "proxy_untrusted": 1, "proxy_timeout": 2}
    assert table.totals["aborted"] == len(BAD) + 5 and table.totals["finished"] == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "reactor" and "; closed" in r.getMessage()]
    assert len(logged) == 3, logged  # one line per kind: rate-limited
    assert any("not in proxy_from" in line and "127.0.0.2" in line for line in logged)
    assert any("invalid PROXY header: a v1 header with a bad port '99999'" in line for line in logged)
    assert any("no whole PROXY header within proxy_timeout (0.5 s)" in line for line in logged)


@pytest.mark.timeout(30)
def test_a_v1_only_server_refuses_a_v2_header_and_the_reverse(places):
    for accepted, refused, good in (("v1", V2_TCP4, v1()), ("v2", v1(), V2_TCP4)):
        server = places.make_server("tcp4", WhoFramed)
        server.proxy_protocol = accepted
        with ServingThread(server):
            with connect(server) as bad:
                bad.sendall(refused + b"hello\n")
                assert closed(bad)
            (client, *_), _ = talk(server, good + b"ok\n")
            assert client == CLIENT4
        assert server.request_table.counters == {"proxy_invalid": 1}


@pytest.mark.timeout(30)
def test_a_header_still_awaited_when_the_server_stops_is_aborted_uncounted(places):
    server = proxied(places.make_server("tcp4", WhoClassic))
    with connect(server) as silent:
        with ServingThread(server, close=False):
            wait_for(lambda: server.request_table.counts() == {"PROXYING": 1}, what="PROXYING")
        assert closed(silent)
        server.server_close()
    assert server.request_table.totals["aborted"] == 1 and server.request_table.counters == {}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handler", [WhoFramed, WhoClassic], ids=["framed", "classic"])
@pytest.mark.parametrize("name", family_params(["tcp4", "unix"]))
def test_handle_request_without_a_reactor_reads_the_header_blocking(places, name, handler):
    server = proxied(places.make_server(name, handler))
    with server, connect(server) as client:
        client.sendall(V2_TCP6 + b"blocking\n")
        client.shutdown(socket.SHUT_WR)
        server.handle_request()
        (seen_as, proxy, *_, line) = ast.literal_eval(read_all(client).decode())
        assert (seen_as, proxy, line) == (CLIENT6, client.getsockname(), b"blocking")


@pytest.mark.timeout(30)
def test_handle_request_without_a_reactor_closes_bad_late_and_untrusted_peers(places):
    server = proxied(places.make_server("tcp4", WhoClassic))
    server.proxy_timeout = 0.2
    with server:
        with connect(server) as late:
            late.sendall(v1()[:10])
            server.handle_request()  # returns after proxy_timeout
            assert closed(late)
        with connect(server) as bad:
            bad.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")
            server.handle_request()
            assert closed(bad)
        with connect(server) as cut:
            cut.sendall(b"PROXY TCP4 1.2.3.4")
            cut.shutdown(socket.SHUT_WR)
            server.handle_request()
            assert closed(cut)
        server.proxy_from = ["10.0.0.0/8"]
        with connect(server) as stranger:
            server.handle_request()
            assert closed(stranger)
    assert server.request_table.counters == {"proxy_timeout": 1, "proxy_invalid": 2, "proxy_untrusted": 1}
    assert server.request_table.totals["aborted"] == 4


# ------------------------------------------------------- the command line's half


class _Args:
    def __init__(self, **given: Any) -> None:
        self.proxy_protocol = given.pop("proxy_protocol", False)
        self.proxy_from = given.pop("proxy_from", None)
        self.__dict__.update(given)

    def __contains__(self, name: str) -> bool:
        return name in self.__dict__


@pytest.mark.timeout(10)
def test_serve_settings():
    assert serve_settings(_Args(), ["udp"]) == {}
    assert serve_settings(_Args(proxy_protocol="v2", proxy_timeout=3.0), ["udp", "tcp"]) == {
        "proxy_protocol": "v2", "proxy_timeout": 3.0}  # fmt: skip
    settings = serve_settings(_Args(proxy_protocol=True, proxy_from="10.0.0.0/8,::1"), ["unix"])
    assert [str(n) for n in settings["proxy_from"]] == ["10.0.0.0/8", "::1/128"]
    for args, kinds, why in (
        (_Args(proxy_from="10.0.0.0/8"), ["tcp"], "--proxy-from needs --proxy-protocol"),
        (_Args(proxy_timeout=1.0), ["tcp"], "--proxy-timeout needs --proxy-protocol"),
        (_Args(proxy_protocol=True), ["udp", "unix-dgram"], "needs a --tcp or --unix address"),
        (_Args(proxy_protocol=True, proxy_from="10.0.0.0/8,,"), ["tcp"], "--proxy-from: '' is not a network"),
        (_Args(proxy_protocol=True, proxy_from="10.0.0.1/8"), ["tcp"], "has host bits set"),
    ):
        with pytest.raises(UsageError, match=why):
            serve_settings(args, kinds)
