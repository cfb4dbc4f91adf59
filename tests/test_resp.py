"""examples/resp_server.py: its framer on bytes alone, then the server run as a user runs it.

The server is started with ``served()`` (a subprocess; SIGTERM at the end,
exit 0 and no socket file left are checked there).  A hand-written RESP
client checks replies byte for byte; then the real ``redis-cli`` and
``redis-benchmark`` (Debian package redis-tools) talk to it over TCP and
over the Unix socket.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import subprocess
from typing import Any

import pytest

from examples_support import EXAMPLES, check_clean, self_test, served
from reactor import FrameBuffer, MessageTooLong, ProtocolError

TIMEOUT = 10.0
REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
needs_redis_tools = pytest.mark.skipif(
    REDIS_CLI is None or REDIS_BENCHMARK is None,
    reason="redis-cli/redis-benchmark not installed (Debian package redis-tools; `make tools` installs it)",
)


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("resp_server_example", EXAMPLES / "resp_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resp = load_example()


def command(*arguments: bytes | str) -> bytes:
    """A request as clients send it: an array of bulk strings (written out by hand)."""
    parts = [a.encode() if isinstance(a, str) else a for a in arguments]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Client:
    """A raw RESP client: send bytes, read exactly the reply bytes expected."""

    def __init__(self, address: Any) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size and (chunk := self.sock.recv(size - len(data))):
            data += chunk
        return data

    def check(self, request: bytes, expected: bytes) -> None:
        """``request`` gets exactly ``expected``: a PING after it proves nothing more came."""
        self.sock.sendall(request + command("PING"))
        got = self.read(len(expected) + len(b"+PONG\r\n"))
        assert got == expected + b"+PONG\r\n"

    def read_to_eof(self) -> bytes:
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data


# ------------------------------------------------------- the framer, sans-IO

PIPELINE = [
    (command("SET", b"k\x00", b"a\r\nb\xff"), [b"SET", b"k\x00", b"a\r\nb\xff"]),
    (b"PING\r\n", [b"PING"]),
    (b"  set   x  1 \n", [b"set", b"x", b"1"]),
    (command(), []),
    (b"\r\n", []),
    (command("ECHO", b""), [b"ECHO", b""]),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096])
def test_the_framer_cuts_requests_in_any_chunk_size(size):
    stream = b"".join(frame for frame, _ in PIPELINE)
    buffer = FrameBuffer(resp.RESP(), limit=1024)
    messages = []
    for i in range(0, len(stream), size):
        buffer.feed(stream[i : i + size])
        messages += list(buffer)
    assert messages == [frame for frame, _ in PIPELINE]  # the message is the whole request
    assert [resp.parse_request(m)[0] for m in messages] == [args for _, args in PIPELINE]
    assert buffer.buffered == 0


@pytest.mark.parametrize("data, reply", [
    (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n+x\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
    (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$01\r\nx\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$1\r\nxy\r\n", b"-ERR Protocol error: expected CRLF after a bulk string\r\n"),
    (b"*" + b"1" * 40, b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"P" * (64 * 1024 + 1), b"-ERR Protocol error: too big inline request\r\n"),
])  # fmt: skip
def test_the_framer_refuses_what_is_not_resp_with_redis_words(data, reply):
    with pytest.raises(ProtocolError) as caught:
        resp.RESP().find(data)
    assert caught.value.reply == reply


def test_the_framer_refuses_a_header_that_announces_too_much_at_once():
    for header in (b"*1\r\n$2000000\r\n", b"*500000\r\n"):
        with pytest.raises(MessageTooLong):
            resp.RESP(max_length=1024 * 1024).find(header)


# ------------------------------------------------------ the server, by hand


@pytest.mark.timeout(30)
def test_exact_replies_over_tcp_and_unix_one_keyspace():
    with served("resp_server.py") as server:
        tcp, unix = server.addresses["tcp"], server.addresses["unix"]
        with Client(tcp) as c:
            c.check(command("PING"), b"+PONG\r\n")
            c.check(b"PING\r\n", b"+PONG\r\n")  # inline
            c.check(command("ping", "hi there"), b"$8\r\nhi there\r\n")
            c.check(command("ECHO", b"\x00\r\n\xff"), b"$4\r\n\x00\r\n\xff\r\n")
            value = bytes(range(256)) * 4  # binary-safe: every byte value, CR LF included
            c.check(command("SET", b"bin\r\nkey", value), b"+OK\r\n")
            c.check(command("GET", b"bin\r\nkey"), b"$1024\r\n" + value + b"\r\n")
            c.check(command("GET", "missing"), b"$-1\r\n")
            c.check(b"SET a 1\r\nGET a\n", b"+OK\r\n$1\r\n1\r\n")  # inline, \r\n or \n
            c.check(b"\r\n" + command(), b"")  # empty requests: no reply
            c.check(command("INCR", "n") * 3, b":1\r\n:2\r\n:3\r\n")
            c.check(command("INCR", "bin\r\nkey"), b"-ERR value is not an integer or out of range\r\n")
            for bad in (b" 1", b"01", b"1.5", b"+1", b"-0", b"", b"9223372036854775808"):
                c.check(command("SET", "bad", bad) + command("INCR", "bad"),
                        b"+OK\r\n-ERR value is not an integer or out of range\r\n")
            c.check(command("SET", "big", "9223372036854775806") + command("INCR", "big") * 2,
                    b"+OK\r\n:9223372036854775807\r\n-ERR increment or decrement would overflow\r\n")
            c.check(command("SET", "neg", "-5") + command("INCR", "neg"), b"+OK\r\n:-4\r\n")
            c.check(command("DEL", "a", "n", "missing", "a"), b":2\r\n")
            c.check(command("DEL", "n"), b":0\r\n")
            c.check(command("SET", "k", "v", "EX", "10"), b"-ERR syntax error\r\n")
            c.check(command("GET"), b"-ERR wrong number of arguments for 'get' command\r\n")
            c.check(command("PING", "a", "b"), b"-ERR wrong number of arguments for 'ping' command\r\n")
            c.check(command("FOO", "a", "b\r\n"),
                    b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b  ' \r\n")
            c.check(command("CONFIG", "GET", "save"), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n")
            c.check(command("CONFIG", "GET", "*"), b"*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")
            c.check(command("CONFIG", "GET", "maxmemory"), b"*0\r\n")
            c.check(command("COMMAND", "DOCS"), b"*0\r\n")
            c.check(command("HELLO", "3"), b"-NOPROTO this server speaks RESP2 only\r\n")
            c.check(command("SET", "shared", "from tcp"), b"+OK\r\n")
        with Client(unix) as c:
            c.check(command("GET", "shared"), b"$8\r\nfrom tcp\r\n")
            c.sock.sendall(command("QUIT") + command("PING"))  # the PING is never handled
            assert c.read_to_eof() == b"+OK\r\n"


@pytest.mark.timeout(30)
def test_a_hundred_pipelined_commands_in_one_write_are_answered_in_order():
    with served("resp_server.py") as server:
        for label, address in server.addresses.items():
            requests, replies = [], []
            for i in range(100):
                if i % 4 == 0:
                    requests.append(command("INCR", f"count:{label}"))
                    replies.append(b":%d\r\n" % (i // 4 + 1))
                elif i % 4 == 1:
                    requests.append(command("SET", f"key:{i}", f"value {i}"))
                    replies.append(b"+OK\r\n")
                elif i % 4 == 2:
                    requests.append(command("GET", f"key:{i - 1}"))
                    replies.append(b"$%d\r\nvalue %d\r\n" % (len(f"value {i - 1}"), i - 1))
                else:
                    requests.append(b"PING\r\n")
                    replies.append(b"+PONG\r\n")
            with Client(address) as c:
                c.sock.sendall(b"".join(requests))
                expected = b"".join(replies)
                assert c.read(len(expected)) == expected, label
                c.check(command("DEL", *[f"key:{i}" for i in range(1, 100, 4)]), b":25\r\n")


@pytest.mark.timeout(30)
def test_a_protocol_error_is_answered_then_the_connection_closed():
    with served("resp_server.py") as server:
        for data, reply in [
            (command("PING") + b"*1\r\n+x\r\n", b"+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"),
            (b"*1\r\n$2000000\r\n",
             b"-ERR Protocol error: message of 2000000 bytes or more is over the limit of 1048576 bytes\r\n"),
        ]:  # fmt: skip
            with Client(server.addresses["tcp"]) as c:
                c.sock.sendall(data)
                assert c.read_to_eof() == reply
        with Client(server.addresses["unix"]) as c:  # a request that arrives a byte at a time
            for byte in command("ECHO", "slowly"):
                c.sock.sendall(bytes([byte]))
            assert c.read(len(b"$6\r\nslowly\r\n")) == b"$6\r\nslowly\r\n"


# ---------------------------------------------------- real Redis clients


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


@needs_redis_tools
@pytest.mark.timeout(40)
def test_redis_cli_over_tcp_and_unix():
    with served("resp_server.py") as server:
        runs = [("tcp", ["-p", str(server.addresses["tcp"][1])]), ("unix", ["-s", server.addresses["unix"]])]
        for label, where in runs:
            for args, output in [
                (["PING"], "PONG"),
                (["SET", f"k:{label}", "hello world"], "OK"),
                (["GET", f"k:{label}"], "hello world"),
                (["INCR", f"n:{label}"], "1"),
                (["INCR", f"n:{label}"], "2"),
                (["INCR", f"n:{label}"], "3"),
                (["DEL", f"k:{label}", f"n:{label}", "nothing"], "2"),
                (["GET", f"k:{label}"], ""),
                (["ECHO", "say \"hi\" \u00e9"], "say \"hi\" \u00e9"),
            ]:
                result = run(REDIS_CLI, *where, *args)
                assert (result.returncode, result.stdout, result.stderr) == (0, output + "\n", ""), (label, args)


@needs_redis_tools
@pytest.mark.timeout(60)
def test_redis_benchmark_over_tcp_and_unix():
    with served("resp_server.py") as server:
        runs = [("tcp", ["-p", str(server.addresses["tcp"][1])]), ("unix", ["-s", server.addresses["unix"]])]
        for n, (label, where) in enumerate(runs, 1):
            result = run(REDIS_BENCHMARK, *where, "-t", "ping,set,get,incr", "-n", "2000", "-c", "10", "-P", "16",
                         "-q", timeout=40)  # fmt: skip
            report = f"{label}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            assert result.returncode == 0, report
            assert "Could not fetch server CONFIG" not in result.stdout + result.stderr, report
            finals = [line.strip() for line in re.split(r"[\r\n]", result.stdout) if "requests per second" in line]
            tests = [line.split(":")[0] for line in finals]
            assert tests == ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"], report
            for line in finals:
                assert re.fullmatch(r"\w+: [\d.]+ requests per second, p50=[\d.]+ msec", line), line
                assert float(line.split()[1]) > 0, line
            with Client(server.addresses[label]) as c:  # every INCR was done: it used one key
                c.check(command("GET", "counter:__rand_int__"), b"$4\r\n%d\r\n" % (2000 * n))


@pytest.mark.timeout(70)
def test_self_test_passes():
    result = self_test("resp_server.py")
    report = check_clean(result)
    assert result.stdout.count("  ok") == 2 and "WRONG" not in result.stdout, report
