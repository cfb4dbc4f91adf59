"""The examples run, as separate processes, the two ways a user runs them.

* ``--self-test``: the example starts its servers, talks to each with a
  real client, prints the replies and exits 0 only if every reply was
  right and no socket file was left behind.
* Served (``served()`` from examples_support.py): the example serves until
  SIGTERM, as after ``kill``; the test talks to every address it printed
  with a real client and checks the exact reply bytes, then leaving the
  block checks exit 0, the closing line, a clean stderr, and that every
  Unix socket file is gone.

``-X dev`` makes unclosed sockets show up as ResourceWarning on stderr,
which fails a test too.  Deadlines, not sleeps: every client socket has a
timeout, and the one place a test expects silence (a server that must
not answer yet) waits a bounded ``SILENCE`` for it, then checks the
answer does come once the server is free.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import CLIENT_TIMEOUT, HAVE_IPV6, client_exchange, read_all
from examples_support import check_clean, self_test, served

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SILENCE = 0.5  # how long a client waits to see that a busy server does not answer yet
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback here")


def check(result: subprocess.CompletedProcess[str], labels: list[str]) -> None:
    """The echo examples: each label's reply is ``hello over <label>\\n``, marked ok."""
    report = check_clean(result)
    for label in labels:
        payload = f"hello over {label}\n".encode()
        expected = f"reply {payload!r}  ok"  # as the example prints it
        assert expected in result.stdout, f"no good reply from {label}\n{report}"


