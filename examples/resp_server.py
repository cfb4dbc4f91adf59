"""A small Redis-protocol (RESP2) server: a framer of your own, and real Redis clients.

What it shows: a custom ``reactor.Framer`` that cuts a byte stream into
Redis requests, and one ``MessageHandler`` that answers them, serving TCP
and a Unix stream socket at once in one ``reactor.Reactor``.  Real Redis
clients talk to it: ``redis-cli`` and ``redis-benchmark`` (Debian package
redis-tools).  Pipelining needs no code: a framed connection's messages
are handled one after the other, in order, so a client that sends a
hundred commands in one write gets a hundred replies in order.

A request is either an array of bulk strings, which is what clients send,

    *3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$5\\r\\nhello\\r\\n

or an inline command, one line of words, which is what you type into nc:

    SET k hello\\r\\n

Commands: PING [message], ECHO message, SET key value, GET key,
DEL key [key ...], INCR key, QUIT; and, for clients starting up,
CONFIG GET parameter... (``save`` and ``appendonly``, which
redis-benchmark asks for), COMMAND ... (an empty array: clients then use
their own command tables) and HELLO (refused with NOPROTO, so a client
that tries RESP3 falls back to RESP2).  Anything else gets Redis's
``-ERR unknown command '...'``.

Run it (after ``make venv``, which installs the project into .venv):

    .venv/bin/python examples/resp_server.py                  # until Ctrl-C
    .venv/bin/python examples/resp_server.py --port 6380 --unix /tmp/resp.sock
    .venv/bin/python examples/resp_server.py --seconds 60     # or 60 seconds
    .venv/bin/python examples/resp_server.py --self-test      # one client per socket, exit

Poke it, with the addresses it prints:

    redis-cli -p PORT ping                          # PONG
    redis-cli -p PORT set greeting hello            # OK
    redis-cli -s /tmp/resp-.../resp.sock get greeting   # the same keyspace: hello
    redis-benchmark -p PORT -t ping,set,get,incr -n 10000 -P 16 -q
    printf 'PING\\r\\nINCR n\\r\\nINCR n\\r\\n' | nc -N 127.0.0.1 PORT
    printf 'PING\\r\\nINCR n\\r\\nINCR n\\r\\n' | socat - TCP:127.0.0.1:PORT
    socat - UNIX-CONNECT:/tmp/resp-.../resp.sock    # then type: ECHO hi

Bounds: a request is at most ``MAX_REQUEST`` bytes (1 MiB; an inline one
at most 64 KiB, as in Redis), and a bulk string or an argument count that
announces more is refused as soon as its header arrives; the keyspace
holds at most ``MAX_KEYS`` keys (then SET and INCR of a new key answer
``-OOM``).  A request that breaks the protocol gets Redis's
``-ERR Protocol error: ...`` and the connection is closed, as Redis does.

Shortcuts taken on purpose:

* Strings only, in one dict shared by both servers: no other types, no
  expiry, no databases (SELECT), no persistence, no AUTH.  SET takes no
  options.  CONFIG GET knows two parameters.
* Inline commands are split on whitespace; Redis's quoting
  (``SET k "a b"``) is not supported.
* Inline dispatch only: the handler runs on the loop and is quick.  Under
  ``Fork`` each request would change a copy of the keyspace in a child.
* The framer parses a request to find where it ends, and the handler
  parses it again: a framer hands on bytes, not objects.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import Any

import reactor
from reactor import MessageTooLong, ProtocolError

MAX_REQUEST = 1024 * 1024  # one request, header and all
MAX_INLINE = 64 * 1024  # one inline request (Redis: PROTO_INLINE_MAX_SIZE)
MAX_HEADER = 32  # "*<count>\r\n" or "$<size>\r\n": more without a CRLF is not a number
MAX_KEYS = 100_000
CONFIG = {b"save": b"", b"appendonly": b"no"}  # what CONFIG GET knows
INTEGER = re.compile(rb"-?(0|[1-9][0-9]{0,19})")  # Redis's strict integer: no sign, space or leading 0
CLIENT_TIMEOUT = 5.0


# ------------------------------------------------------------ the protocol


def protocol_error(what: str) -> ProtocolError:
    return ProtocolError(what, reply=error(f"ERR Protocol error: {what}"))


def _number(text: bytes | bytearray, what: str) -> int:
    if not INTEGER.fullmatch(text):
        raise protocol_error(what)
    return int(text)


def parse_request(data: bytes | bytearray, limit: int | None = None) -> tuple[list[bytes], int] | None:
    """The first request in ``data``: ``(arguments, bytes it takes)``, or None if incomplete.

    Raises ``ProtocolError`` (with Redis's reply) for input that is not
    RESP, and ``MessageTooLong`` as soon as a header announces more than
    ``limit`` bytes.  Knows nothing of sockets: bytes in, a request out.
    """
    if not data:
        return None
    if data[:1] != b"*":  # an inline command: one line of words
        end = data.find(b"\n")
        if end < 0:
            if len(data) > MAX_INLINE:
                raise protocol_error("too big inline request")
            return None
        return [bytes(word) for word in data[:end].split()], end + 1
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) > MAX_HEADER:
            raise protocol_error("invalid multibulk length")
        return None
    count = _number(data[1:end], "invalid multibulk length")
    position = end + 2
    if count <= 0:
        return [], position  # *0 and *-1: nothing to do, as in Redis
    if limit is not None and count * 6 > limit:  # each argument takes 6 bytes at least: $0\r\n\r\n
        raise MessageTooLong(count * 6, limit)
    arguments = []
    for _ in range(count):
        if position >= len(data):
            return None
        if data[position : position + 1] != b"$":
            raise protocol_error(f"expected '$', got '{chr(data[position])}'")
        end = data.find(b"\r\n", position)
        if end < 0:
            if len(data) - position > MAX_HEADER:
                raise protocol_error("invalid bulk length")
            return None
        size = _number(data[position + 1 : end], "invalid bulk length")
        if size < 0:
            raise protocol_error("invalid bulk length")
        if limit is not None and size > limit:
            raise MessageTooLong(size, limit)
        start = end + 2
        if len(data) < start + size + 2:
            return None
        if data[start + size : start + size + 2] != b"\r\n":
            raise protocol_error("expected CRLF after a bulk string")
        arguments.append(bytes(data[start : start + size]))
        position = start + size + 2
    return arguments, position


class RESP(reactor.Framer):
    """Redis requests.  The message is the whole request, as it came (header and all)."""

    overhead = 0  # the message includes everything the frame has

    def __init__(self, max_length: int = MAX_REQUEST) -> None:
        self.max_length = max_length

    def find(self, data: bytes | bytearray) -> tuple[bytes, int] | None:
        found = parse_request(data, self.max_length)
        if found is None:
            return None
        consumed = found[1]
        return bytes(data[:consumed]), consumed


# Replies.  Simple strings and errors may not hold CR or LF.


def simple(text: bytes) -> bytes:
    return b"+" + text + b"\r\n"


def error(text: str | bytes) -> bytes:
    text = text.encode() if isinstance(text, str) else text
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def array(values: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(bulk(v) for v in values)


# --------------------------------------------------------------- commands


def wrong_arity(name: bytes) -> bytes:
    return error(b"ERR wrong number of arguments for '%s' command" % name.lower())


def execute(store: dict[bytes, bytes], arguments: list[bytes]) -> bytes:
    """The reply to one command (arguments[0] is its name) against ``store``."""
    name, rest = arguments[0].upper(), arguments[1:]
    n = len(rest)
    if name == b"PING":
        return wrong_arity(name) if n > 1 else bulk(rest[0]) if n else simple(b"PONG")
    if name == b"ECHO":
        return bulk(rest[0]) if n == 1 else wrong_arity(name)
    if name == b"GET":
        return bulk(store.get(rest[0])) if n == 1 else wrong_arity(name)
    if name == b"SET":
        if n < 2:
            return wrong_arity(name)
        if n > 2:
            return error("ERR syntax error")  # no EX, NX, ... here
        if rest[0] not in store and len(store) >= MAX_KEYS:
            return error("OOM command not allowed when used memory > 'maxmemory'.")
        store[rest[0]] = rest[1]
        return simple(b"OK")
    if name == b"DEL":
        if not n:
            return wrong_arity(name)
        return integer(sum(store.pop(key, None) is not None for key in rest))
    if name == b"INCR":
        if n != 1:
            return wrong_arity(name)
        key = rest[0]
        old = store.get(key, b"0")
        if not INTEGER.fullmatch(old) or old == b"-0" or not -(2**63) <= int(old) < 2**63:
            return error("ERR value is not an integer or out of range")
        if int(old) == 2**63 - 1:
            return error("ERR increment or decrement would overflow")
        if key not in store and len(store) >= MAX_KEYS:
            return error("OOM command not allowed when used memory > 'maxmemory'.")
        store[key] = b"%d" % (int(old) + 1)
        return integer(int(old) + 1)
    if name == b"CONFIG":
        if n >= 2 and rest[0].upper() == b"GET":
            found = []
            for parameter, value in CONFIG.items():
                if any(fnmatch.fnmatchcase(parameter.decode(), p.lower().decode("latin-1")) for p in rest[1:]):
                    found += [parameter, value]
            return array(found)
        return error(b"ERR unknown subcommand '%s'. Try CONFIG HELP." % (rest[0][:128] if n else b""))
    if name == b"COMMAND":
        return array([])  # no command table: clients use their own
    if name == b"HELLO":
        return error("NOPROTO this server speaks RESP2 only")
    shown = b"".join(b"'%s' " % a[:128] for a in rest)
    return error(b"ERR unknown command '%s', with args beginning with: %s" % (arguments[0][:128], shown))


class RespHandler(reactor.MessageHandler):
    """One request: parse it (the framer has checked it), run it, write the reply."""

    framing = RESP()

    def handle(self) -> None:
        arguments, _ = parse_request(self.message)  # type: ignore[misc]
        if not arguments:
            return  # an empty line, or *0: Redis answers nothing
        if arguments[0].upper() == b"QUIT":
            self.wfile.write(simple(b"OK"))
            self.connection.close()  # once +OK is sent
            return
        self.wfile.write(execute(self.server.store, arguments))


def refuse(error_: Exception) -> bytes:
    """The reply before closing a connection that broke the protocol."""
    if isinstance(error_, ProtocolError) and error_.reply:
        return error_.reply
    return error(f"ERR Protocol error: {error_}")


class RespTCPServer(reactor.TCPServer):
    allow_reuse_address = True  # a restart on a fixed --port does not wait out TIME_WAIT
    max_message_size = MAX_REQUEST

    def get_request(self) -> tuple[Any, Any]:
        # TCP_NODELAY, as Redis sets: the reactor sends each reply as soon as
        # its handler returns, so a pipeline's replies leave as several small
        # writes, and Nagle's algorithm would hold each one back until the
        # client ACKs the one before, which a client with delayed ACKs does
        # only after 40 ms (redis-benchmark -P 16 then does ~3,500 requests/s).
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def protocol_error_reply(self, error: Exception, connection: Any) -> bytes:
        return refuse(error)


class RespUnixServer(reactor.UnixStreamServer):
    max_message_size = MAX_REQUEST

    def protocol_error_reply(self, error: Exception, connection: Any) -> bytes:
        return refuse(error)


# ---------------------------------------------------------------- self-test

def self_test_exchange(label: str, n: int) -> tuple[list[list[bytes]], bytes]:
    """The commands the self-test sends to server number ``n``, and the exact replies."""
    text = f"hello over {label}".encode()
    commands = [[b"PING"], [b"SET", b"greeting", text], [b"GET", b"greeting"], [b"INCR", b"visits"],
                [b"DEL", b"greeting", b"nothing"], [b"NOSUCH", b"x"]]
    replies = [b"+PONG\r\n", b"+OK\r\n", b"$%d\r\n%s\r\n" % (len(text), text), b":%d\r\n" % n, b":1\r\n",
               b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n"]
    return commands, b"".join(replies)


def self_test_client(servers: dict[str, Any], results: list[tuple[str, bytes, bytes]]) -> None:
    """One connection per server; all the commands pipelined in one write."""
    for n, (label, server) in enumerate(servers.items(), 1):
        commands, expected = self_test_exchange(label, n)
        try:
            with socket.socket(server.address_family, socket.SOCK_STREAM) as sock:
                sock.settimeout(CLIENT_TIMEOUT)
                sock.connect(server.server_address)
                sock.sendall(b"".join(array(command) for command in commands))  # what clients send
                reply = b""
                while len(reply) < len(expected) and (chunk := sock.recv(4096)):
                    reply += chunk
        except OSError as exc:
            reply = f"<{type(exc).__name__}: {exc}>".encode()
        results.append((label, expected, reply))


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free port)")
    parser.add_argument("--unix", metavar="PATH", help="Unix socket path (default: in a new temporary directory)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true", help="send a few commands to each socket, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # protocol errors are logged

    directory = None if args.unix else tempfile.mkdtemp(prefix="resp-")
    unix_path = args.unix or os.path.join(directory, "resp.sock")  # type: ignore[arg-type]
    loop = reactor.Reactor()
    store: dict[bytes, bytes] = {}  # the keyspace, shared by both servers
    servers: dict[str, Any] = {}
    ok = True
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: loop.stop())  # only ask; we close below
    try:
        try:
            servers["tcp"] = RespTCPServer(("127.0.0.1", args.port), RespHandler)
            servers["unix"] = RespUnixServer(unix_path, RespHandler)
        except OSError as exc:
            print(f"resp_server.py: cannot listen: {exc}", file=sys.stderr)
            return 2
        for server in servers.values():
            server.store = store  # the handlers find the keyspace through self.server
            loop.add_server(server)

        port = servers["tcp"].server_address[1]
        print("a Redis-protocol server on one Reactor, at:")
        print(f"  tcp   {servers['tcp'].server_address}")
        print(f"        try: redis-cli -p {port} ping")
        print(f"  unix  {unix_path}")
        print(f"        try: redis-cli -s {unix_path} ping")
        sys.stdout.flush()
        if args.seconds is not None:
            loop.call_later(args.seconds, loop.stop)

        if args.self_test:
            results: list[tuple[str, bytes, bytes]] = []

            def client() -> None:
                try:
                    self_test_client(servers, results)
                finally:
                    loop.call_soon_threadsafe(loop.stop)

            if args.seconds is None:
                loop.call_later(30, loop.stop)  # a deadline, in case a reply never comes
            thread = threading.Thread(target=client, name="self-test client")
            thread.start()
            try:
                loop.run()
            finally:
                thread.join(CLIENT_TIMEOUT * 2)
            ok = len(results) == len(servers)
            for label, expected, reply in results:
                ok = ok and reply == expected
                print(f"  {label:<4}  reply {reply!r}  {'ok' if reply == expected else 'WRONG'}")
        else:
            print("serving; Ctrl-C to stop")
            sys.stdout.flush()
            loop.run()
    finally:
        loop.close()  # aborts the open connections
        for server in servers.values():
            server.server_close()  # the Unix server removes its socket file
        leftovers = [unix_path] if servers and os.path.exists(unix_path) else []
        if directory is not None:
            leftovers += [name for name in os.listdir(directory) if name != "resp.sock"]
            shutil.rmtree(directory, ignore_errors=True)
    print(f"closed; socket files left: {leftovers or 'none'}")
    return 0 if ok and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