def check_lines(result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    """Each expected line appears in stdout, as printed (after its indent)."""
    report = check_clean(result)
    lines = [line.strip() for line in result.stdout.splitlines()]
    for line in expected:
        assert line in lines, f"missing {line!r}\n{report}"
    assert "WRONG" not in result.stdout, report


def family(label: str, address: Any) -> str:
    """conftest's family name for an address an example printed."""
    if label in ("unix", "unix-dgram"):
        return label
    return label[:3] + ("6" if ":" in address[0] else "4")


def exchange(label: str, address: Any, payload: bytes, places: Any) -> bytes:
    """One exchange with a plain client (stream: half-close, read to EOF; datagram: one reply)."""
    return client_exchange(family(label, address), address[:2] if isinstance(address, tuple) else address, payload, places)


def ask(address: Any, payload: bytes, timeout: float = CLIENT_TIMEOUT) -> socket.socket:
    """A stream client that has sent ``payload`` and half-closed; the caller reads and closes."""
    sock = socket.create_connection(address[:2], timeout=timeout)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    return sock


# ----------------------------------------------------------- self-tests


@pytest.mark.timeout(90)
def test_four_families() -> None:
    check(self_test("four_families.py"), ["tcp", "udp", "unix", "unix-dgram"])


@pytest.mark.timeout(90)
def test_select_fileno() -> None:
    check(self_test("select_fileno.py"), ["tcp", "udp", "unix"])


@pytest.mark.timeout(90)
def test_shared_state_under_each_strategy() -> None:
    """examples/shared_state.py: exact counts under Inline and ThreadPool; under Fork a change dies with its child."""
    result = self_test("shared_state.py")
    report = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0 and result.stdout.endswith("self-test: ok\n"), report
    assert "inline    GET greeting -> hello  GET hits after 8 x 50 INCR -> 400" in result.stdout, report
    assert "thread:4  GET greeting -> hello  GET hits after 8 x 50 INCR -> 400" in result.stdout, report
    assert "fork:2    GET greeting -> nil    GET hits after 8 x 50 INCR -> nil" in result.stdout, report
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, report


@pytest.mark.timeout(60)
def test_a_host_loop_stops_on_sigterm_at_once() -> None:
    """examples/embed_sigterm.py: the signal handler's loop.wakeup() ends the host's select() sleep."""
    result = self_test("embed_sigterm.py")
    report = f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0 and result.stdout == "self-test: ok\n", report
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, report


@pytest.mark.timeout(90)
def test_asyncio_embed() -> None:
    result = self_test("asyncio_embed.py")
    check(result, ["tcp", "udp", "unix", "unix-dgram"])
    assert "reactor timer fired under asyncio" in result.stdout, result.stdout


TCP_SELF_TEST = [
    "stream  reply b'HELLO FROM A STREAM CLIENT\\n'  ok",
    "base    reply b'HELLO FROM A BASE CLIENT\\n'  ok",
    "framed  reply b'HELLO FROM A FRAMED CLIENT\\n'  ok",
    "quick   reply b'ANSWERED WHILE ANOTHER CLIENT WAITS\\n'  ok",
    "slow    reply b'HALF A LINE, THEN THE REST\\n'  ok",
]
UDP_SELF_TEST = [
    "base      reply b'HELLO FROM A BASE CLIENT\\n'  ok",
    "datagram  reply b'HELLO FROM A DATAGRAM CLIENT\\n'  ok",
]


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_stdlib_tcp_self_test(host: str) -> None:
    result = self_test("stdlib_tcp.py", "--host", host)
    check_lines(result, TCP_SELF_TEST)
    assert f"UpperFramed on ('{host}'," in result.stdout, result.stdout


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_stdlib_udp_self_test(host: str) -> None:
    result = self_test("stdlib_udp.py", "--host", host)
    check_lines(result, UDP_SELF_TEST)
    assert f"UpperBase on ('{host}'," in result.stdout, result.stdout


def test_stdlib_unix_stream_self_test() -> None:
    check_lines(self_test("stdlib_unix_stream.py"), ["unix  reply b'HELLO OVER A UNIX STREAM SOCKET\\n'  ok"])


def test_stdlib_unix_dgram_self_test() -> None:
    check_lines(
        self_test("stdlib_unix_dgram.py"),
        ["unix-dgram  reply b'HELLO OVER A UNIX DATAGRAM SOCKET\\n'  ok", "unbound     no reply  ok"],
    )


def test_stdlib_threaded_self_test() -> None:
    result = self_test("stdlib_threaded.py")
    check_clean(result)
    replies = re.findall(r"^  tcp  reply b(['\"])(.*)\1  ok$", result.stdout, re.M)
    names = [text.rpartition(": ")[0] for _, text in replies]
    assert len(names) == 6, result.stdout
    assert all(name.startswith("reactor request (") for name in names[:3]), names  # a thread per request
    assert all(re.fullmatch(r"reactor worker [1-4]", name) for name in names[3:]), names  # the pool of 4


def test_http_files_self_test() -> None:
    result = self_test("http_files.py")
    check_clean(result)
    for path in ("/", "/hello.txt"):  # the example compares each body with the file it wrote
        assert re.search(rf"^  http  GET {re.escape(path)} +200, \d+ bytes  ok$", result.stdout, re.M), result.stdout


# ------------------------------------------------- served, then SIGTERM


ECHO_EXAMPLES = {
    "four_families.py": ["tcp", "udp", "unix", "unix-dgram"],
    "select_fileno.py": ["tcp", "udp", "unix"],
    "asyncio_embed.py": ["tcp", "udp", "unix", "unix-dgram"],
}


@pytest.mark.parametrize("name", ECHO_EXAMPLES)
def test_echo_examples_served(name: str, places: Any) -> None:
    with served(name) as run:
        assert sorted(run.addresses) == sorted(ECHO_EXAMPLES[name]), run.lines
        for label, address in run.addresses.items():
            payload = f"served over {label}\n".encode()
            assert exchange(label, address, payload, places) == payload, label


@pytest.mark.parametrize(
    "host, args",
    [
        ("127.0.0.1", ()),
        ("127.0.0.1", ("--handler", "base")),
        ("127.0.0.1", ("--framed",)),
        pytest.param("::1", (), marks=needs_ipv6),
        pytest.param("::1", ("--framed",), marks=needs_ipv6),
    ],
)
def test_stdlib_tcp_served(host: str, args: tuple[str, ...], places: Any) -> None:
    with served("stdlib_tcp.py", "--host", host, *args) as run:
        address = run.addresses["tcp"]
        assert list(run.addresses) == ["tcp"] and address[0] == host, run.lines
        for n in range(3):  # the server goes on after each connection
            assert exchange("tcp", address, b"hello %d\n" % n, places) == b"HELLO %d\n" % n


@pytest.mark.parametrize("args", [(), ("--framed",)], ids=["stream", "framed"])
def test_stdlib_tcp_slow_client(args: tuple[str, ...]) -> None:
    """A client holds half a line: the framed server answers another meanwhile, the stdlib's does not."""
    framed = bool(args)
    with served("stdlib_tcp.py", *args) as run:
        address = run.addresses["tcp"]
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as slow:
            slow.sendall(b"half a li")  # connected first, so accepted first
            with ask(address, b"quick\n") as quick:
                if framed:
                    assert read_all(quick) == b"QUICK\n"  # while the slow client still holds its half line
                else:
                    quick.settimeout(SILENCE)
                    with pytest.raises(TimeoutError):  # the handler is stuck in the slow client's readline()
                        quick.recv(100)
                    quick.settimeout(CLIENT_TIMEOUT)
                slow.sendall(b"ne\n")
                slow.shutdown(socket.SHUT_WR)
                assert read_all(slow) == b"HALF A LINE\n"
                if not framed:
                    assert read_all(quick) == b"QUICK\n"  # its turn came once the slow line was done


@pytest.mark.parametrize(
    "host, args",
    [
        ("127.0.0.1", ()),
        ("127.0.0.1", ("--handler", "datagram")),
        pytest.param("::1", (), marks=needs_ipv6),
    ],
)
def test_stdlib_udp_served(host: str, args: tuple[str, ...], places: Any) -> None:
    with served("stdlib_udp.py", "--host", host, *args) as run:
        address = run.addresses["udp"]
        assert list(run.addresses) == ["udp"] and address[0] == host, run.lines
        for n in range(3):
            assert exchange("udp", address, b"hello %d\n" % n, places) == b"HELLO %d\n" % n


def test_stdlib_unix_stream_served(places: Any) -> None:
    with served("stdlib_unix_stream.py") as run:
        path = run.addresses["unix"]
        assert list(run.addresses) == ["unix"] and os.path.exists(path), run.lines
        for n in range(3):
            assert exchange("unix", path, b"hello %d\n" % n, places) == b"HELLO %d\n" % n
    assert not os.path.exists(os.path.dirname(path)), "the temporary directory was left behind"


def test_stdlib_unix_dgram_served(places: Any) -> None:
    with served("stdlib_unix_dgram.py") as run:
        path = run.addresses["unix-dgram"]
        assert list(run.addresses) == ["unix-dgram"] and os.path.exists(path), run.lines
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
            unbound.sendto(b"no address\n", path)  # handled, but there is nowhere to answer
            # A bound client (its path in the places dir) is answered; datagrams
            # are handled in order, so by then the unbound one was handled too.
            assert exchange("unix-dgram", path, b"hello\n", places) == b"HELLO\n"
            unbound.setblocking(False)
            with pytest.raises(BlockingIOError):
                unbound.recv(100)
    assert not os.path.exists(os.path.dirname(path)), "the temporary directory was left behind"


def test_stdlib_threaded_served_thread_per_request(places: Any) -> None:
    """Each request on a thread of its own, even while other clients hold theirs."""
    idle: list[socket.socket] = []
    try:
        with served("stdlib_threaded.py") as run:
            address = run.addresses["tcp"]
            idle = [socket.create_connection(address, timeout=CLIENT_TIMEOUT) for _ in range(2)]
            names = set()
            for n in range(3):
                reply = exchange("tcp", address, b"hello %d\n" % n, places)
                name, _, text = reply.partition(b": ")
                assert text == b"hello %d\n" % n and name.startswith(b"reactor request ("), reply
                names.add(name)
            assert len(names) == 3, names
        # SIGTERM with two clients still connected and silent: their handlers
        # got EOF, answered with their thread's name, and the example exited 0.
        for sock in idle:
            assert re.fullmatch(rb"reactor request \(.*\): ", read_all(sock))
    finally:
        for sock in idle:
            sock.close()


def test_stdlib_threaded_served_pool_is_bounded() -> None:
    """With --workers 2, two silent clients hold both workers; a third waits its turn."""
    idle: list[socket.socket] = []
    try:
        with served("stdlib_threaded.py", "--workers", "2") as run:
            address = run.addresses["tcp"]
            idle = [socket.create_connection(address, timeout=CLIENT_TIMEOUT) for _ in range(2)]
            with ask(address, b"third\n") as third:
                third.settimeout(SILENCE)
                with pytest.raises(TimeoutError):  # no third thread: the request waits in the table
                    third.recv(100)
                third.settimeout(CLIENT_TIMEOUT)
                first = idle.pop(0)
                with first:
                    first.sendall(b"first\n")
                    first.shutdown(socket.SHUT_WR)
                    assert re.fullmatch(rb"reactor worker [12]: first\n", read_all(first))
                assert re.fullmatch(rb"reactor worker [12]: third\n", read_all(third))  # a worker was free
        assert re.fullmatch(rb"reactor worker [12]: ", read_all(idle[0]))  # EOF at SIGTERM
    finally:
        for sock in idle:
            sock.close()


def get(address: Any, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*address[:2], timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_http_files_served_temporary_site() -> None:
    with served("http_files.py") as run:
        address = run.addresses["http"]
        status, body = get(address, "/")
        assert status == 200 and b"<title>reactor serves files</title>" in body, body
        assert get(address, "/hello.txt") == (200, b"hello from a file served by reactor\n")
        assert get(address, "/missing.txt")[0] == 404
        site = next(line.split(" from ", 1)[1].rstrip(":") for line in run.lines if line.startswith("serving files from "))
        assert os.path.isdir(site)
    assert not os.path.exists(site), "the temporary site was left behind"


def test_http_files_served_directory_concurrently(tmp_path: Path) -> None:
    """A silent client holds one of 4 workers; 24 requests from 8 client threads are all answered in full."""
    body = os.urandom(100_000)  # larger than a socket buffer: the worker's writes block
    (tmp_path / "data.bin").write_bytes(body)
    (tmp_path / "note.txt").write_bytes(b"a note\n")
    with served("http_files.py", "--directory", str(tmp_path), "--workers", "4") as run:
        address = run.addresses["http"]
        # Connected first, it says nothing: its handler waits in readline() on a
        # worker.  An inline server would answer nobody else now; the pool does.
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as silent:
            assert get(address, "/note.txt") == (200, b"a note\n")
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda _: get(address, "/data.bin"), range(24)))
            assert [status for status, _ in results] == [200] * 24
            assert all(got == body for _, got in results)
            silent.sendall(b"GET /note.txt HTTP/1.0\r\n\r\n")  # answered on the worker it held
            status_line, _, rest = read_all(silent).partition(b"\r\n")
            assert status_line == b"HTTP/1.0 200 OK" and rest.endswith(b"\r\n\r\na note\n"), rest
    assert (tmp_path / "note.txt").exists(), "a directory given with --directory is the user's: left alone"


def test_http_files_exits_with_a_silent_client_connected() -> None:
    """SIGTERM while a client holds a worker and says nothing: the example still exits 0 at once."""
    with served("http_files.py", "--workers", "2") as run:
        address = run.addresses["http"]
        silent = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
        # Connections are accepted in order: once a later one is answered,
        # the silent one has been accepted and holds a worker.
        assert get(address, "/hello.txt")[0] == 200
    with silent:
        assert read_all(silent) == b""  # its handler saw EOF and closed without an answer
